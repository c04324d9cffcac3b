//! The upstream control plane as the harness runs it (etcd, kube-apiserver, kube-controller-manager
//! and kube-scheduler of the pinned release, built by `scripts/build-upstream.sh`): it reports the
//! pinned version, is ready and healthy, holds its leader leases, and the path a joining node takes
//! works before any kubelet implements it — a bootstrap token creates a node client CSR, the
//! controller-manager approves and signs it, and the signed certificate authenticates as the node
//! (whose forbidden requests the audit log records). Dropping the plane leaves no process or file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::time::{Duration, Instant};

use knode_harness::netns::NodeNetns;
use knode_harness::upstream::{Component, UpstreamControlPlane, UpstreamOptions, bootstrap, pki};
use serde_json::Value;

const RELEASE: &str = "v1.37.2";

/// Polls `f` until it returns `Some`, for at most `timeout`; panics naming `what` and the last error.
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<Option<T>, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f() {
            Ok(Some(v)) => return v,
            Ok(None) => "not yet".to_string(),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?} ({last})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn upstream_plane_serves_the_pinned_release_signs_bootstrap_csrs_and_cleans_up() {
    knode_harness::require_root().unwrap();
    let cp = UpstreamControlPlane::start(UpstreamOptions::default()).expect("upstream control plane starts");
    let work = tempfile::tempdir().unwrap();

    // The pinned release on both sides (version ldflags applied to server and kubectl).
    let v = json(&cp.run_kubectl(&["version", "-o", "json"], None).unwrap());
    assert_eq!(v["clientVersion"]["gitVersion"], RELEASE, "{v}");
    assert_eq!(v["serverVersion"]["gitVersion"], RELEASE, "{v}");

    // Ready, and the controller-manager and scheduler healthy and leading.
    assert_eq!(
        cp.run_kubectl(&["get", "--raw", "/readyz"], None).unwrap().trim(),
        "ok"
    );
    for c in [Component::ControllerManager, Component::Scheduler] {
        assert_eq!(cp.healthz(c).unwrap().trim(), "ok", "{} /healthz", c.name());
        let holder = poll(
            &format!("{} holds its lease", c.name()),
            Duration::from_secs(60),
            || {
                let out = cp
                    .run_kubectl(
                        &[
                            "-n",
                            "kube-system",
                            "get",
                            "lease",
                            c.name(),
                            "-o",
                            "jsonpath={.spec.holderIdentity}",
                        ],
                        None,
                    )
                    .map_err(|e| e.to_string())?;
                Ok((!out.trim().is_empty()).then(|| out.trim().to_string()))
            },
        );
        assert!(!holder.is_empty());
    }

    // kube-public/cluster-info, signed by the bootstrapsigner for our token, readable with the token.
    let boot = cp
        .bootstrap_kubeconfig(&work.path().join("bootstrap.conf"))
        .unwrap();
    let jws_key = format!("jws-kubeconfig-{}", cp.bootstrap_token.id);
    poll(
        "cluster-info signed for the bootstrap token",
        Duration::from_secs(60),
        || {
            let out = cp
                .run_kubectl_as(
                    &boot,
                    &[
                        "-n",
                        "kube-public",
                        "get",
                        "configmap",
                        "cluster-info",
                        "-o",
                        "json",
                    ],
                    None,
                )
                .map_err(|e| e.to_string())?;
            let cm = json(&out);
            let kc = cm["data"]["kubeconfig"].as_str().unwrap_or_default();
            assert!(kc.contains(&cp.server_url), "cluster-info names the server: {kc}");
            Ok(cm["data"].get(&jws_key).map(|_| ()))
        },
    );

    // The joining path: the bootstrap identity creates a node client CSR; it is auto-approved and signed.
    let (csr_pem, key_pem) = pki::node_client_csr("test").unwrap();
    let csr_name = format!("node-csr-test-{}", std::process::id());
    let csr_file = work.path().join("csr.json");
    let csr = bootstrap::csr_object(
        &csr_name,
        &csr_pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
    );
    std::fs::write(&csr_file, csr.to_string()).unwrap();
    cp.run_kubectl_as(&boot, &["create", "-f", &csr_file.display().to_string()], None)
        .expect("the bootstrap token may create a CSR");
    let signed = poll("the CSR approved and signed", Duration::from_secs(90), || {
        let obj = json(
            &cp.run_kubectl(&["get", "csr", &csr_name, "-o", "json"], None)
                .map_err(|e| e.to_string())?,
        );
        let cert = obj["status"]["certificate"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((!cert.is_empty()).then_some((obj, cert)))
    });
    let (obj, cert_b64) = signed;
    assert_eq!(
        obj["spec"]["username"],
        format!("system:bootstrap:{}", cp.bootstrap_token.id),
        "the CSR was made by the token's identity"
    );
    let conditions = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Approved" && c["reason"] == "AutoApproved"),
        "auto-approved by the controller-manager: {conditions:?}"
    );

    // The signed certificate authenticates as the node (status.certificate is the base64 of the
    // PEM, exactly what a kubeconfig's client-certificate-data holds).
    let key_file = work.path().join("node.key");
    std::fs::write(&key_file, key_pem).unwrap();
    let node_conf = work.path().join("node.conf");
    let kc = bootstrap::kubeconfig(
        &cp.server_url,
        &cp.ca_pem,
        "system:node:test",
        serde_json::json!({"client-certificate-data": cert_b64, "client-key": key_file}),
    );
    std::fs::write(&node_conf, kc.to_string()).unwrap();
    let who = json(
        &cp.run_kubectl_as(&node_conf, &["auth", "whoami", "-o", "json"], None)
            .unwrap(),
    );
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:test", "{who}");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:nodes"), "{who}");

    // A node may not read kube-system's Secrets (Node authorizer + RBAC); the audit log says so.
    let denied = cp.run_kubectl_as(&node_conf, &["-n", "kube-system", "get", "secrets"], None);
    assert!(denied.is_err(), "a node listed kube-system secrets: {denied:?}");
    poll("the denial in the audit log", Duration::from_secs(30), || {
        Ok(cp
            .audit_denials("system:node:test")
            .iter()
            .any(|e| e["objectRef"]["resource"] == "secrets")
            .then_some(()))
    });

    // Another identity: kube-proxy's, bound to system:node-proxier by default.
    let proxy_conf = cp
        .issue_kubeconfig("system:kube-proxy", &[], &work.path().join("proxy.conf"))
        .unwrap();
    cp.run_kubectl_as(&proxy_conf, &["get", "endpointslices", "-A"], None)
        .expect("kube-proxy may list EndpointSlices");

    // Drop stops every process and removes the private directory.
    let pids = cp.pids();
    let dir = cp.dir().to_path_buf();
    assert_eq!(pids.len(), 4, "{pids:?}");
    drop(cp);
    for (c, pid) in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{} (pid {pid}) still running after drop",
            c.name()
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    let leftovers = knode_harness::cleanup::pids_with_cmdline(&dir.display().to_string());
    assert!(leftovers.is_empty(), "processes of the plane left: {leftovers:?}");
}

