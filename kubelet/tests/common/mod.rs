//! The node under test: control plane + private containerd + registry + the kubelet binary.

#![allow(dead_code)]

pub mod leaks;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use knode_harness::containerd::PrivateContainerd;
use knode_harness::control_plane::{ControlPlane, target_bin};
use knode_harness::image::{TestImages, push_test_images};
use knode_harness::netns::NodeNetns;
use knode_harness::registry::PrivateRegistry;
use serde_json::Value;

pub struct Node {
    /// systemd's NOTIFY_SOCKET as the kubelet sees it (READY / WATCHDOG / STOPPING arrive here).
    pub notify: std::os::unix::net::UnixDatagram,
    pub kubelet: Option<Child>,
    pub netns: Option<NodeNetns>,
    pub cp: ControlPlane,
    pub _registry: PrivateRegistry,
    pub containerd: PrivateContainerd,
    pub images: TestImages,
    pub dir: tempfile::TempDir,
    pub ns: String,
    pub name: String,
    pub args: Vec<String>,
}

impl Node {
    pub async fn start(prefix: &str) -> Node {
        Node::start_with(prefix, false).await
    }

    /// With `networked`, everything runs in a test-created network namespace (the "node") with
    /// knode-bridge as its CNI network, images pre-pulled (the registry stays on the host's
    /// loopback).
    pub async fn start_with(prefix: &str, networked: bool) -> Node {
        Node::start_with_control_plane_flags(prefix, networked, &[]).await
    }

