//! Graceful node shutdown (kubernetes#107043 semantics) with the real kubelet binary, control plane
//! and containerd: on SIGTERM with `shutdownGracePeriod` set, regular pods are terminated first and
//! critical pods last, each reported Failed/Terminated as upstream; with the default (0) the kubelet
//! exits and the containers keep running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Node;
use serde_json::Value;

/// The notifications the kubelet sent to its NOTIFY_SOCKET so far.
fn notifications(node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = node.notify.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

/// Restarts the kubelet with `extra` appended to its KubeletConfiguration and waits for READY=1.
fn relaunch_with(node: &mut Node, extra: &str) {
    node.kill_kubelet();
    let cfg = node.dir.path().join("kubelet-config.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(extra);
    std::fs::write(&cfg, text).unwrap();
    notifications(node);
    node.launch();
    let mut seen = Vec::new();
    node.eventually("READY=1 from the restarted kubelet", || {
        seen.extend(notifications(node));
        seen.iter().any(|m| m.contains("READY=1"))
    });
}

/// Sends SIGTERM to the kubelet and waits for it to exit; returns how long that took.
fn sigterm_and_wait(node: &mut Node) -> Duration {
    let mut child = node.kubelet.take().unwrap();
    let started = Instant::now();
    // SAFETY: kill(2) on our own child's PID.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "kubelet exit status {status}\n{}", node.log());
    started.elapsed()
}

/// `ctr tasks ls` of the node's namespace: (container id, status).
fn tasks(node: &Node) -> Vec<(String, String)> {
    let out = node.ctr().args(["tasks", "ls"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(2)?.to_string()))
        })
        .collect()
}

fn pod(name: &str, image: &str, priority: Option<i64>, grace: i64, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    let priority = priority.map(|p| format!("  priority: {p}\n")).unwrap_or_default();
    // A pod that runs to completion must not be restarted.
    let restart = if args.first().is_some_and(|a| a == "\"exit\"") {
        "Never"
    } else {
        "Always"
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{priority}  restartPolicy: {restart}\n  terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: main\n    image: {image}\n    args: [{}]\n",
        args.join(", ")
    )
}

fn finished_at(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("not terminated: {p}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_without_grace_period_exits_and_leaves_pods_running() {
    let mut node = Node::start("kl-sd0").await;
    let image = node.image().to_string();
    node.apply(&pod("keeper", &image, None, 30, &["sleep", "infinity"]));
    let before = node.wait_phase("keeper", "Running");
    let id = before["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    notifications(&node);
    let took = sigterm_and_wait(&mut node);
    println!("kubelet exit after SIGTERM (no grace period): {took:?}");
    assert!(
        notifications(&node).iter().any(|m| m.contains("STOPPING=1")),
        "STOPPING=1 sent"
    );
    assert!(
        tasks(&node).iter().any(|(c, s)| *c == id && s == "RUNNING"),
        "the container keeps running: {:?}",
        tasks(&node)
    );
    let after = node.pod("keeper");
    assert_eq!(after["status"]["phase"], "Running");
    assert!(after["status"]["reason"].is_null(), "{after}");
    assert!(node.log().contains("pods keep running"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_grace_period_terminates_regular_then_critical_pods() {
    let mut node = Node::start("kl-sd1").await;
    relaunch_with(
        &mut node,
        "shutdownGracePeriod: 12s\nshutdownGracePeriodCriticalPods: 4s\n",
    );
    let image = node.image().to_string();
    // The regular pod ignores SIGTERM and asks for 30 s: the regular stage's 8 s cap it (SIGKILL).
    node.apply(&pod("regular", &image, None, 30, &["sleep", "infinity"]));
    // The critical pod exits on SIGTERM: it must get it only after the regular pod is gone.
    node.apply(&pod(
        "critical",
        &image,
        Some(2_000_001_000),
        30,
        common::SLEEP_FOREVER,
    ));
    // A pod that already completed is left alone.
    node.apply(&pod("done", &image, None, 30, &["exit", "0"]));
    node.wait_phase("regular", "Running");
    node.wait_phase("critical", "Running");
    let done_before = node.wait_phase("done", "Succeeded");

    let took = sigterm_and_wait(&mut node);
    println!("graceful node shutdown (12 s period, 8 s for regular pods) took {took:?}");

    for name in ["regular", "critical"] {
        let p = node.pod(name);
        assert_eq!(p["status"]["phase"], "Failed", "{name}: {p}\n{}", node.log());
        assert_eq!(p["status"]["reason"], "Terminated", "{name}");
        assert_eq!(
            p["status"]["message"], "Pod was terminated in response to imminent node shutdown.",
            "{name}"
        );
        let conds = p["status"]["conditions"].as_array().unwrap();
        let dt = conds
            .iter()
            .find(|c| c["type"] == "DisruptionTarget")
            .unwrap_or_else(|| panic!("{name}: no DisruptionTarget condition: {p}"));
        assert_eq!(dt["status"], "True");
        assert_eq!(dt["reason"], "TerminationByKubelet");
        assert!(p["metadata"]["deletionTimestamp"].is_null(), "not deleted");
    }
    let regular = node.pod("regular");
    let critical = node.pod("critical");
    assert_eq!(
        regular["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 137,
        "SIGTERM-ignoring regular pod was killed at its stage's end"
    );
    // RFC 3339 UTC seconds compare as strings.
    assert!(
        finished_at(&critical) >= finished_at(&regular),
        "critical pod stopped after the regular one: {} vs {}",
        finished_at(&critical),
        finished_at(&regular)
    );
    let log = std::fs::read_to_string(node.dir.path().join("kubelet.log")).unwrap();
    let pos = |needle: &str| {
        log.lines()
            .position(|l| l.contains("pod stopped for the node shutdown") && l.contains(needle))
            .unwrap_or_else(|| panic!("no shutdown line for {needle}:\n{}", node.log()))
    };
    assert!(pos("default/regular") < pos("default/critical"));
    // The completed pod was not touched; no container is left running, none was removed.
    assert_eq!(node.pod("done")["status"], done_before["status"]);
    assert!(
        tasks(&node).iter().all(|(_, s)| s != "RUNNING"),
        "{:?}",
        tasks(&node)
    );
    assert_eq!(node.container_count(), 3, "stopped containers are kept");
}
