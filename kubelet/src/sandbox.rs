//! The pod sandbox without a pause container: the pod's network, IPC and UTS namespaces are pinned as
//! bind-mounted nsfs files under `<root>/<pod-sandbox-id>/{net,ipc,uts}`, and every container of the pod
//! joins them by path (see `spec::NamespaceSource::Path`).
//!
//! How the namespaces are created: a dedicated, short-lived OS thread (never a tokio worker or blocking
//! pool thread, which would be reused with foreign namespaces) calls `unshare(CLONE_NEWNET |
//! CLONE_NEWIPC | CLONE_NEWUTS)`. These three namespace kinds are per-thread on Linux, so only that
//! thread moves. Inside, it sets the pod's hostname, brings `lo` up, and bind-mounts
//! `/proc/thread-self/ns/{net,ipc,uts}` onto the pin files; the bind mounts keep the namespaces alive
//! after the thread exits. The mount namespace is the process's own, so the pins are visible to
//! containerd/runc. Teardown lazily unmounts the pins and removes the files and the directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use crate::spec::{NamespaceSource, PodNamespaces};

/// Errors creating or removing a pod sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("pod sandbox {id}: {step}: {source}")]
    Io {
        id: String,
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("pod sandbox id {0:?} is not a valid directory name (use [A-Za-z0-9_.-], not starting with '.')")]
    BadId(String),
    #[error("pod sandbox {id}: hostname {hostname:?} is invalid (1-64 bytes, no '/' or NUL)")]
    BadHostname { id: String, hostname: String },
}

/// What the sandbox is made from (the pod's spec fields that matter here).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Directory name for the pins; unique per sandbox (e.g. derived from pod UID + attempt).
    pub id: String,
    /// The pod's hostname (`spec.hostname` or the pod name, truncated by the caller as upstream).
    pub hostname: String,
    /// `spec.hostNetwork`: the pod uses the host's network and UTS namespaces.
    pub host_network: bool,
    /// `spec.hostIPC`: the pod uses the host's IPC namespace.
    pub host_ipc: bool,
    /// `spec.hostPID`: containers use the host's PID namespace (else each its own).
    pub host_pid: bool,
}

/// A created pod sandbox: the pinned namespaces its containers join.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub id: String,
    /// `<root>/<id>`.
    pub dir: PathBuf,
    /// Pinned namespaces; `None` means the host's.
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub host_pid: bool,
}

