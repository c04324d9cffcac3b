//! The kubelet as a real process against knode's control plane, a private containerd and a local
//! registry, driven by the real kubectl — modelled on upstream's node conformance tests: pods run to
//! Running and Succeeded, restart policies and exit codes, init containers, command/args/env and the
//! downward API seen inside the container, termination messages, CrashLoopBackOff, graceful
//! deletion, static pods with mirror pods, node Ready with a renewing lease, and a malformed pod
//! failing alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Node, pod_yaml};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_to_running_then_succeeded_with_upstream_status() {
    let node = Node::start("kl-run").await;
    node.apply(&pod_yaml("sleeper", node.image(), "Never", &["sleep", "3"]));
    let p = node.wait_phase("sleeper", "Running");
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["ready"], true);
    assert!(cs["state"]["running"]["startedAt"].is_string());
    assert!(cs["containerID"].as_str().unwrap().starts_with("containerd://"));
    assert_eq!(p["status"]["hostIP"], "127.0.0.1");
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    let p = node.wait_phase("sleeper", "Succeeded");
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(0), Some("Completed"))
    );
    let conds: Vec<(String, String)> = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(conds.contains(&("Ready".into(), "False".into())), "{conds:?}");
    assert!(
        conds.contains(&("Initialized".into(), "True".into())),
        "{conds:?}"
    );
    let events = node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=sleeper",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    for r in ["Scheduled", "Pulling", "Pulled", "Created", "Started"] {
        assert!(events.split(' ').any(|e| e == r), "event {r} missing: {events}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_and_exit_codes_give_upstream_phases() {
    let node = Node::start("kl-restart").await;
    node.apply(&pod_yaml("never-fail", node.image(), "Never", &["exit", "3"]));
    node.apply(&pod_yaml(
        "onfailure-ok",
        node.image(),
        "OnFailure",
        &["exit", "0"],
    ));
    node.apply(&pod_yaml(
        "onfailure-fail",
        node.image(),
        "OnFailure",
        &["exit", "1"],
    ));
    let p = node.wait_phase("never-fail", "Failed");
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error"))
    );
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    node.wait_phase("onfailure-ok", "Succeeded");
    node.eventually("onfailure-fail restarts", || {
        node.pod("onfailure-fail")["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let p = node.pod("onfailure-fail");
    assert_eq!(
        p["status"]["phase"], "Running",
        "OnFailure keeps restarting a failing container"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_env_downward_api_and_termination_messages() {
    let node = Node::start("kl-init").await;
    node.kubectl(&["create", "configmap", "cfg", "--from-literal=color=blue"]);
    let img = node.image();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: inputs, labels: {{app: inputs}}}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: first, image: {img}, args: ["termination-message", "init-1-done", "--code", "0"]}}
  - {{name: second, image: {img}, args: ["exit", "0"]}}
  containers:
  - name: main
    image: {img}
    command: ["/testimg"]
    args: ["env"]
    env:
    - {{name: GREETING, value: hello}}
    - {{name: COMBINED, value: "$(GREETING)-$(COLOR)"}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
    envFrom:
    - configMapRef: {{name: cfg}}
      prefix: ""
"#
    ));
    // envFrom defines COLOR before env is expanded? No: upstream expands env against envFrom vars.
    let p = node.wait_phase("inputs", "Succeeded");
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[0]["state"]["terminated"]["message"], "init-1-done");
    let env = node.logs("inputs", "main");
    for want in [
        "GREETING=hello",
        "color=blue",
        "POD_NAME=inputs",
        &format!("NODE={}", node.name),
        "APP=inputs",
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing from env:\n{env}");
    }
    // A failing init container with restartPolicy Never fails the pod; the app never starts.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: badinit}}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - {{name: boom, image: {img}, args: [\"exit\", \"2\"]}}\n  containers:\n  - {{name: main, image: {img}, args: [\"sleep\", \"30\"]}}\n"
    ));
    let p = node.wait_phase("badinit", "Failed");
    // A container running as a non-root user writes its termination message: upstream creates the
    // host file with mode 0666 whatever the kubelet's umask.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: nonroot-msg}}\nspec:\n  restartPolicy: Never\n  securityContext: {{runAsUser: 1000, runAsGroup: 1000}}\n  containers:\n  - {{name: main, image: {img}, args: [\"termination-message\", \"written-by-1000\", \"--code\", \"3\"]}}\n"
    ));
    let m = node.wait_phase("nonroot-msg", "Failed");
    let term = &m["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 3, "{}", m["status"]);
    assert_eq!(term["message"], "written-by-1000", "{}", m["status"]);
    assert!(
        p["status"]["containerStatuses"][0]["state"]["running"].is_null(),
        "app container never ran: {}",
        p["status"]
    );
    // FallbackToLogsOnError takes the log tail as the message.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: fromlogs}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"echo last words; exit 4\"]\n    terminationMessagePolicy: FallbackToLogsOnError\n"
    ));
    let p = node.wait_phase("fromlogs", "Failed");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["message"],
        "last words"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_backoff_shows_and_delays_grow() {
    let node = Node::start("kl-crash").await;
    node.apply(&pod_yaml("crasher", node.image(), "Always", &["exit", "1"]));
    node.eventually("CrashLoopBackOff", || {
        node.pod("crasher")["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CrashLoopBackOff"
    });
    let delay = |node: &Node| -> Option<u64> {
        let p = node.pod("crasher");
        let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()?
            .to_string();
        assert!(
            msg.contains("s restarting failed container=main pod=crasher_default("),
            "{msg}"
        );
        msg.strip_prefix("back-off ")?.split('s').next()?.parse().ok()
    };
    // The first back-off seen is 10 s (20 s if a loaded machine let the first one pass unobserved);
    // the next one doubles.
    let first = delay(&node).unwrap();
    assert!(first == 10 || first == 20, "first back-off {first}s");
    node.eventually("a longer back-off", || {
        delay(&node).is_some_and(|d| d == first * 2)
    });
    let events = node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crasher,reason=BackOff",
        "-o",
        "name",
    ]);
    assert!(!events.trim().is_empty(), "BackOff event recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_deletion_kills_and_removes_the_pod() {
    let node = Node::start("kl-delete").await;
    node.apply(&pod_yaml("victim", node.image(), "Always", common::SLEEP_FOREVER));
    node.wait_phase("victim", "Running");
    assert_eq!(node.container_count(), 1);
    let started = Instant::now();
    node.kubectl(&["delete", "pod", "victim", "--wait=false"]);
    node.eventually("pod gone", || !node.cp.kubectl(&["get", "pod", "victim"], None).0);
    assert!(started.elapsed() < Duration::from_secs(60));
    node.eventually("containers removed", || node.container_count() == 0);
    // A SIGTERM-ignoring container is killed after the grace period.
    node.apply(&pod_yaml(
        "stubborn",
        node.image(),
        "Always",
        &["sleep", "infinity"],
    ));
    node.wait_phase("stubborn", "Running");
    node.kubectl(&["delete", "pod", "stubborn", "--grace-period=2", "--wait=false"]);
    node.eventually("stubborn gone", || {
        !node.cp.kubectl(&["get", "pod", "stubborn"], None).0
    });
    node.eventually("containers removed", || node.container_count() == 0);
    // A force-deleted pod (gone from the API at once) still has its containers killed and removed.
    node.apply(&pod_yaml("forced", node.image(), "Always", common::SLEEP_FOREVER));
    node.wait_phase("forced", "Running");
    assert_eq!(node.container_count(), 1);
    node.kubectl(&["delete", "pod", "forced", "--grace-period=0", "--force"]);
    node.eventually("force-deleted pod's containers removed", || {
        node.container_count() == 0
    });
}

