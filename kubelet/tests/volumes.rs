//! Pod volumes on the real node (control plane + kubectl + private containerd + the kubelet
//! binary), modelled on upstream's node conformance volume cases: configMap and secret as env and
//! as volumes (items, modes, defaultMode seen with `stat` inside the container), a secret volume
//! on tmpfs, ConfigMap updates reaching a running pod's files, emptyDir shared between containers
//! and with an init container, a Memory emptyDir as a sized tmpfs, subPath / subPathExpr with an
//! escape refused, the service-account token accepted by TokenReview, downward API files,
//! hostPath with mountPropagation None / HostToContainer, FailedMount for a missing ConfigMap
//! while other pods run, and nothing left mounted after deletion.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::process::Command;
use std::time::Instant;

use common::Node;
use serde_json::{Value, json};

fn apply_json(node: &Node, v: &Value) {
    node.apply(&v.to_string());
}

fn pod(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "vol-test", "tier": "one"},
            "annotations": {"note": "hello"}},
        "spec": spec})
}

/// Waits until `f` gives `Some`, or fails with the kubelet's log.
fn wait_for<T>(node: &Node, what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
    node.wait_for(what, secs, f)
}

/// Mount points (from the host's /proc/self/mountinfo) that mention `needle`.
fn host_mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