#[test]
fn upstream_plane_runs_in_a_network_namespace_advertising_a_routable_address() {
    knode_harness::require_root().unwrap();
    let ns = NodeNetns::create(&format!("kn-upcp-{}", std::process::id()), "10.203.0.1", false).unwrap();
    let cp = UpstreamControlPlane::start(UpstreamOptions {
        advertise_address: "10.203.0.1".parse().unwrap(),
        netns: Some(ns.name.clone()),
        ..Default::default()
    })
    .expect("upstream control plane starts in the namespace");
    assert!(
        cp.server_url.starts_with("https://10.203.0.1:"),
        "{}",
        cp.server_url
    );
    // Pods reach the apiserver through the `kubernetes` Service: its endpoints are the advertise
    // address (a loopback one would be invalid there).
    poll(
        "the kubernetes Service's endpoints",
        Duration::from_secs(60),
        || {
            let out = cp
                .run_kubectl(
                    &[
                        "-n",
                        "default",
                        "get",
                        "endpointslices",
                        "-l",
                        "kubernetes.io/service-name=kubernetes",
                        "-o",
                        "jsonpath={.items[*].endpoints[*].addresses[*]}",
                    ],
                    None,
                )
                .map_err(|e| e.to_string())?;
            Ok((out.trim() == "10.203.0.1").then_some(()))
        },
    );
    // The controller-manager allocates node CIDRs from 10.244.0.0/16.
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"cidr-test"}}"#;
    cp.run_kubectl(&["create", "-f", "-"], Some(node)).unwrap();
    let cidr = poll("a podCIDR for the node", Duration::from_secs(60), || {
        let out = cp
            .run_kubectl(
                &["get", "node", "cidr-test", "-o", "jsonpath={.spec.podCIDR}"],
                None,
            )
            .map_err(|e| e.to_string())?;
        Ok((!out.trim().is_empty()).then(|| out.trim().to_string()))
    });
    assert!(cidr.starts_with("10.244.") && cidr.ends_with("/24"), "{cidr}");
}
