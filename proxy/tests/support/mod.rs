//! Test support shared by kube-proxy's root tests (dataplane, daemon, benchmarks): running
//! commands, entering network namespaces, and the node/pods/client topology with test-image
//! servers. Everything created here is removed by Drop guards, also on failure; nothing is added
//! to the host's network namespace.
//!
//! Each test binary uses a different subset, hence `dead_code` is allowed.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_proxy::model::SERVICE_NAME_LABEL;

/// The test image's static binary (serves HTTP/TCP/UDP in pod namespaces).
pub const TESTIMG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/x86_64-unknown-linux-gnu/testimg/testimg"
);
/// The node's address on the link to the client namespace.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// The client namespace's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// Runs a command; panics with its stderr when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip netns exec <ns> <args…>`: its output, whether it succeeded or not.
pub fn exec_in(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap()
}

/// `ip netns exec <ns> <args…>`; panics with its stderr when it fails.
pub fn sh_in(ns: &str, args: &[&str]) {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v);
}

/// `ip -n <ns> <args>`.
pub fn ip_in(ns: &str, args: &[&str]) {
    let mut v = vec!["ip", "-n", ns];
    v.extend_from_slice(args);
    sh(&v);
}

/// A name unique to this process and call, for namespaces: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread that entered network namespace `ns` (sockets it creates belong there).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .unwrap()
    })
}

