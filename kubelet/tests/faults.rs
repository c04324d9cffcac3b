#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fault injection with pods running: what upstream's kubelet promises after each fault, and that
//! nothing was lost or duplicated.
//!
//! - control plane down, then back on the same address: containers untouched, `Ready` re-posted
//!   within two `nodeStatusUpdateFrequency` periods of the API answering (even after the node
//!   lifecycle controller marked it `Unknown`), a container that exited during the outage reported.

mod common;

use std::time::{Duration, Instant};

use common::{Node, pod_yaml};

/// `Ready`'s status on the node, as the API has it.
fn ready(node: &Node) -> String {
    let (_, out, _) = node.cp.kubectl(
        &[
            "get",
            "node",
            &node.name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        None,
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_outage_node_ready_again_and_statuses_caught_up() {
    const PERIOD: Duration = Duration::from_secs(5);
    let mut node =
        Node::start_with_control_plane_flags("kl-outage", false, &["--node-monitor-grace-period=6s"]).await;
    node.reconfigure(
        "nodeStatusUpdateFrequency: 5s\nnodeStatusReportFrequency: 5m\nnodeLeaseDurationSeconds: 8\n",
        &[],
    );
    let img = node.image().to_string();
    node.apply(&pod_yaml("steady", &img, "Always", common::SLEEP_FOREVER));
    node.apply(&pod_yaml("finisher", &img, "Never", &["sleep", "12"]));
    node.wait_phase("steady", "Running");
    node.wait_phase("finisher", "Running");
    let steady_id = node.container_id("steady", "main").expect("steady runs");

    // The outage: long enough for the lease to go stale and for `finisher` to exit meanwhile.
    node.cp.stop();
    std::thread::sleep(Duration::from_secs(30));
    node.cp.restart().expect("control plane back");
    let back = Instant::now();
    // The node lifecycle controller marks the node Unknown when it sees the stale lease; whether it
    // does before the kubelet's next renewal is a race, so the test makes it certain, as the
    // controller would have.
    let (ok, _, err) = node.cp.kubectl(
        &[
            "patch",
            "node",
            &node.name,
            "--subresource=status",
            "--type=strategic",
            "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown","message":"Kubelet stopped posting node status."}]}}"#,
        ],
        None,
    );
    assert!(ok, "marking the node Unknown: {err}");
    loop {
        if ready(&node) == "True" {
            break;
        }
        assert!(
            back.elapsed() <= 2 * PERIOD,
            "Ready not re-posted within two nodeStatusUpdateFrequency periods of the API answering \
             (now {:?}); kubelet log:\n{}",
            ready(&node),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("Ready again {:?} after the API answered", back.elapsed());

    // Statuses caught up: the container that exited during the outage is reported, the running one
    // was not touched, and nothing was started twice.
    let f = node.wait_phase("finisher", "Succeeded");
    assert_eq!(
        f["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0,
        "{}",
        f["status"]
    );
    let s = node.pod("steady");
    assert_eq!(s["status"]["phase"], "Running");
    assert_eq!(
        s["status"]["containerStatuses"][0]["restartCount"], 0,
        "{}",
        s["status"]
    );
    assert_eq!(
        node.container_id("steady", "main").as_deref(),
        Some(steady_id.as_str())
    );
    assert_eq!(
        node.container_count(),
        2,
        "one container per pod, none duplicated"
    );
}
