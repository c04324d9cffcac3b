//! Test harness for knode's end-to-end tests: real parts, private to each test.
//!
//! - [`containerd::PrivateContainerd`]: a containerd with its own config, root, state dir and socket
//!   under a temp dir (never the host's default socket), ready once its gRPC Version call answers.
//! - [`registry::PrivateRegistry`]: Debian's `docker-registry` on a free 127.0.0.1 port with its own
//!   storage directory.
//! - [`image`]: knode's test images (`knode/testimg`, `knode/busybox`), built reproducibly from the
//!   project's own sources and Debian's busybox-static, and pushed over the OCI distribution API.
//! - [`conformance_images`]: the images upstream's conformance suites run, built locally.
//! - [`control_plane::ControlPlane`]: knode's own light control plane (seconds to start).
//! - [`upstream::UpstreamControlPlane`]: etcd, kube-apiserver, kube-controller-manager and
//!   kube-scheduler of the pinned upstream release (`scripts/build-upstream.sh`), set up as
//!   `kubeadm init` does (own PKI, Node authorizer, bootstrap token, CSR auto-approval).
//!
//! - [`process::output_with_stdin`]: a command run with input (kubectl apply -f -, exec -i).
//!
//! Everything started here is stopped and removed on drop: processes (and the container processes of
//! any shim they left), mounts under the private directories, and the directories themselves.

pub mod cleanup;
pub mod cluster;
pub mod conformance_images;
pub mod containerd;
pub mod control_plane;
pub mod image;
pub mod netns;
pub mod process;
pub mod procstat;
pub mod registry;
pub mod upstream;

use std::path::PathBuf;

/// Errors of the harness: each says what failed to start or build and where to look.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Missing(String),
    #[error("registry push of {reference}: {message}")]
    Push { reference: String, message: String },
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).map(PathBuf::from).unwrap_or(here)
}

/// E2e tests drive real containerd, mounts and namespaces: they need root. Returns an error that
/// says so instead of failing obscurely deep inside a test.
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(HarnessError::Missing(
            "e2e tests need root (containerd, mounts, network namespaces): run the README test command as root"
                .into(),
        ))
    }
}

/// Installs rustls' ring provider once per process; oci-client is built without a default one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A short private directory under /tmp. Unix socket paths are limited to 108 bytes, so the
/// containerd socket must not sit under a long temp path.
pub(crate) fn private_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .map_err(HarnessError::io(format!("creating a private dir for {prefix}")))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(HarnessError::io("finding a free port"))?
        .port())
}

/// Polls `f` every `every` until it gives `Some`; panics after `timeout` naming `what`, with
/// `log()` (the log of the daemon under test) in the message. For tests.
pub fn wait_until<T>(
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    log: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            log()
        );
        std::thread::sleep(every);
    }
}
