//! The control plane driven by the real kubectl: discovery, CRUD with defaults, tables, selectors,
//! pagination, conflicts, validation errors, watch, wait, services and endpoints, scheduling,
//! restarts, node identities.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Cluster;
use serde_json::Value;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  containers:
  - name: main
    image: 127.0.0.1:5000/knode/testimg:latest
    ports: [{name: http, containerPort: 8080}]
"#;

#[test]
fn discovery_and_version_satisfy_kubectl() {
    let c = Cluster::start();
    let v: Value = serde_json::from_str(&c.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(v["serverVersion"]["minor"], knode_config::version::MINOR);
    let res = c.ok(&["api-resources"]);
    for want in ["pods", "leases", "endpointslices", "tokenreviews", "events"] {
        assert!(res.contains(want), "{want} missing from api-resources:\n{res}");
    }
    let ns = c.ok(&["get", "namespaces"]);
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(want), "{ns}");
    }
    assert!(ns.starts_with("NAME"), "table header: {ns}");
}

#[test]
fn pod_create_get_describe_delete_with_upstream_defaults() {
    let c = Cluster::start();
    assert!(c.ok_in(&["apply", "-f", "-"], POD).contains("pod/web created"));
    let pod = c.get_json(&["pod", "web"]);
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(
        spec["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
    assert!(
        spec["volumes"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-"),
        "ServiceAccount admission adds the token volume: {spec}"
    );
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    assert_eq!(pod["metadata"]["generation"], 1);
    assert_eq!(pod["metadata"]["uid"].as_str().unwrap().len(), 36);
    let table = c.ok(&["get", "pods"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(table.lines().nth(1).unwrap().starts_with("web"), "{table}");
    assert!(table.contains("0/1") && table.contains("Pending"), "{table}");
    let described = c.ok(&["describe", "pod", "web"]);
    assert!(
        described.contains("Name:") && described.contains("web"),
        "{described}"
    );
    // No node: the pod is unscheduled, so deletion is immediate.
    assert!(c.ok(&["delete", "pod", "web"]).contains("pod \"web\" deleted"));
    let err = c.fails(&["get", "pod", "web"], None);
    assert!(err.contains("pods \"web\" not found"), "{err}");
}

#[test]
fn bad_objects_are_rejected_with_upstream_messages_and_nothing_stored() {
    let c = Cluster::start();
    let typo = POD.replace("containerPort: 8080", "containerPort: 8080, bogusField: 1");
    let err = c.fails(&["apply", "-f", "-"], Some(&typo));
    assert!(
        err.contains("Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.containers[0].ports[0].bogusField\""),
        "{err}"
    );
    let wrong_type = POD.replace("containerPort: 8080", "containerPort: eighty");
    let err = c.fails(&["apply", "-f", "-"], Some(&wrong_type));
    assert!(err.contains("containerPort"), "{err}");
    let out = c.ok(&["get", "pods", "-o", "name"]);
    assert!(out.trim().is_empty(), "nothing stored: {out}");
    let err = c.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: nope\n"),
    );
    assert!(err.contains("namespaces \"nope\" not found"), "{err}");
}

#[test]
fn patches_of_every_type_and_optimistic_concurrency() {
    let c = Cluster::start();
    c.ok_in(&["apply", "-f", "-"], POD);
    // kubectl label / annotate (merge patch), set image (strategic), patch --type=json.
    c.ok(&["label", "pod", "web", "color=blue"]);
    c.ok(&["annotate", "pod", "web", "note=hi"]);
    c.ok(&["set", "image", "pod/web", "main=127.0.0.1:5000/knode/testimg:v2"]);
    c.ok(&[
        "patch",
        "pod",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"p"}]"#,
    ]);
    c.ok(&[
        "patch",
        "pod",
        "web",
        "--type=strategic",
        "-p",
        r#"{"metadata":{"labels":{"tier":null}}}"#,
    ]);
    let pod = c.get_json(&["pod", "web"]);
    assert_eq!(pod["metadata"]["labels"]["color"], "blue");
    assert_eq!(pod["metadata"]["labels"]["j"], "p");
    assert!(pod["metadata"]["labels"].get("tier").is_none());
    assert_eq!(pod["metadata"]["annotations"]["note"], "hi");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "127.0.0.1:5000/knode/testimg:v2"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["ports"][0]["containerPort"], 8080,
        "strategic merge kept the port"
    );
    assert_eq!(
        pod["metadata"]["generation"], 2,
        "only the image change touched spec"
    );
    // A re-apply with a changed label merges through the last-applied annotation.
    c.ok_in(&["apply", "-f", "-"], &POD.replace("tier: front", "tier: back"));
    assert_eq!(c.get_json(&["pod", "web"])["metadata"]["labels"]["tier"], "back");
    // Immutable pod fields.
    let err = c.fails(
        &[
            "patch",
            "pod",
            "web",
            "-p",
            r#"{"spec":{"restartPolicy":"Never"}}"#,
        ],
        None,
    );
    assert!(err.contains("Forbidden") || err.contains("invalid"), "{err}");
    // Stale resourceVersion on replace → Conflict.
    let mut stale = pod.clone();
    stale["metadata"]["labels"]["x"] = "y".into();
    let err = c.fails(&["replace", "-f", "-"], Some(&stale.to_string()));
    assert!(
        err.contains(
            "the object has been modified; please apply your changes to the latest version and try again"
        ),
        "{err}"
    );
}

#[test]
fn selectors_and_pagination() {
    let c = Cluster::start();
    for i in 0..7 {
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm{i}","labels":{{"parity":"{parity}","n":"{i}"}}}}}}"#
        );
        c.ok_in(&["create", "-f", "-"], &body);
    }
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["get", "configmaps", "-o", "name"];
        a.extend_from_slice(args);
        c.ok(&a).lines().map(String::from).collect()
    };
    assert_eq!(names(&["-l", "parity=even"]).len(), 4);
    assert_eq!(names(&["-l", "parity!=even,n"]).len(), 3);
    assert_eq!(names(&["-l", "n in (1,2,3)"]).len(), 3);
    assert_eq!(names(&["-l", "n notin (1,2,3),parity"]).len(), 4);
    assert_eq!(names(&["-l", "!n"]), ["configmap/kube-root-ca.crt"]);
    assert_eq!(
        names(&["--field-selector", "metadata.name=cm3"]),
        ["configmap/cm3"]
    );
    assert_eq!(
        names(&["--chunk-size=2"]).len(),
        8,
        "kubectl follows continue tokens"
    );
    let page: Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps?limit=3"]))
            .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["metadata"]["remainingItemCount"], 5);
    let cont = page["metadata"]["continue"].as_str().unwrap();
    let next: Value = serde_json::from_str(&c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?limit=3&continue={cont}"),
    ]))
    .unwrap();
    assert_eq!(next["items"][0]["metadata"]["name"], "cm3");
}

