//! Pod networking end to end: the kubelet (a real process in a test-created node netns) with real
//! CNI plugins, real pods in containerd, real packets.
//!
//! - The same connectivity suite with knode's default network (written by the kubelet from the
//!   node's podCIDR) and with Debian's reference plugins (bridge + host-local + loopback), chosen only
//!   by the conflist: pod ↔ pod TCP and UDP by pod IP, pod ↔ node, and a pod reaching a test-created
//!   "outside host" seen there with the node's address (masquerade).
//! - Readiness: no valid CNI config → node NotReady with upstream's message, pods wait with a
//!   NetworkNotReady event, hostNetwork pods run; the default config appears once the dir is usable;
//!   a network provider's NetworkUnavailable condition survives the kubelet's status updates;
//!   ip_forward is turned on.
//! - A CNI ADD failure fails the sandbox with the plugin's message (FailedCreatePodSandBox) and is
//!   retried until it succeeds.
//! - Pods deleted while the kubelet is down leak no IPs, veths, netns pins or nft rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Node;
use common::leaks::{pod_veths, reserved_ips};
use serde_json::Value;

const TESTIMG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/x86_64-unknown-linux-gnu/testimg/testimg"
);
/// The node's address towards the outside host, and the outside host's.
const NODE_OUT_IP: &str = "192.168.77.1";
const OUTSIDE_IP: &str = "192.168.77.2";
const NOT_READY: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A process killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test-created "outside host" netns linked to the node netns by a veth; deleted on drop.
struct OutsideHost {
    name: String,
}

