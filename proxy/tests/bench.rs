#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Benchmark (prints, asserts only correctness): a full sync of N services × 5 endpoints through this
//! crate's netlink code vs. `nft -f` of the same ruleset text, each into a fresh network namespace,
//! and a one-service change at several cluster sizes; and the TCP connect latency to a ClusterIP
//! (real packets: client → node → pod namespaces) with 10 vs. many Services programmed. Short by
//! default (1k services); `KNODE_BENCH=full` runs 10k services and changes at 100 / 1k / 10k. Build
//! with `--release` for numbers worth quoting (the debug build's encoding is several times slower).
//! The daemon's RSS at many Services is in `bench_daemon.rs`.

mod support;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_proxy::model::{
    Element, ModelConfig, Ruleset, SERVICE_NAME_LABEL, desired_ruleset, service_elements, service_key,
};
use kube_proxy::nft::{NftProgrammer, TableConfig};
use support::{Netns, StopThread, sh, wire};

/// Elements of a map of table `ip kube-proxy` in `ns` whose key and value are both
/// concatenations (nft -j prints two `"concat"` objects per element).
fn count_map_elements(ns: &Netns, map: &str) -> usize {
    ns.nft_json(&["map", "ip", "kube-proxy", map])
        .unwrap_or_default()
        .matches("\"concat\"")
        .count()
        / 2
}

/// A TCP listener inside a namespace that accepts (and drops) connections until dropped.
struct Backend {
    _thread: StopThread,
}

