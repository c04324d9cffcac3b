#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Data-plane tests with real packets: a "node" network namespace holds kube-proxy's nftables table
//! (programmed over netlink by this crate from a thread that entered the namespace), "pod" namespaces
//! behind a bridge run the test image's servers, and a "client" namespace sits outside the node.
//! Nothing touches the host's namespace; every namespace (and with it the table) is removed by a
//! Drop guard, also on failure.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use kube_proxy::model::{ModelConfig, desired_ruleset};
use kube_proxy::nft::{NftProgrammer, TableConfig};
use support::{
    CLIENT_IP, NODE_IP, Topology, default_meta, exec_in, http_get, http_slice_port, in_netns, kill_all_in,
    ready_endpoint, sh, sh_in, slice_meta, unique,
};

/// The IPv4 lab ([`support::Topology`]: node, `pods` pod namespaces with servers on 8080/tcp
/// and 8081/udp, client). Removed on drop.
struct Lab {
    topo: Topology,
}

support::deref_topology!(Lab);

impl Lab {
    fn new(pods: usize) -> Lab {
        Lab {
            topo: Topology::new("kp", pods),
        }
    }

    fn endpoints(&self, service: &str, pods: &[usize]) -> EndpointSlice {
        EndpointSlice {
            metadata: slice_meta(&format!("{service}-x"), service),
            address_type: "IPv4".into(),
            endpoints: pods.iter().map(|&i| ready_endpoint(self.pods[i].1)).collect(),
            ports: Some(vec![
                http_slice_port(),
                EndpointPort {
                    name: Some("udp".into()),
                    protocol: Some("UDP".into()),
                    port: Some(8081),
                    ..Default::default()
                },
            ]),
        }
    }

    fn sync(&self, programmer: &mut NftProgrammer, services: &[Service], slices: &[EndpointSlice]) {
        let config = ModelConfig {
            buckets: 16,
            node_ips: vec![NODE_IP.into()],
            ..Default::default()
        };
        let desired = desired_ruleset(services, slices, &config);
        in_netns(&self.node, || programmer.sync(&desired)).unwrap();
    }

