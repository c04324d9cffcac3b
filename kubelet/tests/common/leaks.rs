//! What a node's pods leave on the host, counted: the fault and soak tests compare a node with no
//! pods against these numbers (all zero) after the fault, so a leak names its kind.

use std::path::Path;

use super::Node;

/// Host-side traces of pods on one test node. Every field is zero on a node without pods.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Traces {
    /// containerd containers in the node's namespace.
    pub containers: usize,
    /// containerd tasks (running or exited, not yet deleted).
    pub tasks: usize,
    /// Active (container rootfs) snapshots; committed image layers are not pod traces.
    pub active_snapshots: usize,
    /// Mounts under the node's directory (namespace pins, volume tmpfs, bind mounts).
    pub mounts: usize,
    /// Addresses reserved in the default network's IPAM store.
    pub ip_reservations: usize,
    /// Pod veths in the node's network namespace (networked nodes only).
    pub veths: usize,
    /// `pod<uid>` cgroups under the node's cgroup root (memory hierarchy).
    pub pod_cgroups: usize,
    /// Pod log directories under `podLogsDir`.
    pub log_dirs: usize,
    /// Per-pod directories under `<root-dir>/pods` and sandboxes under `<root-dir>/sandboxes`.
    pub pod_dirs: usize,
}

impl Traces {
    pub fn of(node: &Node) -> Traces {
        let dir = node.dir.path();
        let ctr_lines = |args: &[&str]| -> Vec<String> {
            let out = node.ctr().args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect()
        };
        Traces {
            containers: ctr_lines(&["containers", "ls", "-q"]).len(),
            // Header line first.
            tasks: ctr_lines(&["tasks", "ls"]).len().saturating_sub(1),
            active_snapshots: ctr_lines(&["snapshots", "ls"])
                .iter()
                .filter(|l| l.split_whitespace().nth(2) == Some("Active"))
                .count(),
            mounts: mount_points(dir).len(),
            ip_reservations: reserved_ips(&dir.join("ipam/knode")).len(),
            veths: node.netns.as_ref().map(|_| pod_veths(node).len()).unwrap_or(0),
            pod_cgroups: dirs_named(
                &Path::new("/sys/fs/cgroup/memory/knode-test").join(&node.ns),
                "pod",
            ),
            log_dirs: entries(&dir.join("logs")),
            pod_dirs: entries(&dir.join("root/pods")) + entries(&dir.join("root/sandboxes")),
        }
    }
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().count()).unwrap_or(0)
}

/// Mount points below `dir` in this (the host's) mount namespace, one entry per mount: a path
/// mounted twice appears twice (unlike the harness's cleanup list).
pub fn mount_points(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// IPs reserved in the host-local IPAM store `dir`.
pub fn reserved_ips(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

/// Pod veths in the node's network namespace (the harness's node0/node0p and the outside link
/// excluded).
pub fn pod_veths(node: &Node) -> Vec<String> {
    let ns = &node.netns.as_ref().expect("a networked node").name;
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
        })
        .filter(|n| !matches!(n.as_str(), "node0" | "node0p" | "to-out"))
        .collect()
}

/// Directories named `<prefix>…` anywhere below `root` (`pod` for pod cgroups).
pub fn dirs_named(root: &Path, prefix: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    n += 1;
                }
                stack.push(e.path());
            }
        }
    }
    n
}
