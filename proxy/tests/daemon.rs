#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end: the real `kube-proxy` binary against knode's real control plane, programming real
//! nftables rules that real packets go through.
//!
//! Topology (all test-created, removed by Drop guards also on failure; nothing is programmed in the
//! host's network namespace):
//!
//! ```text
//!  host netns: control plane on 127.0.0.1:P ◄──(userspace relay in this test)──┐
//!  node netns: kube-proxy (ip netns exec), its table `ip kube-proxy`,          │
//!              127.0.0.1:P (relay listener) ───────────────────────────────────┘
//!              br0 10.244.0.1/24 ── pod0 10.244.0.10, pod1 10.244.0.11 (testimg serve :8080)
//!              up0 192.168.77.1/24 ── client netns 192.168.77.2 (default via the node)
//! ```
//!
//! A network namespace has its own loopback, so kube-proxy inside the node namespace reaches the
//! API server through a relay: a listener created by a thread that entered the node namespace,
//! bound to the same 127.0.0.1:P the kubeconfig names, whose connections are copied to the host's
//! 127.0.0.1:P. No host interface or address is added.

mod support;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use knode_harness::control_plane::ControlPlane;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use support::{
    NODE_IP, StopThread, Topology, exec_in, http_get, http_get_full, http_service, http_slice, in_netns, sh,
    sh_in,
};

/// The SIGKILL-under-load test and the one that counts endpoints per connection do not overlap: on
/// 2 cores the load starves the other's neighbour resolution (a stray "no route to host").
static NO_OVERLAP: std::sync::Mutex<()> = std::sync::Mutex::new(());

const HEALTHZ: &str = "127.0.0.1:10256";
const METRICS: &str = "127.0.0.1:10249";

/// Copies connections accepted on a listener inside a namespace to the same port on the host's
/// loopback. Stops (and releases the namespace) on drop.
struct Relay {
    _thread: StopThread,
}

