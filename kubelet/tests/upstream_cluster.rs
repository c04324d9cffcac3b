#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A networked knode node in the real upstream control plane, the way a kubeadm cluster runs
//! (`knode_harness::cluster` with one node): the node (kubelet, containerd's pods, knode-bridge,
//! kube-proxy) in its own network namespace on a segment with the plane, which advertises a
//! routable address (not loopback, so its proxy to the kubelet is allowed); the kubelet joins by
//! bootstrap token, kube-proxy runs as `system:kube-proxy`, and CoreDNS is deployed as kubeadm
//! deploys it — on this node.
//!
//! - a postStart hook runs;
//! - CoreDNS becomes Ready on the node (ServiceAccount token, httpGet probes, capabilities,
//!   read-only root, `dnsPolicy: Default`, the apiserver reached through kube-proxy's
//!   `kubernetes` Service);
//! - from a pod: a Service name and `kubernetes.default` resolve (search path from the kubelet's
//!   resolv.conf), and the Service answers by name; its NodePort answers on the node's address;
//! - `kubectl attach` (output, and stdin with `-i`) and `kubectl port-forward` through the real
//!   apiserver;
//! - the kubelet API's authentication and authorization as upstream's: every endpoint × identity
//!   (anonymous, a client certificate from another CA, a ServiceAccount without `nodes/*`, another
//!   node, the apiserver's kubelet client, a cluster admin) gives upstream's 401/403/allowed;
//! - least privilege: no request of the node's or kube-proxy's identity was denied.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use knode_harness::cluster::{ClusterOptions, KnodeCluster, WEB_NODE_PORT_SERVICE};
use knode_harness::upstream::coredns::CLUSTER_DNS_IP;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networked_knode_node_runs_cluster_dns_services_attach_and_port_forward_upstream() {
    // One node of the multi-node harness: the plane in the segment's namespace, advertising a
    // routable address; the node joined by bootstrap token with kube-proxy and knode-hostgw.
    let c = KnodeCluster::start(ClusterOptions {
        nodes: 1,
        coredns: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let (cp, netns, node) = (&c.cp, &c.segment.ns, c.nodes[0].name.clone());
    let node_ip = c.nodes[0].netns.node_ip.clone();
    let eventually =
        |what: &str, timeout: Duration, f: &mut dyn FnMut() -> bool| c.wait_for(what, timeout, f).unwrap();
    let kubectl = |a: &[&str]| cp.run_kubectl(a, None).unwrap_or_default();
    let apply = |yaml: &str| {
        cp.run_kubectl(&["apply", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"))
    };
    // Cluster DNS, deployed as kubeadm does, runs on this node.
    let coredns_available = knode_harness::upstream::coredns::status_query("availableReplicas");
    eventually("CoreDNS available", Duration::from_secs(180), &mut || {
        kubectl(&coredns_available.iter().map(String::as_str).collect::<Vec<_>>()) == "1"
    });

    let img = &c.images.testimg.reference;
    apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  containers:
  - {{name: main, image: {img}, imagePullPolicy: IfNotPresent, args: ["serve"], ports: [{{name: http, containerPort: 8080}}],
     readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}, periodSeconds: 1}},
     lifecycle: {{postStart: {{exec: {{command: [sh, -c, "echo started > /tmp/poststart"]}}}}}}}}
---
{WEB_NODE_PORT_SERVICE}---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: {img}, imagePullPolicy: IfNotPresent, args: ["sleep", "infinity", "--exit-on-sigterm"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: ticks
    image: {img}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.5; done"]
  - name: reader
    image: {img}
    imagePullPolicy: IfNotPresent
    stdin: true
    command: ["sh", "-c", "while read line; do echo got-$line; done; sleep 3600"]
"#
    ));
    for pod in ["web", "client", "talker"] {
        eventually(&format!("pod {pod} Ready"), Duration::from_secs(120), &mut || {
            kubectl(&[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]) == "True"
        });
    }
    let cluster_ip = kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_port = kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let exec = |cmd: &str| {
        cp.run_kubectl(&["exec", "client", "--", "sh", "-c", cmd], None)
            .unwrap_or_else(|e| format!("failed: {e}"))
    };

    // The postStart hook ran before the pod went on.
    let hook = cp
        .run_kubectl(&["exec", "web", "--", "cat", "/tmp/poststart"], None)
        .unwrap_or_default();
    assert_eq!(hook.trim(), "started", "postStart hook");
    // The pod's resolv.conf is the kubelet's ClusterFirst one.
    let resolv = exec("cat /etc/resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {CLUSTER_DNS_IP}")),
        "{resolv}"
    );
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    // The Service's name resolves to its ClusterIP, kubernetes.default through the search path.
    let mut answer = String::new();
    eventually(
        "web resolved through CoreDNS",
        Duration::from_secs(60),
        &mut || {
            answer = exec("nslookup web.default.svc.cluster.local");
            answer.contains(&cluster_ip)
        },
    );
    let answer = exec("nslookup kubernetes.default.svc.cluster.local");
    assert!(
        answer.contains("10.96.0.1"),
        "nslookup kubernetes.default.svc.cluster.local: {answer}"
    );
    // busybox's nslookup asks for the name as given; the C library's resolver (ping's) applies
    // the search path, as applications do.
    let answer = exec("ping -c 1 -W 1 kubernetes.default 2>&1 | head -1");
    assert!(
        answer.contains("(10.96.0.1)"),
        "ping kubernetes.default: {answer}"
    );
    // The Service answers by its short name, and on its NodePort on the node's address.
    let by_name = exec("timeout 10 wget -qO- http://web/hostname");
    assert_eq!(by_name.trim(), "web", "http://web/hostname from a pod");
    let out = netns
        .run(
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{node_ip}:{node_port}/hostname"),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "web",
        "NodePort: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kubectl attach through the apiserver: the container's output from now on…
    let attach = |args: &[&str], stdin: Option<&str>, want: &str| {
        let mut child = cp
            .kubectl_command()
            .arg("attach")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            // Kept open while reading: the container's stdin stays attached.
            child.stdin.as_mut().unwrap().write_all(input.as_bytes()).unwrap();
        }
        read_lines_then_kill(child, 3, |l| l.starts_with(want))
    };
    let ticks = attach(&["talker", "-c", "ticks"], None, "tick-");
    assert!(
        ticks.iter().filter(|l| l.starts_with("tick-")).count() >= 3,
        "{ticks:?}"
    );
    // …and its stdin with -i.
    let said = attach(
        &["-i", "talker", "-c", "reader"],
        Some("one\ntwo\nthree\n"),
        "got-",
    );
    assert_eq!(
        said.iter().filter(|l| l.starts_with("got-")).collect::<Vec<_>>(),
        ["got-one", "got-two", "got-three"],
        "kubectl attach -i: {said:?}"
    );

    // kubectl port-forward through the apiserver to the pod's port.
    let pf = cp
        .kubectl_command()
        .args(["port-forward", "pod/web", ":8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut forwarding = Vec::new();
    let port_line = {
        let mut pf = pf;
        let mut out = BufReader::new(pf.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        // "Forwarding from 127.0.0.1:NNNNN -> 8080"
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("port-forward said {line:?}"));
        for _ in 0..2 {
            let o = netns
                .run(
                    &[
                        "curl",
                        "-sS",
                        "--max-time",
                        "10",
                        &format!("http://127.0.0.1:{port}/hostname"),
                    ],
                    &[],
                )
                .unwrap();
            forwarding.push(String::from_utf8_lossy(&o.stdout).to_string());
        }
        let _ = pf.kill();
        let _ = pf.wait();
        line
    };
    assert_eq!(forwarding, ["web", "web"], "port-forward ({port_line:?})");

    kubelet_api_matrix(&c, &node_ip);

    // Least privilege: nothing the node or kube-proxy did was denied.
    for user in [format!("system:node:{node}"), "system:kube-proxy".to_string()] {
        let denied = cp.audit_denials(&user);
        assert!(denied.is_empty(), "denied requests of {user}: {denied:#?}");
    }

    for pod in ["web", "client", "talker"] {
        cp.run_kubectl(&["delete", "pod", pod, "--wait=false", "--grace-period=1"], None)
            .unwrap();
    }
    cp.run_kubectl(
        &["delete", "deploy", "-n", "kube-system", "coredns", "--wait=false"],
        None,
    )
    .unwrap();
    eventually("pods gone", Duration::from_secs(90), &mut || {
        kubectl(&["get", "pods", "-A", "-o", "name"]).trim().is_empty()
    });
}

/// Reads `child`'s stdout until `want` lines matched `is_match` (or 30 s), then kills it.
fn read_lines_then_kill(mut child: Child, want: usize, is_match: impl Fn(&str) -> bool) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while lines.iter().filter(|l: &&String| is_match(l)).count() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

/// Every kubelet API endpoint × identity → 401 (not authenticated), 403 (authenticated, the API
/// server's SubjectAccessReview says no) or allowed (200 for plain endpoints; streaming ones asked
/// without an upgrade only need to get past authorization), as upstream's kubelet answers.
fn kubelet_api_matrix(c: &KnodeCluster, node_ip: &str) {
    use knode_harness::upstream::bootstrap::KUBELET_CLIENT_USER;
    use knode_harness::upstream::pki::Usage;
    let pki = c.cp.pki();
    let client =
        |file: &str, cn: &str, groups: &[&str]| pki.issue(file, cn, groups, &[], Usage::Client).unwrap();
    c.cp.run_kubectl(&["create", "serviceaccount", "nobody"], None)
        .unwrap();
    let token =
        c.cp.run_kubectl(&["create", "token", "nobody"], None)
            .unwrap()
            .trim()
            .to_string();
    enum Cred {
        None,
        Cert(knode_harness::upstream::pki::CertFiles),
        Token(String),
    }
    // (identity, credentials, allowed): a denied identity gets `denied` everywhere.
    let identities: Vec<(&str, Cred, Result<(), u16>)> = vec![
        ("anonymous", Cred::None, Err(401)),
        (
            "a certificate from another CA",
            Cred::Cert(pki.issue_front_proxy_client().unwrap()),
            Err(401),
        ),
        ("a ServiceAccount without nodes/*", Cred::Token(token), Err(403)),
        (
            "another node",
            Cred::Cert(client(
                "matrix-node",
                "system:node:someone-else",
                &["system:nodes"],
            )),
            Err(403),
        ),
        (
            "the apiserver's kubelet client",
            Cred::Cert(client("matrix-apiserver", KUBELET_CLIENT_USER, &[])),
            Ok(()),
        ),
        (
            "a cluster admin",
            Cred::Cert(client("matrix-admin", "matrix-admin", &["system:masters"])),
            Ok(()),
        ),
    ];
    // (path, streaming: asked without an upgrade, so only authorization is checked).
    let endpoints = [
        ("/pods", false),
        ("/runningpods/", false),
        ("/healthz", false),
        ("/configz", false),
        ("/stats/summary", false),
        ("/metrics", false),
        ("/metrics/resource", false),
        ("/metrics/probes", false),
        ("/logs/", false),
        ("/containerLogs/default/web/main", false),
        ("/exec/default/web/main?command=true&output=1", true),
        ("/attach/default/talker/ticks?output=1", true),
        ("/portForward/default/web", true),
    ];
    let mut wrong = Vec::new();
    for (who, cred, expect) in &identities {
        for (path, streaming) in endpoints {
            let url = format!("https://{node_ip}:10250{path}");
            let mut args: Vec<String> = [
                "curl",
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ]
            .map(String::from)
            .to_vec();
            match cred {
                Cred::None => {}
                Cred::Cert(f) => args.extend([
                    "--cert".into(),
                    f.cert.display().to_string(),
                    "--key".into(),
                    f.key.display().to_string(),
                ]),
                Cred::Token(t) => args.extend(["-H".into(), format!("Authorization: Bearer {t}")]),
            }
            args.push(url);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = c.segment.ns.run(&argv, &[]).unwrap();
            let code: u16 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
            let ok = match expect {
                // Upstream serves /healthz outside the authentication filter (installed on the
                // mux directly): 200 whoever asks.
                _ if path == "/healthz" => code == 200,
                Err(denied) => code == *denied,
                Ok(()) if streaming => code != 0 && code != 401 && code != 403,
                Ok(()) => code == 200,
            };
            if !ok {
                wrong.push(format!("{who} {path}: {code}, want {expect:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "kubelet API answers unlike upstream's:\n{}",
        wrong.join("\n")
    );
}