fn pod_gone(node: &Node, name: &str) -> bool {
    let (ok, _, err) = node.cp.kubectl(&["get", "pod", name], None);
    !ok && err.contains("NotFound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pod_runs_with_a_mirror_pod() {
    let mut node = Node::start("kl-static").await;
    std::fs::write(
        node.dir.path().join("manifests/web.yaml"),
        pod_yaml("web", node.image(), "Always", common::SLEEP_FOREVER),
    )
    .unwrap();
    let mirror = format!("web-{}", node.name);
    node.eventually("mirror pod running", || {
        let (ok, out, _) = node
            .cp
            .kubectl(&["get", "pod", &mirror, "-o", "jsonpath={.status.phase}"], None);
        ok && out == "Running"
    });
    let p = node.pod(&mirror);
    assert!(p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string());
    assert_eq!(p["spec"]["nodeName"], node.name.as_str());
    std::fs::remove_file(node.dir.path().join("manifests/web.yaml")).unwrap();
    node.eventually("static pod containers stopped", || node.container_count() == 0);
    // Upstream deletes the mirror pod once the static pod has terminated.
    node.eventually("mirror pod deleted", || pod_gone(&node, &mirror));

    // A manifest removed while the kubelet is down: the restarted kubelet finds the orphaned mirror
    // pod in the API and deletes it (and the containers it no longer owns).
    std::fs::write(
        node.dir.path().join("manifests/db.yaml"),
        pod_yaml("db", node.image(), "Always", common::SLEEP_FOREVER),
    )
    .unwrap();
    let db = format!("db-{}", node.name);
    node.eventually("second mirror pod running", || {
        let (ok, out, _) = node
            .cp
            .kubectl(&["get", "pod", &db, "-o", "jsonpath={.status.phase}"], None);
        ok && out == "Running"
    });
    node.kill_kubelet();
    std::fs::remove_file(node.dir.path().join("manifests/db.yaml")).unwrap();
    node.launch();
    node.eventually("orphaned mirror pod deleted", || pod_gone(&node, &db));
    node.eventually("orphaned static pod containers removed", || {
        node.container_count() == 0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_is_ready_with_capacity_and_its_lease_renews() {
    let node = Node::start("kl-node").await;
    let n: Value = serde_json::from_str(&node.kubectl(&["get", "node", &node.name, "-o", "json"])).unwrap();
    assert_eq!(
        n["metadata"]["labels"]["kubernetes.io/hostname"],
        node.name.as_str()
    );
    assert!(
        n["status"]["capacity"]["cpu"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 1
    );
    assert_eq!(n["status"]["capacity"]["pods"], "110");
    assert!(
        n["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    let renew = |node: &Node| {
        node.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            &node.name,
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let first = renew(&node);
    node.eventually("lease renewal", || renew(&node) != first);
    // systemd: READY=1 after registration, WATCHDOG=1 from the main loop (WatchdogSec=2s here).
    let mut seen = String::new();
    node.eventually("READY and WATCHDOG notifications", || {
        let mut buf = [0u8; 512];
        while let Ok(n) = node.notify.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
        seen.contains("READY=1") && seen.matches("WATCHDOG=1").count() >= 2
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pods_fail_alone_with_upstream_reasons() {
    let node = Node::start("kl-bad").await;
    let img = node.image().to_string();
    node.apply(&pod_yaml("good", &img, "Always", common::SLEEP_FOREVER));
    node.apply(&pod_yaml(
        "noimage",
        &format!("{}/knode/does-not-exist:v1", node._registry.host()),
        "Always",
        &["x"],
    ));
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: nocm}}\nspec:\n  containers:\n  - name: main\n    image: {img}\n    args: [\"sleep\", \"infinity\"]\n    env: [{{name: X, valueFrom: {{configMapKeyRef: {{name: missing, key: k}}}}}}]\n"
    ));
    node.wait_phase("good", "Running");
    node.eventually("ErrImagePull/ImagePullBackOff", || {
        let r = node.pod("noimage")["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone();
        r == "ErrImagePull" || r == "ImagePullBackOff"
    });
    node.eventually("CreateContainerConfigError", || {
        node.pod("nocm")["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    let p = node.pod("nocm");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "configmap \"missing\" not found"
    );
    assert_eq!(node.pod("good")["status"]["phase"], "Running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restart_adopts_running_containers_without_restarting_them() {
    let mut node = Node::start("kl-adopt").await;
    let n = 10;
    for i in 0..n - 2 {
        node.apply(&pod_yaml(
            &format!("p{i}"),
            node.image(),
            "Always",
            common::SLEEP_FOREVER,
        ));
    }
    // One with a readiness probe: Ready before the restart, it must stay Ready across it (the
    // condition never flips, so its transition time does not move).
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: probed}}\nspec:\n  containers:\n  - name: main\n    image: {}\n    args: [\"sleep\", \"infinity\", \"--exit-on-sigterm\"]\n    readinessProbe:\n      exec: {{command: [\"true\"]}}\n      periodSeconds: 5\n",
        node.image()
    ));
    // One that keeps logging: its output must keep reaching the log file across the restart.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: talker}}\nspec:\n  containers:\n  - name: main\n    image: {}\n    command: [\"/bin/sh\", \"-c\", \"i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done\"]\n",
        node.image()
    ));
    node.eventually("all running", || {
        let out = node.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].status.phase}"]);
        out.split(' ').filter(|p| *p == "Running").count() == n
    });
    let ready_since = |node: &Node| {
        node.kubectl(&[
            "get",
            "pod",
            "probed",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
        ])
    };
    node.eventually("probed pod Ready", || ready_since(&node).starts_with("True "));
    let ready_before = ready_since(&node);
    let ids_before = node.kubectl(&[
        "get",
        "pods",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].containerID}",
    ]);
    node.kill_kubelet();
    node.launch();
    std::thread::sleep(Duration::from_secs(8));
    let ids_after = node.kubectl(&[
        "get",
        "pods",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].containerID}",
    ]);
    assert_eq!(ids_before, ids_after, "same containers after the restart");
    assert_eq!(
        ready_since(&node),
        ready_before,
        "the probed pod stayed Ready across the restart"
    );
    let restarts = node.kubectl(&[
        "get",
        "pods",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
    ]);
    assert!(restarts.split(' ').all(|r| r == "0"), "no restarts: {restarts}");
    assert_eq!(node.container_count(), n);
    // Logging goes on: lines written after the restart reach the same log file.
    let before = node.logs("talker", "main").lines().count();
    node.eventually("talker logs after the restart", || {
        node.logs("talker", "main").lines().count() > before + 10
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_ips_from_the_node_cidr_and_reach_each_other_and_the_node() {
    let node = Node::start_with("kl-net", true).await;
    let img = node.image().to_string();
    let server = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: main\n    image: {img}\n    imagePullPolicy: IfNotPresent\n    args: [\"serve\", \"--http-port\", \"8080\"]\n"
        )
    };
    node.apply(&server("alpha"));
    node.apply(&server("beta"));
    let a = node.wait_phase("alpha", "Running");
    let b = node.wait_phase("beta", "Running");
    let ip_a = a["status"]["podIP"].as_str().unwrap().to_string();
    let ip_b = b["status"]["podIP"].as_str().unwrap().to_string();
    assert!(
        ip_a.starts_with("10.244.0.") && ip_b.starts_with("10.244.0."),
        "{ip_a} {ip_b}"
    );
    assert_ne!(ip_a, ip_b);
    assert_eq!(a["status"]["podIPs"][0]["ip"], ip_a.as_str());
    // The node reaches the pod.
    let ns = node.netns.as_ref().unwrap().name.clone();
    let mut got = String::new();
    node.eventually("node → pod HTTP", || {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "curl",
                "-s",
                "--max-time",
                "2",
                &format!("http://{ip_a}:8080/hostname"),
            ])
            .output()
            .unwrap();
        got = String::from_utf8_lossy(&o.stdout).trim().to_string();
        got == "alpha"
    });
    // A pod reaches another pod.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {img}\n    imagePullPolicy: IfNotPresent\n    command: [\"/bin/sh\", \"-c\", \"wget -qO- http://{ip_b}:8080/hostname\"]\n"
    ));
    node.wait_phase("client", "Succeeded");
    assert_eq!(node.logs("client", "main").trim(), "beta");
    // Deleting a pod releases its address and its veth.
    node.kubectl(&["delete", "pod", "alpha", "--wait=false"]);
    node.eventually("alpha gone", || {
        !node.cp.kubectl(&["get", "pod", "alpha"], None).0
    });
    let ipam = std::fs::read_dir(node.dir.path().join("ipam/knode"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(!ipam.contains(&ip_a), "{ip_a} released: {ipam:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_reach_the_kubelet_through_the_control_plane() {
    let node = Node::start("kl-logs").await;
    let img = node.image().to_string();
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: chatty}}\nspec:\n  restartPolicy: OnFailure\n  containers:\n  - name: main\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"echo line-one; echo line-two; echo oops >&2; sleep 2; exit 1\"]\n"
    ));
    node.eventually("a restart", || {
        node.pod("chatty")["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let logs = node.kubectl(&["logs", "chatty"]);
    // stdout and stderr are copied by separate readers: their relative order may vary.
    let lines: Vec<&str> = logs.lines().collect();
    for want in ["line-one", "line-two", "oops"] {
        assert!(lines.contains(&want), "{want} missing: {logs:?}");
    }
    let one = lines.iter().position(|l| *l == "line-one");
    let two = lines.iter().position(|l| *l == "line-two");
    assert!(one < two, "stdout order kept: {logs:?}");
    assert_eq!(node.kubectl(&["logs", "chatty", "--tail=1"]).lines().count(), 1);
    let prev = node.kubectl(&["logs", "chatty", "--previous"]);
    assert!(prev.contains("line-one"), "{prev:?}");
    let ts = node.kubectl(&["logs", "chatty", "--timestamps"]);
    assert!(ts.lines().next().unwrap_or("").contains("T"), "{ts:?}");
    let (ok, _, err) = node.cp.kubectl(&["logs", "chatty", "-c", "nope"], None);
    assert!(
        !ok && err.contains("container nope is not valid for pod chatty"),
        "{err}"
    );
    // Follow streams new lines as they are written.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: ticker}}\nspec:\n  containers:\n  - name: main\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done\"]\n"
    ));
    node.wait_phase("ticker", "Running");
    let mut child = std::process::Command::new("timeout")
        .args([
            "3",
            "kubectl",
            &format!("--kubeconfig={}", node.cp.kubeconfig.display()),
            "logs",
            "-f",
            "ticker",
        ])
        .output()
        .unwrap();
    let followed = String::from_utf8_lossy(&child.stdout).into_owned();
    assert!(
        followed.lines().filter(|l| l.starts_with("tick ")).count() >= 5,
        "{followed:?}"
    );
    child.stdout.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_restart_unhealthy_containers_and_gate_readiness() {
    let node = Node::start_with("kl-probe", true).await;
    let img = node.image().to_string();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: probed, labels: {{app: probed}}}}
