#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Two knode nodes in one upstream cluster on one machine: each node is a network namespace on a
//! shared L2 segment (a bridge in the control plane's namespace, where the apiserver, the registry
//! and CoreDNS's Service are reached), with its own containerd, kubelet (joined by bootstrap token,
//! default CNI config written from its podCIDR), kube-proxy and knode-hostgw.
//!
//! - nodeipam gives each node a podCIDR; knode-hostgw routes them (the nodes', and the control
//!   plane host's, so the apiserver reaches pods);
//! - a Deployment spreads over both nodes and a DaemonSet puts exactly one client on each;
//! - every client reaches every web pod by pod IP across nodes, unmasqueraded (the server sees the
//!   client pod's IP);
//! - a Service by name (CoreDNS, running on one of the nodes) load-balances over pods on both nodes
//!   from every node, its NodePort answers on every node from outside, a headless Service returns
//!   the pod IPs;
//! - no request of either node's identity, or of kube-proxy's (which knode-hostgw runs as), was
//!   denied.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::upstream::{Daemon, eventually, spawn};
use knode_harness::containerd::PrivateContainerd;
use knode_harness::control_plane::target_bin;
use knode_harness::image::push_test_images;
use knode_harness::netns::{NodeNetns, Segment, in_netns};
use knode_harness::registry::PrivateRegistry;
use knode_harness::upstream::coredns::{self, CLUSTER_DNS_IP};
use knode_harness::upstream::{CLUSTER_CIDR, UpstreamBinaries, UpstreamControlPlane, UpstreamOptions};
use serde_json::Value;

struct KnodeNode {
    name: String,
    netns: NodeNetns,
    containerd: PrivateContainerd,
    ns: String,
    dir: tempfile::TempDir,
    daemons: Vec<Daemon>,
}