/// Reads lines a long-running kubectl prints, from a thread.
fn spawn_lines(c: &Cluster, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(&c.kubectl)
        .arg(format!("--kubeconfig={}", c.kubeconfig.display()))
        .args(args)
        .env("HOME", c.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("watch line")
}

#[test]
fn watch_streams_added_modified_deleted() {
    let c = Cluster::start();
    let (mut child, rx) = spawn_lines(
        &c,
        &[
            "get",
            "configmaps",
            "-l",
            "w=1",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name} {.object.data.k}{\"\\n\"}",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    c.ok_in(&["create", "-f", "-"], r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"w":"1"}},"data":{"k":"1"}}"#);
    assert_eq!(next_line(&rx), "ADDED a 1");
    c.ok(&["patch", "configmap", "a", "-p", r#"{"data":{"k":"2"}}"#]);
    assert_eq!(next_line(&rx), "MODIFIED a 2");
    // Leaving the selector is a DELETED for this watcher, as upstream's watch cache does.
    c.ok(&["label", "configmap", "a", "w-"]);
    assert_eq!(next_line(&rx), "DELETED a 2");
    c.ok(&["label", "configmap", "a", "w=1"]);
    assert_eq!(next_line(&rx), "ADDED a 2");
    c.ok(&["delete", "configmap", "a"]);
    assert_eq!(next_line(&rx), "DELETED a 2");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn watch_from_a_compacted_resource_version_gets_410_and_a_relist_recovers() {
    let c = Cluster::start_with(&["--watch-history=5"]);
    for i in 0..10 {
        c.ok_in(
            &["create", "-f", "-"],
            &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c{i}"}}}}"#),
        );
    }
    let raw = c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2&timeoutSeconds=2",
    ]);
    let ev: Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(
        ev["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version: 2 ("),
        "{ev}"
    );
    // The relist: a list gives a current RV, and a watch from it works.
    let list: Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"])).unwrap();
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let (mut child, rx) = spawn_lines(
        &c,
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"),
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.ok_in(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"}}"#,
    );
    let ev: Value = serde_json::from_str(&next_line(&rx)).unwrap();
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("after"))
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn restart_keeps_objects_and_resource_versions_monotonic() {
    let mut c = Cluster::start();
    c.ok_in(&["apply", "-f", "-"], POD);
    c.ok_in(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"keep"},"data":{"a":"b"}}"#,
    );
    let before: Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"])).unwrap();
    let rv_before: u64 = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let uid = c.get_json(&["pod", "web"])["metadata"]["uid"].clone();
    c.restart();
    assert_eq!(c.get_json(&["pod", "web"])["metadata"]["uid"], uid);
    assert_eq!(c.get_json(&["configmap", "keep"])["data"]["a"], "b");
    c.ok(&["label", "configmap", "keep", "after=restart"]);
    let rv_after: u64 = c.get_json(&["configmap", "keep"])["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_after > rv_before, "{rv_after} > {rv_before}");
    // A watch resumes across the restart from a resourceVersion issued before it.
    let raw = c.ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv_before}&timeoutSeconds=1"
        ),
    ]);
    let ev: Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["metadata"]["labels"]["after"], "restart");
}

