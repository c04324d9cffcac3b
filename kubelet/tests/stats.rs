//! The kubelet API's `/stats/summary`, `/metrics/resource` and `/metrics` with real values from a
//! real kubelet: a busy container shows cpu > 0 and memory > 0; upstream's metric names are served;
//! no credentials → 401. Reached directly on the kubelet's HTTPS port with an admin client cert.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Node;
use serde_json::Value;

/// `GET path` on the kubelet API as a `system:masters` user, or without credentials when
/// `anonymous`; returns (HTTP status, body).
fn kubelet_get(node: &Node, path: &str, anonymous: bool) -> (u16, String) {
    let (cert, key) = node.admin_client_cert();
    let cfg = std::fs::read_to_string(node.dir.path().join("kubelet-config.yaml")).unwrap();
    let port = cfg
        .lines()
        .find_map(|l| l.strip_prefix("port: "))
        .unwrap()
        .trim()
        .to_string();
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--path-as-is", "-w", "\n%{http_code}"]);
    if !anonymous {
        cmd.arg("--cert").arg(&cert).arg("--key").arg(&key);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_and_metrics_show_a_busy_container() {
    let node = Node::start("kl-stats").await;
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: busy}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: spin\n    image: {}\n    command: [\"/bin/sh\", \"-c\", \"while :; do :; done\"]\n    resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 200m}}}}\n",
        node.image()
    ));
    node.wait_phase("busy", "Running");

    let (code, _) = kubelet_get(&node, "/stats/summary", true);
    assert_eq!(code, 401, "no credentials");

    let (code, body) = kubelet_get(&node, "/stats/summary", false);
    assert_eq!(code, 200, "{body}");
    let mut summary = Value::Null;
    node.eventually("busy's container with cpu > 0 in /stats/summary", || {
        let (code, body) = kubelet_get(&node, "/stats/summary", false);
        if code != 200 {
            return false;
        }
        summary = serde_json::from_str(&body).unwrap();
        let pod = summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["podRef"]["name"] == "busy")
            .cloned()
            .unwrap_or(Value::Null);
        pod["containers"][0]["cpu"]["usageNanoCores"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "busy")
        .unwrap();
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "spin");
    assert!(c["memory"]["workingSetBytes"].as_u64().unwrap() > 0, "{c}");
    assert!(c["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0, "{c}");
    // Limited to 200m: the rate stays near or below that (generous bound for sampling jitter).
    assert!(c["cpu"]["usageNanoCores"].as_u64().unwrap() < 600_000_000, "{c}");
    assert!(c["rootfs"]["usedBytes"].is_u64(), "{c}");
    assert!(c["logs"]["usedBytes"].is_u64(), "{c}");
    assert!(pod["memory"]["workingSetBytes"].as_u64().unwrap() > 0);
    assert!(pod["ephemeral-storage"]["usedBytes"].is_u64());
    let n = &summary["node"];
    assert!(n["memory"]["workingSetBytes"].as_u64().unwrap() > 0, "{n}");
    assert!(n["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0, "{n}");
    assert!(n["fs"]["capacityBytes"].as_u64().unwrap() > 0, "{n}");
    assert_eq!(n["nodeName"], node.name.as_str());

    let (code, res) = kubelet_get(&node, "/metrics/resource", false);
    assert_eq!(code, 200);
    let line = res
        .lines()
        .find(|l| {
            l.starts_with(
                "container_cpu_usage_seconds_total{container=\"spin\",namespace=\"default\",pod=\"busy\"}",
            )
        })
        .unwrap_or_else(|| panic!("no container cpu series:\n{res}"));
    let v: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(v > 0.0, "{line}");
    for name in [
        "container_memory_working_set_bytes{container=\"spin\"",
        "container_start_time_seconds{container=\"spin\"",
        "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"busy\"}",
        "pod_memory_working_set_bytes{namespace=\"default\",pod=\"busy\"}",
        "node_cpu_usage_seconds_total ",
        "node_memory_working_set_bytes ",
        "resource_scrape_error 0",
    ] {
        assert!(res.lines().any(|l| l.starts_with(name)), "{name} missing:\n{res}");
    }

    let (code, m) = kubelet_get(&node, "/metrics", false);
    assert_eq!(code, 200);
    for line in [
        format!("kubelet_node_name{{node=\"{}\"}} 1", node.name),
        "kubelet_running_pods 1".to_string(),
        "kubelet_running_containers{container_state=\"running\"} 1".to_string(),
        "kubelet_started_pods_total 1".to_string(),
        "kubelet_started_containers_total{container_type=\"container\"} 1".to_string(),
        "kubelet_pod_start_sli_duration_seconds_count 1".to_string(),
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
    assert!(
        m.lines()
            .any(|l| l.starts_with("kubelet_pleg_relist_duration_seconds_count ")),
        "{m}"
    );

    // The same endpoints as a cluster admin reaches them: through the control plane's nodes/proxy.
    let raw = node.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/stats/summary", node.name),
    ]);
    let via_cp: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(via_cp["node"]["nodeName"], node.name.as_str());
    assert!(
        via_cp["pods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["podRef"]["name"] == "busy"),
        "{via_cp}"
    );
    let raw = node.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/metrics", node.name),
    ]);
    assert!(raw.lines().any(|l| l == "kubelet_running_pods 1"), "{raw}");
    // /configz as upstream: the configuration in effect under "kubeletconfig".
    let raw = node.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/configz", node.name),
    ]);
    let configz: Value = serde_json::from_str(&raw).unwrap();
    let kc = &configz["kubeletconfig"];
    assert_eq!(kc["kind"], "KubeletConfiguration", "{configz}");
    assert_eq!(kc["maxPods"], 110, "{configz}");
    assert_eq!(kc["nodeStatusUpdateFrequency"], "10s", "{configz}");
    assert!(kc["port"].as_i64().is_some_and(|p| p > 0), "{configz}");
}