/// A background thread that runs until this is dropped: `body` polls the flag it is given and
/// returns once it is set; drop sets it and joins the thread.
pub struct StopThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StopThread {
    pub fn spawn(body: impl FnOnce(&AtomicBool) + Send + 'static) -> StopThread {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || body(&flag));
        StopThread {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StopThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A bare network namespace (nothing in it, loopback down), deleted with everything in it (its
/// nftables tables too) on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let ns = Netns(unique(prefix));
        sh(&["ip", "netns", "add", &ns.0]);
        ns
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.0, f)
    }

    /// `nft -j list <what…>` inside the namespace (None when it fails, e.g. the object is absent).
    pub fn nft_json(&self, what: &[&str]) -> Option<String> {
        let out = exec_in(&self.0, &[&["nft", "-j", "list"], what].concat());
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Connects `node` and `peer` with a veth pair (`link` on the node, `eth0` in the peer), gives
/// them the addresses (`a.b.c.d/len`) and routes the peer's default traffic via the node.
pub fn wire(node: &str, peer: &str, link: &str, node_addr: &str, peer_addr: &str) {
    ip_in(
        node,
        &[
            "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", peer,
        ],
    );
    ip_in(node, &["addr", "add", node_addr, "dev", link]);
    ip_in(node, &["link", "set", link, "up"]);
    ip_in(peer, &["link", "set", "lo", "up"]);
    ip_in(peer, &["addr", "add", peer_addr, "dev", "eth0"]);
    ip_in(peer, &["link", "set", "eth0", "up"]);
    let gw = node_addr.split('/').next().unwrap_or(node_addr);
    ip_in(peer, &["route", "add", "default", "via", gw]);
}

/// Kills every process still running in namespace `ns`.
pub fn kill_all_in(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The IPv4 lab: a "node" namespace (forwarding on, `br0` 10.244.0.1/24 with a route for the
/// Service range 10.96.0.0/16, `up0` [`NODE_IP`]/24 to the client), `pods` pod namespaces on the
/// bridge (10.244.0.10 + i, hairpin mode on their bridge ports, each running `testimg serve` on
/// 8080/tcp and 8081/udp with hostname `pod<i>`), and a "client" namespace ([`CLIENT_IP`], default
/// route via the node). Removed on drop.
/// `Deref<Target = Topology>` for a test's lab struct that holds its [`Topology`] in `topo`.
#[allow(unused_macros)]
macro_rules! deref_topology {
    ($lab:ident) => {
        impl std::ops::Deref for $lab {
            type Target = support::Topology;
            fn deref(&self) -> &support::Topology {
                &self.topo
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use deref_topology;

pub struct Topology {
    pub id: String,
    pub node: String,
    pub client: String,
    pub pods: Vec<(String, Ipv4Addr)>,
    servers: Vec<Child>,
}

impl Topology {
    /// Builds it with namespace names `<prefix>-node-<id>`, `<prefix>-cli-<id>`,
    /// `<prefix>-pod<i>-<id>`, and waits until every server answers.
    pub fn new(prefix: &str, pods: usize) -> Topology {
        let id = unique("").trim_start_matches('-').to_string();
        let mut t = Topology {
            node: format!("{prefix}-node-{id}"),
            client: format!("{prefix}-cli-{id}"),
            id,
            pods: Vec::new(),
            servers: Vec::new(),
        };
        // Registered (in `t`) before creation so a half-built lab is still removed.
        sh(&["ip", "netns", "add", &t.node]);
        sh(&["ip", "netns", "add", &t.client]);
        let node = t.node.clone();
        ip_in(&node, &["link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        ip_in(&node, &["link", "add", "br0", "type", "bridge"]);
        ip_in(&node, &["addr", "add", "10.244.0.1/24", "dev", "br0"]);
        ip_in(&node, &["link", "set", "br0", "up"]);
        // Service IPs need a route for packets that are not DNATed (no-endpoint rejects).
        ip_in(&node, &["route", "add", "10.96.0.0/16", "dev", "br0"]);
        wire(
            &node,
            &t.client,
            "up0",
            &format!("{NODE_IP}/24"),
            &format!("{CLIENT_IP}/24"),
        );
        for i in 0..pods {
            let pod = format!("{prefix}-pod{i}-{}", t.id);
            let ip = Ipv4Addr::new(10, 244, 0, 10 + i as u8);
            sh(&["ip", "netns", "add", &pod]);
            t.pods.push((pod.clone(), ip));
            let veth = format!("p{i}");
            ip_in(
                &node,
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod,
                ],
            );
            ip_in(&node, &["link", "set", &veth, "master", "br0", "up"]);
            // As the CNI bridge plugin's hairpinMode: a frame DNATed back to its own port may
            // leave through it (br_netfilter bridges it back), which hairpin traffic needs.
            ip_in(
                &node,
                &["link", "set", &veth, "type", "bridge_slave", "hairpin", "on"],
            );
            ip_in(&pod, &["link", "set", "lo", "up"]);
            ip_in(&pod, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ip_in(&pod, &["link", "set", "eth0", "up"]);
            ip_in(&pod, &["route", "add", "default", "via", "10.244.0.1"]);
            // A UTS namespace per pod so /hostname tells the pods apart.
            let child = Command::new("ip")
                .args(["netns", "exec", &pod, "unshare", "--uts", "sh", "-c"])
                .arg(format!(
                    "hostname pod{i}; exec {TESTIMG} serve --http-port 8080 --udp-port 8081"
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            t.servers.push(child);
        }
        for (_, ip) in t.pods.clone() {
            let deadline = Instant::now() + Duration::from_secs(20);
            in_netns(&node, || {
                while http_get(SocketAddr::from((ip, 8080)), "/hostname").is_err() {
                    assert!(Instant::now() < deadline, "server on {ip} never came up");
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The unshare'd servers are children of `ip netns exec`; kill whatever still runs inside.
        for ns in self.pods.iter().map(|p| p.0.clone()).chain([self.node.clone()]) {
            kill_all_in(&ns);
        }
        // Deleting the node namespace deletes its nftables tables with it.
        for ns in self
            .pods
            .iter()
            .map(|p| p.0.clone())
            .chain([self.node.clone(), self.client.clone()])
        {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// An HTTP/1.0 GET: (status, body).
pub fn http_get_full(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").to_string();
    Ok((status, body))
}

/// An HTTP/1.0 GET's body, trimmed.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    http_get_full(addr, path).map(|(_, b)| b.trim().to_string())
}

/// Metadata of object `name` in namespace `default`.
pub fn default_meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        ..Default::default()
    }
}

/// Metadata of EndpointSlice `name` (in `default`) of Service `service`.
pub fn slice_meta(name: &str, service: &str) -> ObjectMeta {
    ObjectMeta {
        labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
        ..default_meta(name)
    }
}

/// A ready (serving, not terminating) endpoint at `ip`.
pub fn ready_endpoint(ip: impl ToString) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        ..Default::default()
    }
}

/// EndpointSlice port `http`: 8080/TCP.
pub fn http_slice_port() -> EndpointPort {
    EndpointPort {
        name: Some("http".into()),
        protocol: Some("TCP".into()),
        port: Some(8080),
        ..Default::default()
    }
}

/// Service `name` (in `default`) of type `type_` with one port, `http`: 80/TCP → 8080.
pub fn http_service(name: &str, type_: &str) -> Service {
    Service {
        metadata: default_meta(name),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// EndpointSlice `<service>-1` of [`http_service`] `service`: ready IPv4 endpoints at `ips`.
pub fn http_slice(service: &str, ips: impl IntoIterator<Item = Ipv4Addr>) -> EndpointSlice {
    EndpointSlice {
        metadata: slice_meta(&format!("{service}-1"), service),
        address_type: "IPv4".into(),
        endpoints: ips.into_iter().map(ready_endpoint).collect(),
        ports: Some(vec![http_slice_port()]),
    }
}

/// Service `svc<i>` (port 80 → 8080, name "http") as a benchmark creates it.
pub fn numbered_service(i: usize) -> Service {
    http_service(&format!("svc{i}"), "ClusterIP")
}

/// The EndpointSlice of `svc<i>`: 5 ready endpoints at 10.128.0.0 + 5i.
pub fn numbered_slice(i: usize) -> EndpointSlice {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * 5) as u32;
    http_slice(&format!("svc{i}"), (0..5).map(|e| Ipv4Addr::from(base + e)))
}