impl Sandbox {
    /// The namespaces a container of this pod is created with.
    pub fn namespaces(&self) -> PodNamespaces {
        let src = |p: &Option<PathBuf>| match p {
            Some(p) => NamespaceSource::Path(p.clone()),
            None => NamespaceSource::Host,
        };
        PodNamespaces {
            network: src(&self.net),
            ipc: src(&self.ipc),
            uts: src(&self.uts),
            pid: if self.host_pid {
                NamespaceSource::Host
            } else {
                NamespaceSource::Own
            },
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Creates the sandbox's pinned namespaces under `root`. Blocking (spawns and joins its own thread);
/// from async code call it through `tokio::task::spawn_blocking`. On failure nothing is left behind.
pub fn create(root: &Path, cfg: &SandboxConfig) -> Result<Sandbox, SandboxError> {
    if !valid_id(&cfg.id) {
        return Err(SandboxError::BadId(cfg.id.clone()));
    }
    if !cfg.host_network
        && (cfg.hostname.is_empty()
            || cfg.hostname.len() > 64
            || cfg.hostname.bytes().any(|b| b == b'/' || b == 0))
    {
        return Err(SandboxError::BadHostname {
            id: cfg.id.clone(),
            hostname: cfg.hostname.clone(),
        });
    }
    let dir = root.join(&cfg.id);
    let io_err = |step: &str| {
        let id = cfg.id.clone();
        let step = step.to_string();
        move |source| SandboxError::Io { id, step, source }
    };
    fs::create_dir_all(&dir).map_err(io_err("creating the sandbox directory"))?;
    let mut pins: Vec<(&'static str, CloneFlags)> = Vec::new();
    if !cfg.host_network {
        pins.push(("net", CloneFlags::CLONE_NEWNET));
        pins.push(("uts", CloneFlags::CLONE_NEWUTS));
    }
    if !cfg.host_ipc {
        pins.push(("ipc", CloneFlags::CLONE_NEWIPC));
    }
    let sandbox = Sandbox {
        id: cfg.id.clone(),
        dir: dir.clone(),
        net: (!cfg.host_network).then(|| dir.join("net")),
        ipc: (!cfg.host_ipc).then(|| dir.join("ipc")),
        uts: (!cfg.host_network).then(|| dir.join("uts")),
        host_pid: cfg.host_pid,
    };
    if pins.is_empty() {
        return Ok(sandbox);
    }
    let hostname = (!cfg.host_network).then(|| cfg.hostname.clone());
    let thread_dir = dir.clone();
    let result = std::thread::Builder::new()
        .name(format!("sandbox-{}", cfg.id))
        .spawn(move || pin_namespaces(&thread_dir, &pins, hostname.as_deref()))
        .map_err(io_err("spawning the namespace thread"))?
        .join()
        .unwrap_or_else(|_| Err(("namespace thread", io::Error::other("panicked"))));
    if let Err((step, source)) = result {
        // Leave nothing behind: pins that were mounted before the failure are removed too.
        let _ = remove_dir(&dir);
        return Err(SandboxError::Io {
            id: cfg.id.clone(),
            step: step.to_string(),
            source,
        });
    }
    tracing::info!(sandbox = %cfg.id, dir = %dir.display(), "pod sandbox namespaces pinned");
    Ok(sandbox)
}

/// Whether every namespace pin in the sandbox directory `dir` still holds its namespace. After a
/// reboot (or anyone unmounting them) the pin files remain as empty files: containers started
/// with them would fail in runc, so such a sandbox is dead and must be replaced, as upstream
/// replaces a sandbox whose pause container is gone.
pub fn pins_alive(dir: &Path) -> bool {
    ["net", "ipc", "uts"]
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.exists())
        .all(|p| {
            nix::sys::statfs::statfs(&p)
                .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
                .unwrap_or(false)
        })
}

/// Runs on the dedicated thread: moves it into new namespaces and pins them.
fn pin_namespaces(
    dir: &Path,
    pins: &[(&'static str, CloneFlags)],
    hostname: Option<&str>,
) -> Result<(), (&'static str, io::Error)> {
    let flags = pins
        .iter()
        .fold(CloneFlags::empty(), |acc, (_, flag)| acc | *flag);
    unshare(flags).map_err(|e| ("unshare", io::Error::from(e)))?;
    if let Some(h) = hostname {
        nix::unistd::sethostname(h).map_err(|e| ("sethostname", io::Error::from(e)))?;
    }
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up().map_err(|e| ("bringing lo up", e))?;
    }
    for (name, _) in pins {
        let target = dir.join(name);
        fs::File::create(&target).map_err(|e| ("creating a pin file", e))?;
        let source = format!("/proc/thread-self/ns/{name}");
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| ("bind-mounting the namespace", io::Error::from(e)))?;
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS).
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the fd is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh valid descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq with a NUL-terminated name; the kernel fills ifru_flags.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS initialised the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the flags back.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts the pins under `dir` (lazily: a container still holding the namespace keeps it alive,
/// nothing else does) and removes the directory. Missing pins or directory are not an error.
fn remove_dir(dir: &Path) -> io::Result<()> {
    for name in ["net", "ipc", "uts"] {
        let pin = dir.join(name);
        match umount2(&pin, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        match fs::remove_file(&pin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Tears the sandbox `id` under `root` down: unmounts and removes its pins. Idempotent.
pub fn teardown(root: &Path, id: &str) -> Result<(), SandboxError> {
    if !valid_id(id) {
        return Err(SandboxError::BadId(id.to_string()));
    }
    remove_dir(&root.join(id)).map_err(|source| SandboxError::Io {
        id: id.to_string(),
        step: "removing the pinned namespaces".into(),
        source,
    })?;
    tracing::info!(sandbox = %id, "pod sandbox torn down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_directory_names() {
        assert!(valid_id("0f3c-uid_1.2"));
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(!valid_id(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_input_is_rejected_before_touching_the_system() {
        let root = Path::new("/nonexistent-knode-root");
        let cfg = SandboxConfig {
            id: "../escape".into(),
            hostname: "h".into(),
            host_network: false,
            host_ipc: false,
            host_pid: false,
        };
        assert!(matches!(create(root, &cfg), Err(SandboxError::BadId(_))));
        let cfg = SandboxConfig {
            id: "ok".into(),
            hostname: "x".repeat(65),
            ..cfg
        };
        assert!(matches!(
            create(root, &cfg),
            Err(SandboxError::BadHostname { .. })
        ));
        assert!(!root.exists());
    }

    #[test]
    fn namespaces_follow_host_flags() {
        let s = Sandbox {
            id: "p".into(),
            dir: "/r/p".into(),
            net: None,
            ipc: Some("/r/p/ipc".into()),
            uts: None,
            host_pid: true,
        };
        let ns = s.namespaces();
        assert_eq!(ns.network, NamespaceSource::Host);
        assert_eq!(ns.uts, NamespaceSource::Host);
        assert_eq!(ns.ipc, NamespaceSource::Path("/r/p/ipc".into()));
        assert_eq!(ns.pid, NamespaceSource::Host);
        let s = Sandbox { host_pid: false, ..s };
        assert_eq!(s.namespaces().pid, NamespaceSource::Own);
    }

    #[test]
    fn pin_files_without_their_namespace_are_dead() {
        let d = tempfile::tempdir().unwrap();
        assert!(pins_alive(d.path()), "no pins (host namespaces): nothing to lose");
        // What a reboot leaves: the bind-mount targets, now plain empty files.
        std::fs::write(d.path().join("ipc"), "").unwrap();
        assert!(!pins_alive(d.path()));
    }
}