    /// `nft -a list table ip kube-proxy` (rule handles shown).
    fn nft_list_handles(&self) -> String {
        let out = exec_in(&self.node, &["nft", "-a", "list", "table", "ip", "kube-proxy"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft_list(&self) -> String {
        let out = exec_in(&self.node, &["nft", "list", "table", "ip", "kube-proxy"]);
        assert!(
            out.status.success(),
            "nft list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn service(name: &str, type_: &str, ip: &str, node_port: Option<i32>) -> Service {
    Service {
        metadata: default_meta(name),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some(ip.into()),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    protocol: Some("TCP".into()),
                    port: 80,
                    node_port,
                    ..Default::default()
                },
                ServicePort {
                    name: Some("udp".into()),
                    protocol: Some("UDP".into()),
                    port: 53,
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

fn udp_query(addr: SocketAddr) -> std::io::Result<String> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.send_to(b"hostname", addr)?;
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

fn tally(results: Vec<String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r).or_insert(0) += 1;
    }
    m
}

/// 16 buckets over 3 endpoints give shares 6/16, 5/16, 5/16; with 300 samples each share must be
/// present and none may be far off (a loose bound: random, but 15% is > 5 sigma below 31%).
fn assert_spread(m: &BTreeMap<String, usize>, pods: usize, total: usize) {
    assert_eq!(m.len(), pods, "not every endpoint answered: {m:?}");
    for (host, n) in m {
        assert!(*n * 100 >= total * 15, "{host} got only {n}/{total}: {m:?}");
    }
}

#[test]
fn cluster_ip_tcp_and_udp_reach_all_endpoints_from_client_and_node() {
    knode_require_root();
    let lab = Lab::new(3);
    let mut p = NftProgrammer::new(TableConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0).into(), 16)),
        ..Default::default()
    });
    let services = [service("web", "ClusterIP", "10.96.0.10", None)];
    lab.sync(&mut p, &services, &[lab.endpoints("web", &[0, 1, 2])]);
    let listing = lab.nft_list();
    println!("{listing}");
    for name in [
        "service-endpoints",
        "no-endpoint-services",
        "cluster-ips",
        "nat-prerouting",
    ] {
        assert!(listing.contains(name), "{name} missing from:\n{listing}");
    }

    let vip = SocketAddr::from(([10, 96, 0, 10], 80));
    let tcp = in_netns(&lab.client, || {
        (0..300)
            .map(|_| http_get(vip, "/hostname").unwrap())
            .collect::<Vec<_>>()
    });
    let m = tally(tcp);
    println!("ClusterIP TCP from client: {m:?}");
    assert_spread(&m, 3, 300);

    // Off-cluster source → masqueraded: the pod sees the node's bridge address.
    let seen = in_netns(&lab.client, || http_get(vip, "/clientip").unwrap());
    assert!(seen.starts_with("10.244.0.1"), "client IP seen by pod: {seen}");

    let udp_vip = SocketAddr::from(([10, 96, 0, 10], 53));
    let udp = in_netns(&lab.client, || {
        (0..300).map(|_| udp_query(udp_vip).unwrap()).collect::<Vec<_>>()
    });
    let m = tally(udp);
    println!("ClusterIP UDP from client: {m:?}");
    assert_spread(&m, 3, 300);

    // Locally generated traffic on the node goes through nat-output.
    let local = in_netns(&lab.node, || {
        (0..60)
            .map(|_| http_get(vip, "/hostname").unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(tally(local).len(), 3);
}

#[test]
fn node_port_and_load_balancer_ip_from_client_and_no_endpoint_service_rejects_fast() {
    knode_require_root();
    let lab = Lab::new(2);
    let mut p = NftProgrammer::new(TableConfig::default());
    let mut lb = service("lb", "LoadBalancer", "10.96.0.22", Some(30082));
    lb.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("203.0.113.9".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    let services = [
        service("np", "NodePort", "10.96.0.20", Some(30080)),
        service("empty", "NodePort", "10.96.0.21", Some(30081)),
        lb,
    ];
    lab.sync(
        &mut p,
        &services,
        &[lab.endpoints("np", &[0, 1]), lab.endpoints("lb", &[1])],
    );

    // LoadBalancer ingress IP (routed to the node by the client's default route) and its NodePort.
    for target in [
        SocketAddr::from(([203, 0, 113, 9], 80)),
        SocketAddr::from((NODE_IP, 30082)),
    ] {
        let host = in_netns(&lab.client, || http_get(target, "/hostname").unwrap());
        assert_eq!(host, "pod1", "{target}");
        // External traffic is always masqueraded: the pod sees the node's bridge address.
        let seen = in_netns(&lab.client, || http_get(target, "/clientip").unwrap());
        assert!(
            seen.starts_with("10.244.0.1"),
            "{target}: client IP seen by pod: {seen}"
        );
    }

    let np = SocketAddr::from((NODE_IP, 30080));
    let hits = in_netns(&lab.client, || {
        (0..100)
            .map(|_| http_get(np, "/hostname").unwrap())
            .collect::<Vec<_>>()
    });
    let m = tally(hits);
    println!("NodePort from client: {m:?}");
    assert_eq!(m.len(), 2, "{m:?}");

    for target in [
        SocketAddr::from(([10, 96, 0, 21], 80)),
        SocketAddr::from((NODE_IP, 30081)),
    ] {
        let err = in_netns(&lab.client, || http_get(target, "/").unwrap_err());
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{target}: {err}"
        );
        let err = in_netns(&lab.node, || http_get(target, "/").unwrap_err());
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{target} from node: {err}"
        );
    }
}

#[test]
fn endpoint_changes_are_applied_incrementally() {
    knode_require_root();
    let lab = Lab::new(3);
    let mut p = NftProgrammer::new(TableConfig::default());
    let services = [
        service("a", "ClusterIP", "10.96.0.30", None),
        service("b", "ClusterIP", "10.96.0.31", None),
    ];
    let first = in_netns(&lab.node, || {
        let config = ModelConfig {
            buckets: 16,
            node_ips: vec![NODE_IP.into()],
            ..Default::default()
        };
        let slices = [lab.endpoints("a", &[0, 1, 2]), lab.endpoints("b", &[0])];
        p.sync(&desired_ruleset(&services, &slices, &config)).unwrap()
    });
    assert!(first.full);

    // Drop pod0 from service a: only a's buckets that pointed at pod0 change.
    let second = in_netns(&lab.node, || {
        let config = ModelConfig {
            buckets: 16,
            node_ips: vec![NODE_IP.into()],
            ..Default::default()
        };
        let slices = [lab.endpoints("a", &[1, 2]), lab.endpoints("b", &[0])];
        p.sync(&desired_ruleset(&services, &slices, &config)).unwrap()
    });
    assert!(!second.full);
    assert!(
        second.elements_added > 0 && second.elements_added <= 32,
        "{second:?}"
    );
    assert_eq!(second.elements_added, second.elements_deleted);

    let a = SocketAddr::from(([10, 96, 0, 30], 80));
    let hits = tally(in_netns(&lab.client, || {
        (0..100)
            .map(|_| http_get(a, "/hostname").unwrap())
            .collect::<Vec<_>>()
    }));
    assert!(!hits.contains_key("pod0"), "{hits:?}");
    assert_eq!(hits.len(), 2, "{hits:?}");
    let b = SocketAddr::from(([10, 96, 0, 31], 80));
    let hits = tally(in_netns(&lab.client, || {
        (0..20)
            .map(|_| http_get(b, "/hostname").unwrap())
            .collect::<Vec<_>>()
    }));
    assert_eq!(hits.keys().collect::<Vec<_>>(), vec!["pod0"]);

    // A watch event for b alone (pod0 → pod2) goes through the per-Service path.
    let config = ModelConfig {
        buckets: 16,
        node_ips: vec![NODE_IP.into()],
        ..Default::default()
    };
    let slices = [lab.endpoints("a", &[1, 2]), lab.endpoints("b", &[2])];
    let desired = desired_ruleset(&services, &slices, &config);
    let changed = [("default".to_string(), "b".to_string())].into();
    let third = in_netns(&lab.node, || p.sync_services(&desired, &changed)).unwrap();
    // 16 buckets for each of the TCP and UDP ports, and pod0's hairpin element (pod2's is
    // already there for a).
    assert_eq!((third.elements_added, third.elements_deleted), (32, 33));
    let hits = tally(in_netns(&lab.client, || {
        (0..20)
            .map(|_| http_get(b, "/hostname").unwrap())
            .collect::<Vec<_>>()
    }));
    assert_eq!(hits.keys().collect::<Vec<_>>(), vec!["pod2"]);

    // Drift: the table deleted by hand comes back at the next full resync.
    sh_in(&lab.node, &["nft", "delete", "table", "ip", "kube-proxy"]);
    assert!(in_netns(&lab.client, || http_get(b, "/hostname")).is_err());
    p.invalidate();
    let fourth = in_netns(&lab.node, || p.sync(&desired)).unwrap();
    assert!(fourth.full);
    assert_eq!(
        in_netns(&lab.client, || http_get(b, "/hostname")).unwrap(),
        "pod2"
    );
}

fn knode_require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "data-plane tests need root");
}

/// Restarts while clients keep connecting: "restarted" kube-proxies (fresh programmers, nothing
/// cached) adopt the table, every other one after a rule was deleted by hand, which it rewrites
/// in place. No connection may fail: the layout's sets and base chains are never re-created, so
/// a packet in flight during a commit always meets rules and sets of one generation (a table
/// deleted and re-created in one transaction failed about one connection in a few thousand:
/// first packet not NATed).
#[test]
fn restarts_adopting_and_repairing_the_table_fail_no_connection() {
    knode_require_root();
    let lab = Lab::new(2);
    let services = [service("web", "ClusterIP", "10.96.0.40", None)];
    let slices = [lab.endpoints("web", &[0, 1])];
    let config = ModelConfig {
        buckets: 16,
        node_ips: vec![NODE_IP.into()],
        ..Default::default()
    };
    let desired = desired_ruleset(&services, &slices, &config);
    in_netns(&lab.node, || {
        NftProgrammer::new(TableConfig::default()).sync(&desired)
    })
    .unwrap();
    let rules = || lab.nft_list_handles().matches("# handle").count();
    let layout_rules = rules();

    let vip = SocketAddr::from(([10, 96, 0, 40], 80));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, failed, repairs) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            in_netns(&lab.client, || {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::SeqCst) || ok < 50 {
                    match http_get(vip, "/hostname") {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        });
        let mut repairs = 0;
        for i in 0..20 {
            if i % 2 == 1 {
                sh_in(
                    &lab.node,
                    &["nft", "flush", "chain", "ip", "kube-proxy", "filter-output"],
                );
            }
            let stats = in_netns(&lab.node, || {
                NftProgrammer::new(TableConfig::default()).sync(&desired).unwrap()
            });
            assert!(!stats.full, "restart {i} adopts the table: {stats:?}");
            repairs += usize::from(stats.batch_bytes > 0);
            assert_eq!(rules(), layout_rules, "restart {i}");
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        let (ok, failed) = client.join().unwrap();
        (ok, failed, repairs)
    });
    println!(
        "connections during 20 restarts ({repairs} repairing rules): {ok} ok, {} failed",
        failed.len()
    );
    assert_eq!(
        repairs, 10,
        "every restart after the hand-made flush rewrote the rules"
    );
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn service_with_more_endpoints_than_buckets_reaches_all_through_the_large_map() {
    knode_require_root();
    let lab = Lab::new(2);
    // 9 addresses per pod (the servers listen on all of them): 18 endpoints > 16 buckets.
    let mut addrs = Vec::new();
    for (i, (pod, ip)) in lab.pods.iter().enumerate() {
        addrs.push((i, *ip));
        for k in 0..8u8 {
            let extra = Ipv4Addr::new(10, 244, 0, 100 + (i as u8) * 10 + k);
            sh(&[
                "ip",
                "-n",
                pod,
                "addr",
                "add",
                &format!("{extra}/24"),
                "dev",
                "eth0",
            ]);
            addrs.push((i, extra));
        }
    }
    let mut slice = lab.endpoints("big", &[]);
    slice.endpoints = addrs
        .iter()
        .map(|(_, ip)| Endpoint {
            addresses: vec![ip.to_string()],
            ..Default::default()
        })
        .collect();
    let mut p = NftProgrammer::new(TableConfig::default());
    lab.sync(
        &mut p,
        &[service("big", "ClusterIP", "10.96.0.50", None)],
        &[slice],
    );
    assert!(lab.nft_list().contains("service-endpoints-large"));

    let vip = SocketAddr::from(([10, 96, 0, 50], 80));
    let hits = tally(in_netns(&lab.client, || {
        (0..200)
            .map(|_| http_get(vip, "/hostname").unwrap())
            .collect::<Vec<_>>()
    }));
    println!("18 endpoints on 2 pods: {hits:?}");
    assert_eq!(hits.len(), 2, "{hits:?}");
    for n in hits.values() {
        assert!(*n >= 60, "{hits:?}");
    }
}

fn model_config(node_name: Option<&str>) -> ModelConfig {
    ModelConfig {
        buckets: 16,
        node_ips: vec![NODE_IP.into()],
        node_name: node_name.map(str::to_string),
    }
}

fn sync_with(lab: &Lab, p: &mut NftProgrammer, services: &[Service], slices: &[EndpointSlice], node: &str) {
    let desired = desired_ruleset(services, slices, &model_config(Some(node)));
    in_netns(&lab.node, || p.sync(&desired)).unwrap();
}

/// `nft list map ip kube-proxy <name>` in the node namespace.
fn nft_map(lab: &Lab, name: &str) -> String {
    let out = exec_in(&lab.node, &["nft", "list", "map", "ip", "kube-proxy", name]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn session_affinity_sticks_forgets_removed_endpoints_and_expires() {
    use k8s_openapi::api::core::v1::{ClientIPConfig, SessionAffinityConfig};
    knode_require_root();
    let lab = Lab::new(3);
    let mut p = NftProgrammer::new(TableConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0).into(), 16)),
        ..Default::default()
    });
    let mut aff = service("aff", "ClusterIP", "10.96.0.60", None);
    let spec = aff.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(2),
        }),
    });
    // A second Service without affinity next to it keeps spreading.
    let services = [aff, service("plain", "ClusterIP", "10.96.0.61", None)];
    let slices = [
        lab.endpoints("aff", &[0, 1, 2]),
        lab.endpoints("plain", &[0, 1, 2]),
    ];
    lab.sync(&mut p, &services, &slices);

    let vip = SocketAddr::from(([10, 96, 0, 60], 80));
    let hits = tally(in_netns(&lab.client, || {
        (0..40)
            .map(|_| http_get(vip, "/hostname").unwrap())
            .collect::<Vec<_>>()
    }));
    println!("ClientIP affinity, 40 connections: {hits:?}");
    assert_eq!(hits.len(), 1, "affinity must stick: {hits:?}");
    let first = hits.keys().next().unwrap().clone();
    let listing = nft_map(&lab, "affinity-2");
    assert!(
        listing.contains("192.168.77.2 . 10.96.0.60") && listing.contains("expires"),
        "{listing}"
    );
    // The whole table (dynamic map and its chain included) lists fine for operators.
    let table = lab.nft_list();
    assert!(table.contains("chain affinity-2"), "{table}");
    let plain = tally(in_netns(&lab.client, || {
        (0..60)
            .map(|_| http_get(SocketAddr::from(([10, 96, 0, 61], 80)), "/hostname").unwrap())
            .collect::<Vec<_>>()
    }));
    assert_eq!(plain.len(), 3, "no affinity for the other Service: {plain:?}");

    // The sticky endpoint goes away: the next connection picks (and sticks to) another one.
    let gone: usize = first.trim_start_matches("pod").parse().unwrap();
    let rest: Vec<usize> = (0..3).filter(|i| *i != gone).collect();
    let slices = [lab.endpoints("aff", &rest), lab.endpoints("plain", &[0, 1, 2])];
    lab.sync(&mut p, &services, &slices);
    let hits = tally(in_netns(&lab.client, || {
        (0..20)
            .map(|_| http_get(vip, "/hostname").unwrap())
            .collect::<Vec<_>>()
    }));
    println!("after removing {first}: {hits:?}");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(!hits.contains_key(&first), "{hits:?}");
    let second = hits.keys().next().unwrap().clone();

    // Idle longer than timeoutSeconds: the entry expires and a new choice is made. The choice is
    // random, so look for another endpoint over a few expiries ((6/16)^10 < 1e-4 to miss it).
    let mut seen = vec![];
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(2300));
        assert!(
            !nft_map(&lab, "affinity-2").contains("10.96.0.60"),
            "entry must have expired"
        );
        let h = in_netns(&lab.client, || http_get(vip, "/hostname").unwrap());
        seen.push(h.clone());
        if h != second {
            break;
        }
    }
    println!("after expiries: {seen:?}");
    assert!(seen.iter().any(|h| *h != second), "{seen:?}");

    // Removing affinity from the Service removes its class chain and map.
    let services = [
        service("aff", "ClusterIP", "10.96.0.60", None),
        service("plain", "ClusterIP", "10.96.0.61", None),
    ];
    lab.sync(&mut p, &services, &slices);
    assert!(!lab.nft_list().contains("affinity-2"), "{}", lab.nft_list());
}