impl Backend {
    fn start(ns: &Netns, addr: SocketAddr) -> Backend {
        // A socket belongs to the namespace it was created in, whichever thread uses it.
        let listener = ns.run(|| TcpListener::bind(addr).unwrap());
        // Non-blocking so the thread can notice `stop`; the kernel completes handshakes on its
        // own, so polling adds nothing to the client's connect() time.
        listener.set_nonblocking(true).unwrap();
        let thread = StopThread::spawn(move |stop| {
            while !stop.load(Ordering::SeqCst) {
                if listener.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Backend { _thread: thread }
    }
}

fn cluster(n: usize, endpoints: usize, generation: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for s in 0..n {
        let name = format!("svc{s}");
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + s as u32);
        services.push(Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(ip.to_string()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        });
        let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (s * endpoints) as u32;
        slices.push(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-x")),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), name)].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: (0..endpoints)
                .map(|e| Endpoint {
                    // `generation` moves one endpoint of service 0 to simulate a change.
                    addresses: vec![
                        Ipv4Addr::from(
                            base + e as u32
                                + if s == 0 && e == 0 {
                                    (generation * 1_000_000) as u32
                                } else {
                                    0
                                },
                        )
                        .to_string(),
                    ],
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        });
    }
    (services, slices)
}

/// The same table as [`NftProgrammer`] writes (default configuration), as `nft -f` text. The
/// 33 per-prefix-length rules of `firewall-check` are left out (a regular chain nothing in the
/// benchmark reaches; their cost is constant), and the affinity-record dispatch keys on `th dport`
/// where the programmer uses `ct original proto-dst` (which nft's parser refuses in a
/// concatenation; same cost).
fn nft_text(r: &Ruleset, buckets: u32) -> String {
    let tuple = "typeof ip daddr . meta l4proto . th dport";
    let dst = "ip daddr . meta l4proto . th dport";
    let ep_map = |name: &str, m: u32| {
        format!("map {name} {{ {tuple} . numgen random mod {m} : ip daddr . th dport; }}\n")
    };
    let dnat = |map: &str, m: u32| format!("dnat ip to {dst} . numgen random mod {m} map @{map}\n");
    let mut t = String::from("table ip kube-proxy {\n");
    t += &ep_map("service-endpoints", buckets);
    t += &ep_map("service-endpoints-large", 256);
    t += &ep_map("service-endpoints-local", buckets);
    for set in [
        "service-ips",
        "external-services",
        "no-endpoint-services",
        "external-local-services",
        "no-local-endpoint-services",
        "firewall-ips",
    ] {
        let _ = writeln!(t, "set {set} {{ {tuple}; }}");
    }
    t += "set cluster-ips { typeof ip daddr; }\n";
    t += &format!("map service-affinity {{ {tuple} : verdict; }}\n");
    t += &format!("map service-affinity-record {{ {tuple} : verdict; }}\n");
    t += &format!("set affinity-endpoints {{ {tuple} . ip daddr . th dport; }}\n");
    t += "set hairpin-endpoints { typeof ip saddr . ip daddr; }\n";
    t += &format!("set firewall-allow {{ {tuple} . ip saddr . meta mark; }}\n");
    for (chain, hook, local_mark, local_pick) in [
        (
            "nat-prerouting",
            "prerouting",
            "fib saddr type local ",
            "fib saddr type != local ",
        ),
        ("nat-output", "output", "", "fib saddr type != local "),
    ] {
        let _ = write!(
            t,
            "chain {chain} {{ type nat hook {hook} priority -100; policy accept;\n\
             {dst} @external-services meta mark set meta mark | 0x4000\n\
             {local_mark}{dst} @external-local-services meta mark set meta mark | 0x4000\n\
             {dst} vmap @service-affinity\n\
             {local_pick}{}\
             {local_pick}{dst} @external-local-services accept\n\
             {}{}}}\n",
            dnat("service-endpoints-local", buckets),
            dnat("service-endpoints-large", 256),
            dnat("service-endpoints", buckets),
        );
    }
    t += "chain nat-postrouting { type nat hook postrouting priority 100; policy accept;\n\
          ct status dnat ct original ip daddr . meta l4proto . th dport vmap @service-affinity-record\n\
          meta mark & 0x4000 == 0x4000 meta mark set meta mark & 0xffffbfff masquerade fully-random\n\
          ct status dnat ip saddr . ip daddr @hairpin-endpoints masquerade fully-random\n}\n";
    t += "chain firewall-check { drop; }\n";
    let fw = format!("ct state new {dst} @firewall-ips jump firewall-check\n");
    let _ = write!(
        t,
        "chain filter-prerouting {{ type filter hook prerouting priority -110; policy accept;\n{fw}}}\n"
    );
    for (chain, hook) in [
        ("filter-input", "input"),
        ("filter-forward", "forward"),
        ("filter-output", "output"),
    ] {
        let _ = write!(
            t,
            "chain {chain} {{ type filter hook {hook} priority -110; policy accept;\n{}\
             {dst} @no-endpoint-services reject\n{dst} @no-local-endpoint-services drop\n}}\n",
            if chain == "filter-output" { fw.as_str() } else { "" }
        );
    }
    t += "}\n";
    let mut lines: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for e in &r.all() {
        if let Some(s) = element_text(e) {
            lines.entry(e.set_name()).or_default().push(s);
        }
    }
    for (set, els) in lines {
        for chunk in els.chunks(5000) {
            let _ = writeln!(t, "add element ip kube-proxy {set} {{ {} }}", chunk.join(", "));
        }
    }
    t
}

/// One element as `nft` text (None for kinds the benchmark's Services do not have).
fn element_text(e: &Element) -> Option<String> {
    Some(match e {
        Element::ServiceEndpoint {
            dst,
            bucket,
            endpoint,
            endpoint_port,
        }
        | Element::LargeServiceEndpoint {
            dst,
            bucket,
            endpoint,
            endpoint_port,
        }
        | Element::LocalServiceEndpoint {
            dst,
            bucket,
            endpoint,
            endpoint_port,
        } => format!(
            "{} . {} . {} . {bucket} : {endpoint} . {endpoint_port}",
            dst.ip,
            dst.protocol.nft_name(),
            dst.port
        ),
        Element::ServiceIp(d)
        | Element::ExternalService(d)
        | Element::NoEndpointService(d)
        | Element::ExternalLocalService(d)
        | Element::NoLocalEndpointService(d) => {
            format!("{} . {} . {}", d.ip, d.protocol.nft_name(), d.port)
        }
        Element::ClusterIp(ip) => ip.to_string(),
        Element::HairpinEndpoint(ip) => format!("{ip} . {ip}"),
        // The benchmark's Services have no session affinity and no source ranges.
        Element::FirewallService(_) | Element::FirewallAllow { .. } => return None,
        Element::AffinityService { .. }
        | Element::AffinityRecord { .. }
        | Element::AffinityEndpoint { .. } => return None,
    })
}

/// `nft -f` text that turns Service `key`'s elements from `from` into `to` (deletes name keys
/// only, as the programmer's batch does).
fn change_text(from: &Ruleset, to: &Ruleset, key: &kube_proxy::model::ServiceKey) -> String {
    let changes = kube_proxy::diff::diff_services(from, to, &[key.clone()].into());
    let mut t = String::new();
    for (verb, els) in [("delete", &changes.delete), ("add", &changes.add)] {
        for e in els {
            let Some(text) = element_text(e) else { continue };
            let text = if verb == "delete" {
                text.split(" : ").next().unwrap_or_default().to_string()
            } else {
                text
            };
            let _ = writeln!(t, "{verb} element ip kube-proxy {} {{ {text} }}", e.set_name());
        }
    }
    t
}

/// Runs `nft -f` on `text` in namespace `ns`; returns the wall time.
fn nft_f(ns: &Netns, text: &str) -> Duration {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "kp-bench-{}-{}.nft",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, text).unwrap();
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let took = t.elapsed();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "nft -f {text}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn bench_full_sync_vs_nft_and_one_service_change() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
    let full = std::env::var("KNODE_BENCH").as_deref() == Ok("full");
    let big = if full { 10_000 } else { 1_000 };
    let sizes: &[usize] = if full {
        &[100, 1_000, 10_000]
    } else {
        &[100, 1_000]
    };
    let buckets = 16;
    let config = ModelConfig {
        buckets,
        node_ips: vec![],
        ..Default::default()
    };

    // Full sync: netlink vs nft -f, each into a fresh namespace.
    let (services, slices) = cluster(big, 5, 0);
    let t = Instant::now();
    let desired = desired_ruleset(&services, &slices, &config);
    let model_time = t.elapsed();
    let ns = Netns::new("kp-bench");
    let mut p = NftProgrammer::new(TableConfig::default());
    // Timed inside the namespace thread: entering the namespace is not part of a sync.
    let (stats, ours) = ns.run(|| {
        let t = Instant::now();
        let s = p.sync(&desired);
        (s, t.elapsed())
    });
    let stats = stats.unwrap();
    assert!(stats.full);
    assert_eq!(
        count_map_elements(&ns, "service-endpoints"),
        big * buckets as usize
    );

    let text = nft_text(&desired, buckets);
    let path = std::env::temp_dir().join(format!("kp-bench-{}.nft", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let ns2 = Netns::new("kp-bench");
    let t = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", &ns2.0, "nft", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let theirs = t.elapsed();
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "nft -f of the same ruleset failed");
    println!(
        "full sync {big} services x 5 endpoints ({} elements, {} KiB batch): model {:.1} ms, netlink {:.1} ms, nft -f {:.1} ms, ratio {:.2}",
        desired.len(),
        stats.batch_bytes / 1024,
        ms(model_time),
        ms(ours),
        ms(theirs),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );

    // One-service change at several sizes.
    let mut per_size = Vec::new();
    let mut per_size_delete = Vec::new();
    for &n in sizes {
        let ns = Netns::new("kp-bench");
        let mut p = NftProgrammer::new(TableConfig::default());
        let (services, slices) = cluster(n, 5, 0);
        let before = desired_ruleset(&services, &slices, &config);
        ns.run(|| p.sync(&before)).unwrap();
        // Watch events for svc0 (five different endpoint moves): rebuild only its elements and
        // apply only its difference. Min and median of five, as the machine is shared.
        let key = service_key(&services[0]);
        let mut after = before.clone();
        let mut applies = Vec::new();
        let mut models = Vec::new();
        let mut phases: [Vec<Duration>; 4] = Default::default();
        let mut closes = Vec::new();
        let mut nft_fs = Vec::new();
        let mut ops = 0;
        let only_svc0 = |r: &Ruleset| Ruleset {
            by_service: r
                .by_service
                .get(&key)
                .map(|e| (key.clone(), e.clone()))
                .into_iter()
                .collect(),
        };
        for generation in 1..=5 {
            let (_, slices2) = cluster(1, 5, generation);
            let previous = only_svc0(&after);
            let t = Instant::now();
            let slice_refs: Vec<&EndpointSlice> = slices2.iter().collect();
            let els = service_elements(&services[0], &slice_refs, &config).unwrap();
            after.by_service.insert(key.clone(), els.into_iter().collect());
            let changed = [key.clone()].into();
            models.push(t.elapsed());
            let (stats, apply) = ns.run(|| {
                let t = Instant::now();
                let s = p.sync_services(&after, &changed);
                (s, t.elapsed())
            });
            let stats = stats.unwrap();
            assert!(!stats.full);
            // At most every bucket, plus the moved endpoint's hairpin element.
            assert!(stats.elements_added > 0 && stats.elements_added <= buckets as usize + 1);
            ops = stats.elements_added + stats.elements_deleted;
            applies.push(apply);
            let ph = stats.phases;
            for (v, d) in phases.iter_mut().zip([ph.diff, ph.encode, ph.send, ph.acks]) {
                v.push(d);
            }
            // What a socket per sync (the previous design) added: closing it waits for the
            // kernel's commit cleanup (synchronize_rcu).
            closes.push(ns.run(|| {
                let t = Instant::now();
                p.release_socket();
                t.elapsed()
            }));
            // Baseline: the same one-Service change through `nft -f` (upstream kube-proxy's
            // mechanism: knftables runs `nft -f -` per sync), there and back, so the table
            // ends as the programmer left it.
            let current = only_svc0(&after);
            nft_fs.push(nft_f(&ns, &change_text(&current, &previous, &key)));
            nft_fs.push(nft_f(&ns, &change_text(&previous, &current, &key)));
        }
        applies.sort();
        models.sort();
        closes.sort();
        nft_fs.sort();
        for v in &mut phases {
            v.sort();
        }
        let apply = applies[2];
        let nft_median = nft_fs[nft_fs.len() / 2];
        println!(
            "one-service change at {n} services: {ops} element ops, apply min {:.2} ms median {:.2} ms \
             (model update {:.3} ms; medians: diff {:.3} ms, encode {:.3} ms, sendmsg/commit {:.3} ms, acks {:.3} ms); \
             closing the socket afterwards (old design) {:.2} ms; nft -f of the same change median {:.2} ms; \
             ratio apply/nft -f {:.3}",
            ms(applies[0]),
            ms(apply),
            ms(models[2]),
            ms(phases[0][2]),
            ms(phases[1][2]),
            ms(phases[2][2]),
            ms(phases[3][2]),
            ms(closes[2]),
            ms(nft_median),
            apply.as_secs_f64() / nft_median.as_secs_f64()
        );
        per_size.push(apply);

        // Service deletions (watch event: svc1..svc5 deleted, one sync each): every element of
        // the Service goes in one batch of DELSETELEM messages (keys only).
        let mut deletes = Vec::new();
        let mut del_ops = 0;
        for victim in services.iter().skip(1).take(5) {
            let key = service_key(victim);
            after.by_service.remove(&key);
            let changed = [key].into();
            let (stats, apply) = ns.run(|| {
                let t = Instant::now();
                let s = p.sync_services(&after, &changed);
                (s, t.elapsed())
            });
            let stats = stats.unwrap();
            assert!(
                stats.elements_deleted > 0 && stats.elements_added == 0,
                "{stats:?}"
            );
            del_ops = stats.elements_deleted;
            deletes.push(apply);
        }
        deletes.sort();
        println!(
            "one-service delete at {n} services: {del_ops} element ops, apply min {:.2} ms median {:.2} ms",
            ms(deletes[0]),
            ms(deletes[2])
        );
        per_size_delete.push(deletes[2]);
    }
    for (what, v) in [("change", &per_size), ("delete", &per_size_delete)] {
        if let (Some(first), Some(last)) = (v.first(), v.last()) {
            println!(
                "one-service {what} apply ratio {}/{}: {:.2}",
                sizes[sizes.len() - 1],
                sizes[0],
                last.as_secs_f64() / first.as_secs_f64()
            );
        }
    }
    println!("test process peak RSS: {} MiB", rss_kib() / 1024);
}

/// The daemon's model step: a partial sync computes only the changed Service's elements
/// (`Tracker::desired_for`), a rebuild all of them (`Tracker::desired`). Prints both times and
/// their ratio; no root needed.
#[test]
fn bench_daemon_model_partial_vs_full() {
    use kube::runtime::watcher::Event;
    use kube_proxy::sync::{NodePortAddresses, SyncKind, Timing, Tracker};

    let full = std::env::var("KNODE_BENCH").as_deref() == Ok("full");
    let n = if full { 10_000 } else { 1_000 };
    let (services, slices) = cluster(n, 5, 0);
    let (_, changed_slices) = cluster(n, 5, 1);
    let mut t = Tracker::new(
        Timing {
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
        },
        NodePortAddresses::default(),
        16,
    );
    let ingest = Instant::now();
    t.initial_lists(services, slices);
    let ingest = ingest.elapsed();
    let t0 = Instant::now();
    t.take_due(t0).unwrap();
    let start = Instant::now();
    let all = t.desired();
    let full_model = start.elapsed();
    t.finished(t0, true);

    // `cluster`'s generation moves an endpoint of service 0.
    t.slice_event(Event::Apply(changed_slices[0].clone()));
    let plan = t.take_due(t0 + Duration::from_secs(1)).unwrap();
    let SyncKind::Services(changed) = plan.kind else {
        panic!("expected a partial sync, got {:?}", plan.kind)
    };
    assert_eq!(changed.len(), 1);
    let start = Instant::now();
    let one = t.desired_for(&changed);
    let partial_model = start.elapsed();
    let key = changed.iter().next().unwrap();
    assert_ne!(
        one.by_service.get(key),
        all.by_service.get(key),
        "the change must show"
    );
    assert_eq!(one.by_service.get(key), t.desired().by_service.get(key));
    println!(
        "daemon model at {n} services × 5 endpoints: initial lists ingested in {:.1} ms; \
         desired() {:.2} ms (rebuild), desired_for(1 Service) {:.3} ms (partial), ratio {:.0}×",
        ms(ingest),
        ms(full_model),
        ms(partial_model),
        full_model.as_secs_f64() / partial_model.as_secs_f64().max(1e-9)
    );
}

/// `cluster(n)` with Service `svc5` (10.96.0.5:80) pointing at one real backend.
fn cluster_with_backend(n: usize, backend: Ipv4Addr) -> (Vec<Service>, Vec<EndpointSlice>) {
    let (services, mut slices) = cluster(n, 5, 0);
    slices[5].endpoints = vec![Endpoint {
        addresses: vec![backend.to_string()],
        ..Default::default()
    }];
    (services, slices)
}

/// Median, 90th percentile and mean of `samples` (sorted in place), in µs.
fn median_p90_mean_us(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    (
        us(samples[samples.len() / 2]),
        us(samples[samples.len() * 9 / 10]),
        mean,
    )
}

/// TCP connect() latency from a client namespace through the node's table to a ClusterIP whose
/// one endpoint is a listener in a pod namespace, with 10 Services programmed vs. 1k (short) or
/// 10k (`KNODE_BENCH=full`). The sizes alternate (small, big, small, big) in the same namespaces
/// so drift of the shared machine's load hits both alike; every connection is new, so each one
/// goes through the nat chains' map lookups (later packets would only hit conntrack).
#[test]
fn bench_clusterip_connect_latency_few_vs_many_services() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
    let full = std::env::var("KNODE_BENCH").as_deref() == Ok("full");
    let (few, many) = (10, if full { 10_000 } else { 1_000 });
    let per_round = 250;
    let config = ModelConfig {
        buckets: 16,
        node_ips: vec![],
        ..Default::default()
    };
    let node = Netns::new("kp-bench");
    let client = Netns::new("kp-bench");
    let pod = Netns::new("kp-bench");
    let backend_ip = Ipv4Addr::new(10, 244, 1, 10);
    sh(&["ip", "-n", &node.0, "link", "set", "lo", "up"]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &node.0,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    for (peer, node_addr, peer_addr, link) in [
        (&client, "192.168.78.1/24", "192.168.78.2/24", "up0"),
        (&pod, "10.244.1.1/24", "10.244.1.10/24", "pod0"),
    ] {
        wire(&node.0, &peer.0, link, node_addr, peer_addr);
    }
    let _backend = Backend::start(&pod, SocketAddr::from((backend_ip, 8080)));
    let vip = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 5), 80));

