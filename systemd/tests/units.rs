//! `systemd-analyze verify` accepts every unit and drop-in knode ships, with no warning at all
//! (verify exits 0 even on unknown keys, so its stderr must be empty too).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;

const UNITS: &[&str] = &[
    "kubelet.service",
    "kube-proxy.service",
    "knode-control-plane.service",
    "knode-hostgw.service",
];

fn units_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/units"))
}

/// Verifies `unit` inside `dir` (also on the unit search path, so drop-ins there are read).
fn verify(dir: &Path, unit: &str) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join(unit))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .expect("systemd-analyze runs (package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{unit}: {stderr}"
    );
}

#[test]
fn shipped_units_verify_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    for unit in UNITS {
        // verify also checks that ExecStart's binary exists; the daemons are not installed here,
        // so point it at /bin/true and keep every other line as shipped.
        let text = std::fs::read_to_string(units_dir().join(unit)).unwrap();
        assert!(
            text.contains("ExecStart=/usr/local/bin/"),
            "{unit}: binaries install to /usr/local/bin"
        );
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix("ExecStart=/usr/local/bin/") {
                Some(rest) => format!(
                    "ExecStart=/bin/true{}",
                    &rest[rest.find(' ').unwrap_or(rest.len())..]
                ),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(tmp.path().join(unit), text).unwrap();
        verify(tmp.path(), unit);
    }
}

#[test]
fn containerd_drop_in_verifies_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string("/lib/systemd/system/containerd.service")
        .expect("containerd's unit from the containerd package");
    std::fs::write(tmp.path().join("containerd.service"), base).unwrap();
    let dropins = tmp.path().join("containerd.service.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::copy(
        units_dir().join("containerd.service.d/10-knode.conf"),
        dropins.join("10-knode.conf"),
    )
    .unwrap();
    verify(tmp.path(), "containerd.service");
}

#[test]
fn kubelet_unit_keeps_containers_alive_and_notifies() {
    let text = std::fs::read_to_string(units_dir().join("kubelet.service")).unwrap();
    for line in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "Restart=always",
        "WatchdogSec=",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "kubelet.service lacks {line}"
        );
    }
}

#[test]
fn verify_reports_a_broken_unit() {
    // Guards the guard: a unit with an unknown key must make verify() fail.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("broken.service"),
        "[Service]\nType=notify\nExecStart=/bin/true\nBogusKey=1\n",
    )
    .unwrap();
    let r = std::panic::catch_unwind(|| verify(tmp.path(), "broken.service"));
    assert!(r.is_err(), "a unit with an unknown key passed verification");
}
