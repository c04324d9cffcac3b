#![allow(clippy::unwrap_used, clippy::expect_used)]
//! knode's kubelet as a node of the real upstream control plane (kube-apiserver, controller-manager,
//! scheduler, etcd at the pinned release, `scripts/build-upstream.sh`), joined the way `kubeadm
//! join` does it:
//!
//! - a wrong bootstrap token, and a denied CSR: one clear error line per attempt, retried with
//!   backoff, no crash; the join goes through once the cause is fixed;
//! - TLS bootstrap with the right token: the client CSR is auto-approved by the controller-manager,
//!   `kubelet-client-current.pem` and `--kubeconfig` are written, the node registers and is Ready;
//! - `serverTLSBootstrap`: nothing on the kubelet port until the serving CSR is approved;
//! - the client certificate rotates (short `--cluster-signing-duration`) with the node's identity;
//! - pods with env, a configMap volume and probes run; `kubectl logs` and `exec` through the real
//!   apiserver; a Deployment of 2 replicas becomes available; `/configz` through the apiserver;
//! - least privilege: no request of the node's identity was denied (the apiserver's audit log).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use knode_harness::containerd::PrivateContainerd;
use knode_harness::control_plane::target_bin;
use knode_harness::image::push_test_images;
use knode_harness::registry::PrivateRegistry;
use knode_harness::upstream::{UpstreamControlPlane, UpstreamOptions};
use serde_json::Value;

struct Kubelet {
    child: Child,
    log: PathBuf,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kubelet {
    /// Waits up to 30 s for `error` twice in the log, asserts the kubelet still runs (it keeps
    /// retrying) and returns the log.
    fn retrying(&mut self, what: &str, error: &str) -> String {
        eventually(what, Duration::from_secs(30), &self.log, || {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .matches(error)
                .count()
                >= 2
        });
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the kubelet keeps retrying"
        );
        std::fs::read_to_string(&self.log).unwrap()
    }
}

