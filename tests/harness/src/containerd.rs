//! A private containerd for one test: own config, root, state, socket; stopped and wiped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use containerd_client::services::v1::version_client::VersionClient;
use tonic::transport::Channel;

use crate::{HarnessError, Result, cleanup};

/// The CRI plugin of a [`PrivateContainerd`], for upstream's kubelet (the benchmark baseline): the
/// daemon runs in `netns` (the node's; image pulls and CNI plugins run there), its sandboxes use
/// `sandbox_image`, its CNI config and plugins come from `<dir>/cni-conf` and `<dir>/cni-bin`
/// (filled by the caller), `registry` is pulled over plain HTTP, and runc keeps its state under the
/// private dir.
#[derive(Debug, Clone)]
pub struct CriOptions {
    pub netns: String,
    pub sandbox_image: String,
    pub registry: String,
}

/// A containerd process private to a test.
pub struct PrivateContainerd {
    dir: Option<tempfile::TempDir>,
    cri: Option<CriOptions>,
    /// The network namespace the daemon (and so every shim and host-network container) runs in;
    /// `None`: the test's own.
    netns: Option<String>,
    /// CRI's pod network namespaces (`/run/netns/cni-*`) that existed before this containerd.
    netns_before: Vec<String>,
    child: Child,
    socket: PathBuf,
    version: String,
    namespaces: Mutex<Vec<String>>,
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl PrivateContainerd {
    /// Starts containerd and waits (up to 30 s) until its gRPC Version call answers.
    pub async fn start() -> Result<Self> {
        Self::start_with(None, None).await
    }

    /// Like [`Self::start`], the daemon running in the network namespace `netns`, as on a node
    /// whose namespace it is: hostNetwork containers then share the node's network.
    pub async fn start_in(netns: &str) -> Result<Self> {
        Self::start_with(None, Some(netns.to_string())).await
    }

    /// Like [`Self::start`], with the CRI plugin on (see [`CriOptions`]), in the CRI's `netns`.
    pub async fn start_cri(cri: CriOptions) -> Result<Self> {
        let netns = cri.netns.clone();
        Self::start_with(Some(cri), Some(netns)).await
    }

    async fn start_with(cri: Option<CriOptions>, netns: Option<String>) -> Result<Self> {
        crate::require_root()?;
        let dir = crate::private_dir("kn-ctd-")?;
        let base = dir.path().to_path_buf();
        let socket = base.join("c.sock");
        let config = base.join("config.toml");
        let mut text = config_toml(&base, cri.is_some());
        if let Some(c) = &cri {
            for sub in ["cni-conf", "cni-bin"] {
                std::fs::create_dir_all(base.join(sub))
                    .map_err(HarnessError::io(format!("creating {sub}")))?;
            }
            text.push_str(&cri_toml(&base, c));
        }
        std::fs::write(&config, text).map_err(HarnessError::io(format!("writing {}", config.display())))?;
        let child = spawn(&base, &config, netns.as_deref())?;
        let mut me = PrivateContainerd {
            dir: Some(dir),
            cri,
            netns,
            netns_before: cri_netns(),
            child,
            socket,
            version: String::new(),
            namespaces: Mutex::new(Vec::new()),
        };
        me.version = me.wait_ready(Duration::from_secs(30)).await?;
        Ok(me)
    }

    /// Stops the containerd daemon (SIGTERM, then SIGKILL) but leaves its shims and their
    /// containers running, as when containerd crashes or is upgraded on a node. [`Self::respawn`]
    /// brings it back on the same root, state and socket.
    pub fn stop_daemon(&mut self) {
        cleanup::stop_child(&mut self.child, Duration::from_secs(5));
    }

    /// SIGKILLs containerd itself (a crash, or a machine going down when the shims are killed
    /// too); [`Self::respawn`] brings it back.
    pub fn kill_daemon(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What losing power does to containerd: the daemon, its shims and their containers are
    /// SIGKILLed, and the state directory (on tmpfs `/run` on a real machine) with runc's state
    /// is emptied; the root (metadata, content, snapshots) stays. [`Self::respawn`] boots it.
    pub fn power_off(&mut self) {
        self.kill_daemon();
        let shims = format!("-address {}", self.socket.display());
        cleanup::kill_tree_matching(&shims);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !cleanup::pids_with_cmdline(&shims).is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = self.dir().join("state");
        cleanup::unmount_under(&state);
        let _ = std::fs::remove_dir_all(&state);
        if let Ok(v) = self.namespaces.lock() {
            for ns in v.iter() {
                let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(ns));
            }
        }
        let _ = std::fs::remove_dir_all(self.dir().join("runc"));
    }

    /// Starts containerd again after [`Self::stop_daemon`] and waits until it answers; it
    /// reconnects to the shims that kept running.
    pub async fn respawn(&mut self) -> Result<()> {
        let base = self.dir().to_path_buf();
        self.child = spawn(&base, &base.join("config.toml"), self.netns.as_deref())?;
        self.version = self.wait_ready(Duration::from_secs(30)).await?;
        Ok(())
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("socket not created yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(HarnessError::NotReady(format!(
                    "containerd exited with {status} during start-up; log: {}",
                    self.log_tail()
                )));
            }
            if self.socket.exists() {
                match self.version_once().await {
                    Ok(v) => return Ok(v),
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(HarnessError::NotReady(format!(
            "containerd did not answer Version within {timeout:?} ({last}); log: {}",
            self.log_tail()
        )))
    }

    async fn version_once(&self) -> std::result::Result<String, String> {
        let channel = containerd_client::connect(&self.socket)
            .await
            .map_err(|e| e.to_string())?;
        let resp = VersionClient::new(channel)
            .version(())
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.into_inner().version)
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.dir.as_ref().map(|_| self.child.id())
    }

    /// The containerd version reported by its Version service at start-up.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The gRPC socket path (what the kubelet's `--container-runtime-endpoint` points at).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ctr` against this containerd, in namespace `ns`.
    pub fn ctr(&self, ns: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ctr");
        c.arg("--address").arg(&self.socket).args(["-n", ns]);
        c
    }

    /// The private directory holding config, root, state and log.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// A fresh gRPC channel to this containerd.
    pub async fn channel(&self) -> Result<Channel> {
        containerd_client::connect(&self.socket)
            .await
            .map_err(|e| HarnessError::NotReady(format!("connecting to {}: {e}", self.socket.display())))
    }

    /// A containerd namespace name unique to this process and call. All containerds on a machine share
    /// runc's state root (`/run/containerd/runc/<namespace>`), so tests must not reuse names; the
    /// runc state of namespaces handed out here is removed on stop.
    pub fn unique_namespace(&self, prefix: &str) -> String {
        let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = format!("{prefix}-{}-{n}", std::process::id());
        if let Ok(mut v) = self.namespaces.lock() {
            v.push(ns.clone());
        }
        ns
    }

    /// The last lines of containerd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Stops containerd, kills the shims it started and their containers, unmounts and removes
    /// everything under the private directory. Called by drop; idempotent.
    pub fn stop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        cleanup::stop_child(&mut self.child, Duration::from_secs(5));
        // Shims are started with `-address <our socket>`: that names them uniquely.
        cleanup::kill_tree_matching(&format!("-address {}", self.socket.display()));
        // Give the kernel a moment to reap the killed shims before unmounting their rootfs.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && !cleanup::pids_with_cmdline(&format!("-address {}", self.socket.display())).is_empty()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        cleanup::unmount_under(dir.path());
        if self.cri.is_some() {
            // Sandboxes CRI did not tear down (killed mid-way) leave their pinned namespace.
            for name in cri_netns().into_iter().filter(|n| !self.netns_before.contains(n)) {
                let path = Path::new("/run/netns").join(&name);
                let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(&path);
            }
        }
        if let Ok(v) = self.namespaces.lock() {
            for ns in v.iter() {
                let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(ns));
            }
        }
        let _ = dir.close();
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CRI plugin's pod network namespaces present now.
fn cri_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("cni-"))
        .collect()
}