#[test]
fn scheduler_binds_to_a_fitting_node_and_explains_unschedulable_pods() {
    let c = Cluster::start();
    c.add_ready_node("node1", "2", "4Gi", "110");
    c.eventually("pod CIDR", || {
        c.get_json(&["node", "node1"])["spec"]["podCIDR"] == "10.244.0.0/24"
    });
    c.ok_in(&["apply", "-f", "-"], POD);
    c.ok(&["wait", "--for=condition=PodScheduled", "pod/web", "--timeout=30s"]);
    assert_eq!(c.get_json(&["pod", "web"])["spec"]["nodeName"], "node1");
    let events = c.get_json(&[
        "events",
        "--field-selector",
        "involvedObject.name=web,reason=Scheduled",
    ]);
    assert_eq!(
        events["items"][0]["message"],
        "Successfully assigned default/web to node1"
    );
    let big = POD.replace("name: web", "name: big").replace(
        "    ports: [{name: http, containerPort: 8080}]",
        "    resources: {requests: {cpu: \"3\"}}",
    );
    c.ok_in(&["apply", "-f", "-"], &big);
    c.eventually("unschedulable condition", || {
        let p = c.get_json(&["pod", "big"]);
        p["status"]["conditions"][0]["reason"] == "Unschedulable"
    });
    let p = c.get_json(&["pod", "big"]);
    assert_eq!(
        p["status"]["conditions"][0]["message"],
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );
    assert_eq!(p["status"]["qosClass"], "Burstable");
    // A bound pod is deleted gracefully: it stays, terminating, until the kubelet confirms.
    c.ok(&["delete", "pod", "web", "--wait=false"]);
    let p = c.get_json(&["pod", "web"]);
    assert!(p["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    c.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    assert!(c.fails(&["get", "pod", "web"], None).contains("not found"));
}

#[test]
fn services_get_cluster_ips_node_ports_and_endpoints() {
    let c = Cluster::start();
    let svc = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: http{extra}}}]\n"
        )
    };
    c.ok_in(&["apply", "-f", "-"], &svc("web", ""));
    let s = c.get_json(&["service", "web"]);
    let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.96."), "{ip}");
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["ipFamilies"][0], "IPv4");
    let np = svc("np", ", nodePort: 30080").replace("spec:\n", "spec:\n  type: NodePort\n");
    c.ok_in(&["apply", "-f", "-"], &np);
    assert_eq!(
        c.get_json(&["service", "np"])["spec"]["ports"][0]["nodePort"],
        30080
    );
    let err = c.fails(&["apply", "-f", "-"], Some(&np.replace("name: np", "name: np2")));
    assert!(err.contains("provided port is already allocated"), "{err}");
    let dup = svc("dup", "").replace("spec:\n", &format!("spec:\n  clusterIP: {ip}\n"));
    let err = c.fails(&["apply", "-f", "-"], Some(&dup));
    assert!(err.contains("provided IP is already allocated"), "{err}");
    // A ready pod with an IP becomes an endpoint, its named port resolved.
    c.ok_in(&["apply", "-f", "-"], POD);
    c.ok(&["patch", "pod", "web", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"podIP":"10.244.0.5","podIPs":[{"ip":"10.244.0.5"}],"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#]);
    c.eventually("endpoint slice", || {
        let l = c.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
        l["items"][0]["endpoints"][0]["addresses"][0] == "10.244.0.5"
    });
    let slice = &c.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"])["items"][0];
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(slice["metadata"]["ownerReferences"][0]["name"], "web");
    let eps = c.get_json(&["endpoints", "web"]);
    assert_eq!(eps["subsets"][0]["addresses"][0]["ip"], "10.244.0.5");
    // The `kubernetes` service points at this server.
    let k = c.get_json(&["service", "kubernetes"]);
    assert_eq!(k["spec"]["clusterIP"], "10.96.0.1");
}

#[test]
fn namespace_deletion_removes_its_objects() {
    let c = Cluster::start();
    c.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: gone}\n",
    );
    c.eventually("default service account in the new namespace", || {
        c.kubectl(&["get", "sa", "default", "-n", "gone", "-o", "name"])
            .status
            .success()
    });
    c.ok_in(
        &["apply", "-n", "gone", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: inside}\n",
    );
    c.ok(&["delete", "namespace", "gone", "--wait=false"]);
    let err = c.fails(
        &["apply", "-n", "gone", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\n"),
    );
    assert!(
        err.contains("because it is being terminated") || err.contains("not found"),
        "{err}"
    );
    c.eventually("namespace removed", || {
        c.kubectl(&["get", "namespace", "gone", "-o", "name"])
            .status
            .code()
            == Some(1)
    });
    let left = c.ok(&[
        "get",
        "configmaps",
        "-A",
        "--field-selector",
        "metadata.namespace=gone",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn node_identities_get_only_what_the_node_authorizer_allows() {
    let c = Cluster::start();
    c.add_ready_node("n1", "2", "4Gi", "110");
    c.add_ready_node("n2", "2", "4Gi", "110");
    let secret = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1"},"stringData":{"k":"v"}}"#;
    c.ok_in(&["create", "-f", "-"], secret);
    let pod = POD.replace(
        "spec:\n",
        "spec:\n  nodeName: n1\n  volumes: [{name: s, secret: {secretName: s1}}]\n",
    );
    c.ok_in(&["apply", "-f", "-"], &pod);
    let n1 = c.issue_kubeconfig("system:node:n1", &["system:nodes"]);
    let n2 = c.issue_kubeconfig("system:node:n2", &["system:nodes"]);
    let as_node = |kc: &std::path::Path, args: &[&str]| c.kubectl_with(&c.kubectl, kc, args, None);
    assert!(
        as_node(&n1, &["get", "secret", "s1", "-o", "name"])
            .status
            .success()
    );
    let denied = as_node(&n2, &["get", "secret", "s1", "-o", "name"]);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("secrets \"s1\" is forbidden: User \"system:node:n2\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\""),
        "{err}"
    );
    assert!(as_node(&n1, &["label", "node", "n1", "x=y"]).status.success());
    assert!(!as_node(&n1, &["label", "node", "n2", "x=y"]).status.success());
    assert!(
        as_node(&n2, &["get", "pods", "-A", "-o", "name"])
            .status
            .success(),
        "nodes may list pods"
    );
    assert!(!as_node(&n2, &["delete", "pod", "web"]).status.success());
    // Anonymous requests are rejected (curl: kubectl would prompt for a password).
    let out = std::process::Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{}/api/v1/pods", c.port)])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (status["code"].as_i64(), status["reason"].as_str()),
        (Some(401), Some("Unauthorized"))
    );
}

#[test]
fn service_account_tokens_authenticate_and_review() {
    let c = Cluster::start();
    let req = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#;
    let path = c.dir.path().join("tr.json");
    std::fs::write(&path, req).unwrap();
    let out: Value = serde_json::from_str(&c.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        "-f",
        path.to_str().unwrap(),
    ]))
    .unwrap();
    let token = out["status"]["token"].as_str().unwrap().to_string();
    let review = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"}}}}"#
    );
    let r: Value = serde_json::from_str(&c.ok_in(&["create", "-f", "-", "-o", "json"], &review)).unwrap();
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
    // The token authenticates; the default service account may not read secrets (no RBAC grants).
    let out = c.kubectl(&[
        "--token",
        &token,
        "--kubeconfig",
        "/dev/null",
        "--server",
        &format!("https://127.0.0.1:{}", c.port),
        "--insecure-skip-tls-verify",
        "get",
        "secrets",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("User \"system:serviceaccount:default:default\" cannot list resource \"secrets\""),
        "{err}"
    );
    let bad = review.replace(&token[token.len() - 6..], "AAAAAA");
    let r: Value = serde_json::from_str(&c.ok_in(&["create", "-f", "-", "-o", "json"], &bad)).unwrap();
    assert_eq!(r["status"]["authenticated"], false);
}