fn start_kubelet(dir: &Path, args: &[String]) -> Kubelet {
    let log = dir.join("kubelet.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let child = Command::new(target_bin("kubelet"))
        .args(args)
        .env("RUST_LOG", "info,kube_client=warn")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Kubelet { child, log }
}

fn eventually(what: &str, timeout: Duration, log: &Path, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; kubelet log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn csrs(cp: &UpstreamControlPlane) -> Vec<Value> {
    let out = cp
        .run_kubectl(&["get", "csr", "-o", "json"], None)
        .unwrap_or_default();
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knode_node_joins_the_upstream_control_plane_by_bootstrap_token() {
    knode_harness::require_root().unwrap();
    let cp = UpstreamControlPlane::start(UpstreamOptions {
        cluster_signing_duration: Duration::from_secs(240),
        ..Default::default()
    })
    .unwrap();
    let registry = PrivateRegistry::start().unwrap();
    let images = push_test_images(&registry.host()).await.unwrap();
    let containerd = PrivateContainerd::start().await.unwrap();
    let ns = containerd.unique_namespace("kl-up");
    let dir = tempfile::tempdir().unwrap();
    let node = format!("up-{}", &ns[ns.len().saturating_sub(6)..]).to_lowercase();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("kubelet-config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             podLogsDir: {logs}\naddress: 127.0.0.1\nport: {port}\nrotateCertificates: true\n\
             serverTLSBootstrap: true\nclusterDomain: cluster.local\nclusterDNS: [10.96.0.10]\n\
             authentication:\n  x509:\n    clientCAFile: {ca}\n  webhook:\n    enabled: true\n\
             authorization:\n  mode: Webhook\nevictionHard:\n  memory.available: 100Mi\n  \
             nodefs.available: 100Mi\n  imagefs.available: 100Mi\nimageGCHighThresholdPercent: 100\n",
            logs = dir.path().join("logs").display(),
            ca = cp.ca_file.display(),
        ),
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubelet.conf");
    let cert_dir = dir.path().join("pki");
    let mut args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--cert-dir={}", cert_dir.display()),
        format!("--config={}", config.display()),
        format!("--hostname-override={node}"),
        "--node-ip=127.0.0.1".to_string(),
        format!("--cni-conf-dir={}", dir.path().join("no-cni").display()),
    ];
    args.extend(common::test_kubelet_args(dir.path(), &containerd, &ns, &registry));
    // Flags kubeadm's drop-in and upstream's launchers pass that knode does not act on.
    args.extend([
        "--fail-swap-on=false".into(),
        "--pod-infra-container-image=ignored".into(),
    ]);
    // `--pod-infra-container-image` left upstream's kubelet in 1.35: it is an unknown flag.
    let o = Command::new(target_bin("kubelet")).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("pod-infra-container-image"),
        "{stderr}"
    );
    args.pop();

    // A wrong bootstrap token: clear errors, retried, the kubelet keeps running.
    let bad = dir.path().join("bad-bootstrap.conf");
    cp.bootstrap_kubeconfig(&bad).unwrap();
    let text = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(&bad, text.replace(&cp.bootstrap_token.secret, "0000000000000000")).unwrap();
    let mut bad_args = args.clone();
    bad_args.push(format!("--bootstrap-kubeconfig={}", bad.display()));
    let mut k = start_kubelet(dir.path(), &bad_args);
    let log = k.retrying("two failed bootstrap attempts", "TLS bootstrap failed");
    assert!(log.contains("check the bootstrap token"), "{log}");
    drop(k);

    // The real token, but a denied CSR (auto-approval unbound, an admin denies it): one clear
    // error per attempt, retried with backoff; once the request is deleted and auto-approval is
    // back, the next attempt joins.
    let kubectl = |a: &[&str]| cp.run_kubectl(a, None).unwrap_or_default();
    let autoapprove = kubectl(&[
        "get",
        "clusterrolebinding",
        "kubeadm:node-autoapprove-bootstrap",
        "-o",
        "json",
    ]);
    cp.run_kubectl(
        &[
            "delete",
            "clusterrolebinding",
            "kubeadm:node-autoapprove-bootstrap",
        ],
        None,
    )
    .unwrap();
    let good = cp
        .bootstrap_kubeconfig(&dir.path().join("bootstrap.conf"))
        .unwrap();
    args.push(format!("--bootstrap-kubeconfig={}", good.display()));
    let mut k = start_kubelet(dir.path(), &args);
    let mut pending = String::new();
    eventually("a pending client CSR", Duration::from_secs(60), &k.log, || {
        pending = csrs(&cp)
            .into_iter()
            .find(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
            .and_then(|c| c["metadata"]["name"].as_str().map(str::to_string))
            .unwrap_or_default();
        !pending.is_empty()
    });
    cp.run_kubectl(&["certificate", "deny", &pending], None).unwrap();
    let log = k.retrying(
        "two denied attempts",
        &format!("certificate signing request {pending} was denied"),
    );
    assert!(log.contains(&format!("kubectl delete csr {pending}")), "{log}");
    let mut binding: Value = serde_json::from_str(&autoapprove).unwrap();
    for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields"] {
        binding["metadata"].as_object_mut().unwrap().remove(field);
    }
    cp.run_kubectl(&["create", "-f", "-"], Some(&binding.to_string()))
        .unwrap();
    cp.run_kubectl(&["delete", "csr", &pending], None).unwrap();

    // Then the client CSR is auto-approved, the node registers and is Ready.
    eventually("node Ready", Duration::from_secs(120), &k.log, || {
        kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]) == "True"
    });
    assert!(kubeconfig.exists(), "--kubeconfig written after bootstrap");
    let current = cert_dir.join("kubelet-client-current.pem");
    let first_cert = std::fs::read_link(&current).unwrap();
    let client_csr = csrs(&cp)
        .into_iter()
        .find(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .expect("a client CSR");
    assert_eq!(
        client_csr["spec"]["username"],
        "system:bootstrap:".to_string() + &cp.bootstrap_token.id
    );
    let approved = client_csr["status"]["conditions"][0].clone();
    assert_eq!(
        (approved["type"].as_str(), approved["reason"].as_str()),
        (Some("Approved"), Some("AutoApproved"))
    );
    let n: Value = serde_json::from_str(&kubectl(&["get", "node", &node, "-o", "json"])).unwrap();
    assert_eq!(
        n["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .map(|v| v.starts_with("v1.37.2")),
        Some(true),
        "{}",
        n["status"]["nodeInfo"]
    );
    assert!(
        n["spec"]["podCIDR"].is_string(),
        "nodeipam gave a podCIDR: {}",
        n["spec"]
    );

    // serverTLSBootstrap: nothing on the kubelet port before the serving CSR is approved.
    let serving = || {
        csrs(&cp).into_iter().find(|c| {
            c["spec"]["signerName"] == "kubernetes.io/kubelet-serving" && c["status"]["certificate"].is_null()
        })
    };
    eventually("a serving CSR", Duration::from_secs(60), &k.log, || {
        serving().is_some()
    });
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "kubelet port closed before approval"
    );
    let name = serving().unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    cp.approve_csr(&name).unwrap();
    eventually("the kubelet API serving", Duration::from_secs(60), &k.log, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // /configz as the API server's kubelet client calls it (system:kubelet-api-admin, authorized
    // by SubjectAccessReview); the apiserver's nodes/proxy refuses loopback node addresses.
    let apiserver_client = cp
        .pki()
        .issue(
            "configz-client",
            knode_harness::upstream::bootstrap::KUBELET_CLIENT_USER,
            &[],
            &[],
            knode_harness::upstream::pki::Usage::Client,
        )
        .unwrap();
    let o = Command::new("curl")
        .arg("-sSk")
        .arg("--cert")
        .arg(&apiserver_client.cert)
        .arg("--key")
        .arg(&apiserver_client.key)
        .arg(format!("https://127.0.0.1:{port}/configz"))
        .output()
        .unwrap();
    let configz: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("/configz: {e}: {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(configz["kubeletconfig"]["serverTLSBootstrap"], true);

    // Workloads through the real apiserver.
    let img = &images.testimg.reference;
    cp.run_kubectl(&["create", "configmap", "cfg", "--from-literal=color=blue"], None)
        .unwrap();
    cp.run_kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: main
    image: {img}
    args: ["serve"]
    env: [{{name: GREETING, value: hello}}]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
    # The node has no CNI network here: exec probes reach the server from inside the pod.
    readinessProbe: {{exec: {{command: [wget, -qO-, "http://127.0.0.1:8080/readyz"]}}, periodSeconds: 1}}
    livenessProbe: {{exec: {{command: [wget, -qO-, "http://127.0.0.1:8080/healthz"]}}, periodSeconds: 2}}
  volumes: [{{name: cfg, configMap: {{name: cfg}}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: sleepers}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: sleepers}}}}
  template:
    metadata: {{labels: {{app: sleepers}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: main, image: {img}, args: ["sleep", "infinity", "--exit-on-sigterm"]}}]
"#
        )),
    )
    .unwrap();
    eventually("pod web Ready", Duration::from_secs(120), &k.log, || {
        kubectl(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]) == "True"
    });
    let (ok, out) = {
        let o = cp.run_kubectl(
            &["exec", "web", "--", "sh", "-c", "echo $GREETING; cat /cfg/color"],
            None,
        );
        (o.is_ok(), o.unwrap_or_else(|e| e.to_string()))
    };
    assert!(
        ok && out.trim_end() == "hello\nblue",
        "kubectl exec through the apiserver: {out}"
    );
    let logs = cp.run_kubectl(&["logs", "web"], None);
    assert!(logs.is_ok(), "kubectl logs through the apiserver: {logs:?}");
    eventually("deployment available", Duration::from_secs(120), &k.log, || {
        kubectl(&[
            "get",
            "deploy",
            "sleepers",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]) == "2"
    });

    // The client certificate rotates before it expires, through a CSR made as the node itself.
    eventually(
        "client certificate rotated",
        Duration::from_secs(300),
        &k.log,
        || std::fs::read_link(&current).is_ok_and(|p| p != first_cert),
    );
    let renewal = csrs(&cp)
        .into_iter()
        .find(|c| {
            c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
                && c["spec"]["username"] == format!("system:node:{node}")
        })
        .expect("a renewal CSR by the node");
    assert_eq!(renewal["status"]["conditions"][0]["reason"], "AutoApproved");
    // Still talking to the API with the new certificate.
    let renewed_at = || {
        kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            &node,
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let before = renewed_at();
    eventually(
        "lease renewed after rotation",
        Duration::from_secs(60),
        &k.log,
        || renewed_at() != before,
    );

    // Least privilege: nothing the node did was denied.
    let denied = cp.audit_denials(&format!("system:node:{node}"));
    assert!(denied.is_empty(), "denied requests of the node: {denied:#?}");

    cp.run_kubectl(&["delete", "deploy", "sleepers", "--wait=false"], None)
        .unwrap();
    cp.run_kubectl(&["delete", "pod", "web", "--grace-period=1"], None)
        .unwrap();
    eventually("pods gone", Duration::from_secs(90), &k.log, || {
        kubectl(&["get", "pods", "-o", "name"]).trim().is_empty()
    });
    drop(k);
    common::cleanup_containerd(&containerd, &ns, dir.path());
}
