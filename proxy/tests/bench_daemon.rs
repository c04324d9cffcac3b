#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Benchmark (prints, asserts only correctness): the real `kube-proxy` daemon's memory with many
//! Services. N Services × 5 endpoints are created in knode's control plane (1k by default,
//! `KNODE_BENCH=full` 10k), then kube-proxy starts against it, lists them, programs them, and its
//! VmRSS / VmHWM are printed once its table holds every ClusterIP with endpoints.
//!
//! The control plane and kube-proxy both run inside one test-created network namespace (each has
//! its own loopback there), so nothing is programmed in the host's namespace; the namespace, its
//! table and both processes are removed by Drop guards, also on failure.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use knode_harness::control_plane::ControlPlane;
use kube::api::{Api, PostParams};

const NODE_IP: &str = "192.168.79.1";

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted (with the nftables table in it) on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let ns = Netns(format!("kp-benchd-{}", std::process::id()));
        sh(&["ip", "netns", "add", &ns.0]);
        sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
        // An address for the node's InternalIP (NodePort addresses); nothing is routed anywhere.
        // (a veth pair: this kernel has no dummy driver).
        sh(&[
            "ip", "-n", &ns.0, "link", "add", "node0", "type", "veth", "peer", "name", "node1",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns.0,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "node0",
        ]);
        sh(&["ip", "-n", &ns.0, "link", "set", "node0", "up"]);
        ns
    }

    /// Runs `f` on a thread that entered the namespace (its sockets are the namespace's).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap();
                assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Elements of set `set` in table `ip kube-proxy`, None while the set is absent.
    fn set_len(&self, set: &str) -> Option<usize> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.0,
                "nft",
                "-j",
                "list",
                "set",
                "ip",
                "kube-proxy",
                set,
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["nftables"].as_array()?.iter().find_map(|o| {
            let s = o.get("set")?;
            Some(s.get("elem").and_then(|e| e.as_array()).map_or(0, Vec::len))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The kube-proxy process; killed on drop.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc{i}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
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

fn slice(i: usize) -> EndpointSlice {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * 5) as u32;
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("svc{i}-1")),
            namespace: Some("default".into()),
            labels: Some([("kubernetes.io/service-name".to_string(), format!("svc{i}"))].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: (0..5)
            .map(|e| Endpoint {
                addresses: vec![Ipv4Addr::from(base + e).to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    }
}

/// `(VmRSS, VmHWM)` of `pid` in KiB.
fn rss_hwm_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn bench_daemon_rss_with_many_services() {
    knode_harness::require_root().unwrap();
    knode_harness::install_crypto_provider();
    let full = std::env::var("KNODE_BENCH").as_deref() == Ok("full");
    let n = if full { 10_000 } else { 1_000 };
    let ns = Netns::new();
    let cp = ControlPlane::start_in(Some(&ns.0), &[]).unwrap();
    let node_name = format!("kp-benchd-{}", std::process::id());

    // Create the objects from a thread inside the namespace (the API server listens on its
    // loopback), many requests in flight at once.
    let created = Instant::now();
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            let client = kube::Client::try_from(cfg).unwrap();
            let nodes: Api<Node> = Api::all(client.clone());
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(node_name.clone()),
                    ..Default::default()
                },
                spec: None,
                status: Some(NodeStatus {
                    addresses: Some(vec![NodeAddress {
                        type_: "InternalIP".into(),
                        address: NODE_IP.into(),
                    }]),
                    ..Default::default()
                }),
            };
            nodes.create(&PostParams::default(), &node).await.unwrap();
            let services: Api<Service> = Api::namespaced(client.clone(), "default");
            let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
            futures::stream::iter(0..n)
                .map(|i| {
                    let (services, slices) = (services.clone(), slices.clone());
                    async move {
                        services
                            .create(&PostParams::default(), &service(i))
                            .await
                            .unwrap_or_else(|e| panic!("creating Service svc{i}: {e}"));
                        slices
                            .create(&PostParams::default(), &slice(i))
                            .await
                            .unwrap_or_else(|e| panic!("creating EndpointSlice svc{i}-1: {e}"));
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<()>>()
                .await;
        });
    });
    let created = created.elapsed();
    eprintln!("{n} Services and EndpointSlices created in {created:?}");

    let kubeconfig = cp
        .issue_kubeconfig(&format!("system:node:{node_name}"), &["system:nodes"])
        .unwrap();
    let started = Instant::now();
    let mut proxy = Proxy(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_kube-proxy")])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--hostname-override={node_name}"))
            .arg("--healthz-bind-address=127.0.0.1:10256")
            .arg("--metrics-bind-address=127.0.0.1:10249")
            .arg("--cluster-cidr=10.244.0.0/16")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // `ip netns exec` execs the program: the child's pid is kube-proxy's.
    let pid = proxy.0.id();
    let deadline = Instant::now() + Duration::from_secs(if full { 600 } else { 120 });
    loop {
        let ips = ns.set_len("cluster-ips");
        let no_endpoints = ns.set_len("no-endpoint-services");
        // n plus the control plane's own `kubernetes` Service.
        if ips.is_some_and(|c| c > n) && no_endpoints == Some(0) {
            break;
        }
        assert!(
            proxy.0.try_wait().unwrap().is_none(),
            "kube-proxy exited before programming {n} Services"
        );
        assert!(
            Instant::now() < deadline,
            "kube-proxy did not program {n} Services with endpoints: cluster-ips {ips:?}, \
             no-endpoint-services {no_endpoints:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let synced = started.elapsed();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "kube-proxy"
    );
    let (after_sync_rss, after_sync_hwm) = rss_hwm_kib(pid);
    // Settled: the informers' caches and the programmed ruleset stay, list buffers are freed.
    std::thread::sleep(Duration::from_secs(2));
    let (rss, hwm) = rss_hwm_kib(pid);
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "kube-proxy daemon at {n} services × 5 endpoints: objects created in {:.1} s; start → all \
         programmed in {:.1} s; VmRSS {:.1} MiB (at sync {:.1} MiB), VmHWM {:.1} MiB (at sync {:.1} MiB)",
        created.as_secs_f64(),
        synced.as_secs_f64(),
        mib(rss),
        mib(after_sync_rss),
        mib(hwm),
        mib(after_sync_hwm)
    );
}