impl KnodeNode {
    fn log(&self, daemon: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{daemon}.log"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_knode_nodes_route_pods_and_services_across_nodes() {
    knode_harness::require_root().unwrap();
    let bins = UpstreamBinaries::locate(false).unwrap();
    let id = std::process::id();
    let seg = Segment::create(&format!("knseg-{id}"), "10.210.0.").unwrap();
    let gateway = seg.gateway().to_string();
    let registry = PrivateRegistry::start_in(&seg.ns.name, gateway.parse().unwrap()).unwrap();
    let host = registry.host();
    let (images, dns_image) = {
        let (host, bins) = (host.clone(), bins.clone());
        in_netns(&seg.ns.name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                (
                    push_test_images(&host).await.unwrap(),
                    coredns::push_image(&host, &bins).await.unwrap(),
                )
            })
        })
        .unwrap()
    };
    let cp = UpstreamControlPlane::start(UpstreamOptions {
        advertise_address: gateway.parse().unwrap(),
        netns: Some(seg.ns.name.clone()),
        ..Default::default()
    })
    .unwrap();
    let kubectl = |a: &[&str]| cp.run_kubectl(a, None).unwrap_or_default();

    // The nodes, joining as `kubeadm join` does.
    let mut nodes = Vec::new();
    for i in 0..2u8 {
        let containerd = PrivateContainerd::start().await.unwrap();
        let ns = containerd.unique_namespace(&format!("mn{i}"));
        let netns = seg.add_node(&format!("knn-{id}-{i}"), i).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let name = format!("mn{i}-{}", &ns[ns.len().saturating_sub(5)..]).to_lowercase();
        std::fs::create_dir_all(dir.path().join("cni")).unwrap();
        let config = dir.path().join("kubelet-config.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 podLogsDir: {logs}\naddress: {ip}\nrotateCertificates: true\nserverTLSBootstrap: true\n\
                 clusterDomain: cluster.local\nclusterDNS: [{CLUSTER_DNS_IP}]\n\
                 authentication:\n  x509:\n    clientCAFile: {ca}\n  webhook:\n    enabled: true\n\
                 authorization:\n  mode: Webhook\nevictionHard:\n  memory.available: 100Mi\n  \
                 nodefs.available: 100Mi\n  imagefs.available: 100Mi\nimageGCHighThresholdPercent: 100\n",
                logs = dir.path().join("logs").display(),
                ip = netns.node_ip,
                ca = cp.ca_file.display(),
            ),
        )
        .unwrap();
        let bootstrap = cp
            .bootstrap_kubeconfig(&dir.path().join("bootstrap-kubelet.conf"))
            .unwrap();
        let kubelet = spawn(
            &netns,
            "kubelet",
            &[
                format!("--bootstrap-kubeconfig={}", bootstrap.display()),
                format!("--kubeconfig={}", dir.path().join("kubelet.conf").display()),
                format!("--config={}", config.display()),
                format!("--hostname-override={name}"),
                format!("--node-ip={}", netns.node_ip),
                format!("--root-dir={}", dir.path().join("root").display()),
                format!(
                    "--container-runtime-endpoint=unix://{}",
                    containerd.socket().display()
                ),
                format!("--containerd-namespace={ns}"),
                format!("--insecure-registry={host}"),
                format!("--cgroup-root=/knode-test/{ns}"),
                // Empty: the kubelet writes knode-bridge's config from the node's podCIDR.
                format!("--cni-conf-dir={}", dir.path().join("cni").display()),
                format!(
                    "--cni-bin-dir={}",
                    target_bin("knode-bridge").parent().unwrap().display()
                ),
                format!("--cluster-cidr={CLUSTER_CIDR}"),
            ],
            &dir.path().join("kubelet.log"),
        );
        nodes.push(KnodeNode {
            name,
            netns,
            containerd,
            ns,
            dir,
            daemons: vec![kubelet],
        });
    }
    let logs: Vec<std::path::PathBuf> = nodes
        .iter()
        .flat_map(|n| ["kubelet", "kube-proxy", "knode-hostgw"].map(|d| n.log(d)))
        .collect();
    let logs: Vec<&std::path::Path> = logs.iter().map(|p| p.as_path()).collect();
    eventually(
        "both serving CSRs approved",
        Duration::from_secs(120),
        &logs,
        || {
            let pending = kubectl(&[
                "get",
                "csr",
                "-o",
                "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name} {.status.certificate}{\"\\n\"}{end}",
            ]);
            for line in pending.lines() {
                if let Some(name) = line
                    .split_whitespace()
                    .next()
                    .filter(|_| line.split_whitespace().count() == 1)
                {
                    let _ = cp.approve_csr(name);
                }
            }
            pending.lines().count() >= 2
        },
    );
    let proxy_conf = cp.dir().join("kube-proxy-test.conf");
    cp.issue_kubeconfig("system:kube-proxy", &[], &proxy_conf)
        .unwrap();
    for n in &mut nodes {
        let kube_proxy = spawn(
            &n.netns,
            "kube-proxy",
            &[
                format!("--kubeconfig={}", proxy_conf.display()),
                format!("--hostname-override={}", n.name),
                format!("--cluster-cidr={CLUSTER_CIDR}"),
                "--healthz-bind-address=127.0.0.1:10256".into(),
                "--metrics-bind-address=127.0.0.1:10249".into(),
            ],
            &n.log("kube-proxy"),
        );
        n.daemons.push(kube_proxy);
    }
    for n in &mut nodes {
        let name = n.name.clone();
        eventually(
            &format!("node {name} Ready"),
            Duration::from_secs(120),
            &logs,
            || {
                kubectl(&[
                    "get",
                    "node",
                    &name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]) == "True"
            },
        );
        // The route daemon lists every Node, which the Node authorizer refuses a node's own
        // identity (it may read only its own Node object): it runs as kube-proxy does, whose
        // `system:node-proxier` role may list and watch Nodes, as flannel runs with its own role.
        let hostgw = spawn(
            &n.netns,
            "knode-hostgw",
            &[
                format!("--kubeconfig={}", proxy_conf.display()),
                format!("--hostname-override={}", n.name),
            ],
            &n.log("knode-hostgw"),
        );
        n.daemons.push(hostgw);
    }
    // The control-plane host routes to every podCIDR too (the apiserver's proxy to pods).
    let cp_hostgw_log = cp.dir().join("knode-hostgw.log");
    let _cp_hostgw = spawn(
        &seg.ns,
        "knode-hostgw",
        &[
            format!("--kubeconfig={}", cp.kubeconfig.display()),
            "--hostname-override=control-plane".into(),
        ],
        &cp_hostgw_log,
    );
    let cidrs: Vec<String> = nodes
        .iter()
        .map(|n| kubectl(&["get", "node", &n.name, "-o", "jsonpath={.spec.podCIDR}"]))
        .collect();
    assert!(
        cidrs.iter().all(|c| c.starts_with("10.244.")) && cidrs[0] != cidrs[1],
        "{cidrs:?}"
    );
    for (i, n) in nodes.iter().enumerate() {
        let other = &cidrs[1 - i];
        eventually(
            &format!("route to {other} on {}", n.name),
            Duration::from_secs(60),
            &logs,
            || {
                let o = n.netns.run(&["ip", "route", "show", "proto", "76"], &[]).unwrap();
                String::from_utf8_lossy(&o.stdout)
                    .contains(&format!("{other} via {}", nodes[1 - i].netns.node_ip))
            },
        );
    }

    cp.deploy_coredns(&dns_image.reference).unwrap();
    let img = &images.testimg.reference;
    cp.run_kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}
      containers:
      - {{name: main, image: {img}, args: ["serve"], ports: [{{name: http, containerPort: 8080}}],
         readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}, periodSeconds: 1}}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: client}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: main, image: {img}, args: ["sleep", "infinity", "--exit-on-sigterm"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-headless}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 8080}}]
