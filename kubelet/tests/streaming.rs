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
        .args(args);
    knode_harness::process::output_with_stdin(&mut c, stdin).unwrap()
}

/// `kubectl exec [flags] two -c <container> -- sh -c <script>`.
fn exec_sh(
    node: &Node,
    v: &str,
    flags: &[&str],
    container: &str,
    script: &str,
    stdin: Option<&[u8]>,
) -> Output {
    let args: Vec<&str> = ["exec"].into_iter().chain(flags.iter().copied()).collect();
    let args = [&args[..], &["two", "-c", container, "--", "sh", "-c", script]].concat();
    kubectl(node, v, &args, stdin)
}

/// Runs shell command `cmd` under `script` (a terminal), ended after `secs` by `timeout`; its
/// output is piped when `capture`d, else dropped.
fn under_script(secs: &str, cmd: &str, capture: bool) -> std::process::Child {
    let out = || if capture { Stdio::piped() } else { Stdio::null() };
    Command::new("timeout")
        .args([secs, "script", "-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(out())
        .stderr(out())
        .spawn()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A node running pod `two` (containers `main`, serving HTTP on 8080, and `side`, printing).
async fn node_with_two(name: &str) -> Node {
    let node = Node::start(name).await;
    let img = node.image().to_string();
    node.apply(&two_container_pod(&img));
    node.wait_phase("two", "Running");
    node
}

/// Waits for pod `name` to run and for `line` in `kubectl <logs>`.
fn wait_for_log(node: &Node, name: &str, logs: &[&str], line: &str) {
    node.wait_phase(name, "Running");
    node.eventually(&format!("{line} in {name}'s log"), || {
        node.kubectl(logs).contains(line)
    });
}

fn two_container_pod(img: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: two}}\nspec:\n  containers:\n  - name: main\n    image: {img}\n    args: [\"serve\", \"--http-port\", \"8080\"]\n  - name: side\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"i=0; while true; do echo side $i; i=$((i+1)); sleep 0.3; done\"]\n"
    )
}

/// exec (output, exit code, stdin, TTY, -c), attach and port-forward with one kubectl version.
fn exercise(node: &Node, v: &str) {
    // Output on both streams, from the named container.
    let o = exec_sh(node, v, &[], "main", "echo out-$HOSTNAME; echo err >&2", None);
    assert!(o.status.success(), "{v} exec: {}\n{}", err(&o), node.log());
    assert_eq!(out(&o).trim(), "out-two", "{v}");
    assert!(err(&o).contains("err"), "{v}: {}", err(&o));
    // The exit code propagates.
    let o = exec_sh(node, v, &[], "main", "exit 3", None);
    assert_eq!(o.status.code(), Some(3), "{v}: {}", err(&o));
    // stdin piped in, and its end closes the command's input.
    let o = exec_sh(
        node,
        v,
        &["-i"],
        "main",
        "cat; echo done",
        Some(b"hello\nworld\n"),
    );
    assert!(o.status.success(), "{v} exec -i: {}", err(&o));
    assert_eq!(out(&o), "hello\nworld\ndone\n", "{v}");
    // The second container.
    let o = exec_sh(
        node,
        v,
        &[],
        "side",
        "ps | grep -c 'sleep\\|side' >/dev/null; echo side-ok",
        None,
    );
    assert_eq!(out(&o).trim(), "side-ok", "{v}: {}", err(&o));
    // A TTY (kubectl needs a terminal on stdin for -t: `script` gives it one).
    let cmd = format!(
        "{} --kubeconfig={} exec -it two -c main -- sh -c 'tty; exit 5'",
        kubectl_bin(v).display(),
        node.cp.kubeconfig.display()
    );
    let mut child = under_script("60", &cmd, true);
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
    let node = node_with_two("st-kubectl").await;
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
    wait_for_log(&node, "early", &["logs", "early", "-c", "main"], "early-line");
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

/// kubectl straight at the kubelet (its self-signed serving certificate as the CA), with `auth`
/// (a kubeconfig, and a token).
fn kubectl_at_kubelet(node: &Node, url: &str, auth: &[String], args: &[&str]) -> Output {
    let ca = node.dir.path().join("root/pki/kubelet.crt");
    Command::new("timeout")
        .arg("60")
        .arg(kubectl_bin("1.33"))
        .arg(format!("--server={url}"))
        .arg(format!("--certificate-authority={}", ca.display()))
        .args(auth)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_api_authenticates_authorizes_and_serves_pods() {
    let node = node_with_two("st-sec").await;
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
    for path in ["/containerLogs/default/two/main", "/pods"] {
        let o = kubectl_at_kubelet(&node, &url, &alice_auth, &["get", "--raw", path]);
        assert!(!o.status.success());
        assert!(err(&o).contains("Forbidden"), "{path}: {}", err(&o));
    }
    // Exec at the kubelet with that certificate: refused before any upgrade.
    let o = kubectl_at_kubelet(
        &node,
        &url,
        &alice_auth,
        &[
            "create",
            "--raw",
            "/exec/default/two/main?command=true&output=1",
            "-f",
            "/dev/null",
        ],
    );
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
        &["--kubeconfig=/dev/null".into(), format!("--token={token}")],
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
    let o = kubectl_at_kubelet(&node, &url, &admin, &["get", "--raw", "/pods"]);
    let pods: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", err(&o)));
    assert_eq!(pods["kind"], "PodList");
    assert!(
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["name"] == "two")
    );
    let o = kubectl_at_kubelet(&node, &url, &admin, &["get", "--raw", "/runningpods/"]);
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
    wait_for_log(&node, "big", &["logs", "big"], "last-words");
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

/// A pod whose container echoes each stdin line, with `stdin: true` (and `stdinOnce`, `tty`).
fn reader_pod(name: &str, img: &str, once: bool, tty: bool, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: r\n    image: {img}\n    command: [\"/bin/sh\", \"-c\", \"{script}\"]\n    stdin: true\n    stdinOnce: {once}\n    tty: {tty}\n"
    )
}

/// `kubectl attach -i` with `input` piped in, ended after `secs` by `timeout` unless it ends first.
fn attach_with_input(node: &Node, v: &str, pod: &str, input: &[u8], secs: u32) -> Output {
    let mut child = Command::new("timeout")
        .arg(secs.to_string())
        .arg(kubectl_bin(v))
        .arg(format!("--kubeconfig={}", node.cp.kubeconfig.display()))
        .args(["attach", "-i", pod])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_writes_to_stdin_with_1_27_and_1_33() {
    let node = Node::start("st-attach").await;
    let img = node.image().to_string();
    let echo = "while read l; do echo got:$l; done; echo stdin-closed; sleep 100000";
    let once = "while read l; do echo got:$l; done; echo stdin-closed";
    node.apply(&reader_pod("keep", &img, false, false, echo));
    node.apply(&reader_pod("once27", &img, true, false, once));
    node.apply(&reader_pod("once33", &img, true, false, once));
    // A terminal: the container prints its size whenever it changes.
    let sizes = "s=; while true; do n=$(stty size); if [ \\\"$n\\\" != \\\"$s\\\" ]; then echo size:$n; s=$n; fi; sleep 0.2; done";
    node.apply(&reader_pod("term", &img, false, true, sizes));
    for p in ["keep", "once27", "once33", "term"] {
        node.wait_phase(p, "Running");
    }

    // Without stdinOnce the container's stdin stays open across sessions (kubectl keeps the
    // session until `timeout` ends it, as upstream: the container is still running).
    for (v, line) in [("1.27", "one"), ("1.33", "two")] {
        attach_with_input(&node, v, "keep", format!("{line}\n").as_bytes(), 5);
        node.eventually(&format!("{v}: got:{line} in keep's log"), || {
            node.kubectl(&["logs", "keep"]).contains(&format!("got:{line}"))
        });
    }
    let logs = node.kubectl(&["logs", "keep"]);
    assert_eq!(logs, "got:one\ngot:two\n", "stdin stayed open: {logs}");
    assert_eq!(node.pod("keep")["status"]["phase"], "Running");

    // With stdinOnce the end of the first session's input closes the container's stdin: the
    // loop ends, the container exits and with it the attach session (kubectl ends by itself).
    for (v, pod) in [("1.27", "once27"), ("1.33", "once33")] {
        let o = attach_with_input(&node, v, pod, b"hi\nthere\n", 60);
        assert!(
            o.status.success(),
            "{v} attach ended by itself: {:?} {}\n{}",
            o.status,
            err(&o),
            node.log()
        );
        let p = node.wait_phase(pod, "Succeeded");
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        assert_eq!(
            node.kubectl(&["logs", pod]),
            "got:hi\ngot:there\nstdin-closed\n",
            "{v}"
        );
    }

    // A TTY container: `attach -t` (under `script` for a terminal of a known size) resizes it.
    let term_log = || node.kubectl(&["logs", "term"]);
    // The console starts at 0x0 (busybox `stty size` fails on that): only an attach's resize
    // gives it a size.
    for (v, rows, cols) in [("1.27", 31, 97), ("1.33", 33, 101)] {
        let cmd = format!(
            "stty rows {rows} cols {cols}; {} --kubeconfig={} attach -it term",
            kubectl_bin(v).display(),
            node.cp.kubeconfig.display()
        );
        let mut child = under_script("8", &cmd, false);
        node.eventually(&format!("{v}: size {rows} {cols} in term's log"), || {
            term_log().contains(&format!("size:{rows} {cols}"))
        });
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Reads one unmasked server frame: (opcode, payload).
async fn read_frame(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.unwrap();
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.unwrap();
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await.unwrap();
    (h[0] & 0x0f, payload)
}

/// A masked binary client frame.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    kubelet::server::websocket::encode_frame(0x82, payload, Some([0x12, 0x34, 0x56, 0x78]), &mut f);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_websocket_port_forward_carries_an_http_request() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = Node::start("st-wspf").await;
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    args: [\"serve\", \"--http-port\", \"8080\"]\n",
        node.image()
    ));
    node.wait_phase("web", "Running");
    let url = kubelet_url(&node);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    // TLS with an authorized client certificate, the kubelet's self-signed certificate as root.
    let (cert, key) = node.admin_client_cert();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(node.dir.path().join("root/pki/kubelet.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_file_iter(&cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect(),
            PrivateKeyDer::from_pem_file(&key).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    // Port 8080 serves; nothing listens on port 9 (its error channel says so).
    s.write_all(
        b"GET /portForward/default/web?port=8080&port=9 HTTP/1.1\r\nHost: kubelet\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-protocol: v4.channel.k8s.io"),
        "{head}"
    );
    // The first message on each channel is its port, little endian.
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(read_frame(&mut s).await);
    }
    for (ch, port) in [(0u8, 8080u16), (1, 8080), (2, 9), (3, 9)] {
        let mut want = vec![ch];
        want.extend_from_slice(&port.to_le_bytes());
        assert!(first.contains(&(2, want.clone())), "{want:?} in {first:?}");
    }
    let mut req = vec![0u8];
    req.extend_from_slice(b"GET /hostname HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&client_frame(&req)).await.unwrap();
    let (mut data, mut errors) = (Vec::new(), Vec::new());
    loop {
        let (op, p) = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut s))
            .await
            .expect("the session ends when the connections have");
        if op == 8 {
            break;
        }
        match p.split_first() {
            Some((0, d)) => data.extend_from_slice(d),
            Some((3, d)) => errors.extend_from_slice(d),
            other => panic!("unexpected message {other:?}"),
        }
    }
    let data = String::from_utf8_lossy(&data);
    assert!(data.starts_with("HTTP/1.1 200"), "{data}");
    assert!(data.trim_end().ends_with("web"), "{data}");
    let errors = String::from_utf8_lossy(&errors);
    assert!(
        errors.contains("error forwarding port 9 to pod default/web"),
        "{errors}"
    );
    // Without ports the request is refused before upgrading.
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let (code, body) = curl(&[
        "--cert",
        &cert_s,
        "--key",
        &key_s,
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "-H",
        "Sec-WebSocket-Protocol: v4.channel.k8s.io",
        &format!("{url}/portForward/default/web"),
    ]);
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("query parameter \"port\" is required"), "{body}");
}
