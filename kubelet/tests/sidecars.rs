//! Sidecar containers (init containers with `restartPolicy: Always`, KEP-753) on a real kubelet
//! (control plane, private containerd, registry, kubectl): the app container starts only once its
//! sidecar started (startup probe) and reaches it; a run-once pod completes with its sidecar
//! stopped; a sidecar that exits restarts even with restartPolicy Never; on deletion every preStop
//! hook runs at once, the app containers stop before the sidecars, and everything is removed; on a
//! networked node, the shape of upstream's lifecycle-hook conformance pods (a sidecar serving the
//! app's postStart httpGet hook, gated by an httpGet startup probe) runs and is deleted cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Node;
use serde_json::Value;

/// A TCP port free on the host right now (test pods share the host's network here).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn init_status(p: &Value) -> &Value {
    &p["status"]["initContainerStatuses"][0]
}

fn condition(p: &Value, kind: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_starts_after_its_sidecar_reaches_it_and_the_pod_completes() {
    let node = Node::start("kl-sidecar").await;
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().display();
    let image = node.image();
    let port = free_port();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: withsidecar}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  volumes:
  - name: host
    hostPath: {{path: "{dir}", type: Directory}}
  initContainers:
  - name: server
    image: {image}
    restartPolicy: Always
    args: ["serve", "--http-port", "{port}"]
    startupProbe:
      exec: {{command: ["/bin/sh", "-c", "wget -q -O /dev/null http://127.0.0.1:{port}/healthz"]}}
      periodSeconds: 1
      failureThreshold: 30
  containers:
  - name: app
    image: {image}
    command: ["/bin/sh", "-c"]
    args: ["wget -q -O /dev/null http://127.0.0.1:{port}/healthz && echo reached >> /host/log"]
    volumeMounts: [{{name: host, mountPath: /host}}]
"#
    ));
    // The app container exits 0 only if the sidecar answered on its first and only try (policy
    // Never); then the pod completes instead of staying Running because of its sidecar.
    let p = node.wait_phase("withsidecar", "Succeeded");
    let log = std::fs::read_to_string(host.path().join("log")).unwrap_or_default();
    assert_eq!(log.trim(), "reached", "{}", p["status"]);
    let app = &p["status"]["containerStatuses"][0];
    assert_eq!(app["state"]["terminated"]["exitCode"], 0, "{}", p["status"]);
    let server = init_status(&p);
    assert!(
        server["state"]["terminated"].is_object(),
        "the sidecar is stopped once the app is done: {}",
        p["status"]
    );
    assert_eq!(server["restartCount"], 0, "{}", p["status"]);
    let sidecar_started = server["state"]["terminated"]["startedAt"].as_str().unwrap();
    let app_started = app["state"]["terminated"]["startedAt"].as_str().unwrap();
    assert!(sidecar_started <= app_started, "{}", p["status"]);
    assert_eq!(condition(&p, "Initialized"), "True", "{}", p["status"]);
    node.eventually("the pod's containers all stopped", || {
        let out = node.ctr().args(["tasks", "ls"]).output().unwrap();
        !String::from_utf8_lossy(&out.stdout).contains("RUNNING")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_restarts_with_policy_never_and_stops_after_the_app_on_deletion() {
    let node = Node::start("kl-sidecar-del").await;
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().display();
    let image = node.image();
    // The sidecar's first run exits 1 after 3 s; the next ones run until SIGTERM and record whether
    // the app container had already stopped.
    let sidecar = "if [ ! -e /host/ran ]; then touch /host/ran; sleep 3; exit 1; fi; \
        trap 'if [ -e /host/app-stopped ]; then echo after-app >> /host/log; else echo before-app >> /host/log; fi; exit 0' TERM; \
        while true; do sleep 0.2; done";
    let app = "trap 'sleep 3; touch /host/app-stopped; exit 0' TERM; while true; do sleep 0.2; done";
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: ordered}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 20
  volumes:
  - name: host
    hostPath: {{path: "{dir}", type: Directory}}
  initContainers:
  - name: logger
    image: {image}
    restartPolicy: Always
    command: ["/bin/sh", "-c"]
    args: ["{sidecar}"]
    volumeMounts: [{{name: host, mountPath: /host}}]
    lifecycle:
      preStop:
        exec: {{command: ["/bin/sh", "-c", "if [ -e /host/app-stopped ]; then echo late-prestop >> /host/log; else echo prestop >> /host/log; fi"]}}
  containers:
  - name: app
    image: {image}
    command: ["/bin/sh", "-c"]
    args: ["{app}"]
    volumeMounts: [{{name: host, mountPath: /host}}]
"#
    ));
    node.wait_phase("ordered", "Running");
    // The sidecar exited 1 and came back although the pod's policy is Never; the pod still runs.
    let p = node.wait_for("the sidecar restarted and is ready", 90, || {
        let p = node.pod("ordered");
        let s = init_status(&p);
        (s["restartCount"] == 1 && s["state"]["running"].is_object() && s["ready"] == true).then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(init_status(&p)["started"], true);
    assert_eq!(init_status(&p)["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    node.eventually("pod Ready", || condition(&node.pod("ordered"), "Ready") == "True");

    node.kubectl(&["delete", "pod", "ordered", "--wait=false"]);
    node.eventually("pod gone", || {
        !node.cp.kubectl(&["get", "pod", "ordered"], None).0
    });
    node.eventually("containers removed", || node.container_count() == 0);
    let log = std::fs::read_to_string(host.path().join("log")).unwrap_or_default();
    // Its preStop hook ran at once, with the app's; its SIGTERM came once the app had stopped.
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["prestop", "after-app"],
        "the sidecar's preStop ran before the app stopped, its SIGTERM after\n{}",
        node.log()
    );
}

/// The shape of upstream's "Container Lifecycle Hook" conformance pods: a sidecar server with an
/// httpGet startup probe on the pod IP, and an app container whose postStart httpGet hook (to the
/// pod IP) needs the sidecar up; deleted with a grace period, all of it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networked_sidecar_serves_the_apps_post_start_hook() {
    let node = Node::start_with("kl-sidecar-net", true).await;
    let image = node.image();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  initContainers:
  - name: container-redirect
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    args: ["serve", "--http-port", "8080"]
    startupProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 1
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    args: ["sleep", "infinity", "--exit-on-sigterm"]
    lifecycle:
      postStart:
        httpGet: {{path: /healthz, port: 8080}}
"#
    ));
    let p = node.wait_phase("hooked", "Running");
    node.eventually("pod Ready", || condition(&node.pod("hooked"), "Ready") == "True");
    let p2 = node.pod("hooked");
    let sidecar = init_status(&p2);
    assert_eq!(sidecar["started"], true, "{}", p2["status"]);
    assert_eq!(sidecar["ready"], true, "{}", p2["status"]);
    assert_eq!(sidecar["restartCount"], 0, "{}", p2["status"]);
    assert_eq!(
        p2["status"]["containerStatuses"][0]["restartCount"], 0,
        "the postStart hook succeeded on the first try: {}",
        p["status"]
    );
    assert_eq!(condition(&p2, "Initialized"), "True");
    assert!(
        !node.event_reasons("hooked").contains("FailedPostStartHook"),
        "{}",
        node.event_reasons("hooked")
    );
    node.kubectl(&["delete", "pod", "hooked", "--grace-period=15", "--wait=false"]);
    node.eventually("pod gone", || !node.cp.kubectl(&["get", "pod", "hooked"], None).0);
    node.eventually("containers removed", || node.container_count() == 0);
}