    let mut p = NftProgrammer::new(TableConfig::default());
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut sync_ms = [0.0f64; 2];
    for (i, n) in [few, many, few, many].into_iter().enumerate() {
        let (services, slices) = cluster_with_backend(n, backend_ip);
        let desired = desired_ruleset(&services, &slices, &config);
        let (stats, took) = node.run(|| {
            let t = Instant::now();
            (p.sync(&desired), t.elapsed())
        });
        stats.unwrap();
        sync_ms[i % 2] = ms(took);
        assert_eq!(
            count_map_elements(&node, "service-endpoints"),
            n * config.buckets as usize
        );
        let round = client.run(|| {
            // Warm-up: ARP/neighbour entries and caches, not measured.
            for _ in 0..20 {
                TcpStream::connect_timeout(&vip, Duration::from_secs(3)).unwrap();
            }
            (0..per_round)
                .map(|_| {
                    let t = Instant::now();
                    let c = TcpStream::connect_timeout(&vip, Duration::from_secs(3));
                    let took = t.elapsed();
                    c.unwrap_or_else(|e| panic!("connect {vip} with {n} services: {e}"));
                    took
                })
                .collect::<Vec<_>>()
        });
        samples[i % 2].extend(round);
    }
    let (few_median, few_p90, few_mean) = median_p90_mean_us(&mut samples[0]);
    let (many_median, many_p90, many_mean) = median_p90_mean_us(&mut samples[1]);
    println!(
        "ClusterIP connect latency ({} connections each): {few} services median {few_median:.0} µs p90 {few_p90:.0} µs mean {few_mean:.0} µs; \
         {many} services median {many_median:.0} µs p90 {many_p90:.0} µs mean {many_mean:.0} µs \
         (last sync to {many}: {:.1} ms); ratio {many}/{few}: median {:.2}, p90 {:.2}, mean {:.2}",
        samples[0].len(),
        sync_ms[1],
        many_median / few_median,
        many_p90 / few_p90,
        many_mean / few_mean
    );
}
