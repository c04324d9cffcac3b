//! The pause-less pod sandbox on the real kernel: pinned net/IPC/UTS namespaces that other processes
//! join by path (checked with `nsenter`), the hostname and loopback inside, and a teardown that leaves
//! no mount or file behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;

use knode_harness::cleanup::{mounts_under, unmount_under};
use kubelet::sandbox::{self, SandboxConfig};

struct Root(tempfile::TempDir);
impl Root {
    /// A sandbox root for a test that needs root.
    fn new() -> Root {
        knode_harness::require_root().unwrap();
        Root(tempfile::tempdir().unwrap())
    }
}
impl Drop for Root {
    fn drop(&mut self) {
        unmount_under(self.0.path());
    }
}

fn nsenter(args: &[String], cmd: &str) -> String {
    let out = Command::new("nsenter")
        .args(args)
        .args(["sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn pinned_namespaces_have_hostname_loopback_and_are_removed() {
    let root = Root::new();
    let cfg = SandboxConfig {
        id: "pod-uid-1".into(),
        hostname: "web-0".into(),
        host_network: false,
        host_ipc: false,
        host_pid: false,
    };
    let sb = sandbox::create(root.0.path(), &cfg).unwrap();
    let net = sb.net.clone().unwrap();
    let uts = sb.uts.clone().unwrap();
    let ipc = sb.ipc.clone().unwrap();
    assert_eq!(mounts_under(root.0.path()).len(), 3);
    // The pins are new namespaces, not the host's.
    assert_ne!(inode(&net), inode(Path::new("/proc/self/ns/net")));
    assert_ne!(inode(&uts), inode(Path::new("/proc/self/ns/uts")));
    assert_ne!(inode(&ipc), inode(Path::new("/proc/self/ns/ipc")));
    // The creating thread's namespaces did not leak into this process.
    assert_ne!(nix::unistd::gethostname().unwrap().to_string_lossy(), "web-0");
    let args = vec![
        format!("--net={}", net.display()),
        format!("--uts={}", uts.display()),
    ];
    assert_eq!(nsenter(&args, "hostname").trim(), "web-0");
    let lo = nsenter(&args, "ip -o link show");
    assert_eq!(lo.lines().count(), 1, "only lo in a fresh netns: {lo}");
    assert!(lo.contains("lo:") && lo.contains("UP"), "{lo}");
    // Two processes joining the pin share loopback: a listener in one is reachable from another.
    let port = 18000 + (std::process::id() % 1000) as u16;
    let mut listener = Command::new("nsenter")
        .args(&args)
        .args([
            "socat",
            &format!("TCP-LISTEN:{port},bind=127.0.0.1"),
            "SYSTEM:hostname",
        ])
        .spawn()
        .unwrap();
    let mut got = String::new();
    for _ in 0..50 {
        got = nsenter(
            &args,
            &format!("socat -T2 - TCP:127.0.0.1:{port} </dev/null 2>/dev/null || true"),
        );
        if !got.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = listener.kill();
    let _ = listener.wait();
    assert_eq!(got.trim(), "web-0");

    sandbox::teardown(root.0.path(), &cfg.id).unwrap();
    assert!(mounts_under(root.0.path()).is_empty());
    assert!(!sb.dir.exists());
    // Idempotent.
    sandbox::teardown(root.0.path(), &cfg.id).unwrap();
}

#[test]
fn host_network_pins_only_ipc() {
    let root = Root::new();
    let cfg = SandboxConfig {
        id: "hostnet".into(),
        hostname: String::new(),
        host_network: true,
        host_ipc: false,
        host_pid: true,
    };
    let sb = sandbox::create(root.0.path(), &cfg).unwrap();
    assert!(sb.net.is_none() && sb.uts.is_none());
    assert_eq!(mounts_under(root.0.path()).len(), 1);
    let ns = sb.namespaces();
    assert_eq!(ns.network, kubelet::spec::NamespaceSource::Host);
    sandbox::teardown(root.0.path(), &cfg.id).unwrap();
    assert!(mounts_under(root.0.path()).is_empty());
    assert!(!sb.dir.exists());
}
