//! Ephemeral containers on a real kubelet (control plane, private containerd, registry, kubectl):
//! `kubectl debug` adds one to a running pod through the `ephemeralcontainers` subresource; it
//! runs in the pod beside the untouched app container, shows in `ephemeralContainerStatuses`
//! only, is not restarted when it exits, more can be added after it (with `--target`, one shares
//! the app container's PID namespace), and deleting the pod removes them all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Node;
use serde_json::Value;

fn ephemeral_status<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p["status"]["ephemeralContainerStatuses"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

/// `kubectl debug target --image=<image> -c <name> <flags> -- <cmd>`.
fn debug(node: &Node, name: &str, flags: &[&str], cmd: &[&str]) {
    let image = format!("--image={}", node.image());
    let mut args = vec!["debug", "target", &image, "-c", name];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(cmd);
    node.kubectl(&args);
}

/// Waits until the ephemeral container `name` of pod `target` is in one of `states`.
fn wait_state(node: &Node, name: &str, states: &[&str]) -> Value {
    node.wait_for(&format!("{name} {states:?}"), 90, || {
        let p = node.pod("target");
        let s = ephemeral_status(&p, name)?;
        states
            .iter()
            .any(|k| s["state"][k].is_object())
            .then_some(p.clone())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_debug_runs_an_ephemeral_container_once_beside_the_untouched_app() {
    let node = Node::start("kl-ephem").await;
    let image = node.image().to_string();
    node.apply(&common::pod_yaml(
        "target",
        &image,
        "Always",
        common::SLEEP_FOREVER,
    ));
    node.wait_phase("target", "Running");
    let app_id = node.container_id("target", "main").unwrap();
    assert_eq!(node.pod("target")["metadata"]["generation"], 1);

    // The debugger prints, then fails (exit 3) a few seconds later.
    debug(
        &node,
        "debugger",
        &[],
        &["sh", "-c", "echo polo; sleep 3; exit 3"],
    );
    let p = wait_state(&node, "debugger", &["running", "terminated"]);
    assert_eq!(
        p["metadata"]["generation"], 2,
        "adding it moved the generation on"
    );
    assert_eq!(p["status"]["phase"], "Running");
    let apps = p["status"]["containerStatuses"].as_array().unwrap();
    assert_eq!(
        apps.len(),
        1,
        "only the app is a container status: {}",
        p["status"]
    );
    assert_eq!(
        node.container_id("target", "main").unwrap(),
        app_id,
        "app untouched"
    );

    // It exits 3 and stays exited: ephemeral containers are never restarted.
    let p = wait_state(&node, "debugger", &["terminated"]);
    let s = ephemeral_status(&p, "debugger").unwrap();
    assert_eq!(s["state"]["terminated"]["exitCode"], 3, "{s}");
    assert_eq!(s["state"]["terminated"]["reason"], "Error", "{s}");
    assert_eq!(s["restartCount"], 0, "{s}");
    assert_eq!(s["ready"], false, "{s}");
    assert!(
        s["containerID"].as_str().unwrap().starts_with("containerd://"),
        "{s}"
    );
    assert!(node.logs("target", "debugger").contains("polo"));
    // Its events point at it where upstream's do: spec.ephemeralContainers{debugger}.
    let events: Value = serde_json::from_str(&node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=target",
        "-o",
        "json",
    ]))
    .unwrap();
    let started: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "Started" && e["message"] == "Started container debugger")
        .collect();
    assert_eq!(started.len(), 1, "{events}");
    assert_eq!(
        started[0]["involvedObject"]["fieldPath"],
        "spec.ephemeralContainers{debugger}"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let p = node.pod("target");
    assert_eq!(ephemeral_status(&p, "debugger").unwrap()["restartCount"], 0);
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(
        ready["status"], "True",
        "a finished debugger does not make the pod unready"
    );

    // A second one beside the first; both stay in the spec and in the status.
    debug(&node, "debugger2", &[], &["sleep", "100000"]);
    let p = wait_state(&node, "debugger2", &["running"]);
    assert_eq!(p["spec"]["ephemeralContainers"].as_array().unwrap().len(), 2);
    assert_eq!(
        p["status"]["ephemeralContainerStatuses"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (ok, out) = node.exec("target", "debugger2", &["sh", "-c", "echo marco"]);
    assert!(ok && out.contains("marco"), "{out}");
    // debugger2 has a PID namespace of its own; with --target, a debugger joins the app's.
    let (_, own) = node.exec("target", "debugger2", &["cat", "/proc/1/cmdline"]);
    assert!(!own.contains("infinity"), "{own}");
    debug(&node, "debugger3", &["--target=main"], &["sleep", "100000"]);
    wait_state(&node, "debugger3", &["running"]);
    let (ok, target) = node.exec("target", "debugger3", &["cat", "/proc/1/cmdline"]);
    assert!(
        ok && target.contains("infinity"),
        "PID 1 is the app's process: {target}"
    );
    // app, debugger (exited), debugger2, debugger3.
    assert_eq!(node.container_count(), 4);

    node.kubectl(&["delete", "pod", "target", "--wait=false"]);
    node.wait_for("the pod gone", 120, || {
        (node.kubectl(&["get", "pods", "-o", "name"]).trim().is_empty()).then_some(())
    });
    node.wait_for("every container removed", 60, || {
        (node.container_count() == 0).then_some(())
    });
}
