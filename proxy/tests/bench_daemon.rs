#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Benchmark (prints, asserts only correctness): the real `kube-proxy` daemon's memory with many
//! Services. N Services × 5 endpoints are created in knode's control plane (1k by default,
//! `KNODE_BENCH=full` 10k), then kube-proxy starts against it, lists them, programs them, and its
//! VmRSS / VmHWM are printed once its table holds every ClusterIP with endpoints.
//!
//! The control plane and kube-proxy both run inside one test-created network namespace (each has
//! its own loopback there), so nothing is programmed in the host's namespace; the namespace, its
//! table and both processes are removed by Drop guards, also on failure.
//!
//! `KNODE_BENCH_BASELINE_PROXY=/path/to/kube-proxy` first runs that build against the same
//! objects (e.g. the previous commit's) and prints the ratio; `KNODE_BENCH_PROXY` replaces this
//! profile's build as the one measured (e.g. a release build).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use knode_harness::control_plane::ControlPlane;
use knode_harness::netns::NodeNetns;
use kube::api::{Api, PostParams};

const NODE_IP: &str = "192.168.79.1";

/// Elements of set `set` in table `ip kube-proxy` of namespace `ns`, None while it is absent.
fn set_len(ns: &NodeNetns, set: &str) -> Option<usize> {
    let out = ns
        .run(&["nft", "-j", "list", "set", "ip", "kube-proxy", set], &[])
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nftables"].as_array()?.iter().find_map(|o| {
        let s = o.get("set")?;
        Some(s.get("elem").and_then(|e| e.as_array()).map_or(0, Vec::len))
    })
}

/// The kube-proxy process; killed on drop.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// What one kube-proxy run measured.
struct Run {
    synced: Duration,
    rss: u64,
    hwm: u64,
    at_sync_rss: u64,
    at_sync_hwm: u64,
}

/// Starts `binary` as kube-proxy in `ns`, waits until its table holds all `n` Services with
/// endpoints, reads its memory, and stops it.
fn run_proxy(
    ns: &NodeNetns,
    binary: &str,
    kubeconfig: &std::path::Path,
    node_name: &str,
    n: usize,
    full: bool,
) -> Run {
    let started = Instant::now();
    let mut proxy = Proxy(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, binary])
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
        let ips = set_len(ns, "cluster-ips");
        let no_endpoints = set_len(ns, "no-endpoint-services");
        // n plus the control plane's own `kubernetes` Service.
        if ips.is_some_and(|c| c > n) && no_endpoints == Some(0) {
            break;
        }
        assert!(
            proxy.0.try_wait().unwrap().is_none(),
            "{binary} exited before programming {n} Services"
        );
        assert!(
            Instant::now() < deadline,
            "{binary} did not program {n} Services with endpoints: cluster-ips {ips:?}, \
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
    let (at_sync_rss, at_sync_hwm) = rss_hwm_kib(pid);
    // Settled: the watch caches and the programmed ruleset stay, list buffers are freed.
    std::thread::sleep(Duration::from_secs(2));
    let (rss, hwm) = rss_hwm_kib(pid);
    drop(proxy);
    Run {
        synced,
        rss,
        hwm,
        at_sync_rss,
        at_sync_hwm,
    }
}

#[test]
fn bench_daemon_rss_with_many_services() {
    knode_harness::require_root().unwrap();
    knode_harness::install_crypto_provider();
    let full = std::env::var("KNODE_BENCH").as_deref() == Ok("full");
    let n = if full { 10_000 } else { 1_000 };
    // Another kube-proxy build to compare with in the same run (e.g. the previous commit's).
    let baseline = std::env::var("KNODE_BENCH_BASELINE_PROXY").ok();
    let node_name = format!("kp-benchd-{}", std::process::id());
    let ns = NodeNetns::create(&node_name, NODE_IP, false).unwrap();
    // The control plane's SQLite store on tmpfs: 2n creates with an fsync each on this disk
    // would dominate the run (the store's speed is not what this measures).
    // SAFETY: set before any thread of this test binary reads the environment concurrently
    // (one test; the harness reads TMPDIR only inside `start_in` below).
    unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    let cp = ControlPlane::start_in(Some(&ns.name), &[]).unwrap();

    // Create the objects from a thread inside the namespace (the API server listens on its
    // loopback), many requests in flight at once.
    let created = Instant::now();
    support::in_netns(&ns.name, || {
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
                            .create(&PostParams::default(), &support::numbered_service(i))
                            .await
                            .unwrap_or_else(|e| panic!("creating Service svc{i}: {e}"));
                        slices
                            .create(&PostParams::default(), &support::numbered_slice(i))
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
    let mib = |k: u64| k as f64 / 1024.0;
    let base = baseline.as_deref().map(|bin| {
        let r = run_proxy(&ns, bin, &kubeconfig, &node_name, n, full);
        // The next proxy starts from an empty table, as this one did.
        let _ = ns.run(&["nft", "delete", "table", "ip", "kube-proxy"], &[]);
        r
    });
    // `KNODE_BENCH_PROXY`: measure another build than this profile's (e.g. a release build while
    // the test itself runs in debug, which needs no release control plane).
    let ours_bin =
        std::env::var("KNODE_BENCH_PROXY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kube-proxy").to_string());
    let ours = run_proxy(&ns, &ours_bin, &kubeconfig, &node_name, n, full);
    println!(
        "kube-proxy daemon ({ours_bin}) at {n} services × 5 endpoints: objects created in {:.1} s; \
         start → all programmed in {:.1} s; VmRSS {:.1} MiB (at sync {:.1} MiB), VmHWM {:.1} MiB \
         (at sync {:.1} MiB)",
        created.as_secs_f64(),
        ours.synced.as_secs_f64(),
        mib(ours.rss),
        mib(ours.at_sync_rss),
        mib(ours.hwm),
        mib(ours.at_sync_hwm)
    );
    if let (Some(b), Some(bin)) = (base, baseline) {
        println!(
            "baseline {bin}: start → all programmed in {:.1} s; VmRSS {:.1} MiB, VmHWM {:.1} MiB; \
             ratio ours/baseline: VmRSS {:.2}, VmHWM {:.2}",
            b.synced.as_secs_f64(),
            mib(b.rss),
            mib(b.hwm),
            ours.rss as f64 / b.rss as f64,
            ours.hwm as f64 / b.hwm as f64
        );
    }
}