/// Endpoint slice with per-endpoint node names.
fn slice_on_nodes(lab: &Lab, service: &str, pods: &[(usize, &str)]) -> EndpointSlice {
    let mut s = lab.endpoints(service, &pods.iter().map(|p| p.0).collect::<Vec<_>>());
    for (e, (_, node)) in s.endpoints.iter_mut().zip(pods) {
        e.node_name = Some(node.to_string());
    }
    s
}

fn hosts_from(ns: &str, target: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    tally(in_netns(ns, || {
        (0..n)
            .map(|_| http_get(target, "/hostname").unwrap())
            .collect::<Vec<_>>()
    }))
}

fn times_out(ns: &str, target: SocketAddr) -> bool {
    in_netns(ns, || {
        match TcpStream::connect_timeout(&target, Duration::from_millis(700)) {
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            Ok(_) => false,
        }
    })
}

#[test]
fn local_traffic_policies_keep_source_ip_short_circuit_pods_and_drop_without_local_endpoints() {
    knode_require_root();
    // pod0 runs on this node ("node-a"), pod1 on another; pod2 is a client pod.
    let lab = Lab::new(3);
    let mut p = NftProgrammer::new(TableConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0).into(), 16)),
        ..Default::default()
    });
    let mut etp = service("etp", "LoadBalancer", "10.96.0.70", Some(30090));
    etp.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    etp.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("203.0.113.20".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    let mut remote_only = service("remote", "NodePort", "10.96.0.71", Some(30091));
    remote_only.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    let mut itp = service("itp", "ClusterIP", "10.96.0.72", None);
    itp.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
    let mut itp_none = service("itp-none", "ClusterIP", "10.96.0.73", None);
    itp_none.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
    let services = [etp, remote_only, itp, itp_none];
    let slices = [
        slice_on_nodes(&lab, "etp", &[(0, "node-a"), (1, "node-b")]),
        slice_on_nodes(&lab, "remote", &[(1, "node-b")]),
        slice_on_nodes(&lab, "itp", &[(0, "node-a"), (1, "node-b")]),
        slice_on_nodes(&lab, "itp-none", &[(1, "node-b")]),
    ];
    sync_with(&lab, &mut p, &services, &slices, "node-a");
    let client_pod = lab.pods[2].0.clone();

    // External clients reach only the local endpoint, with their source IP kept.
    for target in [
        SocketAddr::from((NODE_IP, 30090)),
        SocketAddr::from(([203, 0, 113, 20], 80)),
    ] {
        let m = hosts_from(&lab.client, target, 30);
        assert_eq!(m.keys().collect::<Vec<_>>(), vec!["pod0"], "{target}: {m:?}");
        let seen = in_netns(&lab.client, || http_get(target, "/clientip").unwrap());
        assert!(
            seen.starts_with(&CLIENT_IP.to_string()),
            "{target}: source seen by pod: {seen}"
        );
    }
    // A pod is short-circuited to every endpoint (upstream), unmasqueraded.
    let np = SocketAddr::from((NODE_IP, 30090));
    let m = hosts_from(&client_pod, np, 60);
    println!("ETP Local NodePort from a pod: {m:?}");
    assert_eq!(m.len(), 2, "{m:?}");
    let seen = in_netns(&client_pod, || http_get(np, "/clientip").unwrap());
    assert!(seen.starts_with("10.244.0.12"), "pod source kept: {seen}");
    // The node itself reaches every endpoint too (masqueraded).
    let m = hosts_from(&lab.node, np, 60);
    println!("ETP Local NodePort from the node: {m:?}");
    assert_eq!(m.len(), 2, "{m:?}");

    // No local endpoint: external traffic is dropped (not rejected), pods still get through.
    let remote = SocketAddr::from((NODE_IP, 30091));
    assert!(times_out(&lab.client, remote), "external traffic must be dropped");
    assert_eq!(
        hosts_from(&client_pod, remote, 10).keys().collect::<Vec<_>>(),
        vec!["pod1"]
    );

    // internalTrafficPolicy Local: ClusterIP traffic goes to local endpoints only; none → drop.
    let m = hosts_from(&client_pod, SocketAddr::from(([10, 96, 0, 72], 80)), 30);
    assert_eq!(m.keys().collect::<Vec<_>>(), vec!["pod0"], "{m:?}");
    assert!(times_out(&client_pod, SocketAddr::from(([10, 96, 0, 73], 80))));

    // A local endpoint appears for the remote-only Service: external traffic now flows.
    let slices = [
        slices[0].clone(),
        slice_on_nodes(&lab, "remote", &[(0, "node-a"), (1, "node-b")]),
        slices[2].clone(),
        slices[3].clone(),
    ];
    let desired = desired_ruleset(&services, &slices, &model_config(Some("node-a")));
    let changed = [("default".to_string(), "remote".to_string())].into();
    in_netns(&lab.node, || p.sync_services(&desired, &changed)).unwrap();
    let m = hosts_from(&lab.client, remote, 20);
    assert_eq!(m.keys().collect::<Vec<_>>(), vec!["pod0"], "{m:?}");
}

