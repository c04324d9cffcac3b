//! The install script behaves like a package: installs binaries, units and defaults; is idempotent;
//! keeps a config the user changed; `--uninstall` removes what it added and leaves pods' data alone
//! unless `--purge`. Runs against a temp `--root`, never the real system.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::BINS;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh")
}

fn run(args: &[&str]) -> String {
    let out = Command::new("bash").arg(script()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh {args:?} failed: {text}");
    text
}

/// Every regular file and symlink under `root`, relative, sorted.
fn files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn install_is_idempotent_keeps_user_config_and_uninstalls_cleanly() {
    let bins = tempfile::tempdir().unwrap();
    for b in BINS {
        let p = bins.path().join(b);
        std::fs::write(&p, format!("#!/bin/sh\necho {b}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let b = bins.path().to_str().unwrap();

    run(&["--root", r, "--bin-dir", b, "--no-reload"]);
    let installed = files(root.path());
    for want in [
        "usr/local/bin/kubelet",
        "usr/local/bin/kube-proxy",
        "usr/local/bin/knode-control-plane",
        "opt/cni/bin/knode-bridge",
        "etc/systemd/system/kubelet.service",
        "etc/systemd/system/kube-proxy.service",
        "etc/systemd/system/knode-control-plane.service",
        "etc/systemd/system/knode-hostgw.service",
        "usr/local/bin/knode-hostgw",
        "etc/default/knode-hostgw",
        "etc/systemd/system/containerd.service.d/10-knode.conf",
        "etc/knode/kubelet-config.yaml",
        "etc/knode/kube-proxy-config.yaml",
        "etc/default/kubelet",
        "etc/knode/10-knode.conflist",
        "etc/sysctl.d/90-knode.conf",
        "var/lib/knode/install-manifest",
    ] {
        assert!(
            installed.contains(&want.to_string()),
            "{want} not installed: {installed:?}"
        );
    }
    let mode = std::fs::metadata(root.path().join("usr/local/bin/kubelet"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // Second run: same files, nothing kept aside.
    run(&["--root", r, "--bin-dir", b, "--no-reload"]);
    assert_eq!(files(root.path()), installed);

    // A user edit survives a re-install; the shipped version lands beside it.
    let cfg = root.path().join("etc/knode/kubelet-config.yaml");
    std::fs::write(&cfg, "# mine\n").unwrap();
    let out = run(&["--root", r, "--bin-dir", b, "--no-reload"]);
    assert!(out.contains("kept your /etc/knode/kubelet-config.yaml"), "{out}");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "# mine\n");
    assert!(
        root.path()
            .join("etc/knode/kubelet-config.yaml.knode-new")
            .exists()
    );

    // Pods' data is not the installer's to remove.
    let pod_data = root.path().join("var/lib/kubelet/pods/uid-1/volumes/x");
    std::fs::create_dir_all(pod_data.parent().unwrap()).unwrap();
    std::fs::write(&pod_data, "data").unwrap();

    run(&["--root", r, "--uninstall", "--no-reload"]);
    assert_eq!(
        files(root.path()),
        vec![
            "etc/knode/kubelet-config.yaml".to_string(),
            "var/lib/kubelet/pods/uid-1/volumes/x".to_string()
        ],
        "uninstall leaves only the user's config and pods' data"
    );

    // Uninstall again is harmless; --purge alone removes the config and data kept before.
    run(&["--root", r, "--uninstall", "--no-reload"]);
    run(&["--root", r, "--uninstall", "--purge", "--no-reload"]);
    assert_eq!(files(root.path()), Vec::<String>::new());
    // --purge after a reinstall removes everything, the pods' data included.
    std::fs::create_dir_all(pod_data.parent().unwrap()).unwrap();
    std::fs::write(&pod_data, "data").unwrap();
    run(&["--root", r, "--bin-dir", b, "--no-reload"]);
    run(&["--root", r, "--uninstall", "--purge", "--no-reload"]);
    assert_eq!(files(root.path()), Vec::<String>::new());
}

#[test]
fn missing_binaries_fail_with_a_clear_message() {
    let root = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(script())
        .args([
            "--root",
            root.path().to_str().unwrap(),
            "--bin-dir",
            empty.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubelet not found"));
    assert_eq!(
        files(root.path()),
        Vec::<String>::new(),
        "a failed install writes nothing"
    );
}