#[test]
fn older_and_newer_kubectl_versions_work() {
    let c = Cluster::start();
    for minor in ["1.27", "1.30", "1.33"] {
        let bin = common::kubectl_version(minor);
        let run = |args: &[&str], stdin: Option<&str>| {
            let out = c.kubectl_with(&bin, &c.kubeconfig, args, stdin);
            assert!(
                out.status.success(),
                "kubectl {minor} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let name = format!("v{}", minor.replace('.', "-"));
        let pod = POD.replace("name: web", &format!("name: {name}"));
        run(&["apply", "-f", "-"], Some(&pod));
        run(
            &["apply", "-f", "-"],
            Some(&pod.replace("tier: front", "tier: back")),
        );
        let got: Value = serde_json::from_str(&run(&["get", "pod", &name, "-o", "json"], None)).unwrap();
        assert_eq!(got["metadata"]["labels"]["tier"], "back", "kubectl {minor}");
        run(&["get", "pods"], None);
        run(&["describe", "pod", &name], None);
        run(&["delete", "pod", &name], None);
    }
}

#[test]
fn python_kubernetes_client_lists_creates_and_watches() {
    let c = Cluster::start();
    let script = r#"
import sys
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
names = sorted(n.metadata.name for n in v1.list_namespace().items)
assert names == ["default", "kube-node-lease", "kube-public", "kube-system"], names
cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "python"}), data={"a": "b"})
created = v1.create_namespaced_config_map("default", cm)
rv = v1.list_namespaced_config_map("default").metadata.resource_version
v1.patch_namespaced_config_map("py", "default", {"data": {"a": "c"}})
w = watch.Watch()
seen = []
for ev in w.stream(v1.list_namespaced_config_map, "default", label_selector="from=python", resource_version=rv, timeout_seconds=2):
    seen.append((ev["type"], ev["object"].data["a"]))