fn lb_service(name: &str, ip: &str, ingress: &str, ranges: &[&str]) -> Service {
    let mut s = service(name, "LoadBalancer", ip, None);
    s.spec.as_mut().unwrap().load_balancer_source_ranges =
        Some(ranges.iter().map(|r| r.to_string()).collect());
    s.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(ingress.into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    s
}

#[test]
fn hairpin_is_masqueraded_and_source_ranges_firewall_load_balancer_ips() {
    knode_require_root();
    let lab = Lab::new(2);
    let mut p = NftProgrammer::new(TableConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0).into(), 16)),
        ..Default::default()
    });
    let mut services = vec![
        service("hp", "ClusterIP", "10.96.0.80", None),
        lb_service("fw-allow", "10.96.0.81", "203.0.113.31", &["192.168.77.0/30"]),
        lb_service("fw-deny", "10.96.0.82", "203.0.113.32", &["198.51.100.0/24"]),
    ];
    let slices = [
        lab.endpoints("hp", &[0]),
        lab.endpoints("fw-allow", &[1]),
        lab.endpoints("fw-deny", &[1]),
    ];
    lab.sync(&mut p, &services, &slices);

    // pod0 reaches itself through its Service: masqueraded to the node's bridge address.
    let vip = SocketAddr::from(([10, 96, 0, 80], 80));
    let pod0 = lab.pods[0].0.clone();
    let seen = in_netns(&pod0, || http_get(vip, "/clientip").unwrap());
    assert!(seen.starts_with("10.244.0.1:"), "hairpin source seen: {seen}");
    let udp = in_netns(&pod0, || {
        udp_query(SocketAddr::from(([10, 96, 0, 80], 53))).unwrap()
    });
    assert_eq!(udp, "pod0");
    // Another pod keeps its own address (no masquerade for in-cluster sources).
    let seen = in_netns(&lab.pods[1].0, || http_get(vip, "/clientip").unwrap());
    assert!(seen.starts_with("10.244.0.11:"), "pod source seen: {seen}");

    // loadBalancerSourceRanges: the client (192.168.77.2) is inside the first range only.
    let allow = SocketAddr::from(([203, 0, 113, 31], 80));
    assert_eq!(
        in_netns(&lab.client, || http_get(allow, "/hostname").unwrap()),
        "pod1"
    );
    let deny = SocketAddr::from(([203, 0, 113, 32], 80));
    assert!(
        times_out(&lab.client, deny),
        "source outside the ranges must be dropped"
    );
    // The ClusterIP of the firewalled Service is not subject to the ranges.
    assert_eq!(
        in_netns(&lab.client, || http_get(
            SocketAddr::from(([10, 96, 0, 82], 80)),
            "/hostname"
        )
        .unwrap()),
        "pod1"
    );
    // Widening the ranges (a per-Service change) lets the client in.
    services[2] = lb_service(
        "fw-deny",
        "10.96.0.82",
        "203.0.113.32",
        &["198.51.100.0/24", "192.168.77.2/32"],
    );
    let desired = desired_ruleset(&services, &slices, &model_config(None));
    let changed = [("default".to_string(), "fw-deny".to_string())].into();
    in_netns(&lab.node, || p.sync_services(&desired, &changed)).unwrap();
    assert_eq!(
        in_netns(&lab.client, || http_get(deny, "/hostname").unwrap()),
        "pod1"
    );

    // The hairpin element is shared: removing one of two Services using pod1 keeps it.
    let hairpin = |lab: &Lab| {
        let out = exec_in(
            &lab.node,
            &["nft", "list", "set", "ip", "kube-proxy", "hairpin-endpoints"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        hairpin(&lab).contains("10.244.0.11 . 10.244.0.11"),
        "{}",
        hairpin(&lab)
    );
    let services = [services[0].clone(), services[2].clone()];
    let slices = [slices[0].clone(), slices[2].clone()];
    let desired = desired_ruleset(&services, &slices, &model_config(None));
    let changed = [("default".to_string(), "fw-allow".to_string())].into();
    in_netns(&lab.node, || p.sync_services(&desired, &changed)).unwrap();
    assert!(
        hairpin(&lab).contains("10.244.0.11 . 10.244.0.11"),
        "{}",
        hairpin(&lab)
    );
    let changed = [("default".to_string(), "fw-deny".to_string())].into();
    let desired = desired_ruleset(&services[..1], &slices[..1], &model_config(None));
    in_netns(&lab.node, || p.sync_services(&desired, &changed)).unwrap();
    assert!(!hairpin(&lab).contains("10.244.0.11"), "{}", hairpin(&lab));
    assert!(
        hairpin(&lab).contains("10.244.0.10 . 10.244.0.10"),
        "{}",
        hairpin(&lab)
    );
}

#[test]
fn udp_flow_moves_to_the_new_endpoint_once_stale_conntrack_entries_are_deleted() {
    use kube_proxy::conntrack::{UdpTargets, clean_stale_udp};
    knode_require_root();
    let lab = Lab::new(2);
    let mut p = NftProgrammer::new(TableConfig::default());
    let services = [service("dns", "NodePort", "10.96.0.90", Some(30093))];
    lab.sync(&mut p, &services, &[lab.endpoints("dns", &[0])]);

    // One client socket = one 5-tuple = one conntrack entry, as a long-lived UDP client has.
    let vip = SocketAddr::from(([10, 96, 0, 90], 53));
    let ask = |s: &UdpSocket| {
        s.send_to(b"hostname", vip).unwrap();
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    let sock = in_netns(&lab.client, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    });
    assert_eq!(ask(&sock), "pod0");

    // pod0 leaves the Service (but keeps running): the rules change, the flow does not.
    let desired = desired_ruleset(&services, &[lab.endpoints("dns", &[1])], &model_config(None));
    in_netns(&lab.node, || p.sync(&desired)).unwrap();
    assert_eq!(
        ask(&sock),
        "pod0",
        "conntrack keeps the old endpoint until cleaned"
    );
    let listed = |lab: &Lab| {
        let out = exec_in(
            &lab.node,
            &["conntrack", "-L", "-p", "udp", "--orig-dst", "10.96.0.90"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(listed(&lab).contains("src=10.244.0.10"), "{}", listed(&lab));

    let targets = UdpTargets::from_elements(desired.all());
    let deleted = in_netns(&lab.node, || clean_stale_udp(&targets)).unwrap();
    println!("deleted {deleted} stale UDP conntrack entries");
    assert_eq!(deleted, 1);
    assert_eq!(
        ask(&sock),
        "pod1",
        "the same flow must move to the remaining endpoint"
    );
    assert!(listed(&lab).contains("src=10.244.0.11"), "{}", listed(&lab));
    // Nothing stale is left: a second pass deletes nothing, and TCP is never touched.
    assert_eq!(in_netns(&lab.node, || clean_stale_udp(&targets)).unwrap(), 0);
}

#[test]
fn restarted_programmer_adopts_the_table_keeping_affinity_and_repairs_drift() {
    use k8s_openapi::api::core::v1::{ClientIPConfig, SessionAffinityConfig};
    knode_require_root();
    let lab = Lab::new(3);
    let table = || TableConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0).into(), 16)),
        ..Default::default()
    };
    let mut aff = service("aff", "ClusterIP", "10.96.0.100", None);
    let spec = aff.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(600),
        }),
    });
    let services = [aff, service("web", "ClusterIP", "10.96.0.101", None)];
    let slices = [lab.endpoints("aff", &[0, 1, 2]), lab.endpoints("web", &[0, 1])];
    let desired = desired_ruleset(&services, &slices, &model_config(None));
    let first = in_netns(&lab.node, || NftProgrammer::new(table()).resync(&desired)).unwrap();
    assert!(first.full, "nothing to adopt: created");
    let vip = SocketAddr::from(([10, 96, 0, 100], 80));
    let sticky = in_netns(&lab.client, || http_get(vip, "/hostname").unwrap());

    // A restart: a fresh programmer adopts the table, sends nothing, and the client's affinity
    // entry (dynamic state a replacement would lose) is still there and still used.
    let mut p = NftProgrammer::new(table());
    let adopted = in_netns(&lab.node, || p.resync(&desired)).unwrap();
    println!("adoption: {adopted:?}");
    assert!(!adopted.full, "{adopted:?}");
    assert_eq!((adopted.elements_added, adopted.elements_deleted), (0, 0));
    assert!(nft_map(&lab, "affinity-600").contains("192.168.77.2 . 10.96.0.100"));
    let hits = hosts_from(&lab.client, vip, 20);
    assert_eq!(hits.keys().collect::<Vec<_>>(), vec![&sticky], "{hits:?}");

    // Adoption then works incrementally: a change of web is applied as a diff.
    let slices = [slices[0].clone(), lab.endpoints("web", &[2])];
    let desired = desired_ruleset(&services, &slices, &model_config(None));
    let changed = [("default".to_string(), "web".to_string())].into();
    let stats = in_netns(&lab.node, || p.sync_services(&desired, &changed)).unwrap();
    assert!(!stats.full && stats.elements_added > 0, "{stats:?}");
    let web = SocketAddr::from(([10, 96, 0, 101], 80));
    assert_eq!(
        hosts_from(&lab.client, web, 10).keys().collect::<Vec<_>>(),
        vec!["pod2"]
    );

    // Drift: an element deleted by hand comes back at the next resync (a diff, not a replace).
    sh_in(
        &lab.node,
        &[
            "nft",
            "delete",
            "element",
            "ip",
            "kube-proxy",
            "cluster-ips",
            "{ 10.96.0.101 }",
        ],
    );
    let repaired = in_netns(&lab.node, || p.resync(&desired)).unwrap();
    assert!(!repaired.full && repaired.elements_added == 1, "{repaired:?}");
    assert!(lab.nft_list().contains("10.96.0.101"));
    // A rule deleted by hand, a chain and a set added by hand: the rules are rewritten in place
    // (sets, elements and the client's affinity entry stay), the strays are removed.
    let rules_before = lab.nft_list().matches("@no-endpoint-services").count();
    for args in [
        &["add", "chain", "ip", "kube-proxy", "stray-chain"][..],
        &[
            "add",
            "set",
            "ip",
            "kube-proxy",
            "stray-set",
            "{ type ipv4_addr; }",
        ],
        // Named like an affinity class the table does not have.
        &["add", "chain", "ip", "kube-proxy", "affinity-record-42"],
        &[
            "add",
            "set",
            "ip",
            "kube-proxy",
            "affinity-42",
            "{ type ipv4_addr; }",
        ],
    ] {
        let mut cmd = vec!["ip", "netns", "exec", &lab.node, "nft"];
        cmd.extend_from_slice(args);
        sh(&cmd);
    }
    let handle = lab
        .nft_list_handles()
        .lines()
        .find(|l| l.contains("@no-endpoint-services") && l.contains("# handle"))
        .and_then(|l| l.rsplit("# handle ").next().map(|h| h.trim().to_string()))
        .unwrap();
    let chain = lab
        .nft_list_handles()
        .lines()
        .scan(String::new(), |cur, l| {
            if let Some(c) = l.trim().strip_prefix("chain ") {
                *cur = c.split_whitespace().next().unwrap_or_default().to_string();
            }
            Some((cur.clone(), l.to_string()))
        })
        .find(|(_, l)| l.contains(&format!("# handle {handle}")) && l.contains("@no-endpoint-services"))
        .map(|(c, _)| c)
        .unwrap();
    sh_in(
        &lab.node,
        &[
            "nft",
            "delete",
            "rule",
            "ip",
            "kube-proxy",
            &chain,
            "handle",
            &handle,
        ],
    );
    assert_eq!(
        lab.nft_list().matches("@no-endpoint-services").count(),
        rules_before - 1
    );
    let repaired = in_netns(&lab.node, || p.resync(&desired)).unwrap();
    assert!(!repaired.full, "{repaired:?}");
    assert_eq!((repaired.elements_added, repaired.elements_deleted), (0, 0));
    let list = lab.nft_list();
    assert_eq!(
        list.matches("@no-endpoint-services").count(),
        rules_before,
        "{list}"
    );
    assert!(
        !list.contains("stray-chain") && !list.contains("stray-set"),
        "{list}"
    );
    assert!(
        !list.contains("affinity-42") && !list.contains("affinity-record-42"),
        "{list}"
    );
    assert!(nft_map(&lab, "affinity-600").contains("192.168.77.2 . 10.96.0.100"));
    assert_eq!(
        hosts_from(&lab.client, vip, 10).keys().collect::<Vec<_>>(),
        vec![&sticky]
    );
    assert_eq!(
        hosts_from(&lab.client, web, 5).keys().collect::<Vec<_>>(),
        vec!["pod2"]
    );
    // The next resync finds the layout's rules again and sends nothing.
    let adopted = in_netns(&lab.node, || p.resync(&desired)).unwrap();
    assert_eq!((adopted.full, adopted.batch_bytes), (false, 0), "{adopted:?}");

    // Another configuration has another layout: its programmer replaces the table (dynamic
    // state goes with it) and serves the same Services.
    let other = TableConfig {
        masquerade_all: true,
        ..table()
    };
    let replaced = in_netns(&lab.node, || NftProgrammer::new(other).resync(&desired)).unwrap();
    assert!(replaced.full, "{replaced:?}");
    assert!(!nft_map(&lab, "affinity-600").contains("192.168.77.2"));
    assert_eq!(
        hosts_from(&lab.client, web, 5).keys().collect::<Vec<_>>(),
        vec!["pod2"]
    );
}

