use super::*;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn svc(name: &str, type_: &str, cluster_ip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

fn port(name: &str, proto: &str, port: i32, node_port: Option<i32>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        protocol: Some(proto.into()),
        port,
        node_port,
        ..Default::default()
    }
}

type Ep<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

fn slice(service: &str, ports: &[(&str, &str, i32)], eps: &[Ep]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-abc")),
            namespace: Some("default".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(ip, ready, serving, terminating)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    serving: *serving,
                    terminating: *terminating,
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p, num)| EndpointPort {
                    name: Some(n.to_string()),
                    protocol: Some(p.to_string()),
                    port: Some(*num),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

fn ready(ip: &str) -> Ep<'_> {
    (ip, Some(true), Some(true), Some(false))
}

fn endpoints_of(r: &Ruleset, ip: [u8; 4], port: u16) -> Vec<(u32, Ipv4Addr, u16)> {
    r.all()
        .iter()
        .filter_map(|e| match e {
            Element::ServiceEndpoint {
                dst,
                bucket,
                endpoint,
                endpoint_port,
            } if dst.ip == Ipv4Addr::from(ip) && dst.port == port => {
                Some((*bucket, *endpoint, *endpoint_port))
            }
            _ => None,
        })
        .collect()
}

fn cfg() -> ModelConfig {
    ModelConfig {
        buckets: 4,
        node_ips: vec![Ipv4Addr::new(192, 168, 1, 10)],
    }
}

#[test]
fn cluster_ip_spreads_ready_endpoints_over_buckets() {
    let s = svc(
        "web",
        "ClusterIP",
        "10.96.0.10",
        vec![port("http", "TCP", 80, None)],
    );
    let sl = slice(
        "web",
        &[("http", "TCP", 8080)],
        &[ready("10.244.0.2"), ready("10.244.0.3")],
    );
    let r = desired_ruleset(&[s], &[sl], &cfg());
    let eps = endpoints_of(&r, [10, 96, 0, 10], 80);
    assert_eq!(eps.len(), 4);
    let a = Ipv4Addr::new(10, 244, 0, 2);
    let b = Ipv4Addr::new(10, 244, 0, 3);
    assert_eq!(eps.iter().filter(|e| e.1 == a).count(), 2);
    assert_eq!(eps.iter().filter(|e| e.1 == b).count(), 2);
    assert!(eps.iter().all(|e| e.2 == 8080));
    assert!(
        r.all()
            .contains(&Element::ClusterIp(Ipv4Addr::new(10, 96, 0, 10)))
    );
    assert!(r.all().contains(&Element::ServiceIp(Destination {
        ip: Ipv4Addr::new(10, 96, 0, 10),
        protocol: Protocol::Tcp,
        port: 80
    })));
}

#[test]
fn named_ports_pick_the_matching_slice_port_and_protocol() {
    let s = svc(
        "dns",
        "ClusterIP",
        "10.96.0.53",
        vec![port("dns", "UDP", 53, None), port("dns-tcp", "TCP", 53, None)],
    );
    let sl = slice(
        "dns",
        &[("dns-tcp", "TCP", 5353), ("dns", "UDP", 5354)],
        &[ready("10.244.0.9")],
    );
    let r = desired_ruleset(&[s], &[sl], &cfg());
    let udp: Vec<_> = r
        .all()
        .iter()
        .filter_map(|e| match e {
            Element::ServiceEndpoint {
                dst, endpoint_port, ..
            } => Some((dst.protocol, *endpoint_port)),
            _ => None,
        })
        .collect();
    assert!(udp.contains(&(Protocol::Udp, 5354)));
    assert!(udp.contains(&(Protocol::Tcp, 5353)));
    assert!(!udp.contains(&(Protocol::Udp, 5353)));
}

#[test]
fn terminating_fallback_only_when_nothing_is_ready() {
    let s = svc("web", "ClusterIP", "10.96.0.10", vec![port("", "TCP", 80, None)]);
    let term = ("10.244.0.5", Some(false), Some(true), Some(true));
    let not_serving = ("10.244.0.6", Some(false), Some(false), Some(true));
    let sl = slice(
        "web",
        &[("", "TCP", 80)],
        &[ready("10.244.0.4"), term, not_serving],
    );
    let r = desired_ruleset(std::slice::from_ref(&s), &[sl], &cfg());
    let eps = endpoints_of(&r, [10, 96, 0, 10], 80);
    assert!(eps.iter().all(|e| e.1 == Ipv4Addr::new(10, 244, 0, 4)));

    let sl = slice("web", &[("", "TCP", 80)], &[term, not_serving]);
    let r = desired_ruleset(&[s], &[sl], &cfg());
    let eps = endpoints_of(&r, [10, 96, 0, 10], 80);
    assert_eq!(eps.len(), 4);
    assert!(eps.iter().all(|e| e.1 == Ipv4Addr::new(10, 244, 0, 5)));
}

#[test]
fn service_without_endpoints_is_rejected_not_balanced() {
    let s = svc(
        "empty",
        "NodePort",
        "10.96.0.11",
        vec![port("", "TCP", 80, Some(30080))],
    );
    let r = desired_ruleset(&[s], &[], &cfg());
    assert!(endpoints_of(&r, [10, 96, 0, 11], 80).is_empty());
    assert!(r.all().contains(&Element::NoEndpointService(Destination {
        ip: Ipv4Addr::new(10, 96, 0, 11),
        protocol: Protocol::Tcp,
        port: 80
    })));
    assert!(r.all().contains(&Element::NoEndpointService(Destination {
        ip: Ipv4Addr::new(192, 168, 1, 10),
        protocol: Protocol::Tcp,
        port: 30080
    })));
}

#[test]
fn node_port_external_ip_and_load_balancer_ip_are_balanced_and_masqueraded() {
    let mut s = svc(
        "lb",
        "LoadBalancer",
        "10.96.0.12",
        vec![port("", "TCP", 443, Some(30443))],
    );
    if let Some(spec) = s.spec.as_mut() {
        spec.external_ips = Some(vec!["203.0.113.7".into()]);
    }
    s.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("198.51.100.1".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    let sl = slice("lb", &[("", "TCP", 8443)], &[ready("10.244.0.7")]);
    let r = desired_ruleset(&[s], &[sl], &cfg());
    for (ip, p) in [
        ([192, 168, 1, 10], 30443),
        ([203, 0, 113, 7], 443),
        ([198, 51, 100, 1], 443),
    ] {
        assert_eq!(endpoints_of(&r, ip, p).len(), 4, "{ip:?}:{p}");
        assert!(r.all().contains(&Element::ExternalService(Destination {
            ip: Ipv4Addr::from(ip),
            protocol: Protocol::Tcp,
            port: p
        })));
    }
}

#[test]
fn node_port_ignored_for_cluster_ip_type() {
    let s = svc(
        "c",
        "ClusterIP",
        "10.96.0.13",
        vec![port("", "TCP", 80, Some(30001))],
    );
    let sl = slice("c", &[("", "TCP", 80)], &[ready("10.244.0.8")]);
    let r = desired_ruleset(&[s], &[sl], &cfg());
    assert!(endpoints_of(&r, [192, 168, 1, 10], 30001).is_empty());
}

#[test]
fn headless_and_external_name_yield_nothing() {
    let h = svc("h", "ClusterIP", "None", vec![port("", "TCP", 80, None)]);
    let mut e = svc("e", "ExternalName", "", vec![]);
    if let Some(spec) = e.spec.as_mut() {
        spec.external_name = Some("example.com".into());
    }
    let sl = slice("h", &[("", "TCP", 80)], &[ready("10.244.0.8")]);
    assert!(desired_ruleset(&[h, e], &[sl], &cfg()).is_empty());
}

#[test]
fn bad_services_are_skipped_without_affecting_others() {
    let bad_ip = svc(
        "bad-ip",
        "ClusterIP",
        "10.96.0.999",
        vec![port("", "TCP", 80, None)],
    );
    let bad_port = svc(
        "bad-port",
        "ClusterIP",
        "10.96.0.20",
        vec![port("", "TCP", 0, None)],
    );
    let bad_proto = svc(
        "bad-proto",
        "ClusterIP",
        "10.96.0.21",
        vec![port("", "ICMP", 1, None)],
    );
    let good = svc("good", "ClusterIP", "10.96.0.22", vec![port("", "TCP", 80, None)]);
    let sl = slice("good", &[("", "TCP", 80)], &[ready("10.244.0.8")]);
    assert_eq!(
        service_elements(&bad_port, &[], &cfg()),
        Err(ServiceError::BadPort(0, 0))
    );
    assert!(matches!(
        service_elements(&bad_ip, &[], &cfg()),
        Err(ServiceError::BadClusterIp(_))
    ));
    let r = desired_ruleset(&[bad_ip, bad_port, bad_proto, good], &[sl], &cfg());
    assert_eq!(endpoints_of(&r, [10, 96, 0, 22], 80).len(), 4);
    assert!(
        r.all()
            .iter()
            .all(|e| !matches!(e, Element::ClusterIp(ip) if *ip != Ipv4Addr::new(10, 96, 0, 22)))
    );
}

#[test]
fn changing_one_service_touches_only_its_elements() {
    let mk = |n: u8| {
        svc(
            &format!("s{n}"),
            "ClusterIP",
            &format!("10.96.1.{n}"),
            vec![port("", "TCP", 80, None)],
        )
    };
    let services: Vec<_> = (1..=50).map(mk).collect();
    let slices: Vec<_> = (1..=50)
        .map(|n| {
            slice(
                &format!("s{n}"),
                &[("", "TCP", 80)],
                &[ready(&format!("10.244.2.{n}"))],
            )
        })
        .collect();
    let before = desired_ruleset(&services, &slices, &cfg());
    let mut slices2 = slices.clone();
    slices2[9] = slice(
        "s10",
        &[("", "TCP", 80)],
        &[ready("10.244.2.10"), ready("10.244.3.1")],
    );
    let after = desired_ruleset(&services, &slices2, &cfg());
    let change = crate::diff::diff(&before, &after);
    assert_eq!(
        crate::diff::diff_services(
            &before,
            &after,
            &[("default".to_string(), "s10".to_string())].into()
        ),
        change
    );
    assert!(!change.is_empty());
    for e in change.delete.iter().chain(&change.add) {
        match e {
            Element::ServiceEndpoint { dst, .. } => assert_eq!(dst.ip, Ipv4Addr::new(10, 96, 1, 10)),
            other => panic!("unexpected change {other:?}"),
        }
    }
    // 2 of 4 buckets move to the new endpoint: 2 deletes + 2 adds.
    assert_eq!(change.len(), 4);
}

#[test]
fn ports_with_more_endpoints_than_buckets_use_the_large_map() {
    let s = svc("big", "ClusterIP", "10.96.0.50", vec![port("", "TCP", 80, None)]);
    let ips: Vec<String> = (0..20).map(|i| format!("10.244.5.{i}")).collect();
    let eps: Vec<Ep> = ips.iter().map(|ip| ready(ip)).collect();
    let sl = slice("big", &[("", "TCP", 80)], &eps);
    let r = desired_ruleset(&[s], &[sl], &cfg());
    assert!(endpoints_of(&r, [10, 96, 0, 50], 80).is_empty());
    let large: Vec<Ipv4Addr> = r
        .all()
        .iter()
        .filter_map(|e| match e {
            Element::LargeServiceEndpoint { endpoint, .. } => Some(*endpoint),
            _ => None,
        })
        .collect();
    assert_eq!(large.len(), LARGE_BUCKETS as usize);
    let distinct: BTreeSet<_> = large.iter().collect();
    assert_eq!(distinct.len(), 20);
    // 256 buckets over 20 endpoints: 12 or 13 each.
    for ip in distinct {
        let n = large.iter().filter(|e| *e == ip).count();
        assert!((12..=13).contains(&n), "{ip}: {n}");
    }
}
