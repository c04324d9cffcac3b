#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fault injection with pods running: what upstream's kubelet promises after each fault, and that
//! nothing was lost or duplicated.
//!
//! - control plane down (60 s; `KNODE_FAULT_OUTAGE_SECS=600` for the long mode), then back on the
//!   same address: containers untouched, `Ready` re-posted within two `nodeStatusUpdateFrequency`
//!   periods of the API answering (even after the node lifecycle controller marked it `Unknown`),
//!   a container that exited during the outage reported.
//! - containerd restarted while pods are created and deleted: no lost exit, no duplicate
//!   container, statuses right.
//! - the kubelet SIGKILLed mid image pull, mid volume setup, mid termination and mid CNI ADD, then
//!   restarted: every pod converges and, once they are deleted, nothing is left ([`Traces`]).
//! - a "reboot" (containerd, shims, containers and kubelet killed; runtime state, pinned
//!   namespaces, mounts, cgroups and the pod network gone): pods come back in new sandboxes with
//!   their restartCount raised by one, as upstream's do, and leave nothing once deleted.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::leaks::{Traces, mount_points};
use common::{Node, pod_yaml};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

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
    let outage: u64 = std::env::var("KNODE_FAULT_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    node.cp.stop();
    std::thread::sleep(Duration::from_secs(outage));
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

/// Pod names of every pod the API still has.
fn pod_names(node: &Node) -> Vec<String> {
    let out = node.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    out.split_whitespace().map(String::from).collect()
}

/// Deletes every pod and waits until the API has none and the node has no trace of any.
fn delete_all_and_assert_no_traces(node: &Node) {
    node.kubectl(&["delete", "pods", "--all", "--wait=false"]);
    node.wait_for("every pod gone from the API", 120, || {
        pod_names(node).is_empty().then_some(())
    });
    let last = std::cell::RefCell::new(Traces::default());
    knode_harness::wait_until(
        "no pod traces left",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || format!("left: {:?}\nkubelet log:\n{}", last.borrow(), node.log()),
        || {
            let t = Traces::of(node);
            let clean = t == Traces::default();
            *last.borrow_mut() = t;
            clean.then_some(())
        },
    );
}

/// The pod's containers as containerd has them: one per container name, or the test fails.
fn assert_one_container_each(node: &Node, expected: usize) {
    assert_eq!(
        node.container_count(),
        expected,
        "containers: {:?}",
        String::from_utf8_lossy(&node.ctr().args(["containers", "ls"]).output().unwrap().stdout)
    );
}

fn restart_count(p: &Value) -> i64 {
    p["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_restart_during_pod_churn_loses_no_exit_and_duplicates_nothing() {
    let mut node = Node::start("kf-ctrd").await;
    node.prepull().await;
    let img = node.image().to_string();
    for n in ["steady-0", "steady-1", "steady-2"] {
        node.apply(&pod_yaml(n, &img, "Always", common::SLEEP_FOREVER));
    }
    node.apply(&pod_yaml("finisher", &img, "Never", &["sleep", "4"]));
    for n in ["steady-0", "steady-1", "steady-2", "finisher"] {
        node.wait_phase(n, "Running");
    }
    let kept: Vec<String> = ["steady-1", "steady-2"]
        .iter()
        .map(|n| node.container_id(n, "main").unwrap())
        .collect();
    let pid = node.kubelet_pid();

    // Churn in flight: pods being created and one being deleted when containerd goes away; the
    // finisher exits while it is away.
    for i in 0..4 {
        node.apply(&pod_yaml(
            &format!("new-{i}"),
            &img,
            "Always",
            common::SLEEP_FOREVER,
        ));
    }
    node.kubectl(&["delete", "pod", "steady-0", "--wait=false"]);
    std::thread::sleep(Duration::from_millis(300));
    node.containerd.kill_daemon();
    std::thread::sleep(Duration::from_secs(6));
    node.containerd.respawn().await.unwrap();

    for i in 0..4 {
        let p = node.wait_phase(&format!("new-{i}"), "Running");
        // A start cut off by the crash leaves a created, never-started container: upstream's
        // kubelet starts a new one counting the first (restartCount 1), and so does knode.
        assert!(restart_count(&p) <= 1, "{}", p["status"]);
    }
    node.wait_for("steady-0 deleted", 90, || {
        (!pod_names(&node).contains(&"steady-0".to_string())).then_some(())
    });
    let f = node.wait_phase("finisher", "Succeeded");
    assert_eq!(
        f["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0,
        "the exit during the outage was not lost: {}",
        f["status"]
    );
    for (n, id) in ["steady-1", "steady-2"].iter().zip(&kept) {
        let p = node.pod(n);
        assert_eq!(restart_count(&p), 0, "{n}: {}", p["status"]);
        assert_eq!(node.container_id(n, "main").as_ref(), Some(id), "{n} untouched");
    }
    assert_eq!(node.kubelet_pid(), pid, "the kubelet kept running");
    // steady-1, steady-2, four new pods, and the finisher's exited container: nothing twice.
    assert_one_container_each(&node, 7);
    delete_all_and_assert_no_traces(&node);
}

/// Mount points below the pod's directory, each once.
fn assert_no_duplicate_mounts(node: &Node, pod: &str) {
    let uid = node.pod(pod)["metadata"]["uid"].as_str().unwrap().to_string();
    let mut m = mount_points(&node.dir.path().join("root/pods").join(uid));
    let n = m.len();
    m.sort();
    m.dedup();
    assert_eq!(m.len(), n, "a volume of {pod} mounted twice: {m:?}");
}

fn wait_event(node: &Node, pod: &str, reason: &str) {
    node.wait_for(&format!("event {reason} for {pod}"), 90, || {
        node.event_reasons(pod)
            .split_whitespace()
            .any(|r| r == reason)
            .then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_killed_mid_pull_mid_volume_setup_and_mid_termination_converges_without_leaks() {
    let mut node = Node::start("kf-kill").await;
    let img = node.image().to_string();

    // Mid image pull: the registry stops answering once the pull has begun.
    let registry = Pid::from_raw(node._registry.pid() as i32);
    kill(registry, Signal::SIGSTOP).unwrap();
    node.apply(&pod_yaml("puller", &img, "Always", common::SLEEP_FOREVER));
    wait_event(&node, "puller", "Pulling");
    std::thread::sleep(Duration::from_millis(500));
    node.kill_kubelet();
    kill(registry, Signal::SIGCONT).unwrap();
    node.relaunch();
    node.wait_phase("puller", "Running");

    // Mid volume setup: the pod's secret is mounted, its configMap does not exist yet.
    node.kubectl(&["create", "secret", "generic", "sec", "--from-literal=k=v"]);
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: vols}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {img}\n    args: [sleep, infinity, --exit-on-sigterm]\n    volumeMounts:\n    - {{name: sec, mountPath: /sec}}\n    - {{name: cfg, mountPath: /cfg}}\n    - {{name: scratch, mountPath: /scratch}}\n  volumes:\n  - {{name: sec, secret: {{secretName: sec}}}}\n  - {{name: cfg, configMap: {{name: late}}}}\n  - {{name: scratch, emptyDir: {{medium: Memory}}}}\n"
    ));
    wait_event(&node, "vols", "FailedMount");
    node.kill_kubelet();
    node.kubectl(&["create", "configmap", "late", "--from-literal=c=d"]);
    node.relaunch();
    node.wait_phase("vols", "Running");
    assert_no_duplicate_mounts(&node, "vols");
    let (ok, out) = node.exec("vols", "main", &["cat", "/sec/k", "/cfg/c"]);
    assert!(ok && out == "vd", "volume contents after the restart: {out:?}");

    // Mid termination: a container that ignores SIGTERM keeps its pod terminating for the grace
    // period; the kubelet dies in the middle and must finish the job after its restart.
    node.apply(
        &pod_yaml("stubborn", &img, "Always", &["sleep", "infinity"]).replace(
            "terminationGracePeriodSeconds: 5",
            "terminationGracePeriodSeconds: 8",
        ),
    );
    node.wait_phase("stubborn", "Running");
    node.kubectl(&["delete", "pod", "stubborn", "--wait=false"]);
    wait_event(&node, "stubborn", "Killing");
    node.kill_kubelet();
    node.relaunch();
    node.wait_for("stubborn removed from the API", 60, || {
        (!pod_names(&node).contains(&"stubborn".to_string())).then_some(())
    });
    // puller and vols; stubborn's container is gone with its pod.
    node.wait_for("stubborn's container removed", 30, || {
        (node.container_count() == 2).then_some(())
    });
    assert_eq!(restart_count(&node.pod("puller")), 0);
    assert_eq!(restart_count(&node.pod("vols")), 0);
    delete_all_and_assert_no_traces(&node);
}

/// `yaml` with `imagePullPolicy: IfNotPresent` on every container: a networked test node cannot
/// reach the host's loopback registry, so it runs the image it was given at start.
fn if_not_present(yaml: &str) -> String {
    yaml.replace("    image: ", "    imagePullPolicy: IfNotPresent\n    image: ")
}

/// A CNI plugin wrapper: runs the real plugin, then on ADD holds the result back while `gate`
/// exists (so the network is set up but the kubelet has not heard of it yet).
fn write_cni_gate(dir: &Path, real: &Path, gate: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!(
        "#!/bin/sh\nout=$({real}); rc=$?\nif [ \"$CNI_COMMAND\" = ADD ] && [ -e {gate} ]; then\n  touch {gate}.held\n  while [ -e {gate} ]; do sleep 0.1; done\nfi\nprintf '%s' \"$out\"\nexit $rc\n",
        real = real.display(),
        gate = gate.display()
    );
    let p = dir.join("knode-bridge");
    std::fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_killed_mid_cni_add_converges_without_leaks() {
    let mut node = Node::start_with("kf-cni", true).await;
    let img = node.image().to_string();
    let wrap = node.dir.path().join("cni-wrap");
    let gate = node.dir.path().join("gate");
    let real = knode_harness::control_plane::target_bin("knode-bridge");
    write_cni_gate(&wrap, &real, &gate);
    // The wrapper's directory first: it is found before the real plugin.
    let dirs = format!(
        "--cni-bin-dir={},{}",
        wrap.display(),
        real.parent().unwrap().display()
    );
    for a in node.args.iter_mut().filter(|a| a.starts_with("--cni-bin-dir=")) {
        *a = dirs.clone();
    }
    node.reconfigure("", &[]);
    std::fs::write(&gate, "").unwrap();
    node.apply(&if_not_present(&pod_yaml(
        "held",
        &img,
        "Always",
        common::SLEEP_FOREVER,
    )));
    let held = gate.with_extension("held");
    node.wait_for("CNI ADD in flight", 90, || held.exists().then_some(()));
    node.kill_kubelet();
    std::fs::remove_file(&gate).unwrap();
    node.relaunch();
    let p = node.wait_phase("held", "Running");
    assert_eq!(restart_count(&p), 0, "{}", p["status"]);
    let t = Traces::of(&node);
    assert_eq!(
        (t.ip_reservations, t.veths),
        (1, 1),
        "the half-made sandbox's address and veth were released: {t:?}"
    );
    delete_all_and_assert_no_traces(&node);
}

/// What a reboot does to a node: every process of the node killed, runtime state on tmpfs gone,
/// pinned namespaces, mounts and cgroups gone, the pod network's bridge and rules gone. Disk
/// state (containerd's root, the kubelet's root dir, the IPAM store) stays.
async fn reboot(node: &mut Node) {
    node.kill_kubelet();
    node.containerd.power_off();
    knode_harness::cleanup::unmount_under(node.dir.path());
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        knode_harness::cleanup::remove_cgroup_tree(&ctl.path().join("knode-test").join(&node.ns));
    }
    let ns = node.netns.as_ref().unwrap().name.clone();
    for args in [
        vec!["ip", "-n", &ns, "link", "del", "knode0"],
        vec![
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "delete",
            "table",
            "ip",
            "knode-cni",
        ],
    ] {
        let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(st.success(), "{args:?}");
    }
    node.containerd.respawn().await.unwrap();
    node.relaunch();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reboot_recreates_pods_in_new_sandboxes_and_leaks_nothing() {
    let mut node = Node::start_with("kf-boot", true).await;
    let img = node.image().to_string();
    node.kubectl(&["create", "secret", "generic", "sec", "--from-literal=k=v"]);
    node.apply(&if_not_present(&pod_yaml(
        "plain",
        &img,
        "Always",
        common::SLEEP_FOREVER,
    )));
    node.apply(&if_not_present(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: vols}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {img}\n    command: [sh, -c, 'echo start >> /data/mark; exec /testimg sleep infinity --exit-on-sigterm']\n    volumeMounts:\n    - {{name: sec, mountPath: /sec}}\n    - {{name: data, mountPath: /data}}\n  volumes:\n  - {{name: sec, secret: {{secretName: sec}}}}\n  - {{name: data, emptyDir: {{}}}}\n"
    )));
    let before: Vec<(String, Value)> = ["plain", "vols"]
        .iter()
        .map(|n| (n.to_string(), node.wait_phase(n, "Running")))
        .collect();

    reboot(&mut node).await;
    let booted = Instant::now();

    for (n, old) in &before {
        let p = node.wait_for(&format!("{n} running again after the reboot"), 120, || {
            let p = node.pod(n);
            (p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"][0]["ready"] == true
                && p["status"]["containerStatuses"][0]["containerID"]
                    != old["status"]["containerStatuses"][0]["containerID"])
                .then_some(p)
        });
        // Upstream counts the reboot as one restart of each container (its new container's
        // count is the old one's plus one).
        assert_eq!(restart_count(&p), 1, "{n}: {}", p["status"]);
        // The old container's end was never seen: containerd's CRI reports such a container
        // exited with 255, reason "Unknown".
        let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
        assert_eq!(
            (last["exitCode"].as_i64(), last["reason"].as_str()),
            (Some(255), Some("Unknown")),
            "{n}: {}\nkubelet log:\n{}",
            p["status"],
            node.log()
        );
    }
    eprintln!(
        "pods Running and Ready {:?} after the kubelet restarted",
        booted.elapsed()
    );
    // The secret is back on a new tmpfs; the emptyDir (on disk) kept the first start's line.
    let (ok, out) = node.exec("vols", "main", &["cat", "/sec/k", "/data/mark"]);
    assert!(ok && out == "vstart\nstart\n", "after the reboot: {out:?}");
    assert_no_duplicate_mounts(&node, "vols");
    let t = Traces::of(&node);
    assert_eq!(
        (t.ip_reservations, t.veths, t.tasks),
        (2, 2, 2),
        "the dead sandboxes' addresses were released: {t:?}"
    );
    delete_all_and_assert_no_traces(&node);
}