/// Spawns containerd on `config` (inside `netns` if given), appending to `<base>/containerd.log`.
fn spawn(base: &Path, config: &Path, netns: Option<&str>) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(base.join("containerd.log"))
        .map_err(HarnessError::io("opening containerd.log"))?;
    let log2 = log.try_clone().map_err(HarnessError::io("dup containerd.log"))?;
    let mut cmd = match netns {
        Some(ns) => {
            // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts runc needs.
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).args(["--", "containerd"]);
            c
        }
        None => Command::new("containerd"),
    };
    cmd.arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(HarnessError::io(
            "spawning containerd (is the containerd package installed? run scripts/setup-host.sh)",
        ))
}

/// containerd 1.6 config (version 2) keeping every path private to `base`. The CRI plugin is off
/// unless `cri`: knode talks to containerd's own gRPC services, and CRI would otherwise read host
/// CNI config.
fn config_toml(base: &Path, cri: bool) -> String {
    let b = base.display();
    let cri_off = if cri {
        ""
    } else {
        "\n  \"io.containerd.grpc.v1.cri\","
    };
    format!(
        r#"version = 2
root = "{b}/root"
state = "{b}/state"
disabled_plugins = [{cri_off}
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]

[grpc]
  address = "{b}/c.sock"

[ttrpc]
  address = "{b}/c.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/opt"
"#
    )
}

/// The CRI plugin's section: what upstream's kubelet needs from a node's containerd, every path
/// private to `base` (CRI's own root and state dirs are under containerd's).
fn cri_toml(base: &Path, c: &CriOptions) -> String {
    let b = base.display();
    format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # runc cannot lower oom_score_adj here (EACCES even as root): keep the shim's instead of -998.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{b}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{b}/cni-bin"
    conf_dir = "{b}/cni-conf"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{reg}"]
    endpoint = ["http://{reg}"]
"#,
        sandbox = c.sandbox_image,
        reg = c.registry,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_every_path_private() {
        let cri = CriOptions {
            netns: "n".into(),
            sandbox_image: "r:5000/knode/pause:latest".into(),
            registry: "r:5000".into(),
        };
        let base = Path::new("/tmp/kn-ctd-x");
        let with_cri = config_toml(base, true) + &cri_toml(base, &cri);
        assert!(!with_cri.contains("\"io.containerd.grpc.v1.cri\","));
        for line in with_cri
            .lines()
            .filter(|l| l.contains('/') && !l.contains("r:5000"))
        {
            assert!(
                line.contains("/tmp/kn-ctd-x/"),
                "path outside the private dir: {line}"
            );
        }
        let cfg = config_toml(base, false);
        for line in cfg.lines().filter(|l| l.contains('/')) {
            assert!(
                line.contains("/tmp/kn-ctd-x/"),
                "path outside the private dir: {line}"
            );
        }
        assert!(cfg.contains("io.containerd.grpc.v1.cri"));
    }
}
