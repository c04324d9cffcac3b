//! A control plane started as its real binary on a free loopback port with its own data dir, and
//! the real kubectl (several versions) pointed at it through the admin kubeconfig it writes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    extra_args: Vec<String>,
}

fn free_port() -> u16 {
    knode_harness::free_port().unwrap()
}

/// The directory holding `kubectl` and its versioned siblings (`kubectl.1.27` …).
pub fn kubectl_dir() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .unwrap();
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.parent().unwrap().to_path_buf()
}

/// A specific kubectl minor version, e.g. `kubectl_version("1.27")`.
pub fn kubectl_version(minor: &str) -> PathBuf {
    kubectl_dir().join(format!("kubectl.{minor}"))
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            child: None,
            port: free_port(),
            kubeconfig: dir.path().join("admin.conf"),
            kubectl: kubectl_version("1.33"),
            dir,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        c.launch();
        c
    }

    fn launch(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_knode-control-plane"))
            .arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--write-kubeconfig={}", self.kubeconfig.display()))
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.kubeconfig.exists() {
            assert!(
                Instant::now() < deadline,
                "control plane did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The namespace controller creates `default`'s ServiceAccount right after start.
        self.eventually("default service account", || {
            self.kubectl(&["get", "serviceaccount", "default", "-n", "default", "-o", "name"])
                .status
                .success()
        });
    }

    /// Stops the server (SIGKILL: a crash) and starts it again on the same data dir and port.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.launch();
    }

    /// The server's PID (memory measurements).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The server's resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubectl, &self.kubeconfig, args, None)
    }

    /// Runs kubectl feeding `stdin`.
    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> Output {
        self.kubectl_with(&self.kubectl, &self.kubeconfig, args, Some(stdin))
    }

    pub fn kubectl_with(&self, bin: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .env("HOME", self.dir.path());
        knode_harness::process::output_with_stdin(&mut cmd, stdin.map(str::as_bytes)).unwrap()
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.succeeded(args, self.kubectl(args))
    }

    /// kubectl with stdin that must succeed.
    pub fn ok_in(&self, args: &[&str], stdin: &str) -> String {
        self.succeeded(args, self.kubectl_in(args, stdin))
    }

    /// The stdout of a kubectl run that must have succeeded.
    fn succeeded(&self, args: &[&str], out: Output) -> String {
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nserver log tail: {}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log())
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// kubectl that must fail; returns stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_with(&self.kubectl, &self.kubeconfig, args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `kubectl get -o json` parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Polls `cond` for up to 30 s.
    pub fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nserver log tail: {}",
                tail(&self.log())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Issues a kubeconfig for another identity through the binary's `issue-kubeconfig`.
    pub fn issue_kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let out = self.dir.path().join(format!("{}.conf", user.replace(':', "_")));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_knode-control-plane"));
        cmd.arg("issue-kubeconfig")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--user={user}"))
            .arg(format!("--server=https://127.0.0.1:{}", self.port))
            .arg(format!("--out={}", out.display()));
        for g in groups {
            cmd.arg(format!("--group={g}"));
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "issue-kubeconfig: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    /// Registers a fake Ready node (status through the status subresource, as a kubelet does).
    pub fn add_ready_node(&self, name: &str, cpu: &str, memory: &str, pods: &str) {
        self.ok_in(
            &["apply", "-f", "-"],
            &format!("{{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{{\"name\":\"{name}\",\"labels\":{{\"kubernetes.io/hostname\":\"{name}\"}}}}}}"),
        );
        let status = format!(
            "{{\"status\":{{\"capacity\":{{\"cpu\":\"{cpu}\",\"memory\":\"{memory}\",\"pods\":\"{pods}\"}},\"allocatable\":{{\"cpu\":\"{cpu}\",\"memory\":\"{memory}\",\"pods\":\"{pods}\"}},\"conditions\":[{{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"KubeletReady\",\"message\":\"kubelet is posting ready status\",\"lastHeartbeatTime\":\"{now}\",\"lastTransitionTime\":\"{now}\"}}],\"nodeInfo\":{{\"kubeletVersion\":\"v1.33.0-knode\",\"containerRuntimeVersion\":\"containerd://1.6.20\",\"osImage\":\"Debian GNU/Linux 12 (bookworm)\",\"kernelVersion\":\"6.1.0\",\"architecture\":\"amd64\",\"operatingSystem\":\"linux\",\"machineID\":\"\",\"systemUUID\":\"\",\"bootID\":\"\",\"kubeProxyVersion\":\"\"}},\"addresses\":[{{\"type\":\"InternalIP\",\"address\":\"127.0.0.1\"}},{{\"type\":\"Hostname\",\"address\":\"{name}\"}}]}}}}",
            now = now_rfc3339()
        );
        self.ok(&[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }
}

/// A kube-rs client with the admin kubeconfig.
pub async fn client(c: &Cluster) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

pub fn now_rfc3339() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