"#
        )),
    )
    .unwrap();
    eventually(
        "web, client and CoreDNS ready",
        Duration::from_secs(240),
        &logs,
        || {
            kubectl(&["get", "deploy", "web", "-o", "jsonpath={.status.readyReplicas}"]) == "4"
                && kubectl(&["get", "ds", "client", "-o", "jsonpath={.status.numberReady}"]) == "2"
                && kubectl(&[
                    "get",
                    "deploy",
                    "-n",
                    "kube-system",
                    "coredns",
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                ]) == "1"
        },
    );
    let pods: Value = serde_json::from_str(&kubectl(&["get", "pods", "-o", "json"])).unwrap();
    let pods = pods["items"].as_array().unwrap().clone();
    let of = |app: &str| -> Vec<(String, String, String)> {
        pods.iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["spec"]["nodeName"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (webs, clients) = (of("web"), of("client"));
    let web_nodes: BTreeSet<&String> = webs.iter().map(|w| &w.1).collect();
    assert_eq!(web_nodes.len(), 2, "web spread over both nodes: {webs:?}");
    let client_nodes: BTreeSet<&String> = clients.iter().map(|c| &c.1).collect();
    assert_eq!(
        (clients.len(), client_nodes.len()),
        (2, 2),
        "one client per node: {clients:?}"
    );

    let exec = |pod: &str, cmd: &str| {
        cp.run_kubectl(&["exec", pod, "--", "sh", "-c", cmd], None)
            .unwrap_or_else(|e| format!("failed: {e}"))
    };
    // Pod to pod by IP, across nodes and on the same node, source address kept.
    for (client, client_node, client_ip) in &clients {
        for (web, web_node, web_ip) in &webs {
            let answer = exec(
                client,
                &format!("timeout 10 wget -qO- http://{web_ip}:8080/hostname"),
            );
            assert_eq!(
                answer.trim(),
                web,
                "{client} ({client_node}) → {web} ({web_node})"
            );
            let seen = exec(
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
            let a = exec(client, "timeout 10 wget -qO- http://web/hostname");
            seen.insert(a.trim().to_string());
            if seen.len() == webs.len() {
                break;
            }
        }
        let seen_refs: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
        assert_eq!(seen_refs, web_names, "Service web from {client} on {client_node}");
        let headless = exec(client, "nslookup web-headless.default.svc.cluster.local");
        for (_, _, ip) in &webs {
            assert!(
                headless.contains(ip.as_str()),
                "headless answer from {client_node}: {headless}"
            );
        }
    }
    // The NodePort on every node, from outside the nodes (the control plane's host).
    let node_port = kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    for n in &nodes {
        let o = seg
            .ns
            .run(
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "5",
                    &format!("http://{}:{node_port}/hostname", n.netns.node_ip),
                ],
                &[],
            )
            .unwrap();
        let answer = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            web_names.contains(answer.as_str()),
            "NodePort on {}: {answer:?}",
            n.name
        );
    }
    // And the control-plane host reaches a pod IP directly (apiserver → pod).
    let o = seg
        .ns
        .run(
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{}:8080/hostname", webs[0].2),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), webs[0].0);

    for user in nodes
        .iter()
        .map(|n| format!("system:node:{}", n.name))
        .chain(["system:kube-proxy".to_string()])
    {
        let denied = cp.audit_denials(&user);
        assert!(denied.is_empty(), "denied requests of {user}: {denied:#?}");
    }

    cp.run_kubectl(&["delete", "deploy", "web", "--wait=false"], None)
        .unwrap();
    cp.run_kubectl(&["delete", "ds", "client", "--wait=false"], None)
        .unwrap();
    cp.run_kubectl(
        &["delete", "deploy", "-n", "kube-system", "coredns", "--wait=false"],
        None,
    )
    .unwrap();
    eventually("pods gone", Duration::from_secs(120), &logs, || {
        kubectl(&["get", "pods", "-A", "-o", "name"]).trim().is_empty()
    });
    for n in nodes {
        let KnodeNode {
            netns,
            containerd,
            ns,
            dir,
            daemons,
            ..
        } = n;
        drop(daemons);
        common::cleanup_containerd(&containerd, &ns, dir.path());
        drop(netns);
    }
}
