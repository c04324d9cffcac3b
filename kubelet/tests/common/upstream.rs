//! Helpers for tests that run knode's daemons against the upstream control plane.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use knode_harness::control_plane::target_bin;
use knode_harness::netns::NodeNetns;

/// A daemon of the node, killed on drop.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(ns: &NodeNetns, bin: &str, args: &[String], log: &Path) -> Daemon {
    let file = std::fs::File::create(log).unwrap();
    Daemon(
        ns.command(target_bin(bin))
            .args(args)
            .env("RUST_LOG", "info,kube_client=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    )
}

pub fn eventually(what: &str, timeout: Duration, logs: &[&Path], mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            let tails: Vec<String> = logs
                .iter()
                .map(|l| {
                    let t = std::fs::read_to_string(l).unwrap_or_default();
                    let lines: Vec<&str> = t.lines().collect();
                    format!(
                        "== {}\n{}",
                        l.display(),
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    )
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", tails.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reads `child`'s stdout until `want` lines matched `is_match` (or 30 s), then kills it.
pub fn read_lines_then_kill(mut child: Child, want: usize, is_match: impl Fn(&str) -> bool) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while lines.iter().filter(|l: &&String| is_match(l)).count() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}