impl Relay {
    fn start(ns: &str, port: u16) -> Relay {
        // The listener belongs to the namespace it was created in, whichever thread uses it.
        let listener = in_netns(ns, || TcpListener::bind(("127.0.0.1", port)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let thread = StopThread::spawn(move |stop| {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((inner, _)) => {
                        inner.set_nonblocking(false).unwrap();
                        let Ok(outer) = TcpStream::connect(("127.0.0.1", port)) else {
                            continue;
                        };
                        for (mut from, mut to) in [
                            (inner.try_clone().unwrap(), outer.try_clone().unwrap()),
                            (outer, inner),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                let _ = from.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Relay { _thread: thread }
    }
}

/// A NOTIFY_SOCKET as systemd serves it: read all the time (an unread datagram socket fills up
/// and blocks its senders, as systemd's would if PID 1 stopped reading).
struct NotifyListener {
    messages: Arc<std::sync::Mutex<Vec<String>>>,
    _reader: StopThread,
}

impl NotifyListener {
    fn bind(path: &std::path::Path) -> NotifyListener {
        let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let messages = Arc::new(std::sync::Mutex::new(Vec::new()));
        let m = messages.clone();
        let reader = StopThread::spawn(move |stop| {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    m.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        NotifyListener {
            messages,
            _reader: reader,
        }
    }
}

/// The namespaces, backends ([`support::Topology`]) and the kube-proxy process; all removed on
/// drop.
struct Lab {
    topo: Topology,
    proxy: Option<Child>,
    relay: Option<Relay>,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

support::deref_topology!(Lab);

impl Lab {
    fn new(pods: usize) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        Lab {
            topo: Topology::new("kpd", pods),
            proxy: None,
            relay: None,
            log: dir.path().join("kube-proxy.log"),
            _dir: dir,
        }
    }

    fn node_name(&self) -> String {
        format!("kpd-{}", self.id)
    }

    /// Starts the real kube-proxy in the node namespace, with the API server (on the host's
    /// 127.0.0.1:`api_port`) reachable through the relay when `relay`, and sd_notify messages going
    /// to `notify` when given.
    fn start_proxy(
        &mut self,
        api_port: u16,
        kubeconfig: &std::path::Path,
        relay: bool,
        notify: Option<&std::path::Path>,
        extra: &[&str],
    ) {
        if relay {
            self.relay = Some(Relay::start(&self.node, api_port));
        }
        let log = std::fs::File::create(&self.log).unwrap();
        let mut cmd = Command::new("ip");
        if let Some(sock) = notify {
            cmd.env("NOTIFY_SOCKET", sock).env("WATCHDOG_USEC", "1000000");
        }
        let child = cmd
            .args(["netns", "exec", &self.node, env!("CARGO_BIN_EXE_kube-proxy")])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--hostname-override={}", self.node_name()))
            .arg(format!("--healthz-bind-address={HEALTHZ}"))
            .arg(format!("--metrics-bind-address={METRICS}"))
            .arg("--cluster-cidr=10.244.0.0/16")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proxy = Some(child);
    }

    fn proxy_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `nft -j list table ip kube-proxy` in the node namespace (None when the table is absent).
    fn nft_json(&self) -> Option<String> {
        let out = exec_in(&self.node, &["nft", "-j", "list", "table", "ip", "kube-proxy"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn get(&self, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
        let addr: SocketAddr = addr.parse().unwrap();
        in_netns(&self.node, || http_get_full(addr, path))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        self.relay.take();
        // Then `topo` drops: servers, namespaces and the table in the node namespace go.
    }
}

/// Polls `f` every 20 ms until it returns Some, or panics after `secs` with `what` and the log.
fn wait_for<T>(lab: &Lab, secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    let log = || format!("kube-proxy log:\n{}", lab.proxy_log());
    knode_harness::wait_until(what, Duration::from_secs(secs), Duration::from_millis(20), log, f)
}

/// [`http_slice`] as upstream's EndpointSlice controller writes it: with the trigger time (RFC 3339
/// with nanoseconds).
fn slice(service: &str, ips: &[Ipv4Addr]) -> EndpointSlice {
    let mut s = http_slice(service, ips.iter().copied());
    let trigger = "endpoints.kubernetes.io/last-change-trigger-time".to_string();
    s.metadata.annotations = Some([(trigger, jiff::Timestamp::now().to_string())].into());
    s
}

fn node_object(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: NODE_IP.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
            ]),
            ..Default::default()
        }),
    }
}

/// A kubeconfig with the lab node's identity (`system:node:<name>` in `system:nodes`).
fn node_kubeconfig(cp: &ControlPlane, lab: &Lab) -> std::path::PathBuf {
    cp.issue_kubeconfig(&format!("system:node:{}", lab.node_name()), &["system:nodes"])
        .unwrap()
}

/// Creates the lab's Node object with its addresses (status is a subresource: patched too,
/// whatever create kept) and returns a kubeconfig with its identity.
fn register_node(
    cp: &ControlPlane,
    rt: &tokio::runtime::Runtime,
    nodes: &Api<Node>,
    lab: &Lab,
) -> std::path::PathBuf {
    create_node(rt, nodes, lab);
    node_kubeconfig(cp, lab)
}

/// Creates the lab's Node object with its addresses (status patched too, whatever create kept).
fn create_node(rt: &tokio::runtime::Runtime, nodes: &Api<Node>, lab: &Lab) {
    let node = node_object(&lab.node_name());
    rt.block_on(nodes.create(&PostParams::default(), &node)).unwrap();
    rt.block_on(nodes.patch_status(
        &lab.node_name(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": node.status})),
    ))
    .unwrap();
}

/// The value of an unlabelled sample (or a `_count`/`_sum`) in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

fn hosts(lab: &Lab, target: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    try_hosts(lab, target, n).unwrap()
}

/// As [`hosts`], or the first connection error (for polling loops).
fn try_hosts(
    lab: &Lab,
    target: SocketAddr,
    n: usize,
) -> std::io::Result<std::collections::BTreeMap<String, usize>> {
    let mut m = std::collections::BTreeMap::new();
    in_netns(&lab.client, || {
        for _ in 0..n {
            *m.entry(http_get(target, "/hostname")?).or_insert(0) += 1;
        }
        Ok(m)
    })
}

/// An admin API client from a kubeconfig.
fn admin_client(rt: &tokio::runtime::Runtime, kubeconfig: &std::path::Path) -> kube::Client {
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok::<_, anyhow::Error>(kube::Client::try_from(cfg)?)
    })
    .unwrap()
}

/// A control plane started for one test (as root), a runtime for the client, and admin access
/// (from the host's namespace) to its Services and EndpointSlices (in `default`) and Nodes.
fn start_cluster() -> (
    ControlPlane,
    tokio::runtime::Runtime,
    Api<Service>,
    Api<EndpointSlice>,
    Api<Node>,
) {
    knode_harness::require_root().unwrap();
    knode_harness::install_crypto_provider();
    let cp = ControlPlane::start(&[]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = admin_client(&rt, &cp.kubeconfig);
    let (services, slices) = (
        Api::namespaced(client.clone(), "default"),
        Api::namespaced(client.clone(), "default"),
    );
    (cp, rt, services, slices, Api::all(client))
}

#[test]
fn daemon_programs_services_and_endpoint_slices_from_the_control_plane() {
    let _alone = NO_OVERLAP.lock().unwrap_or_else(|p| p.into_inner());
    let (cp, rt, services, slices, nodes) = start_cluster();

    let mut lab = Lab::new(2);
    let kubeconfig = register_node(&cp, &rt, &nodes, &lab);
    let notify_path = lab._dir.path().join("notify");
    let notify = NotifyListener::bind(&notify_path);
    lab.start_proxy(
        cp.port,
        &kubeconfig,
        true,
        Some(&notify_path),
        &["--sync-period=3s", "-v=2"],
    );

    // First sync (empty cluster) → healthy with a real lastUpdated.
    let (code, body) = wait_for(&lab, 30, "first sync (healthz with lastUpdated)", || {
        lab.get(HEALTHZ, "/healthz")
            .ok()
            .filter(|(_, b)| !b.contains("0001-01-01"))
    });
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["nodeEligible"], serde_json::json!(true), "{body}");
    assert!(
        health["currentTime"].as_str().unwrap().ends_with("+0000 UTC"),
        "{body}"
    );
    assert_eq!(lab.get(HEALTHZ, "/livez").unwrap().0, 200);
    assert!(lab.nft_json().is_some(), "table not created");
    // sd_notify: READY=1 after the first sync, then WATCHDOG=1 pings from the sync loop.
    wait_for(&lab, 20, "READY=1 and WATCHDOG=1 on NOTIFY_SOCKET", || {
        let messages = notify.messages.lock().unwrap().clone();
        let ready = messages
            .iter()
            .position(|m| m.starts_with("READY=1\nSTATUS=first sync done"));
        let ping = messages.iter().rposition(|m| m == "WATCHDOG=1\n");
        (ready.is_some() && ping > ready).then_some(())
    });

    // --- Service + EndpointSlice → connections (network programming latency) ---
    let pod_ips: Vec<Ipv4Addr> = lab.pods.iter().map(|p| p.1).collect();
    let written = Instant::now();
    let web = rt
        .block_on(services.create(&PostParams::default(), &http_service("web", "NodePort")))
        .unwrap();
    rt.block_on(slices.create(&PostParams::default(), &slice("web", &pod_ips)))
        .unwrap();
    let api_done = written.elapsed();
    let spec = web.spec.unwrap();
    let cluster_ip: Ipv4Addr = spec.cluster_ip.unwrap().parse().unwrap();
    let node_port = spec.ports.unwrap()[0].node_port.unwrap() as u16;
    let vip = SocketAddr::from((cluster_ip, 80));
    wait_for(&lab, 30, "first connection to the ClusterIP", || {
        in_netns(&lab.client, || {
            TcpStream::connect_timeout(&vip, Duration::from_millis(200)).ok()
        })
    });
    let latency = written.elapsed();

    let m = hosts(&lab, vip, 100);
    println!("ClusterIP {vip} from client: {m:?}");
    assert_eq!(m.len(), 2, "both endpoints must answer: {m:?}");
    let np = SocketAddr::from((NODE_IP, node_port));
    let m = hosts(&lab, np, 40);
    println!("NodePort {np} from client: {m:?}");
    assert_eq!(m.len(), 2, "{m:?}");

    // --- scale down: pod0's endpoint disappears ---
    // Quiet for longer than minSyncPeriod first, so this change is programmed at once; its
    // network programming latency (trigger time → synced) is read from the metric's sum.
    std::thread::sleep(Duration::from_millis(1200));
    let npl_sum = |lab: &Lab| {
        let text = lab.get(METRICS, "/metrics").unwrap().1;
        (
            metric(&text, "kubeproxy_network_programming_duration_seconds_count"),
            metric(&text, "kubeproxy_network_programming_duration_seconds_sum"),
        )
    };
    let (count0, sum0) = npl_sum(&lab);
    let update_written = Instant::now();
    let mut cur = rt.block_on(slices.get("web-1")).unwrap();
    let one = slice("web", &pod_ips[1..]);
    cur.endpoints = one.endpoints;
    cur.metadata.annotations = one.metadata.annotations;
    rt.block_on(slices.replace("web-1", &PostParams::default(), &cur))
        .unwrap();
    let (count1, sum1) = wait_for(&lab, 30, "the scale-down to be programmed", || {
        let (c, s) = npl_sum(&lab);
        (c > count0).then_some((c, s))
    });
    let update_seen = update_written.elapsed();
    let update_npl = (sum1 - sum0) / (count1 - count0);
    wait_for(&lab, 30, "pod0 removed from the ClusterIP", || {
        // A failed connection is printed and polled again; the check after this one must see
        // every connection succeed.
        let m = try_hosts(&lab, vip, 20)
            .inspect_err(|e| println!("polling {vip}: {e}"))
            .ok()?;
        (m.len() == 1 && m.contains_key("pod1")).then_some(())
    });
    let m = hosts(&lab, vip, 40);
    assert_eq!(m.keys().collect::<Vec<_>>(), vec!["pod1"], "{m:?}");

    // --- a Service without endpoints rejects at once (connection refused, not a timeout) ---
    let empty = rt
        .block_on(services.create(&PostParams::default(), &http_service("empty", "ClusterIP")))
        .unwrap();
    let empty_ip: Ipv4Addr = empty.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    let empty_vip = SocketAddr::from((empty_ip, 80));
    let refused_in = wait_for(&lab, 30, "the empty Service to reject", || {
        in_netns(&lab.client, || {
            let t = Instant::now();
            match TcpStream::connect_timeout(&empty_vip, Duration::from_millis(500)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(t.elapsed()),
                _ => None,
            }
        })
    });

    // --- drift: the table deleted by hand comes back at the next periodic resync (3 s) ---
    sh_in(&lab.node, &["nft", "delete", "table", "ip", "kube-proxy"]);
    let deleted = Instant::now();
    wait_for(
        &lab,
        30,
        "the table to be restored by the periodic resync",
        || lab.nft_json().filter(|j| j.contains(&cluster_ip.to_string())),
    );
    let restored_after = deleted.elapsed();
    assert_eq!(http_get_in(&lab, vip), "pod1");

    // --- deleting the Service removes its elements ---
    rt.block_on(services.delete("web", &DeleteParams::default()))
        .unwrap();
    wait_for(&lab, 30, "web's elements to disappear", || {
        let j = lab.nft_json()?;
        (!j.contains(&cluster_ip.to_string())).then_some(())
    });
    let j = lab.nft_json().unwrap();
    assert!(
        j.contains(&empty_ip.to_string()),
        "the other Service must stay: {j}"
    );
    assert!(
        in_netns(&lab.client, || http_get(vip, "/hostname")).is_err(),
        "deleted Service still answers"
    );

    // --- metrics ---
    let (code, text) = lab.get(METRICS, "/metrics").unwrap();
    assert_eq!(code, 200);
    let syncs = metric(&text, "kubeproxy_sync_proxy_rules_duration_seconds_count");
    let sync_sum = metric(&text, "kubeproxy_sync_proxy_rules_duration_seconds_sum");
    let partial = metric(&text, "kubeproxy_sync_partial_proxy_rules_duration_seconds_count");
    let partial_sum = metric(&text, "kubeproxy_sync_partial_proxy_rules_duration_seconds_sum");
    let npl = metric(&text, "kubeproxy_network_programming_duration_seconds_count");
    assert!(syncs >= 4.0 && partial >= 3.0, "{text}");
    assert!(npl >= 1.0, "network programming latency not observed:\n{text}");
    assert!(metric(&text, "kubeproxy_sync_proxy_rules_service_changes_total") >= 3.0);
    assert!(metric(&text, "kubeproxy_sync_proxy_rules_endpoint_changes_total") >= 2.0);
    assert!(metric(&text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") > 1.6e9);
    // Pending-change gauges (upstream names): present, and back to 0 once the changes above
    // (the Service deletion and its EndpointSlice's) have been synced.
    for gauge in [
        "kubeproxy_sync_proxy_rules_service_changes_pending",
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
    ] {
        assert!(text.contains(&format!("# TYPE {gauge} gauge")), "{text}");
        wait_for(&lab, 10, gauge, || {
            let (_, text) = lab.get(METRICS, "/metrics").ok()?;
            (metric(&text, gauge) == 0.0).then_some(())
        });
    }
    assert!(
        text.contains("kubeproxy_proxy_healthz_total{code=\"200\"}"),
        "{text}"
    );

    println!(
        "Service+EndpointSlice create → first connection: {:.1} ms (API writes {:.1} ms; the \
         sync waits out minSyncPeriod = 1 s after the previous sync, as upstream)",
        latency.as_secs_f64() * 1e3,
        api_done.as_secs_f64() * 1e3
    );
    println!(
        "EndpointSlice update after a quiet period → programmed: {:.1} ms by \
         kubeproxy_network_programming_duration_seconds (test saw the metric after {:.1} ms)",
        update_npl * 1e3,
        update_seen.as_secs_f64() * 1e3
    );
    println!(
        "sync duration: mean {:.2} ms over {syncs} syncs, partial mean {:.2} ms over {partial}; \
         no-endpoint reject answered in {:.2} ms; hand-deleted table restored after {:.2} s",
        sync_sum / syncs * 1e3,
        partial_sum / partial * 1e3,
        refused_in.as_secs_f64() * 1e3,
        restored_after.as_secs_f64()
    );

    // --- SIGTERM: exits 0, rules stay; --cleanup removes them ---
    let mut proxy = lab.proxy.take().unwrap();
    unsafe { libc::kill(proxy.id() as i32, libc::SIGTERM) };
    let status = wait_for(&lab, 20, "kube-proxy to exit on SIGTERM", || {
        proxy.try_wait().unwrap()
    });
    assert!(status.success(), "exit status {status:?}\n{}", lab.proxy_log());
    let j = lab.nft_json().expect("rules must stay after SIGTERM");
    assert!(j.contains(&empty_ip.to_string()));
    let out = exec_in(&lab.node, &[env!("CARGO_BIN_EXE_kube-proxy"), "--cleanup"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(lab.nft_json().is_none(), "--cleanup left the table");
    let messages = notify.messages.lock().unwrap().clone();
    assert!(
        messages.iter().any(|m| m == "STOPPING=1\n"),
        "STOPPING=1 not sent on SIGTERM: {messages:?}"
    );
    let log = lab.proxy_log();
    if std::env::var_os("KNODE_PRINT_LOG").is_some() {
        println!("kube-proxy log:\n{log}");
    }
    assert!(log.contains("synced proxy rules"), "{log}");
    assert!(!log.contains("watch failed"), "{log}");
}

fn http_get_in(lab: &Lab, target: SocketAddr) -> String {
    in_netns(&lab.client, || http_get(target, "/hostname").unwrap())
}

#[test]
fn healthz_turns_503_when_syncs_stall_and_the_daemon_keeps_running() {
    knode_harness::require_root().unwrap();
    let cp = ControlPlane::start(&[]).unwrap();
    let mut lab = Lab::new(0);
    let kubeconfig = node_kubeconfig(&cp, &lab);
    // No relay: the API server is unreachable from the node namespace, so the initial lists never
    // complete and the start-up's queued update ages past 2 × syncPeriod (2 s).
    lab.start_proxy(cp.port, &kubeconfig, false, None, &["--sync-period=1s"]);
    let first = wait_for(&lab, 20, "healthz to answer", || {
        lab.get(HEALTHZ, "/healthz").ok()
    });
    println!("healthz before the timeout: {first:?}");
    let (code, body) = wait_for(&lab, 30, "healthz 503", || {
        lab.get(HEALTHZ, "/healthz").ok().filter(|(c, _)| *c == 503)
    });
    assert!(
        body.contains("\"lastUpdated\": \"0001-01-01 00:00:00 +0000 UTC\""),
        "{code} {body}"
    );
    assert_eq!(lab.get(HEALTHZ, "/livez").unwrap().0, 503);
    assert!(
        lab.nft_json().is_none(),
        "nothing may be programmed before the initial lists"
    );
    let text = lab.get(METRICS, "/metrics").unwrap().1;
    assert_eq!(
        metric(&text, "kubeproxy_sync_proxy_rules_duration_seconds_count"),
        0.0
    );
    assert!(
        text.contains("kubeproxy_proxy_healthz_total{code=\"503\"}"),
        "{text}"
    );
    assert!(
        lab.proxy.as_mut().unwrap().try_wait().unwrap().is_none(),
        "kube-proxy must keep running (and retrying) without an API server:\n{}",
        lab.proxy_log()
    );
}

#[test]
fn daemon_restart_adopts_the_table_without_failing_connections_and_serves_health_check_node_ports() {
    let (cp, rt, services, slices, nodes) = start_cluster();

    let mut lab = Lab::new(2);
    let node_name = lab.node_name();
    let kubeconfig = register_node(&cp, &rt, &nodes, &lab);

    // A LoadBalancer Service with externalTrafficPolicy Local: pod0 runs on this node, pod1
    // elsewhere.
    let mut svc = http_service("lb", "LoadBalancer");
    let spec = svc.spec.as_mut().unwrap();
    spec.external_traffic_policy = Some("Local".into());
    spec.health_check_node_port = Some(32555);
    let svc = rt
        .block_on(services.create(&PostParams::default(), &svc))
        .unwrap();
    let mut sl = slice("lb", &lab.pods.iter().map(|p| p.1).collect::<Vec<_>>());
    sl.endpoints[0].node_name = Some(node_name.clone());
    sl.endpoints[1].node_name = Some("another-node".into());
    rt.block_on(slices.create(&PostParams::default(), &sl)).unwrap();
    let spec = svc.spec.unwrap();
    let vip = SocketAddr::from((spec.cluster_ip.unwrap().parse::<Ipv4Addr>().unwrap(), 80));
    let hc_port = spec.health_check_node_port.unwrap() as u16;
    let node_port = spec.ports.unwrap()[0].node_port.unwrap() as u16;

    lab.start_proxy(cp.port, &kubeconfig, true, None, &["-v=2"]);
    wait_for(&lab, 30, "the ClusterIP to answer", || {
        in_netns(&lab.client, || http_get(vip, "/hostname").ok())
    });

    // The health check node port (reached from outside the node) reports the local endpoint.
    let hc = SocketAddr::from((NODE_IP, hc_port));
    let (code, body) = wait_for(&lab, 30, "the health check node port", || {
        in_netns(&lab.client, || http_get_full(hc, "/").ok())
    });
    println!("healthCheckNodePort {hc}: {code} {body}");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"localEndpoints\": 1"), "{body}");
    assert!(body.contains("\"name\": \"lb\""), "{body}");
    // External traffic to the NodePort reaches the local endpoint only.
    let m = hosts(&lab, SocketAddr::from((NODE_IP, node_port)), 20);
    assert_eq!(m.keys().collect::<Vec<_>>(), vec!["pod0"], "{m:?}");

    // Restart kube-proxy while a client keeps connecting: the new process adopts the table
    // (no replacement, no window), so no connection fails.
    let stop = AtomicBool::new(false);
    let client_ns = lab.client.clone();
    let stop_ref = &stop;
    let (ok, failed) = std::thread::scope(|s| {
        let client = s.spawn(move || {
            in_netns(&client_ns, || {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop_ref.load(Ordering::SeqCst) {
                    match http_get(vip, "/hostname") {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut proxy = lab.proxy.take().unwrap();
        unsafe { libc::kill(proxy.id() as i32, libc::SIGTERM) };
        let status = wait_for(&lab, 20, "kube-proxy to exit", || proxy.try_wait().unwrap());
        assert!(status.success());
        lab.start_proxy(cp.port, &kubeconfig, false, None, &["-v=2"]);
        wait_for(&lab, 30, "the restarted kube-proxy's first sync", || {
            lab.proxy_log().contains("synced proxy rules").then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        client.join().unwrap()
    });
    let log = lab.proxy_log();
    println!("connections across the restart: {ok} ok, {} failed", failed.len());
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
    assert!(log.contains("adopted the programmed table"), "{log}");
    // After the restart the health check is served again.
    let (code, _) = wait_for(&lab, 30, "the health check after the restart", || {
        in_netns(&lab.client, || http_get_full(hc, "/").ok())
    });
    assert_eq!(code, 200);

    // The local endpoint goes away: 503 with localEndpoints 0.
    let mut cur = rt.block_on(slices.get("lb-1")).unwrap();
    cur.endpoints.remove(0);
    rt.block_on(slices.replace("lb-1", &PostParams::default(), &cur))
        .unwrap();
    let body = wait_for(&lab, 30, "the health check to report no local endpoint", || {
        in_netns(&lab.client, || http_get_full(hc, "/").ok())
            .filter(|(c, _)| *c == 503)
            .map(|(_, b)| b)
    });
    assert!(body.contains("\"localEndpoints\": 0"), "{body}");
}

/// `--nodeport-addresses` CIDRs follow the node's interface addresses after start-up: an address
/// added inside the CIDR serves the NodePort as soon as rtnetlink reports it, one removed stops
/// serving it, and the node's other addresses never serve it.
#[test]
fn node_ports_follow_interface_addresses_added_after_start() {
    let (cp, rt, services, slices, _) = start_cluster();
    let mut lab = Lab::new(1);
    let kubeconfig = node_kubeconfig(&cp, &lab);
    lab.start_proxy(
        cp.port,
        &kubeconfig,
        true,
        None,
        &["--nodeport-addresses=10.99.0.0/24"],
    );
    let web = rt
        .block_on(services.create(&PostParams::default(), &http_service("late", "NodePort")))
        .unwrap();
    rt.block_on(slices.create(&PostParams::default(), &slice("late", &[lab.pods[0].1])))
        .unwrap();
    let spec = web.spec.unwrap();
    let vip = SocketAddr::from((spec.cluster_ip.unwrap().parse::<Ipv4Addr>().unwrap(), 80));
    let node_port = spec.ports.unwrap()[0].node_port.unwrap() as u16;
    wait_for(&lab, 30, "the ClusterIP to answer", || {
        in_netns(&lab.client, || http_get(vip, "/hostname").ok())
    });
    // Only addresses inside the CIDR serve NodePorts: not the node's 192.168.77.1.
    let late_ip = Ipv4Addr::new(10, 99, 0, 1);
    let json = lab.nft_json().unwrap();
    assert!(!json.contains(&late_ip.to_string()), "{json}");
    assert!(
        in_netns(&lab.client, || http_get(
            SocketAddr::from((NODE_IP, node_port)),
            "/hostname"
        ))
        .is_err(),
        "the NodePort must not answer outside --nodeport-addresses"
    );

    // The address appears on the node's uplink after start-up (the client reaches it via its
    // default route through the node).
    let added = Instant::now();
    sh(&["ip", "-n", &lab.node, "addr", "add", "10.99.0.1/24", "dev", "up0"]);
    let target = SocketAddr::from((late_ip, node_port));
    let answer = wait_for(&lab, 20, "the NodePort on the added address", || {
        in_netns(&lab.client, || http_get(target, "/hostname").ok())
    });
    assert_eq!(answer, "pod0");
    println!(
        "NodePort {target} answered {:.0} ms after the address was added",
        added.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        lab.proxy_log().contains("NodePort addresses changed"),
        "{}",
        lab.proxy_log()
    );

    // The address goes: its NodePort elements go too.
    sh(&["ip", "-n", &lab.node, "addr", "del", "10.99.0.1/24", "dev", "up0"]);
    wait_for(
        &lab,
        20,
        "the NodePort elements of the removed address to go",
        || (!lab.nft_json()?.contains(&late_ip.to_string())).then_some(()),
    );
}

/// kube-proxy as `system:kube-proxy` (upstream's default `system:node-proxier` binding, nothing
/// more) against the real upstream control plane: it programs a NodePort Service whose endpoints
/// both answer, and none of its requests is denied.
#[test]
fn daemon_runs_as_system_kube_proxy_against_the_upstream_control_plane() {
    knode_harness::require_root().unwrap();
    knode_harness::install_crypto_provider();
    let cp = knode_harness::upstream::UpstreamControlPlane::start(Default::default()).unwrap();
    let api_port: u16 = cp.server_url.rsplit(':').next().unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = admin_client(&rt, &cp.kubeconfig);
    let (services, slices, nodes): (Api<Service>, Api<EndpointSlice>, Api<Node>) = (
        Api::namespaced(client.clone(), "default"),
        Api::namespaced(client.clone(), "default"),
        Api::all(client),
    );
    let mut lab = Lab::new(2);
    create_node(&rt, &nodes, &lab);
    let kubeconfig = lab._dir.path().join("kube-proxy.conf");
    cp.issue_kubeconfig("system:kube-proxy", &[], &kubeconfig)
        .unwrap();
    lab.start_proxy(api_port, &kubeconfig, true, None, &["-v=2"]);

    // A selectorless Service with a hand-written slice (no controller owns it).
    let pod_ips: Vec<Ipv4Addr> = lab.pods.iter().map(|p| p.1).collect();
    let web = rt
        .block_on(services.create(&PostParams::default(), &http_service("web", "NodePort")))
        .unwrap();
    rt.block_on(slices.create(&PostParams::default(), &slice("web", &pod_ips)))
        .unwrap();
    let spec = web.spec.unwrap();
    let cluster_ip: Ipv4Addr = spec.cluster_ip.unwrap().parse().unwrap();
    let vip = SocketAddr::from((cluster_ip, 80));
    wait_for(&lab, 60, "first connection to the ClusterIP", || {
        in_netns(&lab.client, || {
            TcpStream::connect_timeout(&vip, Duration::from_millis(200)).ok()
        })
    });
    let m = hosts(&lab, vip, 60);
    assert_eq!(m.len(), 2, "both endpoints must answer: {m:?}");
    let np = SocketAddr::from((NODE_IP, spec.ports.unwrap()[0].node_port.unwrap() as u16));
    let m = hosts(&lab, np, 40);
    assert_eq!(m.len(), 2, "{m:?}");
    let denied = cp.audit_denials("system:kube-proxy");
    assert!(denied.is_empty(), "denied requests of kube-proxy: {denied:#?}");
}

/// kube-proxy SIGKILLed (no chance to clean up) while clients keep connecting (~1,000/s) to a
/// ClusterIP and a NodePort over TCP and a UDP flow talks to the same Service: the kernel keeps the rules, the
/// restarted daemon adopts them, no TCP connection fails and the UDP flow keeps its endpoint.
#[test]
fn sigkill_under_load_fails_no_connection_and_keeps_the_udp_flow() {
    let _alone = NO_OVERLAP.lock().unwrap_or_else(|p| p.into_inner());
    use k8s_openapi::api::core::v1::ServicePort;
    use k8s_openapi::api::discovery::v1::EndpointPort;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let (cp, rt, services, slices, nodes) = start_cluster();
    let mut lab = Lab::new(2);
    let kubeconfig = register_node(&cp, &rt, &nodes, &lab);
    let mut svc = http_service("web", "NodePort");
    svc.spec
        .as_mut()
        .unwrap()
        .ports
        .as_mut()
        .unwrap()
        .push(ServicePort {
            name: Some("udp".into()),
            protocol: Some("UDP".into()),
            port: 53,
            target_port: Some(IntOrString::Int(8081)),
            ..Default::default()
        });
    let svc = rt
        .block_on(services.create(&PostParams::default(), &svc))
        .unwrap();
    let mut sl = slice("web", &lab.pods.iter().map(|p| p.1).collect::<Vec<_>>());
    sl.ports.as_mut().unwrap().push(EndpointPort {
        name: Some("udp".into()),
        protocol: Some("UDP".into()),
        port: Some(8081),
        ..Default::default()
    });
    rt.block_on(slices.create(&PostParams::default(), &sl)).unwrap();
    let spec = svc.spec.unwrap();
    let cluster_ip = spec.cluster_ip.unwrap().parse::<Ipv4Addr>().unwrap();
    let vip = SocketAddr::from((cluster_ip, 80));
    let udp_vip = SocketAddr::from((cluster_ip, 53));
    let node_port = SocketAddr::from((NODE_IP, spec.ports.unwrap()[0].node_port.unwrap() as u16));
    lab.start_proxy(cp.port, &kubeconfig, true, None, &["-v=2"]);
    wait_for(&lab, 30, "the ClusterIP to answer", || {
        in_netns(&lab.client, || http_get(vip, "/hostname").ok())
    });

    let stop = AtomicBool::new(false);
    let (stop_ref, client) = (&stop, lab.client.clone());
    let started = Instant::now();
    let (tcp, udp) = std::thread::scope(|s| {
        let tcp: Vec<_> = [vip, node_port]
            .into_iter()
            .map(|target| {
                let client = client.clone();
                s.spawn(move || {
                    in_netns(&client, || {
                        let (mut ok, mut failed) = (0usize, Vec::new());
                        while !stop_ref.load(Ordering::SeqCst) {
                            match http_get(target, "/hostname") {
                                Ok(_) => ok += 1,
                                Err(e) => failed.push(format!("{target}: {e}")),
                            }
                            // ~1,000 requests/s in all: the issue's load, without starving the
                            // tests that run beside this one on a 2-core machine.
                            std::thread::sleep(Duration::from_micros(1500));
                        }
                        (ok, failed)
                    })
                })
            })
            .collect();
        // One UDP socket, one flow: conntrack pins it to one endpoint.
        let client_udp = client.clone();
        let udp = s.spawn(move || {
            in_netns(&client_udp, || {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut answers = Vec::new();
                let mut buf = [0u8; 256];
                while !stop_ref.load(Ordering::SeqCst) {
                    sock.send_to(b"hostname", udp_vip).unwrap();
                    answers.push(match sock.recv(&mut buf) {
                        Ok(n) => String::from_utf8_lossy(&buf[..n]).trim().to_string(),
                        Err(e) => format!("lost: {e}"),
                    });
                    std::thread::sleep(Duration::from_millis(20));
                }
                answers
            })
        });
        std::thread::sleep(Duration::from_millis(500));
        let mut proxy = lab.proxy.take().unwrap();
        unsafe { libc::kill(proxy.id() as i32, libc::SIGKILL) };
        wait_for(&lab, 20, "kube-proxy to die", || proxy.try_wait().unwrap());
        lab.start_proxy(cp.port, &kubeconfig, false, None, &["-v=2"]);
        wait_for(&lab, 30, "the restarted kube-proxy's first sync", || {
            lab.proxy_log().contains("synced proxy rules").then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let tcp: Vec<(usize, Vec<String>)> = tcp.into_iter().map(|t| t.join().unwrap()).collect();
        (tcp, udp.join().unwrap())
    });
    let secs = started.elapsed().as_secs_f64();
    let ok: usize = tcp.iter().map(|t| t.0).sum();
    let failed: Vec<&String> = tcp.iter().flat_map(|t| &t.1).collect();
    println!(
        "across a SIGKILL: {ok} TCP requests ok ({:.0}/s), {} failed; {} UDP answers",
        ok as f64 / secs,
        failed.len(),
        udp.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        tcp.iter().all(|t| t.0 > 0),
        "both the ClusterIP and the NodePort answered"
    );
    let endpoints: std::collections::BTreeSet<&String> = udp.iter().collect();
    assert_eq!(
        endpoints.len(),
        1,
        "the UDP flow kept one endpoint: {endpoints:?}"
    );
    assert!(udp[0].starts_with("pod"), "{udp:?}");
    assert!(
        lab.proxy_log().contains("adopted the programmed table"),
        "{}",
        lab.proxy_log()
    );
}
