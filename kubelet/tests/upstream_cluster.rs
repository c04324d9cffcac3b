#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A networked knode node in the real upstream control plane, the way a kubeadm cluster runs: the
//! node (kubelet, containerd's pods, knode-bridge, kube-proxy) and the plane share a test-made
//! network namespace, the apiserver advertises the node's address (not loopback, so its proxy to
//! the kubelet is allowed), the kubelet joins by bootstrap token, kube-proxy runs as
//! `system:kube-proxy`, and CoreDNS is deployed as kubeadm deploys it — on this node.
//!
//! - a postStart hook runs;
//! - CoreDNS becomes Ready on the node (ServiceAccount token, httpGet probes, capabilities,
//!   read-only root, `dnsPolicy: Default`, the apiserver reached through kube-proxy's
//!   `kubernetes` Service);
//! - from a pod: a Service name and `kubernetes.default` resolve (search path from the kubelet's
//!   resolv.conf), and the Service answers by name; its NodePort answers on the node's address;
//! - `kubectl attach` (output, and stdin with `-i`) and `kubectl port-forward` through the real
//!   apiserver;
//! - least privilege: no request of the node's or kube-proxy's identity was denied.

mod common;

use common::upstream::{eventually, read_lines_then_kill, spawn};

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use knode_harness::containerd::PrivateContainerd;
use knode_harness::control_plane::target_bin;
use knode_harness::image::push_test_images;
use knode_harness::netns::NodeNetns;
use knode_harness::registry::PrivateRegistry;
use knode_harness::upstream::coredns::{self, CLUSTER_DNS_IP, CLUSTER_DOMAIN};
use knode_harness::upstream::{UpstreamBinaries, UpstreamControlPlane, UpstreamOptions};