/// The value of the first series line starting with `prefix`.
fn series_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_metrics_and_node_logs() {
    let node = Node::start("kl-probem").await;
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: probed}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [\"/bin/sh\", \"-c\", \"sleep 100000\"]\n    readinessProbe:\n      exec: {{command: [\"true\"]}}\n      periodSeconds: 1\n",
        node.image()
    ));
    node.wait_phase("probed", "Running");
    let uid = node.pod("probed")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let probes = || {
        node.kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{}/proxy/metrics/probes", node.name),
        ])
    };
    let counter = format!(
        "prober_probe_total{{container=\"c\",namespace=\"default\",pod=\"probed\",pod_uid=\"{uid}\",probe_type=\"Readiness\",result=\"successful\"}} "
    );
    let mut first = 0.0;
    node.eventually("a successful readiness probe counted", || {
        first = series_value(&probes(), &counter).unwrap_or(0.0);
        first >= 1.0
    });
    node.eventually("the probe counter rises", || {
        series_value(&probes(), &counter).unwrap_or(0.0) > first
    });
    let text = probes();
    assert!(text.contains("# TYPE prober_probe_total counter"), "{text}");
    assert!(
        series_value(
            &text,
            "prober_probe_duration_seconds_count{container=\"c\",namespace=\"default\",pod=\"probed\",probe_type=\"Readiness\"} "
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(kubelet_get(&node, "/metrics/probes", true).0, 401);

    // /logs/: the node's /var/log, listed and served, through the control plane's nodes/proxy.
    let name = format!("knode-test-{}.log", node.ns);
    let _file = RemoveOnDrop(std::path::Path::new("/var/log").join(&name));
    std::fs::write(&_file.0, "a node log line\n").unwrap();
    let listing = node.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/logs/", node.name),
    ]);
    assert!(
        listing.contains(&format!("<a href=\"{name}\">{name}</a>")),
        "{listing}"
    );
    let served = node.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/logs/{name}", node.name),
    ]);
    assert_eq!(served, "a node log line\n");
    // Leaving /var/log is refused, however spelled; no credentials → 401.
    for path in [
        "/logs/../etc/shadow",
        "/logs/%2e%2e/etc/shadow",
        "/logs/x/../../etc/passwd",
    ] {
        let (code, body) = kubelet_get(&node, path, false);
        assert_eq!(code, 400, "{path}: {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
    assert_eq!(kubelet_get(&node, "/logs/", true).0, 401);
}
