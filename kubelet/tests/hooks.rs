//! Lifecycle hooks on a real kubelet (control plane, private containerd, registry, kubectl):
//! postStart and preStop run around the container — exec hooks write into a hostPath the test
//! reads, an httpGet hook reaches a test listener with upstream's User-Agent (its 500 still counts
//! as success, as upstream), preStop runs before SIGTERM — and a failing postStart kills the
//! container, which restarts per policy, with upstream's events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::Node;

/// A loopback HTTP listener answering 500 to everything and recording "METHOD PATH UA" lines.
fn recording_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let mut agent = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let l = line.trim_end().to_string();
                line.clear();
                if l.is_empty() {
                    break;
                }
                if request.is_empty() {
                    request = l;
                } else if let Some(v) = l.strip_prefix("User-Agent: ").or(l.strip_prefix("user-agent: ")) {
                    agent = v.to_string();
                }
            }
            let words: Vec<&str> = request.split(' ').collect();
            log.lock()
                .unwrap()
                .push(format!("{} {} {agent}", words[0], words.get(1).unwrap_or(&"")));
            let _ = conn.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (port, seen)
}

fn events(node: &Node, pod: &str) -> String {
    node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}={.message}{\"\\n\"}{end}",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_around_the_container_and_a_failing_post_start_restarts_it() {
    let node = Node::start("kl-hooks").await;
    let host = tempfile::tempdir().unwrap();
    let (port, requests) = recording_server();
    let image = node.image();
    let dir = host.path().display();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - name: host
    hostPath: {{path: "{dir}", type: Directory}}
  containers:
  - name: a
    image: {image}
    command: ["/bin/sh", "-c"]
    args: ["trap 'echo term >> /host/log; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: host, mountPath: /host}}]
    lifecycle:
      postStart:
        exec: {{command: ["/bin/sh", "-c", "echo poststart >> /host/log"]}}
      preStop:
        exec: {{command: ["/bin/sh", "-c", "echo prestop >> /host/log"]}}
  - name: b
    image: {image}
    args: ["sleep", "infinity", "--exit-on-sigterm"]
    lifecycle:
      postStart:
        httpGet: {{host: 127.0.0.1, port: {port}, path: /poststart}}
      preStop:
        sleep: {{seconds: 1}}
"#
    ));
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: badhook}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: {image}
    args: ["sleep", "infinity", "--exit-on-sigterm"]
    lifecycle:
      postStart:
        exec: {{command: ["/bin/sh", "-c", "echo nope >&2; exit 1"]}}
"#
    ));
    node.wait_phase("hooked", "Running");
    let log = host.path().join("log");
    node.eventually("postStart exec wrote its line", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("poststart")
    });
    node.eventually("postStart httpGet reached the listener", || {
        !requests.lock().unwrap().is_empty()
    });
    assert_eq!(
        requests.lock().unwrap()[0],
        format!(
            "GET /poststart kube-lifecycle/{}",
            knode_config::version::MAJOR_MINOR
        ),
        "path and upstream's User-Agent"
    );
    let p = node.pod("hooked");
    for cs in p["status"]["containerStatuses"].as_array().unwrap() {
        assert_eq!(
            cs["restartCount"], 0,
            "a 500 from an httpGet hook is not a failure: {cs}"
        );
    }

    node.kubectl(&["delete", "pod", "hooked", "--wait=false"]);
    node.eventually("hooked gone", || {
        !node.cp.kubectl(&["get", "pod", "hooked"], None).0
    });
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines,
        ["poststart", "prestop", "term"],
        "preStop ran before SIGTERM"
    );

    // The failing postStart kills the container, which restarts (restartPolicy Always).
    node.eventually("badhook restarted", || {
        node.pod("badhook")["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let ev = events(&node, "badhook");
    assert!(ev.contains("FailedPostStartHook=PostStartHook failed"), "{ev}");
    assert!(ev.contains("Killing=FailedPostStartHook"), "{ev}");
    assert!(
        !ev.contains("Failed=Error"),
        "no generic start failure event: {ev}"
    );
    node.kubectl(&["delete", "pod", "badhook", "--grace-period=1", "--wait=false"]);
    node.eventually("badhook gone", || {
        !node.cp.kubectl(&["get", "pod", "badhook"], None).0
    });
    node.eventually("containers removed", || node.container_count() == 0);
}
