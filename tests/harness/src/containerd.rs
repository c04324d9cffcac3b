//! A private containerd for one test: own config, root, state, socket; stopped and wiped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use containerd_client::services::v1::version_client::VersionClient;
use tonic::transport::Channel;

use crate::{HarnessError, Result, cleanup};

/// A containerd process private to a test.
pub struct PrivateContainerd {
    dir: Option<tempfile::TempDir>,
    child: Child,
    socket: PathBuf,
    version: String,
    namespaces: Mutex<Vec<String>>,
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl PrivateContainerd {
    /// Starts containerd and waits (up to 30 s) until its gRPC Version call answers.
    pub async fn start() -> Result<Self> {
        crate::require_root()?;
        let dir = crate::private_dir("kn-ctd-")?;
        let base = dir.path().to_path_buf();
        let socket = base.join("c.sock");
        let config = base.join("config.toml");
        std::fs::write(&config, config_toml(&base))
            .map_err(HarnessError::io(format!("writing {}", config.display())))?;
        let child = spawn(&base, &config)?;
        let mut me = PrivateContainerd {
            dir: Some(dir),
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

    /// Starts containerd again after [`Self::stop_daemon`] and waits until it answers; it
    /// reconnects to the shims that kept running.
    pub async fn respawn(&mut self) -> Result<()> {
        let base = self.dir().to_path_buf();
        self.child = spawn(&base, &base.join("config.toml"))?;
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

/// containerd 1.6 config (version 2) keeping every path private to `base`. The CRI plugin is off:
/// knode talks to containerd's own gRPC services, and CRI would otherwise read host CNI config.
/// Spawns containerd on `config`, appending to `<base>/containerd.log`.
fn spawn(base: &Path, config: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(base.join("containerd.log"))
        .map_err(HarnessError::io("opening containerd.log"))?;
    let log2 = log.try_clone().map_err(HarnessError::io("dup containerd.log"))?;
    Command::new("containerd")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(HarnessError::io(
            "spawning containerd (is the containerd package installed? run scripts/setup-host.sh)",
        ))
}

fn config_toml(base: &Path) -> String {
    let b = base.display();
    format!(
        r#"version = 2
root = "{b}/root"
state = "{b}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_every_path_private() {
        let cfg = config_toml(Path::new("/tmp/kn-ctd-x"));
        for line in cfg.lines().filter(|l| l.contains('/')) {
            assert!(
                line.contains("/tmp/kn-ctd-x/"),
                "path outside the private dir: {line}"
            );
        }
        assert!(cfg.contains("io.containerd.grpc.v1.cri"));
    }
}
