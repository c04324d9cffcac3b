#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Several knode nodes in one upstream cluster on one machine (`knode_harness::cluster`): each
//! node a network namespace on a shared L2 segment, with its own containerd, kubelet (joined by
//! bootstrap token), kube-proxy and knode-hostgw; the control plane, the registry and CoreDNS's
//! Service reached over the segment. Driven by the built kubectl, as a user would.
//!
//! - networking: pods reach each other across nodes by IP, unmasqueraded; a Service by name
//!   load-balances over both nodes from every node; its NodePort answers from outside; a headless
//!   Service returns the pod IPs; the control-plane host reaches pods;
//! - workloads: a Deployment spreads, scales, rolls (never below `maxUnavailable`) and rolls back;
//!   a DaemonSet keeps one pod per node, rolls, and a node joining later gets its pod; Jobs complete
//!   and a failing one stops at `backoffLimit`; `kubectl drain` honours a PodDisruptionBudget;
//! - node failure: a kubelet stopped → NotReady, tainted, its short-toleration pods evicted and
//!   dropped from the endpoints; back → Ready with its surviving container untouched; the whole
//!   node dead and a fresh machine rejoining under its name → routes follow its new address, its
//!   stale pods cleaned up; a node removed for good → its routes gone from the survivors;
//! - no request of a node's identity, or of kube-proxy's, was denied.

use std::collections::BTreeSet;
use std::time::Duration;

use knode_harness::cluster::{ClusterOptions, KnodeCluster, WEB_NODE_PORT_SERVICE};
use serde_json::Value;

/// The clusters are heavy for a 2-core machine: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster without CoreDNS (`options` say the rest), the only one running while it is held.
async fn cluster_without_dns(
    options: ClusterOptions,
) -> (tokio::sync::MutexGuard<'static, ()>, KnodeCluster) {
    let one = ONE_AT_A_TIME.lock().await;
    let c = KnodeCluster::start(ClusterOptions {
        coredns: false,
        ..options
    })
    .await
    .unwrap();
    (one, c)
}

const T: Duration = Duration::from_secs(180);

fn wait(c: &KnodeCluster, what: &str, f: impl FnMut() -> bool) {
    c.wait_for(what, T, f).unwrap();
}

fn apply(c: &KnodeCluster, yaml: &str) {
    c.cp.run_kubectl(&["apply", "-f", "-"], Some(yaml))
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
}

/// (name, node, IP) of the pods with label `app`, not terminating.
fn pods_of(c: &KnodeCluster, app: &str) -> Vec<(String, String, String)> {
    let pods: Value =
        serde_json::from_str(&c.kubectl(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]))
            .unwrap_or(Value::Null);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&p["metadata"]["name"]),
                s(&p["spec"]["nodeName"]),
                s(&p["status"]["podIP"]),
            )
        })
        .collect()
}

fn exec(c: &KnodeCluster, pod: &str, cmd: &str) -> String {
    c.cp.run_kubectl(&["exec", pod, "--", "sh", "-c", cmd], None)
        .unwrap_or_else(|e| format!("failed: {e}"))
}

fn no_denials(c: &KnodeCluster) {
    for user in c
        .nodes
        .iter()
        .map(|n| format!("system:node:{}", n.name))
        .chain(["system:kube-proxy".to_string()])
    {
        let denied = c.cp.audit_denials(&user);
        assert!(denied.is_empty(), "denied requests of {user}: {denied:#?}");
    }
}

fn web_yaml(img: &str, replicas: u32, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1, maxSurge: 1}}}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {{matchLabels: {{app: web}}}}}}
{extra_spec}      containers:
      - {{name: main, image: {img}, args: ["serve"], ports: [{{name: http, containerPort: 8080}}],
         env: [{{name: VERSION, value: "1"}}],
         readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}, periodSeconds: 1}}}}
---
{WEB_NODE_PORT_SERVICE}"#
    )
}

fn client_ds_yaml(img: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: client}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: main, image: {img}, args: ["sleep", "infinity", "--exit-on-sigterm"]}}]
"#
    )
}