/// An IPv6 node: node namespace with br0 fd00:244::1/64 and up0 fd00:77::1/64, two pods running
/// socat servers on [::]:8080/tcp ("<pod> <peer address>") and [::]:8081/udp ("<pod>"), a
/// client at fd00:77::2.
/// (The test image's servers listen on IPv4 only.) Removed on drop.
struct Lab6 {
    node: String,
    client: String,
    pods: Vec<String>,
    servers: Vec<Child>,
}

impl Lab6 {
    fn new() -> Lab6 {
        let id = unique("6").trim_start_matches("6-").to_string();
        let mut lab = Lab6 {
            node: format!("kp6-node-{id}"),
            client: format!("kp6-cli-{id}"),
            pods: Vec::new(),
            servers: Vec::new(),
        };
        sh(&["ip", "netns", "add", &lab.node]);
        sh(&["ip", "netns", "add", &lab.client]);
        let node = lab.node.clone();
        let n = |args: &[&str]| {
            let mut v = vec!["ip", "-n", &node];
            v.extend_from_slice(args);
            sh(&v);
        };
        n(&["link", "set", "lo", "up"]);
        sh_in(&node, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        n(&["link", "add", "br0", "type", "bridge"]);
        n(&["link", "set", "br0", "up"]);
        n(&["addr", "add", "fd00:244::1/64", "dev", "br0", "nodad"]);
        n(&["route", "add", "fd00:96::/112", "dev", "br0"]);
        n(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.client,
        ]);
        n(&["link", "set", "up0", "up"]);
        n(&["addr", "add", "fd00:77::1/64", "dev", "up0", "nodad"]);
        let c = lab.client.clone();
        sh(&["ip", "-n", &c, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &c, "link", "set", "eth0", "up"]);
        sh(&[
            "ip",
            "-n",
            &c,
            "addr",
            "add",
            "fd00:77::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        sh(&[
            "ip",
            "-n",
            &c,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:77::1",
        ]);
        for i in 0..2 {
            let pod = format!("kp6-pod{i}-{id}");
            sh(&["ip", "netns", "add", &pod]);
            lab.pods.push(pod.clone());
            let veth = format!("p{i}");
            n(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod,
            ]);
            n(&["link", "set", &veth, "master", "br0", "up"]);
            n(&["link", "set", &veth, "type", "bridge_slave", "hairpin", "on"]);
            let ip = format!("fd00:244::1{i}/64");
            sh(&["ip", "-n", &pod, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", &pod, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &pod, "addr", "add", &ip, "dev", "eth0", "nodad"]);
            sh(&[
                "ip",
                "-n",
                &pod,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:244::1",
            ]);
            let child = Command::new("ip")
                .args(["netns", "exec", &pod, "socat", "TCP6-LISTEN:8080,fork,reuseaddr"])
                .arg(format!("SYSTEM:echo pod{i} $SOCAT_PEERADDR"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            lab.servers.push(child);
            let udp = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &pod,
                    "socat",
                    "UDP6-RECVFROM:8081,fork,reuseaddr",
                ])
                // Read the datagram before answering (else socat's write to the child can fail).
                .arg(format!("SYSTEM:head -c1 >/dev/null; echo pod{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            lab.servers.push(udp);
        }
        for i in 0..2 {
            let addr: SocketAddr = format!("[fd00:244::1{i}]:8080").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            in_netns(&node, || {
                while ask6(addr).is_err() {
                    assert!(Instant::now() < deadline, "server on {addr} never came up");
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        lab
    }
}

impl Drop for Lab6 {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pod in &self.pods {
            kill_all_in(pod);
        }
        for ns in self.pods.iter().chain([&self.node, &self.client]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Connects, reads the server's line ("<pod> <peer address>").
fn ask6(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.trim().to_string())
}

#[test]
fn ipv6_cluster_ip_and_node_port_balance_over_ipv6_endpoints_in_the_ip6_table() {
    use kube_proxy::nft::DualStack;
    knode_require_root();
    let lab = Lab6::new();
    let mut ds = service("ds", "NodePort", "10.96.0.120", Some(30120));
    let spec = ds.spec.as_mut().unwrap();
    spec.cluster_ips = Some(vec!["10.96.0.120".into(), "fd00:96::120".into()]);
    spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    spec.ip_family_policy = Some("PreferDualStack".into());
    let mut empty = service("empty6", "ClusterIP", "fd00:96::121", None);
    empty.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
    let slice = EndpointSlice {
        metadata: slice_meta("ds-v6", "ds"),
        address_type: "IPv6".into(),
        endpoints: ["fd00:244::10", "fd00:244::11"]
            .iter()
            .map(|a| Endpoint {
                addresses: vec![a.to_string()],
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![http_slice_port()]),
    };
    let config = ModelConfig {
        buckets: 16,
        node_ips: vec![NODE_IP.into(), "fd00:77::1".parse().unwrap()],
        node_name: None,
    };
    let desired = desired_ruleset(&[ds, empty], &[slice], &config);
    let mut p = DualStack::new(
        TableConfig {
            cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0).into(), 16)),
            ..Default::default()
        },
        Some(("fd00:244::".parse().unwrap(), 64)),
    );
    let stats = in_netns(&lab.node, || p.sync(&desired)).unwrap();
    assert!(stats.full);
    let out = exec_in(&lab.node, &["nft", "list", "table", "ip6", "kube-proxy"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        listing.contains("fd00:96::120") && listing.contains("fd00:244::10"),
        "{listing}"
    );

    for target in ["[fd00:96::120]:80", "[fd00:77::1]:30120"] {
        let target: SocketAddr = target.parse().unwrap();
        let answers = in_netns(&lab.client, || {
            (0..40).map(|_| ask6(target).unwrap()).collect::<Vec<_>>()
        });
        let pods = tally(
            answers
                .iter()
                .map(|a| a.split(' ').next().unwrap_or("").to_string())
                .collect(),
        );
        println!("IPv6 {target} from client: {pods:?}");
        assert_eq!(pods.len(), 2, "{target}: {pods:?}");
        // Off-cluster source: masqueraded to the node's bridge address.
        let bridge: std::net::IpAddr = "fd00:244::1".parse().unwrap();
        assert!(
            answers.iter().all(|a| peer6(a) == Some(bridge)),
            "{target}: {answers:?}"
        );
    }
    // An IPv6 Service without endpoints rejects at once (ICMPv6 port unreachable).
    let err = in_netns(&lab.client, || {
        ask6("[fd00:96::121]:80".parse().unwrap()).unwrap_err()
    });
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // A pod reaches the IPv6 ClusterIP with its own address kept.
    // (reaching itself, it is hairpin-masqueraded to the bridge address).
    let own: std::net::IpAddr = "fd00:244::10".parse().unwrap();
    let bridge: std::net::IpAddr = "fd00:244::1".parse().unwrap();
    let answers = in_netns(&lab.pods[0], || {
        (0..30)
            .map(|_| ask6("[fd00:96::120]:80".parse().unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    for a in &answers {
        let want = if a.starts_with("pod1 ") { own } else { bridge };
        assert_eq!(peer6(a), Some(want), "{answers:?}");
    }
    assert_eq!(
        tally(answers.iter().map(|a| a[..4].to_string()).collect()).len(),
        2,
        "{answers:?}"
    );
}

/// The peer address in a socat answer "<pod> [<address>]".
fn peer6(answer: &str) -> Option<std::net::IpAddr> {
    answer
        .split_once(' ')?
        .1
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .ok()
}

#[test]
fn ipv6_udp_flow_moves_after_the_conntrack_cleanup() {
    use kube_proxy::conntrack::{UdpTargets, clean_stale_udp};
    use kube_proxy::nft::DualStack;
    knode_require_root();
    let lab = Lab6::new();
    let mut svc = service("dns6", "ClusterIP", "fd00:96::53", None);
    svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
    let slice_of = |pod: usize| EndpointSlice {
        metadata: slice_meta("dns6-v6", "dns6"),
        address_type: "IPv6".into(),
        endpoints: vec![Endpoint {
            addresses: vec![format!("fd00:244::1{pod}")],
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("udp".into()),
            protocol: Some("UDP".into()),
            port: Some(8081),
            ..Default::default()
        }]),
    };
    let services = [svc];
    let mut p = DualStack::new(TableConfig::default(), None);
    let config = model_config(None);
    let desired = desired_ruleset(&services, &[slice_of(0)], &config);
    in_netns(&lab.node, || p.sync(&desired)).unwrap();

    let vip: SocketAddr = "[fd00:96::53]:53".parse().unwrap();
    let sock = in_netns(&lab.client, || UdpSocket::bind("[::]:0").unwrap());
    let ask = |s: &UdpSocket| {
        s.send_to(b"x", vip).unwrap();
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    // The UDP servers may still be starting: the first exchange is retried (same 5-tuple).
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let first = (0..20).find_map(|_| {
        sock.send_to(b"x", vip).unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    });
    assert_eq!(first.as_deref(), Some("pod0"));
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let desired = desired_ruleset(&services, &[slice_of(1)], &config);
    in_netns(&lab.node, || p.sync(&desired)).unwrap();
    assert_eq!(
        ask(&sock),
        "pod0",
        "conntrack keeps the old endpoint until cleaned"
    );
    let targets = UdpTargets::from_elements(desired.all());
    assert_eq!(in_netns(&lab.node, || clean_stale_udp(&targets)).unwrap(), 1);
    assert_eq!(ask(&sock), "pod1");
}