spec:
  containers:
  - name: main
    image: {img}
    imagePullPolicy: IfNotPresent
    args: ["serve", "--http-port", "8080"]
    ports: [{{name: http, containerPort: 8080}}]
    startupProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1, failureThreshold: 30}}
    readinessProbe: {{httpGet: {{path: /readyz, port: http}}, periodSeconds: 1, failureThreshold: 1}}
    livenessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1, failureThreshold: 2, terminationGracePeriodSeconds: 1}}
  - name: side
    image: {img}
    imagePullPolicy: IfNotPresent
    args: ["sleep", "infinity", "--exit-on-sigterm"]
    livenessProbe: {{exec: {{command: ["/bin/sh", "-c", "test -x /testimg"]}}, periodSeconds: 1}}
"#
    ));
    // A startup probe that never succeeds: killed (probe grace 1 s) and restarted.
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: neverstarts}}
spec:
  containers:
  - name: main
    image: {img}
    imagePullPolicy: IfNotPresent
    args: ["sleep", "infinity", "--exit-on-sigterm"]
    startupProbe: {{tcpSocket: {{port: 9}}, periodSeconds: 1, failureThreshold: 2, terminationGracePeriodSeconds: 1}}
    livenessProbe: {{tcpSocket: {{port: 9}}, periodSeconds: 1}}