fn ready_replicas(c: &KnodeCluster, kind: &str, name: &str) -> String {
    let field = if kind == "ds" {
        "numberReady"
    } else {
        "readyReplicas"
    };
    c.kubectl(&["get", kind, name, "-o", &format!("jsonpath={{.status.{field}}}")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_services_reach_across_two_knode_nodes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = KnodeCluster::start(ClusterOptions::default()).await.unwrap();
    let img = c.images.testimg.reference.clone();
    apply(&c, &web_yaml(&img, 4, ""));
    apply(&c, &client_ds_yaml(&img));
    apply(
        &c,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-headless}\nspec:\n  clusterIP: None\n  \
         selector: {app: web}\n  ports: [{name: http, port: 8080}]\n",
    );
    let coredns_ready = knode_harness::upstream::coredns::status_query("readyReplicas");
    wait(&c, "web, client and CoreDNS ready", || {
        ready_replicas(&c, "deploy", "web") == "4"
            && ready_replicas(&c, "ds", "client") == "2"
            && c.kubectl(&coredns_ready.iter().map(String::as_str).collect::<Vec<_>>()) == "1"
    });
    let (webs, clients) = (pods_of(&c, "web"), pods_of(&c, "client"));
    let web_nodes: BTreeSet<&String> = webs.iter().map(|w| &w.1).collect();
    assert_eq!(web_nodes.len(), 2, "web spread over both nodes: {webs:?}");
    let client_nodes: BTreeSet<&String> = clients.iter().map(|c| &c.1).collect();
    assert_eq!(
        (clients.len(), client_nodes.len()),
        (2, 2),
        "one client per node: {clients:?}"
    );

    // Pod to pod by IP, across nodes and on the same node, source address kept.
    for (client, client_node, client_ip) in &clients {
        for (web, web_node, web_ip) in &webs {
            let answer = exec(
                &c,
                client,
                &format!("timeout 10 wget -qO- http://{web_ip}:8080/hostname"),
            );
            assert_eq!(
                answer.trim(),
                web,
                "{client} ({client_node}) → {web} ({web_node})"
            );
            let seen = exec(
                &c,
                client,
                &format!("timeout 10 wget -qO- http://{web_ip}:8080/clientip"),
            );
            assert!(
                seen.starts_with(&format!("{client_ip}:")),
                "{web} on {web_node} saw {seen:?}, not {client} ({client_ip}) on {client_node}: masqueraded"
            );
        }
    }
    // The Service by name from every node reaches pods on both nodes; headless gives pod IPs.
    let web_names: BTreeSet<&str> = webs.iter().map(|w| w.0.as_str()).collect();
    for (client, client_node, _) in &clients {
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            let a = exec(&c, client, "timeout 10 wget -qO- http://web/hostname");
            seen.insert(a.trim().to_string());
            if seen.len() == webs.len() {
                break;
            }
        }
        let seen_refs: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
        assert_eq!(seen_refs, web_names, "Service web from {client} on {client_node}");
        let headless = exec(&c, client, "nslookup web-headless.default.svc.cluster.local");
        for (_, _, ip) in &webs {
            assert!(
                headless.contains(ip.as_str()),
                "headless answer from {client_node}: {headless}"
            );
        }
    }
    // The NodePort on every node, from outside the nodes (the control plane's host), and the
    // control-plane host reaches a pod IP directly (apiserver → pod).
    let node_port = c.kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let curl = |url: String| {
        let o = c
            .segment
            .ns
            .run(&["curl", "-sS", "--max-time", "5", &url], &[])
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    for n in &c.nodes {
        let answer = curl(format!("http://{}:{node_port}/hostname", n.netns.node_ip));
        assert!(
            web_names.contains(answer.as_str()),
            "NodePort on {}: {answer:?}",
            n.name
        );
    }
    assert_eq!(curl(format!("http://{}:8080/hostname", webs[0].2)), webs[0].0);
    // A hostNetwork pod serves on its node's address (its node's network, not this host's).
    let n0 = &c.nodes[0];
    apply(
        &c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: hostnet}}\nspec:\n  hostNetwork: true\n  \
             nodeName: {}\n  containers:\n  - {{name: main, image: {img}, args: [serve, --http-port, \"18080\"]}}\n",
            n0.name
        ),
    );
    wait(&c, "hostnet Running", || {
        c.kubectl(&["get", "pod", "hostnet", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    let pod_ip = c.kubectl(&["get", "pod", "hostnet", "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(pod_ip, n0.netns.node_ip.to_string());
    let mut answer = String::new();
    for _ in 0..50 {
        answer = curl(format!("http://{}:18080/hostname", n0.netns.node_ip));
        if !answer.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        !answer.is_empty(),
        "hostNetwork server at {}:18080",
        n0.netns.node_ip
    );
    no_denials(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_daemonsets_jobs_and_drain_across_knode_nodes() {
    let (_one, mut c) = cluster_without_dns(ClusterOptions::default()).await;
    let img = c.images.testimg.reference.clone();

    // Deployment: 6 spread over the nodes, scaled to 9 and back to 3.
    apply(&c, &web_yaml(&img, 6, ""));
    apply(&c, &client_ds_yaml(&img));
    wait(&c, "6 web replicas", || {
        ready_replicas(&c, "deploy", "web") == "6"
    });
    let per_node = |c: &KnodeCluster| {
        let mut m = std::collections::BTreeMap::new();
        for (_, node, _) in pods_of(c, "web") {
            *m.entry(node).or_insert(0) += 1;
        }
        m
    };
    // A soft constraint (a cordoned node still counts as a domain, so a hard one would block the
    // drain below): spread, not necessarily evenly.
    assert_eq!(per_node(&c).len(), 2, "spread: {:?}", per_node(&c));
    c.kubectl(&["scale", "deploy", "web", "--replicas=9"]);
    wait(&c, "9 web replicas", || {
        ready_replicas(&c, "deploy", "web") == "9"
    });
    c.kubectl(&["scale", "deploy", "web", "--replicas=3"]);
    wait(&c, "3 web pods", || {
        ready_replicas(&c, "deploy", "web") == "3"
            && c.kubectl(&["get", "pods", "-l", "app=web", "-o", "name"])
                .lines()
                .count()
                == 3
    });

    // A rolling update never has fewer than replicas - maxUnavailable ready; then an undo.
    c.kubectl(&["set", "env", "deploy/web", "VERSION=2"]);
    let watcher = {
        let kubectl = c.cp.kubectl();
        let kubeconfig = c.cp.kubeconfig.clone();
        let ns = c.segment.ns.name.clone();
        std::thread::spawn(move || {
            let mut lowest = i64::MAX;
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(150) {
                let o = std::process::Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(&kubectl)
                    .arg(format!("--kubeconfig={}", kubeconfig.display()))
                    .args([
                        "get",
                        "deploy",
                        "web",
                        "-o",
                        "jsonpath={.status.readyReplicas} {.status.updatedReplicas} {.status.replicas}",
                    ])
                    .output();
                let text = o
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let n: Vec<i64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
                if let [ready, updated, replicas] = n[..] {
                    lowest = lowest.min(ready);
                    if updated == 3 && ready == 3 && replicas == 3 {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            lowest
        })
    };
    let rollout =
        c.cp.run_kubectl(&["rollout", "status", "deploy/web", "--timeout=150s"], None)
            .unwrap_or_else(|e| panic!("rollout status: {e}\n{}", c.log_tails(20)));
    assert!(rollout.contains("successfully rolled out"), "{rollout}");
    let lowest = watcher.join().unwrap();
    assert!(
        lowest >= 2,
        "ready replicas fell to {lowest} (maxUnavailable 1 of 3)"
    );
    let envs = || {
        pods_of(&c, "web")
            .iter()
            .map(|(p, _, _)| exec(&c, p, "echo $VERSION").trim().to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(envs(), BTreeSet::from(["2".to_string()]));
    c.cp.run_kubectl(&["rollout", "undo", "deploy/web"], None)
        .unwrap();
    c.cp.run_kubectl(&["rollout", "status", "deploy/web", "--timeout=150s"], None)
        .unwrap();
    wait(&c, "3 web pods after the undo", || {
        c.kubectl(&["get", "pods", "-l", "app=web", "-o", "name"])
            .lines()
            .count()
            == 3
    });
    assert_eq!(envs(), BTreeSet::from(["1".to_string()]));

    // DaemonSet: one per node, rolled, and a node joining later gets its pod.
    wait(&c, "client on both nodes", || {
        ready_replicas(&c, "ds", "client") == "2"
    });
    c.kubectl(&["set", "env", "ds/client", "ROUND=2"]);
    c.cp.run_kubectl(&["rollout", "status", "ds/client", "--timeout=150s"], None)
        .unwrap_or_else(|e| panic!("ds rollout: {e}"));
    let i = c.add_node().await.unwrap();
    let newcomer = c.nodes[i].name.clone();
    wait(&c, "client on the new node", || {
        ready_replicas(&c, "ds", "client") == "3" && pods_of(&c, "client").iter().any(|p| p.1 == newcomer)
    });
    let clients = pods_of(&c, "client");
    let nodes: BTreeSet<&String> = clients.iter().map(|p| &p.1).collect();
    assert_eq!((clients.len(), nodes.len()), (3, 3), "{clients:?}");

    // Jobs: 3 completions 2 at a time; a failing one stops at backoffLimit.
    apply(
        &c,
        &format!(
            r#"apiVersion: batch/v1
kind: Job
metadata: {{name: three}}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: {img}, args: ["exit", "0"]}}]
---
apiVersion: batch/v1
kind: Job
metadata: {{name: failing}}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: {img}, args: ["exit", "3"]}}]
"#
        ),
    );
    wait(&c, "job three complete", || {
        c.kubectl(&["get", "job", "three", "-o", "jsonpath={.status.succeeded}"]) == "3"
            && c.kubectl(&[
                "get",
                "job",
                "three",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Complete\")].status}",
            ]) == "True"
    });
    wait(&c, "job failing failed", || {
        c.kubectl(&[
            "get",
            "job",
            "failing",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
        ]) == "BackoffLimitExceeded"
    });
    assert_eq!(
        c.kubectl(&["get", "job", "failing", "-o", "jsonpath={.status.failed}"]),
        "2"
    );

    // Drain a node holding web pods, with a PodDisruptionBudget: evicted, rescheduled elsewhere.
    apply(
        &c,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 2\n  \
         selector: {matchLabels: {app: web}}\n",
    );
    let victim = pods_of(&c, "web")[0].1.clone();
    let drained = c.cp.run_kubectl(
        &[
            "drain",
            &victim,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=150s",
        ],
        None,
    );
    assert!(drained.is_ok(), "kubectl drain: {drained:?}\n{}", c.log_tails(20));
    wait(&c, "web ready elsewhere", || {
        let pods = pods_of(&c, "web");
        ready_replicas(&c, "deploy", "web") == "3" && pods.len() == 3 && pods.iter().all(|p| p.1 != victim)
    });
    assert_eq!(
        c.kubectl(&["get", "node", &victim, "-o", "jsonpath={.spec.unschedulable}"]),
        "true"
    );
    c.kubectl(&["uncordon", &victim]);
    assert_eq!(
        c.kubectl(&["get", "node", &victim, "-o", "jsonpath={.spec.unschedulable}"]),
        ""
    );
    no_denials(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_is_tainted_its_pods_move_and_it_recovers() {
    let (_one, mut c) = cluster_without_dns(ClusterOptions {
        // Seconds instead of upstream's 40–50 s, so the test waits for the real controller.
        controller_manager_args: vec![
            "--node-monitor-grace-period=16s".into(),
            "--node-monitor-period=2s".into(),
        ],
        kubelet_config: "nodeStatusUpdateFrequency: 2s\nnodeLeaseDurationSeconds: 8".into(),
        ..Default::default()
    })
    .await;
    let img = c.images.testimg.reference.clone();
    let tolerations = "      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n";
    apply(&c, &web_yaml(&img, 2, tolerations));
    // DaemonSet pods tolerate unreachable for ever: they stay on a failed node.
    apply(&c, &client_ds_yaml(&img));
    wait(&c, "web on both nodes", || {
        ready_replicas(&c, "deploy", "web") == "2" && ready_replicas(&c, "ds", "client") == "2"
    });
    let failing = c.nodes[1].name.clone();
    let on_failing = |c: &KnodeCluster, app: &str| pods_of(c, app).into_iter().find(|p| p.1 == failing);
    let (evicted, _, evicted_ip) = on_failing(&c, "web").expect("a web pod on node 1");
    let (survivor, _, _) = on_failing(&c, "client").expect("a client pod on node 1");
    let container_of = |c: &KnodeCluster, pod: &str| {
        c.kubectl(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}",
        ])
    };
    let survivor_before = container_of(&c, &survivor);

    c.nodes[1].stop_kubelet();
    wait(&c, "node NotReady (Unknown) and tainted unreachable", || {
        c.node_ready_is(&failing, "Unknown")
            && c.kubectl(&["get", "node", &failing, "-o", "jsonpath={.spec.taints[*].key}"])
                .contains("node.kubernetes.io/unreachable")
    });
    wait(&c, "the web pod evicted and replaced on the healthy node", || {
        let pods = pods_of(&c, "web");
        ready_replicas(&c, "deploy", "web") == "2" && pods.iter().all(|p| p.1 != failing)
    });
    let slices = c.kubectl(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "json",
    ]);
    let slices: Value = serde_json::from_str(&slices).unwrap();
    for ep in slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
    {
        if ep["addresses"][0] == evicted_ip.as_str() {
            assert_ne!(
                ep["conditions"]["ready"], true,
                "the evicted pod is still a ready endpoint: {ep}"
            );
        }
    }

    c.nodes[1].start_kubelet().unwrap();
    wait(&c, "node Ready again", || c.node_ready_is(&failing, "True"));
    wait(&c, "the evicted pod gone", || {
        c.kubectl(&["get", "pod", &evicted, "-o", "name"]).is_empty()
    });
    assert_eq!(
        container_of(&c, &survivor),
        survivor_before,
        "the DaemonSet pod's container was kept"
    );

    // The whole node dies (namespace, containerd, containers) and a fresh machine rejoins under
    // its name: new address (the survivors' routes follow it), the pods the dead node held are
    // cleaned up (the evicted one finalized, the DaemonSet's started again), nothing stuck.
    let cidr = c.kubectl(&["get", "node", &failing, "-o", "jsonpath={.spec.podCIDR}"]);
    drop(c.nodes.remove(1));
    wait(&c, "the dead node Unknown", || {
        c.node_ready_is(&failing, "Unknown")
    });
    wait(&c, "its web pod evicted", || {
        pods_of(&c, "web").iter().all(|p| p.1 != failing)
    });
    let back = c.rejoin(&failing).await.unwrap();
    let new_ip = c.nodes[back].netns.node_ip.clone();
    for ns in [&c.nodes[0].netns, &c.segment.ns] {
        let o = ns.run(&["ip", "route", "show", "proto", "76"], &[]).unwrap();
        let routes = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(routes.contains(&format!("{cidr} via {new_ip}")), "{routes}");
    }
    let settled = c.wait_for(
        "the DaemonSet pod running again and nothing terminating",
        T,
        || {
            let all: Value =
                serde_json::from_str(&c.kubectl(&["get", "pods", "-o", "json"])).unwrap_or(Value::Null);
            let stuck = all["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| !p["metadata"]["deletionTimestamp"].is_null());
            !stuck && ready_replicas(&c, "ds", "client") == "2" && ready_replicas(&c, "deploy", "web") == "2"
        },
    );
    if let Err(e) = settled {
        panic!(
            "{e}\npods:\n{}\nrejoined kubelet:\n{}",
            c.kubectl(&["get", "pods", "-o", "wide"]),
            std::fs::read_to_string(c.nodes[back].log("kubelet")).unwrap_or_default()
        );
    }

    // The node removed for good: its Node deleted, the survivors drop the route to its pods.
    drop(c.nodes.remove(back));
    c.kubectl(&["delete", "node", &failing]);
    wait(&c, "routes to the removed node gone", || {
        [&c.nodes[0].netns, &c.segment.ns].iter().all(|ns| {
            ns.run(&["ip", "route", "show", "proto", "76"], &[])
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains(&cidr))
                .unwrap_or(false)
        })
    });
    wait(&c, "web and client only on the survivor", || {
        ready_replicas(&c, "deploy", "web") == "2" && pods_of(&c, "client").len() == 1
    });
    no_denials(&c);
}

/// Percentile `q` of sorted `v`.
fn pct(v: &[f64], q: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// Pod start over several nodes and pod-to-pod latency across nodes vs on one node, measured in
/// the same run. Quick by default (2 nodes, 6 replicas, 300 round trips); `KNODE_BENCH=full`: 3
/// nodes, 30 replicas, 3000 round trips. Prints the numbers (the README keeps a full run's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_replicas_over_nodes_and_cross_node_latency() {
    let full = std::env::var("KNODE_BENCH").is_ok_and(|v| v == "full");
    let (nodes, replicas, count) = if full { (3, 30, 3000) } else { (2, 6, 300) };
    let (_one, c) = cluster_without_dns(ClusterOptions {
        nodes,
        ..Default::default()
    })
    .await;
    let img = c.images.testimg.reference.clone();
    apply(&c, &client_ds_yaml(&img));
    wait(&c, "a client on every node", || {
        ready_replicas(&c, "ds", "client") == nodes.to_string()
    });
    let yaml = web_yaml(&img, replicas, "")
        .replace(r#"args: ["serve"]"#, r#"args: ["serve", "--tcp-port", "9000"]"#);
    apply(&c, &yaml);
    wait(&c, "every replica Ready", || {
        ready_replicas(&c, "deploy", "web") == replicas.to_string()
    });
    let pods: Value =
        serde_json::from_str(&c.kubectl(&["get", "pods", "-l", "app=web", "-o", "json"])).unwrap();
    // The API's timestamps, parsed by k8s-openapi's own type.
    let ts = |s: &Value| {
        serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>(s.clone())
            .map(|t| t.0.as_millisecond() as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    };
    let mut starts: Vec<f64> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let created = ts(&p["metadata"]["creationTimestamp"]);
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| ts(&c["lastTransitionTime"]))
                .unwrap_or(f64::NAN);
            ready - created
        })
        .collect();
    starts.sort_by(f64::total_cmp);
    assert_eq!(starts.len(), replicas as usize);
    assert!(starts.iter().all(|s| s.is_finite() && *s >= 0.0), "{starts:?}");

    let (webs, clients) = (pods_of(&c, "web"), pods_of(&c, "client"));
    let (client, client_node, _) = &clients[0];
    let same = webs
        .iter()
        .find(|w| &w.1 == client_node)
        .expect("a web pod beside the client");
    let other = webs
        .iter()
        .find(|w| &w.1 != client_node)
        .expect("a web pod on another node");
    let rtt = |ip: &str| {
        let out =
            c.cp.run_kubectl(
                &[
                    "exec",
                    client,
                    "--",
                    "/testimg",
                    "tcp-rtt",
                    &format!("{ip}:9000"),
                    "--count",
                    &count.to_string(),
                ],
                None,
            )
            .unwrap();
        let field = |k: &str| -> f64 {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("tcp-rtt said {out:?}"))
        };
        (field("p50_us="), field("p99_us="))
    };
    // Interleaved, so machine noise hits both.
    let (mut same_p50, mut cross_p50, mut same_p99, mut cross_p99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        let s = rtt(&same.2);
        let x = rtt(&other.2);
        same_p50.push(s.0);
        same_p99.push(s.1);
        cross_p50.push(x.0);
        cross_p99.push(x.1);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (sp50, xp50, sp99, xp99) = (
        med(&mut same_p50),
        med(&mut cross_p50),
        med(&mut same_p99),
        med(&mut cross_p99),
    );
    assert!(sp50 > 0.0 && xp50 > 0.0);
    println!(
        "multi-node bench ({}): {nodes} nodes, {replicas} replicas: pod start (created → Ready) p50 {:.0} s, p99 {:.0} s, max {:.0} s; \
         TCP round trip pod→pod same node p50 {sp50:.0} µs p99 {sp99:.0} µs, across nodes p50 {xp50:.0} µs p99 {xp99:.0} µs, \
         cross/same p50 ratio {:.2}",
        if full { "full" } else { "quick" },
        pct(&starts, 0.5),
        pct(&starts, 0.99),
        starts[starts.len() - 1],
        xp50 / sp50
    );
}
