//! knode installed as systemd services under a real systemd as PID 1: this machine's own Debian
//! tree booted with `systemd-nspawn --volatile=yes` (tmpfs root, the host's /usr read-only, a
//! writable overlay on /usr/local, a private network namespace). Inside it the install script
//! installs the cargo-built binaries, units and defaults; the control plane, Debian's containerd,
//! the kubelet and kube-proxy run as units; `systemctl is-active` must say `active` (Type=notify:
//! only after READY=1) and the node must turn Ready; `--uninstall` must then leave no knode file.
//!
//! Needs root, `systemd-nspawn` (package systemd-container) and the daemons built
//! (`cargo build -p kubelet -p kube-proxy -p knode-control-plane -p cni --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::BINS;

/// Where cargo put the daemons: test executables live in `<target>/<profile>/deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn src_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A booted container; powered off (and, failing that, killed) on drop.
struct Machine {
    name: String,
    nspawn: Child,
    leader: u32,
    /// The kubelet's `--cgroup-root` (the controllers show the host's hierarchy).
    cgroup_root: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Machine {
    fn boot(name: &str) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let nspawn = Command::new("systemd-nspawn")
            .args(["-D", "/", "--volatile=yes", "--register=no", "--keep-unit"])
            .arg("--private-network")
            .args(["-M", name])
            // /usr is the host's, read-only: give /usr/local a writable overlay (a temp dir the
            // container's shutdown removes) so the installer can use its real paths.
            .arg("--overlay=/usr/local::/usr/local")
            .arg(format!("--bind-ro={}:/knode/src", src_dir().display()))
            .arg(format!("--bind-ro={}:/knode/bin", bin_dir().display()))
            // With only a loopback (--private-network) nothing ever gets "online": without the
            // mask, network-online.target (which the units order after) waits for
            // systemd-networkd-wait-online's 2-minute timeout.
            .args([
                "-b",
                "systemd.firstboot=off",
                "systemd.mask=systemd-networkd-wait-online.service",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("systemd-nspawn runs (package systemd-container)");
        let mut m = Machine {
            name: name.to_string(),
            leader: 0,
            cgroup_root: format!("/{name}"),
            nspawn,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while m.leader == 0 {
            assert!(
                Instant::now() < deadline,
                "no container init under systemd-nspawn:\n{}",
                m.console()
            );
            if let Some(status) = m.nspawn.try_wait().unwrap() {
                panic!("systemd-nspawn exited: {status}\n{}", m.console());
            }
            m.leader = find_leader(m.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `script` with sh inside the container (all its namespaces): (success, stdout+stderr).
    fn sh(&self, script: &str) -> (bool, String) {
        let t = Instant::now();
        let out = Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "--"])
            .args(["/usr/bin/env", "-i"])
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("KUBECONFIG=/etc/kubernetes/admin.conf")
            .args(["/bin/sh", "-c", script])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let short: String = script.chars().take(70).collect();
        eprintln!("[{:>6.2?}] {short}", t.elapsed());
        (out.status.success(), text)
    }

    /// Like [`Machine::sh`], failing the test (with the units' journal) when the script fails.
    fn run(&self, script: &str) -> String {
        let (ok, out) = self.sh(script);
        assert!(
            ok,
            "in {}: `{script}` failed:\n{out}\n{}",
            self.name,
            self.journal()
        );
        out
    }

    /// Waits until `script` succeeds.
    fn wait(&self, what: &str, secs: u64, script: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (ok, out) = self.sh(script);
            if ok {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "in {}: timed out waiting for {what} (`{script}`: {out})\n{}",
                self.name,
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn journal(&self) -> String {
        self.sh("journalctl --no-pager -n 60 -u knode-control-plane -u kubelet -u kube-proxy -u containerd 2>&1; systemctl --no-pager status kubelet kube-proxy 2>&1 | head -30")
            .1
    }

    /// Files under the directories the installer writes to (knode's or not), for a before/after
    /// comparison.
    fn files(&self) -> BTreeSet<String> {
        self.run("find /etc /usr/local /opt /var/lib/knode /var/lib/kubelet /var/log/pods /var/lib/cni -xdev \\( -type f -o -type l \\) 2>/dev/null | sort; true")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The container's init: the process whose innermost PID is 1, below `nspawn`.
fn find_leader(nspawn: u32) -> Option<u32> {
    let mut frontier = vec![nspawn];
    let mut all: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        all.push((pid, ppid));
    }
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &all {
            if ppid != p {
                continue;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
            let nspid: Vec<&str> = nspid.map(|v| v.split_whitespace().collect()).unwrap_or_default();
            if nspid.len() > 1 && nspid.last() == Some(&"1") {
                return Some(pid);
            }
            frontier.push(pid);
        }
    }
    None
}

impl Drop for Machine {
    fn drop(&mut self) {
        // An orderly poweroff first (SIGTERM makes nspawn ask the container's systemd to halt),
        // then SIGKILL of the container's PID 1 (which takes its whole PID namespace with it).
        // SAFETY: kill(2) on processes this test started.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.nspawn.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if self.nspawn.try_wait().ok().flatten().is_none() {
            if self.leader != 0 {
                unsafe { libc::kill(self.leader as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(500));
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        // nspawn's propagation directory and anything mounted for this machine.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut leftover: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.contains(&self.name))
            .collect();
        leftover.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in leftover {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = std::fs::remove_dir(format!("/run/systemd/nspawn/propagate/{}", self.name));
        for ctl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_tree(&ctl.path().join(self.cgroup_root.trim_start_matches('/')));
        }
    }
}

#[test]
fn installed_units_run_under_systemd_and_uninstall_leaves_nothing() {
    assert!(
        nix_is_root(),
        "this test boots a container with systemd-nspawn: run it as root"
    );
    for b in BINS {
        assert!(
            bin_dir().join(b).exists(),
            "{} missing: cargo build -p kubelet -p kube-proxy -p knode-control-plane -p cni --bins",
            bin_dir().join(b).display()
        );
    }
    let started = Instant::now();
    let name = format!("knode-e2e-{}", std::process::id());
    let m = Machine::boot(&name);
    // `running` or `degraded` (a host unit that cannot work in a container is not ours to judge).
    m.wait(
        "the container's systemd to finish booting",
        60,
        "s=$(systemctl is-system-running 2>/dev/null); [ \"$s\" = running ] || [ \"$s\" = degraded ]",
    );
    let booted = started.elapsed();
    // nspawn mounts the cgroup v1 controllers read-only, and without a cgroup namespace for v1
    // they show the host's whole hierarchy: make them writable and keep this kubelet's pods'
    // cgroups under a root of its own (removed again on drop).
    m.run("for c in /sys/fs/cgroup/*/; do mount -o remount,bind,rw \"$c\" || true; done");
    let before = m.files();

    // Install exactly as an operator would, from the source tree and the built binaries.
    let out = m.run("bash /knode/src/install.sh --bin-dir /knode/bin");
    assert!(out.contains("installed into /"), "{out}");
    let manifest: Vec<String> = m
        .run("cat /var/lib/knode/install-manifest")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert!(
        manifest.iter().any(|p| p == "/usr/local/bin/kubelet"),
        "{manifest:?}"
    );
    assert_eq!(
        m.run("sysctl -n net.ipv4.ip_forward").trim(),
        "1",
        "the installer turns on forwarding"
    );

    // Single-node cluster: the control plane unit, then the node's kubeconfigs from its CA
    // (what `kubeadm join` would bring on a multi-node cluster: see systemd/README.md).
    m.run("systemctl start knode-control-plane");
    assert_eq!(m.run("systemctl is-active knode-control-plane").trim(), "active");
    m.wait("the admin kubeconfig", 30, "test -s /etc/kubernetes/admin.conf");
    let node = m.run("hostname").trim().to_lowercase();
    for conf in ["kubelet.conf", "kube-proxy.conf"] {
        m.run(&format!(
            "knode-control-plane issue-kubeconfig --data-dir /var/lib/knode/control-plane \
             --user system:node:{node} --group system:nodes --server https://127.0.0.1:6443 \
             --out /etc/kubernetes/{conf}"
        ));
    }
    m.run("cp /var/lib/knode/control-plane/pki/ca.crt /etc/kubernetes/pki/ca.crt");
    // The operator's flags go in the EnvironmentFile; an edited one survives --uninstall.
    m.run(&format!(
        "echo 'KUBELET_ARGS=\"--cgroup-root={}\"' > /etc/default/kubelet",
        m.cgroup_root
    ));
    m.wait("containerd", 30, "systemctl is-active containerd");

    m.run("systemctl enable --now kubelet kube-proxy knode-hostgw");
    // Type=notify: `active` only once the daemon sent READY=1 (knode-hostgw: once started).
    m.wait(
        "kubelet, kube-proxy and knode-hostgw active",
        60,
        "[ \"$(systemctl is-active kubelet kube-proxy knode-hostgw | sort -u)\" = active ]",
    );
    m.wait(
        "knode-hostgw watching Nodes",
        30,
        "journalctl -u knode-hostgw --no-pager | grep -q 'watching Nodes'",
    );
    m.wait(
        &format!("node {node} Ready"),
        60,
        &format!(
            "kubectl get node {node} -o jsonpath='{{.status.conditions[?(@.type==\"Ready\")].status}}' | grep -qx True"
        ),
    );
    let ready = started.elapsed();
    let status = m.run("systemctl show kubelet -p StatusText -p NRestarts -p WatchdogUSec");
    assert!(
        status.contains(&format!("StatusText=node {node} registered")),
        "{status}"
    );
    assert!(status.contains("NRestarts=0"), "{status}");
    assert!(status.contains("WatchdogUSec=1min"), "{status}");
    let kp = m.run("systemctl show kube-proxy -p StatusText -p NRestarts");
    assert!(kp.contains("NRestarts=0"), "{kp}");
    println!("kubelet: {status}kube-proxy: {kp}");
    // The watchdog keeps being fed: still active, never restarted, well after start.
    assert_eq!(
        m.run("systemctl is-active kubelet kube-proxy")
            .lines()
            .collect::<Vec<_>>(),
        vec!["active", "active"]
    );

    // Uninstall: every file the installer added is gone; what remains is the operator's
    // kubeconfigs and the cluster's/pods' data, and --purge removes the data too.
    let out = m.run("bash /knode/src/install.sh --uninstall");
    assert!(out.contains("uninstalled"), "{out}");
    assert!(out.contains("kept your modified /etc/default/kubelet"), "{out}");
    assert_eq!(
        m.run("systemctl is-active kubelet kube-proxy knode-control-plane || true")
            .lines()
            .collect::<Vec<_>>(),
        vec!["inactive"; 3]
    );
    let after = m.files();
    for p in manifest.iter().filter(|p| *p != "/etc/default/kubelet") {
        assert!(!after.contains(p), "{p} left behind by --uninstall");
    }
    let added: Vec<&String> = after.difference(&before).collect();
    for f in &added {
        assert!(
            f.starts_with("/etc/kubernetes/")
                || *f == "/etc/default/kubelet"
                || f.starts_with("/var/lib/kubelet/")
                || f.starts_with("/var/lib/knode/control-plane/"),
            "{f} left behind by --uninstall (all new files: {added:?})"
        );
    }
    m.run("bash /knode/src/install.sh --uninstall --purge");
    m.run("rm -f /etc/kubernetes/admin.conf /etc/kubernetes/kubelet.conf /etc/kubernetes/kube-proxy.conf /etc/kubernetes/pki/ca.crt");
    let after = m.files();
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "left behind after --purge: {added:?}");
    println!(
        "nspawn e2e: booted in {booted:?}, node Ready {ready:?} after start, total {:?}",
        started.elapsed()
    );
}

/// Removes an (empty) cgroup tree, deepest first.
fn remove_tree(p: &Path) {
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(p);
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