    /// Like [`Node::start_with`], starting the control plane with `cp_flags` added.
    pub async fn start_with_control_plane_flags(prefix: &str, networked: bool, cp_flags: &[&str]) -> Node {
        knode_harness::require_root().unwrap();
        let registry = PrivateRegistry::start().unwrap();
        let images = push_test_images(&registry.host()).await.unwrap();
        let containerd = PrivateContainerd::start().await.unwrap();
        let ns = containerd.unique_namespace(prefix);
        let netns = networked.then(|| {
            let name = format!("kn-{}", &ns[ns.len().saturating_sub(8)..]);
            NodeNetns::create(&name, "10.200.0.1", false).unwrap()
        });
        if netns.is_some() {
            // Pre-pull: the kubelet in the node netns cannot reach the host's loopback registry.
            let c = kubelet::runtime::Containerd::new(containerd.channel().await.unwrap(), &ns).unwrap();
            let svc = kubelet::runtime::image::ImageService::new(c, vec![registry.host()]);
            svc.pull(
                &images.testimg.reference,
                &oci_client::secrets::RegistryAuth::Anonymous,
                &|_| {},
            )
            .await
            .unwrap();
        }
        let cp = ControlPlane::start_in(netns.as_ref().map(|n| n.name.as_str()), cp_flags).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let name = format!("node-{}", &ns[ns.len().saturating_sub(6)..]).to_lowercase();
        let kubeconfig = cp
            .issue_kubeconfig(&format!("system:node:{name}"), &["system:nodes"])
            .unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        let config = dir.path().join("kubelet-config.yaml");
        let api_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let node_ip = if netns.is_some() {
            "10.200.0.1"
        } else {
            "127.0.0.1"
        };
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodLogsDir: {}\nstaticPodPath: {}\ncrashLoopBackOff:\n  maxContainerRestartPeriod: 40s\naddress: {node_ip}\nport: {api_port}\nauthentication:\n  x509:\n    clientCAFile: {}\nauthorization:\n  mode: Webhook\n{HOST_DISK_INDEPENDENT}",
                dir.path().join("logs").display(),
                manifests.display(),
                cp.ca_file().display()
            ),
        )
        .unwrap();
        let cni_dir = dir.path().join("cni");
        if netns.is_some() {
            std::fs::create_dir_all(&cni_dir).unwrap();
            std::fs::write(
                cni_dir.join("10-knode.conflist"),
                format!(
                    r#"{{"cniVersion":"1.0.0","name":"knode","plugins":[{{"type":"knode-bridge","bridge":"knode0","isDefaultGateway":true,"ipMasq":true,"hairpinMode":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.244.0.0/24"}}]],"dataDir":"{}"}}}}]}}"#,
                    dir.path().join("ipam").display()
                ),
            )
            .unwrap();
            assert!(
                target_bin("knode-bridge").exists(),
                "build knode-bridge first (cargo build -p cni)"
            );
        }
        let node_ip = if netns.is_some() {
            "10.200.0.1"
        } else {
            "127.0.0.1"
        };
        let mut args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--config={}", config.display()),
            format!("--hostname-override={name}"),
            format!("--node-ip={node_ip}"),
        ];
        args.extend(test_kubelet_args(dir.path(), &containerd, &ns, &registry));
        args.extend([
            format!(
                "--cni-conf-dir={}",
                if netns.is_some() {
                    cni_dir.clone()
                } else {
                    dir.path().join("no-cni")
                }
                .display()
            ),
            format!(
                "--cni-bin-dir={}",
                target_bin("knode-bridge").parent().unwrap().display()
            ),
        ]);
        let notify = std::os::unix::net::UnixDatagram::bind(dir.path().join("notify.sock")).unwrap();
        notify.set_nonblocking(true).unwrap();
        let mut n = Node {
            notify,
            kubelet: None,
            netns,
            cp,
            _registry: registry,
            containerd,
            images,
            dir,
            ns,
            name,
            args,
        };
        n.launch();
        n.eventually("node Ready", || {
            let (ok, out, _) = n.cp.kubectl(
                &[
                    "get",
                    "node",
                    &n.name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
                None,
            );
            ok && out == "True"
        });
        n
    }

    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kubelet.log"))
            .unwrap();
        // nsenter, not `ip netns exec`: the latter also enters a private mount namespace, which would
        // hide the kubelet's sandbox pins (bind mounts) from containerd.
        let mut cmd = match &self.netns {
            Some(ns) => ns.command(target_bin("kubelet")),
            None => Command::new(target_bin("kubelet")),
        };
        let child = cmd
            .args(&self.args)
            .env("NOTIFY_SOCKET", self.dir.path().join("notify.sock"))
            .env("WATCHDOG_USEC", "2000000")
            .env(
                "RUST_LOG",
                std::env::var("KNODE_TEST_RUST_LOG").unwrap_or("info,kube_client=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.kubelet = Some(child);
    }

    /// Pulls the test image into the kubelet's containerd namespace (pods then use IfNotPresent).
    pub async fn prepull(&self) {
        let c =
            kubelet::runtime::Containerd::new(self.containerd.channel().await.unwrap(), &self.ns).unwrap();
        let svc = kubelet::runtime::image::ImageService::new(c, vec![self._registry.host()]);
        svc.pull(
            &self.images.testimg.reference,
            &oci_client::secrets::RegistryAuth::Anonymous,
            &|_| {},
        )
        .await
        .unwrap();
    }

    /// The kubelet's PID.
    pub fn kubelet_pid(&self) -> u32 {
        self.kubelet.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn kill_kubelet(&mut self) {
        if let Some(mut c) = self.kubelet.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        let l = std::fs::read_to_string(self.dir.path().join("kubelet.log")).unwrap_or_default();
        // Tests that never read the notify socket fill its queue: the kubelet then warns every
        // second, which is the harness's doing, not news.
        let lines: Vec<&str> = l
            .lines()
            .filter(|l| !l.contains("watchdog ping failed"))
            .collect();
        let keep = std::env::var("KNODE_TEST_LOG_LINES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        lines[lines.len().saturating_sub(keep)..].join("\n")
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cp.kubectl(args, None);
        assert!(ok, "kubectl {args:?}: {err}\nkubelet log:\n{}", self.log());
        out
    }

    pub fn apply(&self, yaml: &str) {
        let (ok, _, err) = self.cp.kubectl(&["apply", "-f", "-"], Some(yaml));
        assert!(ok, "apply: {err}");
    }

    pub fn pod(&self, name: &str) -> Value {
        serde_json::from_str(&self.kubectl(&["get", "pod", name, "-o", "json"])).unwrap()
    }

    /// `ctr` against the node's containerd and namespace.
    pub fn ctr(&self) -> Command {
        self.containerd.ctr(&self.ns)
    }

    /// Waits until `f` gives `Some` (at most `secs`), or fails with the kubelet's log.
    pub fn wait_for<T>(&self, what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
        let log = || format!("kubelet log:\n{}", self.log());
        knode_harness::wait_until(
            what,
            Duration::from_secs(secs),
            Duration::from_millis(300),
            log,
            f,
        )
    }

    pub fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nkubelet log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_phase(&self, name: &str, phase: &str) -> Value {
        let mut last = Value::Null;
        self.eventually(&format!("pod {name} {phase}"), || {
            last = self.pod(name);
            last["status"]["phase"] == phase
        });
        last
    }

    pub fn image(&self) -> &str {
        &self.images.testimg.reference
    }

    pub fn logs(&self, pod: &str, container: &str) -> String {
        // kubectl logs needs the kubelet API (a later issue): read the CRI log file directly.
        let uid = self.pod(pod)["metadata"]["uid"].as_str().unwrap().to_string();
        let path = self
            .dir
            .path()
            .join("logs")
            .join(format!("default_{pod}_{uid}"))
            .join(container);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3).map(String::from))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn container_count(&self) -> usize {
        let out = self.ctr().args(["containers", "ls", "-q"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_kubelet();
        cleanup_containerd(&self.containerd, &self.ns, self.dir.path());
    }
}

/// The flags that keep a test's kubelet to itself: its state under `dir`, its containers in
/// namespace `ns` of `containerd` and its cgroups under `/knode-test/<ns>`, images from `registry`.
pub fn test_kubelet_args(
    dir: &std::path::Path,
    containerd: &PrivateContainerd,
    ns: &str,
    registry: &PrivateRegistry,
) -> Vec<String> {
    vec![
        format!("--root-dir={}", dir.join("root").display()),
        format!(
            "--container-runtime-endpoint=unix://{}",
            containerd.socket().display()
        ),
        format!("--containerd-namespace={ns}"),
        format!("--insecure-registry={}", registry.host()),
        format!("--cgroup-root=/knode-test/{ns}"),
    ]
}

/// What a test kubelet leaves after it is killed: containers and their tasks in namespace `ns`
/// (they outlive the kubelet), mounts under `dir`, and the cgroups of `ns`.
pub fn cleanup_containerd(containerd: &PrivateContainerd, ns: &str, dir: &std::path::Path) {
    // Containers outlive the kubelet: kill them through ctr, then unmount what is left.
    let out = containerd.ctr(ns).args(["containers", "ls", "-q"]).output();
    for id in out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
    {
        let _ = containerd
            .ctr(ns)
            .args(["tasks", "kill", "-s", "SIGKILL", id])
            .output();
        std::thread::sleep(Duration::from_millis(100));
        let _ = containerd.ctr(ns).args(["tasks", "rm", "-f", id]).output();
        let _ = containerd.ctr(ns).args(["containers", "rm", id]).output();
    }
    knode_harness::cleanup::unmount_under(dir);
    for ctl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let base = ctl.path().join("knode-test").join(ns);
        knode_harness::cleanup::remove_cgroup_tree(&base);
        // Where `ctr run` (benchmark baselines) puts containers of this namespace.
        knode_harness::cleanup::remove_cgroup_tree(&ctl.path().join(ns));
    }
}

/// The test image's arguments for a container that sleeps until SIGTERM.
pub const SLEEP_FOREVER: &[&str] = &["sleep", "infinity", "--exit-on-sigterm"];

pub fn pod_yaml(name: &str, image: &str, restart: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: {image}\n    args: [{}]\n",
        args.join(", ")
    )
}

impl Node {
    /// Restarts the kubelet with `extra_yaml` appended to its KubeletConfiguration and `args`
    /// added to its flags (running containers are adopted by the new process).
    pub fn reconfigure(&mut self, extra_yaml: &str, args: &[&str]) {
        self.kill_kubelet();
        let config = self.dir.path().join("kubelet-config.yaml");
        let text = std::fs::read_to_string(&config).unwrap();
        let mut text = replace_top_level_keys(&text, extra_yaml);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        std::fs::write(&config, text).unwrap();
        self.args.extend(args.iter().map(|a| a.to_string()));
        self.relaunch();
    }

    /// Starts the (killed) kubelet again and waits until it reports itself started.
    pub fn relaunch(&mut self) {
        let log = self.dir.path().join("kubelet.log");
        let starts = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("kubelet starting")
                .count()
        };
        let before = starts();
        self.launch();
        self.eventually("the kubelet restarted", || starts() > before);
    }

    /// The containerd ID of a pod's (running) container, from the pod's status.
    pub fn container_id(&self, pod: &str, container: &str) -> Option<String> {
        let p = self.pod(pod);
        [
            "containerStatuses",
            "initContainerStatuses",
            "ephemeralContainerStatuses",
        ]
        .iter()
        .flat_map(|k| p["status"][k].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == container)
        .and_then(|s| s["containerID"].as_str().map(String::from))
        .map(|id| id.trim_start_matches("containerd://").to_string())
    }

    /// Runs a command inside a running container (through `ctr tasks exec`, the test's view);
    /// returns (success, stdout + stderr).
    pub fn exec(&self, pod: &str, container: &str, cmd: &[&str]) -> (bool, String) {
        let Some(id) = self.container_id(pod, container) else {
            return (false, format!("no container {container} in pod {pod}"));
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let exec_id = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let out = self
            .ctr()
            .args(["tasks", "exec", "--exec-id", &exec_id, &id])
            .args(cmd)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Reasons of the events about an object, space-separated.
    pub fn event_reasons(&self, name: &str) -> String {
        self.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={.items[*].reason}",
        ])
    }

    /// Messages of the events about an object with a given reason, one per line.
    pub fn event_messages(&self, name: &str, reason: &str) -> String {
        let out = self.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|e| e["reason"] == reason)
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Node {
    /// PEM files of a client certificate and key for a `system:masters` user (for calling the
    /// kubelet API directly), written once into the node's directory: (cert path, key path).
    pub fn admin_client_cert(&self) -> (PathBuf, PathBuf) {
        use base64::Engine;
        let cert = self.dir.path().join("admin-client.crt");
        let key = self.dir.path().join("admin-client.key");
        if !cert.exists() {
            let kc = self
                .cp
                .issue_kubeconfig("kubelet-api-tester", &["system:masters"])
                .unwrap();
            let text = std::fs::read_to_string(kc).unwrap();
            let field = |name: &str| -> Vec<u8> {
                let i = text.find(name).unwrap() + name.len();
                let v: String = text[i..]
                    .trim_start_matches(['"', ':', ' '])
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
                    .collect();
                base64::engine::general_purpose::STANDARD.decode(v).unwrap()
            };
            std::fs::write(&cert, field("client-certificate-data")).unwrap();
            std::fs::write(&key, field("client-key-data")).unwrap();
        }
        (cert, key)
    }
}

/// Eviction thresholds and image GC that do not depend on how full the host's disk is (upstream's
/// defaults would put a test node under DiskPressure, or collect its images, on a machine with
/// less than 15 % free). Tests of eviction and image GC set their own through `reconfigure`.
const HOST_DISK_INDEPENDENT: &str = "evictionHard:\n  memory.available: 100Mi\n  nodefs.available: 100Mi\n  imagefs.available: 100Mi\nimageGCHighThresholdPercent: 100\n";

/// `base` with `extra` appended, minus the top-level keys of `base` that `extra` sets again (a
/// strict decoder refuses duplicate keys; `extra` wins, like a later flag).
pub fn replace_top_level_keys(base: &str, extra: &str) -> String {
    let key = |l: &str| -> Option<String> {
        (!l.starts_with([' ', '\t', '#', '-']) && l.contains(':'))
            .then(|| l.split(':').next().unwrap_or("").trim().to_string())
    };
    let replaced: std::collections::BTreeSet<String> = extra.lines().filter_map(key).collect();
    let mut out = String::new();
    let mut skipping = false;
    for line in base.lines() {
        if let Some(k) = key(line) {
            skipping = replaced.contains(&k);
        } else if !line.starts_with([' ', '\t']) {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(extra);
    out
}