assert seen == [("MODIFIED", "c")], seen
try:
    v1.read_namespaced_config_map("missing", "default")
    raise SystemExit("expected 404")
except client.exceptions.ApiException as e:
    assert e.status == 404, e.status
v1.delete_namespaced_config_map("py", "default")
print("ok")
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, c.kubeconfig.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn typed_kubectl_create_commands_send_protobuf_and_work() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "cfg", "--from-literal=a=b"]);
    assert_eq!(c.get_json(&["configmap", "cfg"])["data"]["a"], "b");
    c.ok(&["create", "secret", "generic", "sec", "--from-literal=pw=hunter2"]);
    assert_eq!(c.get_json(&["secret", "sec"])["data"]["pw"], "aHVudGVyMg==");
    c.ok(&["create", "namespace", "made"]);
    c.ok(&["create", "serviceaccount", "robot"]);
    c.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
        "--node-port=30111",
    ]);
    assert_eq!(
        c.get_json(&["service", "np"])["spec"]["ports"][0]["nodePort"],
        30111
    );
    let token = c.ok(&["create", "token", "robot"]);
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let who = c.ok(&["auth", "whoami", "-o", "json"]);
    assert!(who.contains("kubernetes-admin"), "{who}");
    assert_eq!(c.ok(&["auth", "can-i", "delete", "nodes"]).trim(), "yes");
}