"#
    ));
    let ready = |node: &Node| {
        node.pod("probed")["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    node.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: probed}\nspec:\n  selector: {app: probed}\n  ports: [{port: 80, targetPort: http}]\n",
    );
    // The endpoint's ready condition in the Service's EndpointSlice.
    let endpoint_ready = |node: &Node| {
        node.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=probed",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ])
    };
    node.eventually("pod Ready through its probes", || ready(&node));
    node.eventually("endpoint ready in the EndpointSlice", || {
        endpoint_ready(&node) == "true"
    });
    let ip = node.pod("probed")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let ns = node.netns.as_ref().unwrap();
    let curl = |path: &str| {
        ns.run(
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                &format!("http://{ip}:8080{path}"),
            ],
            &[],
        )
        .unwrap()
    };
    // Readiness failing: not Ready, no restart.
    curl("/readyz/set?code=500");
    node.eventually("not Ready", || !ready(&node));
    node.eventually("endpoint not ready in the EndpointSlice", || {
        endpoint_ready(&node) == "false"
    });
    let p = node.pod("probed");
    let evs = node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message};{end}",
    ]);
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{}\n{evs}",
        p["status"]
    );
    curl("/readyz/set?code=200");
    node.eventually("Ready again", || ready(&node));
    node.eventually("endpoint ready again", || endpoint_ready(&node) == "true");
    // Liveness failing: the container is restarted, with an Unhealthy event.
    curl("/healthz/set?code=500");
    let failing_since = Instant::now();
    node.eventually("restart after liveness failure", || {
        node.pod("probed")["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "main" && c["restartCount"].as_i64().unwrap_or(0) >= 1)
    });
    // Benchmark output: period 1 s x failureThreshold 2, then the kill and the restart.
    println!(
        "probes: liveness failing -> restartCount seen rising through the API: {:.2}s (period 1s, failureThreshold 2, probe grace 1s)",
        failing_since.elapsed().as_secs_f64()
    );
    let events = node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed,reason=Unhealthy",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("Liveness probe failed: HTTP probe failed with statuscode: 500"),
        "{events}"
    );
    node.eventually("restart after startup probe failure", || {
        node.pod("neverstarts")["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let events = node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=neverstarts",
        "-o",
        "jsonpath={range .items[*]}{.reason}={.message};{end}",
    ]);
    assert!(
        events.contains("Unhealthy=Startup probe failed: dial tcp"),
        "{events}"
    );
    assert!(
        events.contains("Killing=Container main failed startup probe, will be restarted"),
        "{events}"
    );
    assert!(
        !events.contains("Liveness probe failed"),
        "liveness waits for startup: {events}"
    );
    // The exec-probed sidecar never restarted.
    let side = node.pod("probed")["status"]["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "side")
        .cloned()
        .unwrap();
    assert_eq!(side["restartCount"], 0, "{side}");
}

/// resolv.conf per dnsPolicy and hostnames as upstream writes them (the kubelet's `clusterDNS`,
/// `clusterDomain` and `resolvConf`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_dns_follows_dns_policy_and_hostnames_follow_upstream() {
    let mut node = Node::start_with("kl-dns", true).await;
    let host_resolv = node.dir.path().join("host-resolv.conf");
    std::fs::write(
        &host_resolv,
        "nameserver 192.0.2.53\nsearch corp.example\noptions timeout:2\n",
    )
    .unwrap();
    node.reconfigure(
        &format!(
            "clusterDNS: [10.96.0.10]\nclusterDomain: cluster.local\nresolvConf: {}\n",
            host_resolv.display()
        ),
        &[],
    );
    let img = node.image().to_string();
    let sleeper = r#"imagePullPolicy: IfNotPresent, args: ["sleep", "infinity", "--exit-on-sigterm"]"#;
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: cluster-first}}
spec:
  terminationGracePeriodSeconds: 1
  hostname: web-0
  subdomain: web
  containers: [{{name: main, image: {img}, {sleeper}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: default-dns}}
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: Default
  containers: [{{name: main, image: {img}, {sleeper}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: none-dns}}
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: None
  dnsConfig:
    nameservers: [203.0.113.1]
    searches: [x.example]
    options: [{{name: ndots, value: "2"}}]
  containers: [{{name: main, image: {img}, {sleeper}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: fqdn}}
spec:
  terminationGracePeriodSeconds: 1
  hostname: db-0
  subdomain: db
  setHostnameAsFQDN: true
  containers: [{{name: main, image: {img}, {sleeper}}}]
"#
    ));
    for p in ["cluster-first", "default-dns", "none-dns", "fqdn"] {
        node.wait_phase(p, "Running");
    }
    let cat = |pod: &str, path: &str| {
        let (ok, out) = node.exec(pod, "main", &["cat", path]);
        assert!(ok, "cat {path} in {pod}: {out}");
        out
    };
    assert_eq!(
        cat("cluster-first", "/etc/resolv.conf"),
        "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
         nameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert_eq!(
        cat("default-dns", "/etc/resolv.conf"),
        "search corp.example\nnameserver 192.0.2.53\noptions timeout:2\n"
    );
    assert_eq!(
        cat("none-dns", "/etc/resolv.conf"),
        "search x.example\nnameserver 203.0.113.1\noptions ndots:2\n"
    );
    // hostname + subdomain: the FQDN in /etc/hosts; setHostnameAsFQDN: the FQDN as the UTS hostname.
    let hosts = cat("cluster-first", "/etc/hosts");
    assert!(
        hosts.contains("\tweb-0.web.default.svc.cluster.local\tweb-0\n"),
        "{hosts}"
    );
    let (_, h) = node.exec("cluster-first", "main", &["hostname"]);
    assert_eq!(h.trim(), "web-0");
    let (_, h) = node.exec("fqdn", "main", &["hostname"]);
    assert_eq!(h.trim(), "db-0.db.default.svc.cluster.local");
}
