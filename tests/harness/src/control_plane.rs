//! The accompanying control plane as a real process for other crates' e2e tests (kubelet,
//! kube-proxy): its binary on a free loopback port with a private data dir, an admin kubeconfig,
//! and kubeconfigs for node identities.
//!
//! The binary comes from the workspace's target dir (`cargo build -p knode-control-plane` — the
//! README's test command builds every target first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// A running control plane; killed on drop.
pub struct ControlPlane {
    child: Option<Child>,
    /// The network namespace the server (and `kubectl`) run in, if not the test's own.
    netns: Option<String>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Admin (`system:masters`) kubeconfig.
    pub kubeconfig: PathBuf,
    /// The extra flags it was started with (a restart passes them again).
    extra: Vec<String>,
}

/// Where the workspace's cargo puts binaries of the current profile; `KNODE_BIN_DIR` overrides it
/// (the benchmark runs release builds of the daemons from debug-built harness code).
pub fn target_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KNODE_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // Test executables live in <target>/<profile>/deps/, binaries one level up.
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else if exe.as_os_str().is_empty() {
        crate::workspace_root().join("target/debug")
    } else {
        dir.to_path_buf()
    };
    profile_dir.join(name)
}

impl ControlPlane {
    /// Starts the control plane with `extra` flags and waits until it serves.
    pub fn start(extra: &[&str]) -> Result<Self> {
        Self::start_in(None, extra)
    }

    /// Like [`ControlPlane::start`], inside network namespace `netns` (`ip netns exec`).
    pub fn start_in(netns: Option<&str>, extra: &[&str]) -> Result<Self> {
        let bin = target_bin("knode-control-plane");
        if !bin.exists() {
            return Err(HarnessError::NotReady(format!(
                "{} is missing: run `cargo build -p knode-control-plane` first",
                bin.display()
            )));
        }
        let dir = tempfile::tempdir().map_err(|e| HarnessError::NotReady(e.to_string()))?;
        let port = crate::free_port()?;
        let kubeconfig = dir.path().join("admin.conf");
        let mut cp = ControlPlane {
            child: None,
            netns: netns.map(String::from),
            dir,
            port,
            kubeconfig,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        cp.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cp.kubeconfig.exists() {
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady(format!(
                    "control plane did not start: {}",
                    cp.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(cp)
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = target_bin("knode-control-plane");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .map_err(|e| HarnessError::NotReady(e.to_string()))?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--write-kubeconfig={}", self.kubeconfig.display()))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| HarnessError::NotReady(format!("starting {}: {e}", bin.display())))?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown); its data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data, and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, _, err) = self.kubectl(&["get", "--raw", "/healthz"], None);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady(format!(
                    "control plane did not come back: {err}\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The cluster CA certificate (a kubelet's `authentication.x509.clientCAFile`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("data/pki/ca.crt")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for `user` in `groups` (e.g. `system:node:n1`, `system:nodes`).
    pub fn issue_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let out = self.dir.path().join(format!("{}.conf", user.replace(':', "_")));
        let mut cmd = Command::new(target_bin("knode-control-plane"));
        cmd.arg("issue-kubeconfig")
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--user={user}"))
            .arg(format!("--server={}", self.url()))
            .arg(format!("--out={}", out.display()));
        for g in groups {
            cmd.arg(format!("--group={g}"));
        }
        let o = cmd.output().map_err(|e| HarnessError::NotReady(e.to_string()))?;
        if !o.status.success() {
            return Err(HarnessError::NotReady(format!(
                "issue-kubeconfig: {}",
                String::from_utf8_lossy(&o.stderr)
            )));
        }
        Ok(out)
    }

    /// Runs the system kubectl with the admin kubeconfig; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "kubectl"]);
                c
            }
            None => Command::new("kubectl"),
        };
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env("HOME", self.dir.path());
        match crate::process::output_with_stdin(&mut cmd, stdin.map(str::as_bytes)) {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (false, String::new(), "kubectl not found".into())
            }
            Err(e) => (false, String::new(), e.to_string()),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