fn delete_and_check_clean(node: &Node, name: &str) {
    let uid = node.pod(name)["metadata"]["uid"].as_str().unwrap().to_string();
    node.kubectl(&["delete", "pod", name, "--wait=false"]);
    node.eventually(&format!("pod {name} gone"), || {
        let (ok, out, _) = node
            .cp
            .kubectl(&["get", "pod", name, "--ignore-not-found", "-o", "name"], None);
        ok && out.trim().is_empty()
    });
    node.eventually(&format!("mounts of {name} gone"), || {
        host_mounts_with(&uid).is_empty() && !node.dir.path().join("root/pods").join(&uid).exists()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_and_secret_as_env_and_volumes_with_modes_tmpfs_and_updates() {
    let mut node = Node::start("kl-vol-cm").await;
    // Short sync period so the update test does not wait a minute (upstream: syncFrequency).
    node.reconfigure("syncFrequency: 5s\n", &[]);
    node.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {data-1: value-1, data-2: value-2}\n",
    );
    node.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: sec}\nstringData: {data-1: secret-1, data-2: secret-2}\n",
    );
    node.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {k: frozen-1}\n",
    );
    let script = "echo ENV=$CFG_VAL/$SEC_VAL; \
        stat -L -c 'MODE %a %n' /etc/cfg/data-1 /etc/cfg-items/path/to/data-2 /etc/sec/data-1 /etc/sec-items/new-path; \
        echo CONTENT $(cat /etc/cfg/data-1) $(cat /etc/cfg-items/path/to/data-2) $(cat /etc/sec/data-1) $(cat /etc/sec-items/new-path); \
        ls /etc/cfg-items/; grep ' /etc/sec ' /proc/mounts; grep ' /etc/cfg ' /proc/mounts; \
        echo DONE; exec sleep 3600";
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": node.image(), "command": ["sh", "-c", script],
            "env": [
                {"name": "CFG_VAL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "data-1"}}},
                {"name": "SEC_VAL", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "data-2"}}}],
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg"},
                {"name": "cfg-items", "mountPath": "/etc/cfg-items"},
                {"name": "sec", "mountPath": "/etc/sec", "readOnly": true},
                {"name": "sec-items", "mountPath": "/etc/sec-items"},
                {"name": "frozen", "mountPath": "/etc/frozen"}]}],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o400}},
            {"name": "cfg-items", "configMap": {"name": "cfg", "items": [{"key": "data-2", "path": "path/to/data-2", "mode": 0o600}]}},
            {"name": "sec", "secret": {"secretName": "sec"}},
            {"name": "sec-items", "secret": {"secretName": "sec", "defaultMode": 0o440,
                "items": [{"key": "data-1", "path": "new-path"}]}},
            {"name": "frozen", "configMap": {"name": "frozen"}}]
    });
    apply_json(&node, &pod("consumer", spec));
    node.wait_phase("consumer", "Running");
    let out = wait_for(&node, "consumer output", 60, || {
        let l = node.logs("consumer", "main");
        l.contains("DONE").then_some(l)
    });
    assert!(out.contains("ENV=value-1/secret-2"), "{out}");
    for want in [
        "MODE 400 /etc/cfg/data-1",
        "MODE 600 /etc/cfg-items/path/to/data-2",
        "MODE 644 /etc/sec/data-1",
        "MODE 440 /etc/sec-items/new-path",
        "CONTENT value-1 value-2 secret-1 secret-1",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }
    // Only the item's top-level name is visible; the writer's own entries start with "..".
    assert!(out.lines().any(|l| l.trim() == "path"), "{out}");
    let sec_mount = out.lines().find(|l| l.contains(" /etc/sec ")).unwrap_or_default();
    assert!(
        sec_mount.starts_with("tmpfs "),
        "secret volume not on tmpfs: {sec_mount:?}"
    );
    // A configMap is a plain directory on the node's disk (bind-mounted, not a tmpfs).
    let cfg_mount = out.lines().find(|l| l.contains(" /etc/cfg ")).unwrap_or_default();
    assert!(
        !cfg_mount.is_empty() && !cfg_mount.starts_with("tmpfs "),
        "{cfg_mount:?}"
    );
    // On the host: the secret's directory is a tmpfs mount, the configMap's is not.
    let uid = node.pod("consumer")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let mounts = host_mounts_with(&uid);
    assert!(
        mounts
            .iter()
            .any(|m| m.contains("kubernetes.io~secret/sec ") && m.contains(" - tmpfs ")),
        "{mounts:#?}"
    );
    assert!(
        !mounts.iter().any(|m| m.contains("kubernetes.io~configmap")),
        "{mounts:#?}"
    );
    // The atomic writer's layout: key -> ..data/key, ..data -> ..<timestamp>.
    let (_, ls) = node.exec("consumer", "main", &["ls", "-la", "/etc/cfg/"]);
    assert!(ls.contains("data-1 -> ..data/data-1"), "{ls}");
    assert!(ls.contains("..data -> ..20"), "{ls}");

    // An update reaches the running pod's files within the sync period.
    node.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {data-1: value-1-updated, data-3: value-3}\n",
    );
    let started = Instant::now();
    wait_for(&node, "the updated ConfigMap in the container", 60, || {
        let (_, v) = node.exec("consumer", "main", &["cat", "/etc/cfg/data-1", "/etc/cfg/data-3"]);
        (v == "value-1-updatedvalue-3").then_some(())
    });
    println!(
        "configMap update seen in the container after {:.1} s (syncFrequency 5s)",
        started.elapsed().as_secs_f64()
    );
    // data-2 was removed from the ConfigMap: its name is gone from the volume too.
    let (ok, _) = node.exec("consumer", "main", &["test", "-e", "/etc/cfg/data-2"]);
    assert!(!ok, "a key removed from the ConfigMap is removed from the volume");
    // Secret updates too.
    node.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: sec}\nstringData: {data-1: secret-1-new, data-2: secret-2}\n",
    );
    wait_for(&node, "the updated Secret in the container", 60, || {
        let (_, v) = node.exec("consumer", "main", &["cat", "/etc/sec-items/new-path"]);
        (v == "secret-1-new").then_some(())
    });
    let (_, frozen) = node.exec("consumer", "main", &["cat", "/etc/frozen/k"]);
    assert_eq!(frozen, "frozen-1");
    delete_and_check_clean(&node, "consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_dirs_memory_tmpfs_sub_paths_and_failed_mounts() {
    let node = Node::start("kl-vol-ed").await;
    let img = node.image().to_string();
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "initContainers": [{"name": "init", "image": img, "command": ["sh", "-c",
            "echo from-init > /data/init.txt; mkdir -p /data/sub; echo in-sub > /data/sub/file; ln -s / /data/escape"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "containers": [
            {"name": "writer", "image": img, "command": ["sh", "-c",
                "echo from-writer > /shared/writer.txt; exec sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/shared"}]},
            {"name": "reader", "image": img, "command": ["sh", "-c",
                "while [ ! -f /data/writer.txt ]; do sleep 0.2; done; echo READ $(cat /data/init.txt) $(cat /data/writer.txt); \
                 grep ' /mem ' /proc/mounts; stat -c 'MEMMODE %a' /mem; echo SUB $(cat /sub/file); \
                 echo EXPR $(cat /expr/hello 2>/dev/null || echo missing); ls -d /expr; echo DONE; exec sleep 3600"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "mem", "mountPath": "/mem"},
                    {"name": "data", "mountPath": "/sub", "subPath": "sub"},
                    {"name": "data", "mountPath": "/expr", "subPathExpr": "per-pod/$(POD_NAME)"}]}],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
    });
    apply_json(&node, &pod("shared", spec));
    node.wait_phase("shared", "Running");
    let out = wait_for(&node, "reader output", 60, || {
        let l = node.logs("shared", "reader");
        l.contains("DONE").then_some(l)
    });
    assert!(out.contains("READ from-init from-writer"), "{out}");
    let mem = out.lines().find(|l| l.contains(" /mem ")).unwrap_or_default();
    assert!(
        mem.starts_with("tmpfs ") && mem.contains("size=16384k"),
        "{mem:?}\n{out}"
    );
    assert!(out.contains("MEMMODE 777"), "{out}");
    assert!(out.contains("SUB in-sub"), "{out}");
    assert!(out.contains("EXPR missing") && out.contains("/expr"), "{out}");
    // subPathExpr created per-pod/<name> inside the volume.
    let uid = node.pod("shared")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = node
        .dir
        .path()
        .join("root/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/data");
    assert!(vol.join("per-pod/shared").is_dir());

    // A subPath through a symlink that leaves the volume: refused with a clear error.
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "initContainers": [{"name": "init", "image": img, "command": ["sh", "-c", "ln -s /etc /data/escape"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "containers": [{"name": "main", "image": img, "command": ["sleep", "3600"],
            "volumeMounts": [{"name": "data", "mountPath": "/host-etc", "subPath": "escape"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}]
    });
    apply_json(&node, &pod("escape", spec));
    let waiting = wait_for(&node, "escape refused", 60, || {
        let p = node.pod("escape");
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    assert_eq!(
        waiting["message"],
        "failed to prepare subPath for volumeMount \"data\" of container \"main\""
    );
    // subPathExpr with a backstep after expansion.
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": img, "command": ["sleep", "3600"],
            "env": [{"name": "UP", "value": ".."}],
            "volumeMounts": [{"name": "data", "mountPath": "/x", "subPathExpr": "$(UP)/$(UP)"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}]
    });
    apply_json(&node, &pod("backstep", spec));
    let waiting = wait_for(&node, "backstep refused", 60, || {
        let p = node.pod("backstep");
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    assert_eq!(
        waiting["message"],
        "unable to provision SubPath `../..`: must not contain '..'"
    );

    // A missing ConfigMap: FailedMount, the container waits in ContainerCreating; the other pod
    // keeps running.
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": img, "command": ["sleep", "3600"],
            "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
        "volumes": [{"name": "cfg", "configMap": {"name": "does-not-exist"}}]
    });
    apply_json(&node, &pod("no-cm", spec));
    let msg = wait_for(&node, "FailedMount event", 60, || {
        let m = node.event_messages("no-cm", "FailedMount");
        (!m.is_empty()).then_some(m)
    });
    assert!(
        msg.contains("MountVolume.SetUp failed for volume \"cfg\" : configmap \"does-not-exist\" not found"),
        "{msg}"
    );
    let p = node.pod("no-cm");
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
        "{p:#}"
    );
    assert_eq!(node.pod("shared")["status"]["phase"], "Running");
    // Creating the ConfigMap lets the pod start (the kubelet retries the mount).
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: does-not-exist}\ndata: {k: v}\n");
    node.wait_phase("no-cm", "Running");

    for name in ["shared", "escape", "backstep", "no-cm"] {
        delete_and_check_clean(&node, name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_and_downward_api() {
    let mut node = Node::start("kl-vol-sa").await;
    node.reconfigure("syncFrequency: 5s\n", &[]);
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": node.image(), "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
            "volumeMounts": [
                {"name": "info", "mountPath": "/etc/podinfo"},
                {"name": "vault-token", "mountPath": "/var/run/secrets/vault"}]}],
        "volumes": [
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
                {"path": "cpu_request", "resourceFieldRef": {"containerName": "main", "resource": "requests.cpu", "divisor": "1m"}},
                {"path": "mem_request", "resourceFieldRef": {"containerName": "main", "resource": "requests.memory", "divisor": "1Mi"}}]}},
            {"name": "vault-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "token"}}]}}]
    });
    apply_json(&node, &pod("sa", spec));
    let p = node.wait_phase("sa", "Running");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let cat = |path: &str| node.exec("sa", "main", &["cat", path]).1;
    // Downward API files match the pod.
    assert_eq!(cat("/etc/podinfo/labels"), "app=\"vol-test\"\ntier=\"one\"");
    assert!(cat("/etc/podinfo/annotations").contains("note=\"hello\""));
    assert_eq!(cat("/etc/podinfo/name"), "sa");
    assert_eq!(cat("/etc/podinfo/namespace"), "default");
    assert_eq!(cat("/etc/podinfo/uid"), uid);
    assert_eq!(cat("/etc/podinfo/cpu_request"), "50");
    assert_eq!(cat("/etc/podinfo/mem_request"), "64");
    // The default kube-api-access projection: token, ca.crt, namespace.
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = cat(&format!("{sa_dir}/token"));
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    assert!(cat(&format!("{sa_dir}/ca.crt")).contains("BEGIN CERTIFICATE"));
    assert_eq!(cat(&format!("{sa_dir}/namespace")), "default");
    let review = |token: &str, audiences: Value| -> Value {
        let (ok, out, err) = node.cp.kubectl(
            &["create", "-f", "-", "-o", "json"],
            Some(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {"token": token, "audiences": audiences}})
                .to_string(),
            ),
        );
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let r = review(&token, json!([]));
    assert_eq!(r["status"]["authenticated"], true, "{r:#}");
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
    // The projected token is for its audience only.
    let vault = cat("/var/run/secrets/vault/token");
    assert_eq!(vault.split('.').count(), 3);
    assert_eq!(review(&vault, json!(["vault"]))["status"]["authenticated"], true);
    assert_eq!(review(&vault, json!(["other"]))["status"]["authenticated"], false);
    // Tokens live on tmpfs only.
    assert!(
        host_mounts_with(&uid)
            .iter()
            .any(|m| m.contains("kubernetes.io~projected/vault-token ") && m.contains(" - tmpfs ")),
        "{:#?}",
        host_mounts_with(&uid)
    );
    // Label changes reach the downward API file (the periodic resync).
    node.kubectl(&["label", "pod", "sa", "tier=two", "--overwrite"]);
    wait_for(&node, "updated labels file", 60, || {
        (cat("/etc/podinfo/labels") == "app=\"vol-test\"\ntier=\"two\"").then_some(())
    });
    // Resyncs do not request new tokens before 80 % of their lifetime.
    assert_eq!(cat("/var/run/secrets/vault/token"), vault);
    delete_and_check_clean(&node, "sa");
}

