//! The kubelet's streaming API end to end, through the control plane, with the real kubectl 1.27
//! (SPDY/3.1) and 1.33 (WebSocket for exec/attach, SPDY tunnelled in WebSocket for
//! port-forward): exec output, exit codes, stdin, TTY, a second container, attach, port-forward of
//! an HTTP request; `kubectl logs` since/-f ending; authentication and authorization at the
//! kubelet (401/403, ServiceAccount tokens through TokenReview, TLS only); `/pods` and
//! `/runningpods/`; a 100 MiB rotated log read with `--tail=10` (time printed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Node;

fn kubectl_bin(version: &str) -> PathBuf {
    let real = std::fs::canonicalize("/usr/bin/kubectl").unwrap();
    real.parent().unwrap().join(format!("kubectl.{version}"))
}

/// Runs a kubectl version with the admin kubeconfig (and `stdin`), with a 60 s limit.
fn kubectl(node: &Node, version: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new("timeout");
    c.arg("60")
        .arg(kubectl_bin(version))
        .arg(format!("--kubeconfig={}", node.cp.kubeconfig.display()))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(data) = stdin {
        let mut si = child.stdin.take().unwrap();
        si.write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn two_container_pod(img: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: two}}\nspec:\n  containers:\n  - name: main\n    image: {img}\n    args: [\"serve\", \"--http-port\", \"8080\"]\n  - name: side\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"i=0; while true; do echo side $i; i=$((i+1)); sleep 0.3; done\"]\n"
    )
}