const NODE_IP: &str = "10.200.0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networked_knode_node_runs_cluster_dns_services_attach_and_port_forward_upstream() {
    knode_harness::require_root().unwrap();
    let bins = UpstreamBinaries::locate(false).unwrap();
    let registry = PrivateRegistry::start().unwrap();
    let images = push_test_images(&registry.host()).await.unwrap();
    let dns_image = coredns::push_image(&registry.host(), &bins).await.unwrap();
    let containerd = PrivateContainerd::start().await.unwrap();
    let ns = containerd.unique_namespace("kl-upc");
    let netns = NodeNetns::create(
        &format!("kn-{}", &ns[ns.len().saturating_sub(8)..]),
        NODE_IP,
        true,
    )
    .unwrap();
    // The registry is on the host's loopback, out of the node's reach: images are pre-pulled and
    // the pods (like kubeadm's CoreDNS) use IfNotPresent.
    let runtime = kubelet::runtime::Containerd::new(containerd.channel().await.unwrap(), &ns).unwrap();
    let puller = kubelet::runtime::image::ImageService::new(runtime, vec![registry.host()]);
    for image in [&images.testimg.reference, &dns_image.reference] {
        puller
            .pull(image, &oci_client::secrets::RegistryAuth::Anonymous, &|_| {})
            .await
            .unwrap();
    }
    let cp = UpstreamControlPlane::start(UpstreamOptions {
        advertise_address: NODE_IP.parse().unwrap(),
        netns: Some(netns.name.clone()),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = format!("upc-{}", &ns[ns.len().saturating_sub(6)..]).to_lowercase();

    // The kubelet, as `kubeadm join` starts it.
    let config = dir.path().join("kubelet-config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             podLogsDir: {logs}\naddress: {NODE_IP}\nrotateCertificates: true\n\
             serverTLSBootstrap: true\nclusterDomain: {CLUSTER_DOMAIN}\nclusterDNS: [{CLUSTER_DNS_IP}]\n\
             authentication:\n  x509:\n    clientCAFile: {ca}\n  webhook:\n    enabled: true\n\
             authorization:\n  mode: Webhook\nevictionHard:\n  memory.available: 100Mi\n  \
             nodefs.available: 100Mi\n  imagefs.available: 100Mi\nimageGCHighThresholdPercent: 100\n",
            logs = dir.path().join("logs").display(),
            ca = cp.ca_file.display(),
        ),
    )
    .unwrap();
    let cni = dir.path().join("cni");
    std::fs::create_dir_all(&cni).unwrap();
    // The first node's podCIDR from nodeipam (asserted below).
    std::fs::write(
        cni.join("10-knode.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"knode","plugins":[{{"type":"knode-bridge","bridge":"knode0","isDefaultGateway":true,"ipMasq":true,"hairpinMode":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.244.0.0/24"}}]],"dataDir":"{}"}}}}]}}"#,
            dir.path().join("ipam").display()
        ),
    )
    .unwrap();
    let bootstrap = cp
        .bootstrap_kubeconfig(&dir.path().join("bootstrap-kubelet.conf"))
        .unwrap();
    let kubelet_log = dir.path().join("kubelet.log");
    let proxy_log = dir.path().join("kube-proxy.log");
    let logs = [kubelet_log.as_path(), proxy_log.as_path()];
    let kubelet = spawn(
        &netns,
        "kubelet",
        &[
            format!("--bootstrap-kubeconfig={}", bootstrap.display()),
            format!("--kubeconfig={}", dir.path().join("kubelet.conf").display()),
            format!("--config={}", config.display()),
            format!("--hostname-override={node}"),
            format!("--node-ip={NODE_IP}"),
            format!("--root-dir={}", dir.path().join("root").display()),
            format!(
                "--container-runtime-endpoint=unix://{}",
                containerd.socket().display()
            ),
            format!("--containerd-namespace={ns}"),
            format!("--cgroup-root=/knode-test/{ns}"),
            format!("--cni-conf-dir={}", cni.display()),
            format!(
                "--cni-bin-dir={}",
                target_bin("knode-bridge").parent().unwrap().display()
            ),
        ],
        &kubelet_log,
    );
    let kubectl = |a: &[&str]| cp.run_kubectl(a, None).unwrap_or_default();
    let apply = |yaml: &str| {
        cp.run_kubectl(&["apply", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"))
    };
    // As kubeadm users do: approve the kubelet's serving certificate.
    eventually("the serving CSR", Duration::from_secs(120), &logs, || {
        let pending = kubectl(&[
            "get",
            "csr",
            "-o",
            "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name}{\"\\n\"}{end}",
        ]);
        pending.lines().any(|name| cp.approve_csr(name).is_ok())
    });
    let proxy_conf = dir.path().join("kube-proxy.conf");
    cp.issue_kubeconfig("system:kube-proxy", &[], &proxy_conf)
        .unwrap();
    let proxy = spawn(
        &netns,
        "kube-proxy",
        &[
            format!("--kubeconfig={}", proxy_conf.display()),
            format!("--hostname-override={node}"),
            "--cluster-cidr=10.244.0.0/16".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
        ],
        &proxy_log,
    );
    eventually("node Ready", Duration::from_secs(120), &logs, || {
        kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]) == "True"
    });
    assert_eq!(
        kubectl(&["get", "node", &node, "-o", "jsonpath={.spec.podCIDR}"]),
        "10.244.0.0/24"
    );

    // Cluster DNS, deployed as kubeadm does, runs on this node.
    cp.deploy_coredns(&dns_image.reference).unwrap();
    eventually("CoreDNS available", Duration::from_secs(180), &logs, || {
        kubectl(&[
            "get",
            "deploy",
            "-n",
            "kube-system",
            "coredns",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]) == "1"
    });

    let img = &images.testimg.reference;
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
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
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
        eventually(
            &format!("pod {pod} Ready"),
            Duration::from_secs(120),
            &logs,
            || {
                kubectl(&[
                    "get",
                    "pod",
                    pod,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]) == "True"
            },
        );
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
        &logs,
        || {
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
                &format!("http://{NODE_IP}:{node_port}/hostname"),
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
    eventually("pods gone", Duration::from_secs(90), &logs, || {
        kubectl(&["get", "pods", "-A", "-o", "name"]).trim().is_empty()
    });
    drop(proxy);
    let _ = netns.command(target_bin("kube-proxy")).arg("--cleanup").output();
    drop(kubelet);
    drop(cp);
    common::cleanup_containerd(&containerd, &ns, dir.path());
}