/// A short-lived projected token is replaced in the running pod after ~80 % of its lifetime, and
/// the new one is valid. The control plane is started with its test-only
/// `--service-account-min-token-expiration` lowered (kube-apiserver's minimum is 10 minutes), so the
/// refresh comes after seconds; the schedule itself is unit-tested in `volumes::token`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_token_is_refreshed_at_eighty_percent_of_its_lifetime() {
    let mut node = Node::start_with_control_plane_flags(
        "kl-vol-tr",
        false,
        &["--service-account-min-token-expiration=10s"],
    )
    .await;
    node.reconfigure("syncFrequency: 2s\n", &[]);
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": node.image(), "command": ["sleep", "3600"],
            "volumeMounts": [{"name": "tok", "mountPath": "/tok"}]}],
        "volumes": [{"name": "tok", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "refresh-test", "expirationSeconds": 30, "path": "token"}}]}}]
    });
    apply_json(&node, &pod("refresh", spec));
    node.wait_phase("refresh", "Running");
    let read = || node.exec("refresh", "main", &["cat", "/tok/token"]).1;
    let review = |token: &str| -> Value {
        let (ok, out, err) = node.cp.kubectl(
            &["create", "-f", "-", "-o", "json"],
            Some(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {"token": token, "audiences": ["refresh-test"]}})
                .to_string(),
            ),
        );
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let first = read();
    assert_eq!(first.split('.').count(), 3, "not a JWT: {first}");
    assert_eq!(review(&first)["status"]["authenticated"], true);
    let t0 = Instant::now();
    // Refresh is due at 24 s (80 % of 30 s, up to 10 s earlier with jitter); the file follows at the
    // next resync. Well before the old token expires at 30 s, the new one must be in place.
    let second = wait_for(&node, "a refreshed token file", 60, || {
        let now = read();
        (now.split('.').count() == 3 && now != first).then_some(now)
    });
    println!(
        "token refreshed in the pod after {:.1} s of its 30 s lifetime",
        t0.elapsed().as_secs_f64()
    );
    let r = review(&second);
    assert_eq!(r["status"]["authenticated"], true, "{r:#}");
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
    // The old token dies at its expiry: the refresh was needed.
    wait_for(&node, "the first token to expire", 60, || {
        (review(&first)["status"]["authenticated"] == false).then_some(())
    });
    delete_and_check_clean(&node, "refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_path_types_and_mount_propagation() {
    let node = Node::start("kl-vol-hp").await;
    let img = node.image().to_string();
    // A shared host directory: mounts made below it later propagate to HostToContainer mounts.
    let shared = node.dir.path().join("shared-host");
    std::fs::create_dir_all(&shared).unwrap();
    let sh = |args: &[&str]| {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let s = shared.to_str().unwrap();
    sh(&["mount", "--bind", s, s]);
    sh(&["mount", "--make-rshared", s]);
    std::fs::write(shared.join("file.txt"), "host-file").unwrap();
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": img, "command": ["sleep", "3600"],
            "volumeMounts": [
                {"name": "h", "mountPath": "/h2c", "mountPropagation": "HostToContainer"},
                {"name": "h", "mountPath": "/none", "mountPropagation": "None"},
                {"name": "f", "mountPath": "/file.txt", "readOnly": true},
                {"name": "created", "mountPath": "/created"}]}],
        "volumes": [
            {"name": "h", "hostPath": {"path": s, "type": "Directory"}},
            {"name": "f", "hostPath": {"path": format!("{s}/file.txt"), "type": "File"}},
            {"name": "created", "hostPath": {"path": format!("{}/made-by-kubelet", node.dir.path().display()), "type": "DirectoryOrCreate"}}]
    });
    apply_json(&node, &pod("hp", spec));
    node.wait_phase("hp", "Running");
    assert_eq!(node.exec("hp", "main", &["cat", "/file.txt"]).1, "host-file");
    assert!(node.dir.path().join("made-by-kubelet").is_dir());
    let (ok, _) = node.exec("hp", "main", &["sh", "-c", "echo x > /file.txt"]);
    assert!(!ok, "readOnly hostPath file is writable");
    // Mount a tmpfs below the shared directory on the host.
    let sub = shared.join("late");
    std::fs::create_dir_all(&sub).unwrap();
    sh(&["mount", "-t", "tmpfs", "tmpfs", sub.to_str().unwrap()]);
    std::fs::write(sub.join("marker"), "propagated").unwrap();
    let seen = |path: &str| node.exec("hp", "main", &["cat", path]);
    let h2c = wait_for(&node, "propagation into the HostToContainer mount", 20, || {
        let (ok, v) = seen("/h2c/late/marker");
        ok.then_some(v)
    });
    assert_eq!(h2c, "propagated");
    let (ok, _) = seen("/none/late/marker");
    assert!(!ok, "a mountPropagation None mount saw a later host mount");
    let _ = Command::new("umount").arg(sub.to_str().unwrap()).status();

    // Type checks: a file where a directory is wanted is a FailedMount.
    let spec = json!({
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": img, "command": ["sleep", "3600"],
            "volumeMounts": [{"name": "h", "mountPath": "/h"}]}],
        "volumes": [{"name": "h", "hostPath": {"path": format!("{s}/file.txt"), "type": "Directory"}}]
    });
    apply_json(&node, &pod("hp-bad", spec));
    let msg = wait_for(&node, "FailedMount for the hostPath type", 60, || {
        let m = node.event_messages("hp-bad", "FailedMount");
        (!m.is_empty()).then_some(m)
    });
    assert!(
        msg.contains(&format!(
            "hostPath type check failed: {s}/file.txt is not a directory"
        )),
        "{msg}"
    );
    delete_and_check_clean(&node, "hp");
    delete_and_check_clean(&node, "hp-bad");
    let _ = Command::new("umount").args(["-l", s]).status();
}