#[test]
fn stale_nodes_turn_unknown_and_get_the_unreachable_taint() {
    let c = Cluster::start_with(&["--node-monitor-grace-period=2s"]);
    c.add_ready_node("quiet", "2", "4Gi", "110");
    c.eventually("Ready=Unknown", || {
        let n = c.get_json(&["node", "quiet"]);
        n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["type"] == "Ready" && x["status"] == "Unknown" && x["reason"] == "NodeStatusUnknown")
    });
    let n = c.get_json(&["node", "quiet"]);
    let taints: Vec<&str> = n["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert!(taints.contains(&"node.kubernetes.io/unreachable"), "{taints:?}");
    let table = c.ok(&["get", "nodes"]);
    assert!(table.contains("NotReady"), "{table}");
}

#[test]
fn eviction_access_reviews_leases_and_both_event_apis() {
    let c = Cluster::start();
    c.ok_in(&["apply", "-f", "-"], POD);
    let ev =
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"web","namespace":"default"}}"#;
    let path = c.dir.path().join("ev.json");
    std::fs::write(&path, ev).unwrap();
    c.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/web/eviction",
        "-f",
        path.to_str().unwrap(),
    ]);
    assert!(
        c.fails(&["get", "pod", "web"], None).contains("not found"),
        "an unscheduled pod is evicted at once"
    );
    // SubjectAccessReview as the kubelet's webhook authorizer sends it.
    let sar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"system:node:n9","groups":["system:nodes"],"resourceAttributes":{"verb":"get","resource":"secrets","namespace":"default","name":"x"}}}"#;
    let r: Value = serde_json::from_str(&c.ok_in(&["create", "-f", "-", "-o", "json"], sar)).unwrap();
    assert_eq!(r["status"]["allowed"], false);
    let admin_sar = sar
        .replace("system:node:n9", "admin")
        .replace("system:nodes", "system:masters");
    let r: Value = serde_json::from_str(&c.ok_in(&["create", "-f", "-", "-o", "json"], &admin_sar)).unwrap();
    assert_eq!(r["status"]["allowed"], true);
    // Leases (the node heartbeat object).
    let lease = r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"n9","namespace":"kube-node-lease"},"spec":{"holderIdentity":"n9","leaseDurationSeconds":40,"renewTime":"2026-01-01T00:00:00.000000Z"}}"#;
    c.ok_in(&["apply", "-f", "-"], lease);
    let leases = c.ok(&["get", "leases", "-n", "kube-node-lease"]);
    assert!(leases.contains("n9"), "{leases}");
    // An events.k8s.io/v1 event shows up in the core/v1 view with the fields mapped.
    let e = r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"e1","namespace":"default"},"eventTime":"2026-01-01T00:00:00.000000Z","reason":"Pulled","note":"pulled it","type":"Normal","action":"Pull","reportingController":"kubelet","reportingInstance":"n9","regarding":{"kind":"Pod","name":"web","namespace":"default"}}"#;
    c.ok_in(&["create", "-f", "-"], e);
    let core = c.get_json(&["events.v1.", "e1"]);
    assert_eq!(core["message"], "pulled it");
    assert_eq!(core["involvedObject"]["name"], "web");
    let v1 = c.get_json(&["events.v1.events.k8s.io", "e1"]);
    assert_eq!(v1["note"], "pulled it");
}