/// exec (output, exit code, stdin, TTY, -c), attach and port-forward with one kubectl version.
fn exercise(node: &Node, v: &str) {
    // Output on both streams, from the named container.
    let o = kubectl(
        node,
        v,
        &[
            "exec",
            "two",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo out-$HOSTNAME; echo err >&2",
        ],
        None,
    );
    assert!(o.status.success(), "{v} exec: {}\n{}", err(&o), node.log());
    assert_eq!(out(&o).trim(), "out-two", "{v}");
    assert!(err(&o).contains("err"), "{v}: {}", err(&o));
    // The exit code propagates.
    let o = kubectl(
        node,
        v,
        &["exec", "two", "-c", "main", "--", "sh", "-c", "exit 3"],
        None,
    );
    assert_eq!(o.status.code(), Some(3), "{v}: {}", err(&o));
    // stdin piped in, and its end closes the command's input.
    let o = kubectl(
        node,
        v,
        &[
            "exec",
            "-i",
            "two",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "cat; echo done",
        ],
        Some(b"hello\nworld\n"),
    );
    assert!(o.status.success(), "{v} exec -i: {}", err(&o));
    assert_eq!(out(&o), "hello\nworld\ndone\n", "{v}");
    // The second container.
    let o = kubectl(
        node,
        v,
        &[
            "exec",
            "two",
            "-c",
            "side",
            "--",
            "sh",
            "-c",
            "ps | grep -c 'sleep\\|side' >/dev/null; echo side-ok",
        ],
        None,
    );
    assert_eq!(out(&o).trim(), "side-ok", "{v}: {}", err(&o));
    // A TTY (kubectl needs a terminal on stdin for -t: `script` gives it one).
    let cmd = format!(
        "{} --kubeconfig={} exec -it two -c main -- sh -c 'tty; exit 5'",
        kubectl_bin(v).display(),
        node.cp.kubeconfig.display()
    );
    let mut child = Command::new("timeout")
        .args(["60", "script", "-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    assert!(stdout.contains("/dev/pts/"), "{v} exec -t: {stdout:?}");
    assert!(
        stdout.contains("\r\n"),
        "{v}: a terminal's line endings: {stdout:?}"
    );
    assert_eq!(status.code(), Some(5), "{v}: {stdout:?}");
    // Attach streams what the container writes from now on.
    let o = Command::new("timeout")
        .arg("3")
        .arg(kubectl_bin(v))
        .arg(format!("--kubeconfig={}", node.cp.kubeconfig.display()))
        .args(["attach", "two", "-c", "side"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let attached = out(&o);
    assert!(
        attached.lines().filter(|l| l.starts_with("side ")).count() >= 3,
        "{v} attach: {attached:?} {}",
        err(&o)
    );
    // Port-forward carries an HTTP request to the pod's loopback.
    let mut pf = Command::new(kubectl_bin(v))
        .arg(format!("--kubeconfig={}", node.cp.kubeconfig.display()))
        .args(["port-forward", "pod/two", ":8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    // Kept open: kubectl writes more lines and would die of SIGPIPE.
    let mut pf_out = BufReader::new(pf.stdout.take().unwrap());
    pf_out.read_line(&mut line).unwrap();
    // "Forwarding from 127.0.0.1:NNNNN -> 8080"
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{v} port-forward said {line:?}"));
    let mut answers = Vec::new();
    for _ in 0..2 {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            let _ = pf.kill();
            let mut e = String::new();
            pf.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            panic!("{v} port-forward ended: {e}\n{}", node.log());
        };
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /hostname HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        answers.push(resp);
    }
    let _ = pf.kill();
    drop(pf_out);
    let mut pf_err = String::new();
    pf.stderr.take().unwrap().read_to_string(&mut pf_err).unwrap();
    let _ = pf.wait();
    for a in &answers {
        assert!(
            a.starts_with("HTTP/1.1 200"),
            "{v} port-forward: {a:?}\n{pf_err}\n{}",
            node.log()
        );
        assert!(a.trim_end().ends_with("two"), "{v} port-forward: {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_attach_and_port_forward_with_1_27_and_1_33() {
    let node = Node::start("st-kubectl").await;
    let img = node.image().to_string();
    node.apply(&two_container_pod(&img));
    node.wait_phase("two", "Running");
    let sessions = |transport: &str| {
        let log = std::fs::read_to_string(node.dir.path().join("kubelet.log")).unwrap();
        log.lines()
            .filter(|l| l.contains("streaming session") && l.contains(transport))
            .count()
    };
    exercise(&node, "1.27");
    // kubectl 1.27 speaks SPDY/3.1 for everything.
    assert!(
        sessions("transport=spdy/v4.channel.k8s.io") >= 5,
        "exec/attach over SPDY"
    );
    assert_eq!(sessions("transport=spdy/portforward.k8s.io"), 1);
    assert_eq!(sessions("transport=websocket"), 0);
    exercise(&node, "1.33");
    // kubectl 1.33: WebSocket v5 for exec/attach, SPDY tunnelled in WebSocket for port-forward.
    assert!(
        sessions("transport=websocket/v5.channel.k8s.io") >= 5,
        "exec/attach over WebSocket"
    );
    assert_eq!(sessions("transport=websocket/SPDY/3.1+portforward.k8s.io"), 1);
    // An unknown container and a missing command are refused with upstream's messages.
    let o = kubectl(&node, "1.33", &["exec", "two", "-c", "nope", "--", "true"], None);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("container nope is not valid for pod two"),
        "{}",
        err(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_since_second_container_and_follow_ends_with_the_container() {
    let node = Node::start("st-logs").await;
    let img = node.image().to_string();
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: early}}\nspec:\n  containers:\n  - name: main\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"echo early-line; sleep 100000\"]\n  - name: other\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"echo from-other; sleep 100000\"]\n"
    ));
    node.wait_phase("early", "Running");
    node.eventually("early logs", || {
        node.kubectl(&["logs", "early", "-c", "main"])
            .contains("early-line")
    });
    std::thread::sleep(Duration::from_secs(4));
    for v in ["1.27", "1.33"] {
        let o = kubectl(&node, v, &["logs", "early", "-c", "main", "--since=2s"], None);
        assert!(o.status.success(), "{}", err(&o));
        assert_eq!(out(&o), "", "{v}: lines older than --since are left out");
        let o = kubectl(&node, v, &["logs", "early", "-c", "main", "--since=1h"], None);
        assert_eq!(out(&o), "early-line\n", "{v}");
        let o = kubectl(&node, v, &["logs", "early", "-c", "other"], None);
        assert_eq!(out(&o), "from-other\n", "{v}");
    }
    // `logs -f` ends by itself once the container exits.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: brief}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"for i in 1 2 3 4 5 6; do echo brief $i; sleep 0.5; done\"]\n"
    ));
    node.eventually("brief running", || {
        let p = node.pod("brief");
        p["status"]["phase"] == "Running" || p["status"]["phase"] == "Succeeded"
    });
    let o = kubectl(&node, "1.33", &["logs", "-f", "brief"], None);
    // `timeout` would have ended it with 124.
    assert!(
        o.status.success(),
        "logs -f ended by itself: {:?} {}",
        o.status,
        err(&o)
    );
    assert!(out(&o).contains("brief 6"), "{}", out(&o));
}

/// The kubelet's HTTPS port from the node status.
fn kubelet_url(node: &Node) -> String {
    let n: serde_json::Value =
        serde_json::from_str(&node.kubectl(&["get", "node", &node.name, "-o", "json"])).unwrap();
    let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    format!("https://127.0.0.1:{port}")
}

fn curl(args: &[&str]) -> (String, String) {
    let o = Command::new("curl")
        .args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let s = out(&o);
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
    (code.to_string(), body.to_string())
}

/// kubectl straight at the kubelet (its self-signed serving certificate as the CA).
fn kubectl_at_kubelet(node: &Node, url: &str, auth: &[String], args: &[&str]) -> Output {
    let ca = node.dir.path().join("root/pki/kubelet.crt");
    Command::new("timeout")
        .arg("60")
        .arg(kubectl_bin("1.33"))
        .arg("--kubeconfig=/dev/null")
        .arg(format!("--server={url}"))
        .arg(format!("--certificate-authority={}", ca.display()))
        .args(auth)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_api_authenticates_authorizes_and_serves_pods() {
    let node = Node::start("st-sec").await;
    let img = node.image().to_string();
    node.apply(&two_container_pod(&img));
    node.wait_phase("two", "Running");
    let url = kubelet_url(&node);
    // No credentials: 401 everywhere but healthz.
    for (method, path) in [
        ("GET", "/pods"),
        ("GET", "/runningpods/"),
        ("GET", "/containerLogs/default/two/main"),
        ("POST", "/exec/default/two/main?command=true&output=1"),
        ("POST", "/attach/default/two/main?output=1"),
        ("POST", "/portForward/default/two"),
        ("GET", "/stats/summary"),
        ("GET", "/metrics"),
        ("GET", "/nope"),
    ] {
        let (code, body) = curl(&["-X", method, &format!("{url}{path}")]);
        assert_eq!(code, "401", "{method} {path}: {body}");
    }
    assert_eq!(curl(&[&format!("{url}/healthz")]).0, "200");
    // TLS only: plain HTTP on the port gets no HTTP answer.
    let (code, _) = curl(&[&url.replace("https://", "http://")]);
    assert_ne!(code, "200");
    assert_ne!(code, "401");
    // A valid client certificate without permission: 403 with upstream's message.
    let alice = node.cp.issue_kubeconfig("alice", &[]).unwrap();
    let alice_auth = vec![format!("--kubeconfig={}", alice.display())];
    let ca = node.dir.path().join("root/pki/kubelet.crt");
    for path in ["/containerLogs/default/two/main", "/pods"] {
        let o = Command::new(kubectl_bin("1.33"))
            .args(&alice_auth)
            .arg(format!("--server={url}"))
            .arg(format!("--certificate-authority={}", ca.display()))
            .args(["get", "--raw", path])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(err(&o).contains("Forbidden"), "{path}: {}", err(&o));
    }
    // Exec at the kubelet with that certificate: refused before any upgrade.
    let o = Command::new(kubectl_bin("1.33"))
        .args(&alice_auth)
        .arg(format!("--server={url}"))
        .arg(format!("--certificate-authority={}", ca.display()))
        .args([
            "create",
            "--raw",
            "/exec/default/two/main?command=true&output=1",
            "-f",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(
        err(&o).contains("Forbidden (user=alice, verb=create, resource=nodes, subresource=proxy)"),
        "{}",
        err(&o)
    );
    // Through the control plane, alice cannot exec either.
    let o = Command::new(kubectl_bin("1.33"))
        .args(&alice_auth)
        .args(["exec", "two", "-c", "main", "--", "true"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && err(&o).contains("forbidden"),
        "{}",
        err(&o)
    );
    // A ServiceAccount token of a pod cannot exec into another pod, through the API server or at
    // the kubelet (TokenReview authenticates it, SubjectAccessReview denies it); a bad token is 401.
    node.kubectl(&["create", "serviceaccount", "sneaky"]);
    let token = node.kubectl(&["create", "token", "sneaky"]).trim().to_string();
    let o = Command::new(kubectl_bin("1.33"))
        .arg(format!("--kubeconfig={}", node.cp.kubeconfig.display()))
        .arg(format!("--token={token}"))
        .args(["--user=none", "exec", "two", "-c", "main", "--", "true"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", out(&o));
    let o = kubectl_at_kubelet(
        &node,
        &url,
        &[format!("--token={token}")],
        &["get", "--raw", "/containerLogs/default/two/main"],
    );
    assert!(
        err(&o).contains("Forbidden (user=system:serviceaccount:default:sneaky, verb=get, resource=nodes, subresource=proxy)"),
        "{}",
        err(&o)
    );
    let (code, _) = curl(&["-H", "Authorization: Bearer not-a-token", &format!("{url}/pods")]);
    assert_eq!(code, "401");
    // /pods and /runningpods/ with the cluster admin's certificate.
    let admin = vec![format!("--kubeconfig={}", node.cp.kubeconfig.display())];
    let o = Command::new(kubectl_bin("1.33"))
        .args(&admin)
        .arg(format!("--server={url}"))
        .arg(format!("--certificate-authority={}", ca.display()))
        .args(["get", "--raw", "/pods"])
        .output()
        .unwrap();
    let pods: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", err(&o)));
    assert_eq!(pods["kind"], "PodList");
    assert!(
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["name"] == "two")
    );
    let o = Command::new(kubectl_bin("1.33"))
        .args(&admin)
        .arg(format!("--server={url}"))
        .arg(format!("--certificate-authority={}", ca.display()))
        .args(["get", "--raw", "/runningpods/"])
        .output()
        .unwrap();
    let running: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", err(&o)));
    let two = running["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "two")
        .unwrap_or_else(|| panic!("{running}"));
    assert_eq!(two["spec"]["containers"].as_array().unwrap().len(), 2, "{two}");
    // nodes/proxy through the control plane reaches the kubelet too.
    let raw = node.kubectl(&["get", "--raw", &format!("/api/v1/nodes/{}/proxy/pods", node.name)]);
    assert!(raw.contains("\"PodList\""), "{raw}");
}

/// Benchmark: `kubectl logs --tail=10` of a 100 MiB log spread over rotated files (set
/// `KNODE_BENCH=1` to also time the whole log for comparison).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_tail_of_a_100_mib_rotated_log() {
    let node = Node::start("st-bench").await;
    let img = node.image().to_string();
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: big}}\nspec:\n  containers:\n  - name: main\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"echo last-words; sleep 100000\"]\n"
    ));
    node.wait_phase("big", "Running");
    node.eventually("first line", || {
        node.kubectl(&["logs", "big"]).contains("last-words")
    });
    // Ten rotated 10 MiB files before the current one, named as the log writer rotates them.
    let logs = node.dir.path().join("logs");
    let pod_dir = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("default_big_"))
        .unwrap()
        .path()
        .join("main");
    let line = format!("2026-01-01T00:00:00.000000001Z stdout F {}\n", "x".repeat(100));
    let block = line.repeat((10 << 20) / line.len());
    for i in 0..10 {
        std::fs::write(pod_dir.join(format!("0.log.20260101-0000{i:02}")), &block).unwrap();
    }
    let total: u64 = std::fs::read_dir(&pod_dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let t = Instant::now();
    let o = kubectl(&node, "1.33", &["logs", "big", "--tail=10"], None);
    let tail_time = t.elapsed();
    assert!(o.status.success(), "{}", err(&o));
    let shown = out(&o);
    assert_eq!(shown.lines().count(), 10, "{shown}");
    assert_eq!(shown.lines().last(), Some("last-words"));
    println!(
        "BENCH kubectl logs --tail=10 over {:.1} MiB in 11 files: {:.3} s",
        total as f64 / (1 << 20) as f64,
        tail_time.as_secs_f64()
    );
    if std::env::var("KNODE_BENCH").is_ok_and(|v| v == "1") {
        let t = Instant::now();
        let o = kubectl(&node, "1.33", &["logs", "big"], None);
        println!(
            "BENCH kubectl logs (whole log, {} lines): {:.3} s, ratio tail/whole {:.3}",
            out(&o).lines().count(),
            t.elapsed().as_secs_f64(),
            tail_time.as_secs_f64() / t.elapsed().as_secs_f64()
        );
    }
}