impl OutsideHost {
    fn new(node_ns: &str) -> OutsideHost {
        let name = format!(
            "kout{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        ok(&["ip", "netns", "add", &name]);
        let h = OutsideHost { name };
        ok(&[
            "ip", "-n", node_ns, "link", "add", "to-out", "type", "veth", "peer", "name", "to-node", "netns",
            &h.name,
        ]);
        ok(&[
            "ip",
            "-n",
            node_ns,
            "addr",
            "add",
            &format!("{NODE_OUT_IP}/24"),
            "dev",
            "to-out",
        ]);
        ok(&["ip", "-n", node_ns, "link", "set", "to-out", "up"]);
        ok(&[
            "ip",
            "-n",
            &h.name,
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            "to-node",
        ]);
        ok(&["ip", "-n", &h.name, "link", "set", "to-node", "up"]);
        ok(&["ip", "-n", &h.name, "link", "set", "lo", "up"]);
        h
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// testimg's servers (HTTP 8080, UDP 8081) in the netns at `netns`.
fn serve_in(netns: &Path) -> Bg {
    let child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", TESTIMG])
        .args(["serve", "--http-port", "8080", "--udp-port", "8081"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Bg(child)
}

fn nsenter(netns: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .args(args)
        .output()
        .unwrap()
}

fn retry(what: &str, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// HTTP GET from inside `netns`.
fn http_from(netns: &Path, url: &str) -> String {
    retry(&format!("GET {url} from {}", netns.display()), || {
        let o = nsenter(netns, &["curl", "-sS", "--max-time", "2", url]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    })
}

/// The source address the testimg server at `ip` saw for a request from `netns`.
fn client_ip_from(netns: &Path, ip: &str) -> String {
    let s = http_from(netns, &format!("http://{ip}:8080/clientip"));
    s.rsplit_once(':').map(|(a, _)| a.to_string()).unwrap_or(s)
}

/// A UDP datagram from `netns` to testimg at `ip`; returns the answer (an echo).
fn udp_from(netns: &Path, ip: &str, msg: &str) -> String {
    retry(&format!("UDP {ip} from {}", netns.display()), || {
        let cmd = format!("printf {msg} | socat -T1 - UDP:{ip}:8081");
        let o = nsenter(netns, &["sh", "-c", &cmd]);
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !s.is_empty()).then_some(s)
    })
}

fn node_netns(node: &Node) -> PathBuf {
    PathBuf::from(format!("/run/netns/{}", node.netns.as_ref().unwrap().name))
}

fn node_ns_name(node: &Node) -> String {
    node.netns.as_ref().unwrap().name.clone()
}

fn sandboxes(node: &Node) -> PathBuf {
    node.dir.path().join("root/sandboxes")
}

/// The pinned network namespace of a pod's current sandbox.
fn pod_netns(node: &Node, pod: &Value) -> PathBuf {
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir(sandboxes(node))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let attempt = name.strip_prefix(&format!("{uid}-"))?.parse().ok()?;
            Some((attempt, e.path()))
        })
        .collect();
    dirs.sort();
    dirs.pop().unwrap().1.join("net")
}

/// Network namespace pins (bind mounts) of the node's sandboxes.
fn netns_pins(node: &Node) -> usize {
    let root = sandboxes(node);
    let root = root.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(root) && m.ends_with("/net"))
        .count()
}

/// Masquerade rules in the node netns.
fn masquerade_rules(node: &Node) -> usize {
    let o = run(&[
        "ip",
        "netns",
        "exec",
        &node_ns_name(node),
        "nft",
        "list",
        "ruleset",
    ]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("masquerade"))
        .count()
}

fn pod_cidr(node: &Node) -> String {
    let mut cidr = String::new();
    node.eventually("node podCIDR allocated", || {
        cidr = node.kubectl(&["get", "node", &node.name, "-o", "jsonpath={.spec.podCIDR}"]);
        !cidr.is_empty()
    });
    cidr
}

fn ready_condition(node: &Node) -> Value {
    let n: Value = serde_json::from_str(&node.kubectl(&["get", "node", &node.name, "-o", "json"])).unwrap();
    n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_ready(node: &Node, status: &str) -> Value {
    let mut last = Value::Null;
    node.eventually(&format!("node Ready={status}"), || {
        last = ready_condition(node);
        last["status"] == status
    });
    last
}

/// Events about pod `name`: (reason, message).
fn pod_events(node: &Node, name: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(&node.kubectl(&["get", "events", "-o", "json"])).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pod(name: &str, image: &str, args: &[&str], extra_spec: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 2\n{extra_spec}  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    args: [{}]\n",
        args.join(", ")
    )
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, prefix) = cidr.split_once('/').unwrap();
    let (ip, net): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (ip.parse().unwrap(), net.parse().unwrap());
    let mask = u32::MAX << (32 - prefix.parse::<u32>().unwrap());
    u32::from(ip) & mask == u32::from(net) & mask
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Flavor {
    /// The kubelet's own default network (knode-bridge), written from the node's podCIDR.
    KnodeDefault,
    /// Debian's reference bridge + host-local + loopback from /usr/lib/cni.
    Reference,
}

/// Restarts the kubelet of a networked node with the harness's conflist replaced by `flavor`'s.
/// Returns (pod CIDR, IPAM store dir).
fn switch_network(node: &mut Node, flavor: Flavor) -> (String, PathBuf) {
    let cidr = pod_cidr(node);
    node.kill_kubelet();
    let cni_dir = node.dir.path().join("cni");
    std::fs::remove_file(cni_dir.join("10-knode.conflist")).unwrap();
    let store = match flavor {
        Flavor::KnodeDefault => node.dir.path().join("root/cni/networks/knode"),
        Flavor::Reference => {
            let data = node.dir.path().join("ipam-ref");
            std::fs::write(
                cni_dir.join("10-reference.conflist"),
                serde_json::to_vec(&serde_json::json!({
                    "cniVersion": "1.0.0", "name": "refnet",
                    "plugins": [
                        {"type": "bridge", "bridge": "knode0", "isGateway": true, "isDefaultGateway": true,
                         "ipMasq": true, "hairpinMode": true,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]],
                                  "dataDir": data.to_str().unwrap()}},
                        {"type": "loopback"}
                    ]
                }))
                .unwrap(),
            )
            .unwrap();
            for a in node.args.iter_mut() {
                if a.starts_with("--cni-bin-dir=") {
                    a.push_str(",/usr/lib/cni");
                }
            }
            data.join("refnet")
        }
    };
    node.launch();
    if flavor == Flavor::KnodeDefault {
        // The API still shows the last status until the new process posts: wait for its config.
        node.eventually("the kubelet's default conflist", || {
            cni_dir.join("10-knode.conflist").exists()
        });
    }
    wait_ready(node, "True");
    (cidr, store)
}

/// Two server pods, the node and an outside host: TCP and UDP between them by pod IP, node → pods,
/// pods → node, pods → outside host (masqueraded to the node's address); then deletion frees all.
async fn connectivity_suite(prefix: &str, flavor: Flavor) {
    let mut node = Node::start_with(prefix, true).await;
    let (cidr, store) = switch_network(&mut node, flavor);
    if flavor == Flavor::KnodeDefault {
        let text = std::fs::read_to_string(node.dir.path().join("cni/10-knode.conflist")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["plugins"][0]["type"], "knode-bridge", "{text}");
        assert_eq!(v["plugins"][0]["bridge"], "knode0", "{text}");
        assert_eq!(v["plugins"][0]["ipMasq"], true, "{text}");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            cidr.as_str(),
            "{text}"
        );
    }
    let outside = OutsideHost::new(&node_ns_name(&node));
    let _outside_server = serve_in(&outside.path());
    let _node_server = serve_in(&node_netns(&node));
    let img = node.image().to_string();
    let serve = ["serve", "--http-port", "8080", "--udp-port", "8081"];
    node.apply(&pod("alpha", &img, &serve, ""));
    node.apply(&pod("beta", &img, &serve, ""));
    let a = node.wait_phase("alpha", "Running");
    let b = node.wait_phase("beta", "Running");
    let ip_a = a["status"]["podIP"].as_str().unwrap().to_string();
    let ip_b = b["status"]["podIP"].as_str().unwrap().to_string();
    assert!(
        in_cidr(&ip_a, &cidr) && in_cidr(&ip_b, &cidr),
        "{ip_a} {ip_b} in {cidr}"
    );
    assert_ne!(ip_a, ip_b);
    assert_eq!(reserved_ips(&store), {
        let mut v = vec![ip_a.clone(), ip_b.clone()];
        v.sort();
        v
    });
    let (ns_a, ns_b) = (pod_netns(&node, &a), pod_netns(&node, &b));
    // Pod ↔ pod, TCP and UDP, by pod IP, sources unchanged.
    assert_eq!(http_from(&ns_b, &format!("http://{ip_a}:8080/hostname")), "alpha");
    assert_eq!(client_ip_from(&ns_b, &ip_a), ip_b);
    assert_eq!(client_ip_from(&ns_a, &ip_b), ip_a);
    assert_eq!(udp_from(&ns_a, &ip_b, "ping"), "ping");
    assert_eq!(udp_from(&ns_b, &ip_a, "hostname"), "alpha");
    // And from inside a container (busybox wget in the pod's own image).
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {img}\n    imagePullPolicy: IfNotPresent\n    command: [\"/bin/sh\", \"-c\", \"wget -qO- http://{ip_a}:8080/hostname\"]\n"
    ));
    node.wait_phase("client", "Succeeded");
    assert_eq!(node.logs("client", "main").trim(), "alpha");
    // Node → pods and pods → node (the node's address; no masquerade inside the node).
    let node_ns = node_netns(&node);
    assert_eq!(
        http_from(&node_ns, &format!("http://{ip_b}:8080/hostname")),
        "beta"
    );
    assert_eq!(udp_from(&node_ns, &ip_a, "n"), "n");
    assert_eq!(client_ip_from(&ns_a, "10.200.0.1"), ip_a);
    // UDP to the node's address on the pod network (the gateway): a server bound to 0.0.0.0
    // answers from the address the route back to the pod picks, which is this one.
    let gateway = {
        let net: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(net) + 1).to_string()
    };
    assert_eq!(udp_from(&ns_b, &gateway, "u"), "u");
    assert_eq!(client_ip_from(&ns_b, &gateway), ip_b);
    // Pod → outside host: seen there with the node's address.
    assert_eq!(client_ip_from(&ns_a, OUTSIDE_IP), NODE_OUT_IP);
    assert_eq!(client_ip_from(&ns_b, OUTSIDE_IP), NODE_OUT_IP);
    assert_eq!(udp_from(&ns_b, OUTSIDE_IP, "out"), "out");
    // Deleting the pods gives everything back.
    for p in ["alpha", "beta", "client"] {
        node.kubectl(&["delete", "pod", p, "--wait=false"]);
    }
    node.eventually("pods gone and their network released", || {
        reserved_ips(&store).is_empty() && pod_veths(&node).is_empty() && netns_pins(&node) == 0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_network_pods_talk_tcp_udp_and_masquerade() {
    connectivity_suite("kn-def", Flavor::KnodeDefault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_plugins_pass_the_same_suite_chosen_by_the_conflist() {
    connectivity_suite("kn-ref", Flavor::Reference).await;
}

/// No valid config: the node is NotReady with upstream's message, a pod waits with a NetworkNotReady
/// event while a hostNetwork pod runs; once the broken file is gone the kubelet writes the default
/// network for the node's podCIDR, the node turns Ready and the pod runs with an IP from it. A
/// NetworkUnavailable condition set by a network provider survives; ip_forward is switched on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_not_ready_until_a_valid_config_then_the_default_is_written() {
    let mut node = Node::start_with("kn-ready", true).await;
    let cidr = pod_cidr(&node);
    node.kill_kubelet();
    let cni_dir = node.dir.path().join("cni");
    std::fs::remove_file(cni_dir.join("10-knode.conflist")).unwrap();
    std::fs::write(cni_dir.join("05-broken.conflist"), b"{not json").unwrap();
    let ns = node_ns_name(&node);
    ok(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=0",
    ]);
    // What a network provider (route controller) reports; the kubelet must leave it alone.
    node.kubectl(&[
        "patch",
        "node",
        &node.name,
        "--subresource=status",
        "-p",
        r#"{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False","reason":"RouteCreated","message":"RouteController created a route"}]}}"#,
    ]);
    node.launch();
    let c = wait_ready(&node, "False");
    assert_eq!(c["reason"], "KubeletNotReady");
    assert_eq!(c["message"], NOT_READY);
    let fwd = ok(&["ip", "netns", "exec", &ns, "cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(fwd.trim(), "1");
    assert!(node.log().contains("ip_forward"), "{}", node.log());
    // Pods bound to the node: the networked one waits, the hostNetwork one runs.
    let img = node.image().to_string();
    let bound = format!("  nodeName: {}\n", node.name);
    node.apply(&pod("waiter", &img, &["sleep", "infinity"], &bound));
    node.apply(&pod(
        "hostnet",
        &img,
        &["sleep", "infinity"],
        &format!("{bound}  hostNetwork: true\n"),
    ));
    node.wait_phase("hostnet", "Running");
    node.eventually("NetworkNotReady event for the waiting pod", || {
        pod_events(&node, "waiter")
            .iter()
            .any(|(r, m)| r == "NetworkNotReady" && *m == format!("network is not ready: {NOT_READY}"))
    });
    assert_eq!(node.pod("waiter")["status"]["phase"], "Pending");
    assert!(!cni_dir.join("10-knode.conflist").exists());
    // The broken file goes: the default network appears and everything proceeds.
    std::fs::remove_file(cni_dir.join("05-broken.conflist")).unwrap();
    wait_ready(&node, "True");
    let text = std::fs::read_to_string(cni_dir.join("10-knode.conflist")).unwrap();
    assert!(text.contains(&cidr), "{text}");
    let w = node.wait_phase("waiter", "Running");
    let ip = w["status"]["podIP"].as_str().unwrap();
    assert!(in_cidr(ip, &cidr), "{ip} in {cidr}");
    let n: Value = serde_json::from_str(&node.kubectl(&["get", "node", &node.name, "-o", "json"])).unwrap();
    let nu = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "NetworkUnavailable")
        .cloned();
    assert_eq!(
        nu.as_ref().map(|c| (c["status"].clone(), c["reason"].clone())),
        Some(("False".into(), "RouteCreated".into())),
        "{n}"
    );
}

/// A CNI ADD that fails (subnet exhausted) fails that pod's sandbox with the plugin's message in a
/// FailedCreatePodSandBox event, leaves nothing behind, and is retried until an address is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_add_failure_fails_the_sandbox_with_the_plugin_message_and_is_retried() {
    let mut node = Node::start_with("kn-fail", true).await;
    node.kill_kubelet();
    let cni_dir = node.dir.path().join("cni");
    let data = node.dir.path().join("ipam-small");
    // A /30: one address besides the gateway.
    std::fs::write(
        cni_dir.join("10-knode.conflist"),
        serde_json::to_vec(&serde_json::json!({
            "cniVersion": "1.0.0", "name": "small",
            "plugins": [{"type": "knode-bridge", "bridge": "knode0", "isDefaultGateway": true,
                "ipMasq": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/30"}]],
                "dataDir": data.to_str().unwrap()}}]
        }))
        .unwrap(),
    )
    .unwrap();
    node.launch();
    wait_ready(&node, "True");
    let img = node.image().to_string();
    node.apply(&pod("first", &img, &["sleep", "infinity"], ""));
    let f = node.wait_phase("first", "Running");
    assert_eq!(f["status"]["podIP"], "10.244.0.2");
    node.apply(&pod("second", &img, &["sleep", "infinity"], ""));
    node.eventually("two FailedCreatePodSandBox events (retried)", || {
        pod_events(&node, "second")
            .iter()
            .filter(|(r, m)| {
                r == "FailedCreatePodSandBox"
                    && m.starts_with("Failed to create pod sandbox: failed to setup network for sandbox")
                    && m.contains(r#"plugin type="knode-bridge" name="small" failed (add): "#)
                    && m.contains("no IP addresses available")
            })
            .count()
            >= 2
    });
    let s = node.pod("second");
    assert_eq!(s["status"]["phase"], "Pending");
    assert_eq!(
        s["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
        "{s}"
    );
    // The failed attempts left no veth, pin or reservation.
    assert_eq!(reserved_ips(&data.join("small")), ["10.244.0.2"]);
    assert_eq!(pod_veths(&node).len(), 1, "{:?}", pod_veths(&node));
    assert_eq!(netns_pins(&node), 1);
    // The address frees up: the retry succeeds.
    node.kubectl(&["delete", "pod", "first", "--wait=false"]);
    let s = node.wait_phase("second", "Running");
    assert_eq!(s["status"]["podIP"], "10.244.0.2");
}

/// Pods force-deleted while the kubelet is down are cleaned up after it restarts (CNI DEL of
/// their sandboxes), pods that kept running keep their addresses, and in the end no IP, veth,
/// netns pin or extra nft rule is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_churn_across_a_kubelet_restart_without_leaking() {
    let mut node = Node::start_with("kn-leak", true).await;
    let store = node.dir.path().join("ipam/knode");
    let img = node.image().to_string();
    let names = ["p0", "p1", "p2", "p3"];
    for n in names {
        node.apply(&pod(n, &img, &["sleep", "infinity"], ""));
    }
    let mut ips = Vec::new();
    for n in names {
        ips.push(
            node.wait_phase(n, "Running")["status"]["podIP"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(reserved_ips(&store).len(), 4);
    assert_eq!(pod_veths(&node).len(), 4);
    assert_eq!(netns_pins(&node), 4);
    assert_eq!(masquerade_rules(&node), 1);
    node.kill_kubelet();
    for n in ["p0", "p1"] {
        node.kubectl(&["delete", "pod", n, "--grace-period=0", "--force"]);
    }
    node.launch();
    for n in ["p4", "p5"] {
        node.apply(&pod(n, &img, &["sleep", "infinity"], ""));
    }
    node.wait_phase("p4", "Running");
    node.wait_phase("p5", "Running");
    node.eventually("orphaned pods' networks released", || {
        let r = reserved_ips(&store);
        r.len() == 4 && pod_veths(&node).len() == 4 && netns_pins(&node) == 4
    });
    // Adopted pods kept their addresses.
    for (n, ip) in names.iter().zip(&ips).skip(2) {
        assert_eq!(node.pod(n)["status"]["podIP"], ip.as_str(), "{n}");
    }
    assert_eq!(masquerade_rules(&node), 1);
    for n in ["p2", "p3", "p4", "p5"] {
        node.kubectl(&["delete", "pod", n, "--wait=false"]);
    }
    node.eventually("everything released", || {
        reserved_ips(&store).is_empty() && pod_veths(&node).is_empty() && netns_pins(&node) == 0
    });
    assert_eq!(masquerade_rules(&node), 1, "one rule per network, not per pod");
}