#[test]
fn kubectl_explain_reads_the_served_schemas() {
    let c = Cluster::start();
    for minor in ["1.27", "1.33"] {
        let bin = common::kubectl_version(minor);
        let out = c.kubectl_with(
            &bin,
            &c.kubeconfig,
            &["explain", "pod.spec.containers.ports"],
            None,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("containerPort") && text.contains("ContainerPort"),
            "kubectl {minor}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lease = c.ok(&["explain", "leases.spec"]);
    assert!(
        lease.contains("coordination.k8s.io") && lease.contains("holderIdentity"),
        "{lease}"
    );
}

#[test]
fn every_resource_applies_gets_describes_patches_and_deletes() {
    let c = Cluster::start();
    let objects: &[(&str, &str)] = &[
        (
            "namespace/extra",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n",
        ),
        (
            "configmap/cm1",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm1}\ndata: {a: b}\n",
        ),
        (
            "secret/s1",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s1}\nstringData: {a: b}\n",
        ),
        (
            "serviceaccount/sa1",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa1}\n",
        ),
        (
            "service/svc1",
            "apiVersion: v1\nkind: Service\nmetadata: {name: svc1}\nspec:\n  ports: [{port: 80}]\n",
        ),
        (
            "endpoints/ep1",
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: ep1}\nsubsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 80}]}]\n",
        ),
        (
            "pod/p1",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  containers: [{name: c, image: img:v1}]\n",
        ),
        ("node/n1", "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"),
        (
            "event/ev1",
            "apiVersion: v1\nkind: Event\nmetadata: {name: ev1}\ninvolvedObject: {kind: Pod, name: p1, namespace: default}\nreason: Tested\nmessage: hello\ntype: Normal\n",
        ),
        (
            "lease.coordination.k8s.io/l1",
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: l1}\nspec: {holderIdentity: me}\n",
        ),
        (
            "endpointslice.discovery.k8s.io/es1",
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: es1, labels: {kubernetes.io/service-name: svc1}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 80}]\n",
        ),
    ];
    for (name, yaml) in objects {
        let out = c.ok_in(&["apply", "-f", "-"], yaml);
        assert!(out.contains("created"), "{name}: {out}");
        assert_eq!(c.ok(&["get", name, "-o", "name"]).trim(), *name);
        let table = c.ok(&["get", name]);
        assert!(
            table.starts_with("NAME") || table.starts_with("LAST SEEN"),
            "{name}: {table}"
        );
        let described = c.ok(&["describe", name]);
        assert!(!described.trim().is_empty(), "{name}");
        c.ok(&["label", name, "patched=yes"]);
        assert_eq!(
            c.ok(&["get", name, "-o", "jsonpath={.metadata.labels.patched}"]),
            "yes",
            "{name}"
        );
        // Server-side apply of the same manifest keeps working as create-or-update.
        c.ok_in(&["apply", "--server-side", "--force-conflicts", "-f", "-"], yaml);
    }
    for (name, _) in objects.iter().rev() {
        let out = c.ok(&["delete", name, "--wait=false"]);
        assert!(out.contains("deleted"), "{name}: {out}");
    }
    // Invalid objects: the field path and upstream's wording, nothing stored.
    let err = c.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n"),
    );
    assert!(
        err.contains("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""),
        "{err}"
    );
    let err = c.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers: [{name: c}]\n"),
    );
    assert!(err.contains("spec.containers[0].image: Required value"), "{err}");
    let err = c.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: badport}\nspec:\n  ports: [{port: 70000}]\n"),
    );
    assert!(err.contains("spec.ports[0].port: Invalid value: 70000"), "{err}");
}
