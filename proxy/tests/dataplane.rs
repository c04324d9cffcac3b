#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Data-plane tests with real packets: a "node" network namespace holds kube-proxy's nftables table
//! (programmed over netlink by this crate from a thread that entered the namespace), "pod" namespaces
//! behind a bridge run the test image's servers, and a "client" namespace sits outside the node.
//! Nothing touches the host's namespace; every namespace (and with it the table) is removed by a
//! Drop guard, also on failure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_proxy::model::{ModelConfig, SERVICE_NAME_LABEL, desired_ruleset};
use kube_proxy::nft::{NftProgrammer, TableConfig};

const TESTIMG: &str = "/work/main/target/x86_64-unknown-linux-gnu/testimg/testimg";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const CLIENT_IP: &str = "192.168.77.2";

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that entered network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            use std::os::fd::AsRawFd;
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// A node namespace with `pods` pod namespaces (servers on 8080/tcp and 8081/udp) and a client
/// namespace. Removed on drop.
struct Lab {
    node: String,
    client: String,
    pods: Vec<(String, Ipv4Addr)>,
    servers: Vec<Child>,
}

impl Lab {
    fn new(pods: usize) -> Lab {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let mut lab = Lab {
            node: format!("kp-node-{id}"),
            client: format!("kp-cli-{id}"),
            pods: Vec::new(),
            servers: Vec::new(),
        };
        // Registered before creation so a half-built lab is still removed.
        sh(&["ip", "netns", "add", &lab.node]);
        sh(&["ip", "netns", "add", &lab.client]);
        let node = lab.node.clone();
        let client = lab.client.clone();
        let n = |args: &[&str]| {
            let mut v = vec!["ip", "-n", &node];
            v.extend_from_slice(args);
            sh(&v);
        };
        n(&["link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        n(&["link", "add", "br0", "type", "bridge"]);
        n(&["addr", "add", "10.244.0.1/24", "dev", "br0"]);
        n(&["link", "set", "br0", "up"]);
        // Service IPs need a route for packets that are not DNATed (no-endpoint rejects).
        n(&["route", "add", "10.96.0.0/16", "dev", "br0"]);
        n(&[
            "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &client,
        ]);
        n(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "up0"]);
        n(&["link", "set", "up0", "up"]);
        sh(&["ip", "-n", &client, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &client,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &client, "link", "set", "eth0", "up"]);
        sh(&[
            "ip",
            "-n",
            &client,
            "route",
            "add",
            "default",
            "via",
            &NODE_IP.to_string(),
        ]);
        for i in 0..pods {
            let pod = format!("kp-pod{i}-{id}");
            let ip = Ipv4Addr::new(10, 244, 0, 10 + i as u8);
            sh(&["ip", "netns", "add", &pod]);
            lab.pods.push((pod.clone(), ip));
            let veth = format!("p{i}");
            n(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod,
            ]);
            n(&["link", "set", &veth, "master", "br0", "up"]);
            sh(&["ip", "-n", &pod, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", &pod, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &pod, "route", "add", "default", "via", "10.244.0.1"]);
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
            lab.servers.push(child);
        }
        for (_, ip) in lab.pods.clone() {
            let deadline = Instant::now() + Duration::from_secs(20);
            in_netns(&node, || {
                while http_get(SocketAddr::from((ip, 8080)), "/hostname").is_err() {
                    assert!(Instant::now() < deadline, "server on {ip} never came up");
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        lab
    }

    fn endpoints(&self, service: &str, pods: &[usize]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-x")),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: pods
                .iter()
                .map(|&i| Endpoint {
                    addresses: vec![self.pods[i].1.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![
                EndpointPort {
                    name: Some("http".into()),
                    protocol: Some("TCP".into()),
                    port: Some(8080),
                    ..Default::default()
                },
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
            node_ips: vec![NODE_IP],
        };
        let desired = desired_ruleset(services, slices, &config);
        in_netns(&self.node, || programmer.sync(&desired)).unwrap();
    }

    fn nft_list(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                "nft",
                "list",
                "table",
                "ip",
                "kube-proxy",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The unshare'd server is a child of `ip netns exec`; kill whatever still runs in the pods.
        for (pod, _) in &self.pods {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", pod]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
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

fn service(name: &str, type_: &str, ip: &str, node_port: Option<i32>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
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

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_string())
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
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
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
            node_ips: vec![NODE_IP],
        };
        let slices = [lab.endpoints("a", &[0, 1, 2]), lab.endpoints("b", &[0])];
        p.sync(&desired_ruleset(&services, &slices, &config)).unwrap()
    });
    assert!(first.full);

    // Drop pod0 from service a: only a's buckets that pointed at pod0 change.
    let second = in_netns(&lab.node, || {
        let config = ModelConfig {
            buckets: 16,
            node_ips: vec![NODE_IP],
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
        node_ips: vec![NODE_IP],
    };
    let slices = [lab.endpoints("a", &[1, 2]), lab.endpoints("b", &[2])];
    let desired = desired_ruleset(&services, &slices, &config);
    let changed = [("default".to_string(), "b".to_string())].into();
    let third = in_netns(&lab.node, || p.sync_services(&desired, &changed)).unwrap();
    // 16 buckets for each of the TCP and UDP ports.
    assert_eq!((third.elements_added, third.elements_deleted), (32, 32));
    let hits = tally(in_netns(&lab.client, || {
        (0..20)
            .map(|_| http_get(b, "/hostname").unwrap())
            .collect::<Vec<_>>()
    }));
    assert_eq!(hits.keys().collect::<Vec<_>>(), vec!["pod2"]);

    // Drift: the table deleted by hand comes back at the next full resync.
    sh(&[
        "ip",
        "netns",
        "exec",
        &lab.node,
        "nft",
        "delete",
        "table",
        "ip",
        "kube-proxy",
    ]);
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

#[test]
fn restart_replacing_the_table_fails_no_connection() {
    knode_require_root();
    let lab = Lab::new(2);
    let services = [service("web", "ClusterIP", "10.96.0.40", None)];
    let slices = [lab.endpoints("web", &[0, 1])];
    let config = ModelConfig {
        buckets: 16,
        node_ips: vec![NODE_IP],
    };
    let desired = desired_ruleset(&services, &slices, &config);
    in_netns(&lab.node, || {
        NftProgrammer::new(TableConfig::default()).sync(&desired)
    })
    .unwrap();

    // Clients keep connecting while "restarted" kube-proxies (fresh programmers, nothing cached)
    // replace the table: the replacement is one transaction, so no connection may fail.
    let vip = SocketAddr::from(([10, 96, 0, 40], 80));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, failed) = std::thread::scope(|s| {
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
        for _ in 0..10 {
            in_netns(&lab.node, || {
                NftProgrammer::new(TableConfig::default()).sync(&desired).unwrap()
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        client.join().unwrap()
    });
    println!("connections during 10 restarts: {ok} ok, {} failed", failed.len());
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
