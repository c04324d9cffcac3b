use super::*;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

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

fn endpoints_of(r: &Ruleset, ip: [u8; 4], port: u16) -> Vec<(u32, IpAddr, u16)> {
    r.all()
        .iter()
        .filter_map(|e| match e {
            Element::ServiceEndpoint {
                dst,
                bucket,
                endpoint,
                endpoint_port,
            } if dst.ip == IpAddr::from(ip) && dst.port == port => Some((*bucket, *endpoint, *endpoint_port)),
            _ => None,
        })
        .collect()
}

fn cfg() -> ModelConfig {
    ModelConfig {
        buckets: 4,
        node_ips: vec![ip4(192, 168, 1, 10)],
        node_name: Some("node-a".into()),
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
    let a = ip4(10, 244, 0, 2);
    let b = ip4(10, 244, 0, 3);
    assert_eq!(eps.iter().filter(|e| e.1 == a).count(), 2);
    assert_eq!(eps.iter().filter(|e| e.1 == b).count(), 2);
    assert!(eps.iter().all(|e| e.2 == 8080));
    assert!(r.all().contains(&Element::ClusterIp(ip4(10, 96, 0, 10))));
    assert!(r.all().contains(&Element::ServiceIp(Destination {
        ip: ip4(10, 96, 0, 10),
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
    assert!(eps.iter().all(|e| e.1 == ip4(10, 244, 0, 4)));

    let sl = slice("web", &[("", "TCP", 80)], &[term, not_serving]);
    let r = desired_ruleset(&[s], &[sl], &cfg());
    let eps = endpoints_of(&r, [10, 96, 0, 10], 80);
    assert_eq!(eps.len(), 4);
    assert!(eps.iter().all(|e| e.1 == ip4(10, 244, 0, 5)));
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
        ip: ip4(10, 96, 0, 11),
        protocol: Protocol::Tcp,
        port: 80
    })));
    assert!(r.all().contains(&Element::NoEndpointService(Destination {
        ip: ip4(192, 168, 1, 10),
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
            ip: IpAddr::from(ip),
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
            .all(|e| !matches!(e, Element::ClusterIp(ip) if *ip != ip4(10, 96, 0, 22)))
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
            Element::ServiceEndpoint { dst, .. } => assert_eq!(dst.ip, ip4(10, 96, 1, 10)),
            Element::HairpinEndpoint(ip) => assert_eq!(*ip, ip4(10, 244, 3, 1)),
            other => panic!("unexpected change {other:?}"),
        }
    }
    // 2 of 4 buckets move to the new endpoint: 2 deletes + 2 adds, and its hairpin element.
    assert_eq!(change.len(), 5);
}

#[test]
fn ports_with_more_endpoints_than_buckets_use_the_large_map() {
    let s = svc("big", "ClusterIP", "10.96.0.50", vec![port("", "TCP", 80, None)]);
    let ips: Vec<String> = (0..20).map(|i| format!("10.244.5.{i}")).collect();
    let eps: Vec<Ep> = ips.iter().map(|ip| ready(ip)).collect();
    let sl = slice("big", &[("", "TCP", 80)], &eps);
    let r = desired_ruleset(&[s], &[sl], &cfg());
    assert!(endpoints_of(&r, [10, 96, 0, 50], 80).is_empty());
    let large: Vec<IpAddr> = r
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

fn dst(ip: [u8; 4], port: u16) -> Destination {
    Destination {
        ip: IpAddr::from(ip),
        protocol: Protocol::Tcp,
        port,
    }
}

/// A slice whose endpoints carry `nodeName`s.
fn slice_on_nodes(service: &str, eps: &[(&str, &str)]) -> EndpointSlice {
    let mut s = slice(
        service,
        &[("", "TCP", 8080)],
        &eps.iter().map(|(ip, _)| ready(ip)).collect::<Vec<_>>(),
    );
    for (e, (_, node)) in s.endpoints.iter_mut().zip(eps) {
        e.node_name = Some(node.to_string());
    }
    s
}

fn local_endpoints_of(r: &Ruleset, d: Destination) -> BTreeSet<IpAddr> {
    r.all()
        .iter()
        .filter_map(|e| match e {
            Element::LocalServiceEndpoint { dst, endpoint, .. } if *dst == d => Some(*endpoint),
            _ => None,
        })
        .collect()
}

#[test]
fn session_affinity_client_ip_dispatches_by_timeout_and_lists_valid_endpoints() {
    use k8s_openapi::api::core::v1::{ClientIPConfig, SessionAffinityConfig};
    let mut s = svc(
        "aff",
        "NodePort",
        "10.96.0.40",
        vec![port("", "TCP", 80, Some(30080))],
    );
    let spec = s.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    let sl = slice(
        "aff",
        &[("", "TCP", 8080)],
        &[ready("10.244.0.1"), ready("10.244.0.2")],
    );
    let r = desired_ruleset(std::slice::from_ref(&s), std::slice::from_ref(&sl), &cfg());
    let all = r.all();
    for d in [dst([10, 96, 0, 40], 80), dst([192, 168, 1, 10], 30080)] {
        assert!(all.contains(&Element::AffinityService {
            dst: d,
            timeout: DEFAULT_AFFINITY_TIMEOUT
        }));
        for ep in [[10, 244, 0, 1], [10, 244, 0, 2]] {
            assert!(all.contains(&Element::AffinityEndpoint {
                dst: d,
                endpoint: IpAddr::from(ep),
                endpoint_port: 8080
            }));
        }
    }

    s.spec.as_mut().unwrap().session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(30),
        }),
    });
    let r = desired_ruleset(std::slice::from_ref(&s), std::slice::from_ref(&sl), &cfg());
    assert!(r.all().contains(&Element::AffinityService {
        dst: dst([10, 96, 0, 40], 80),
        timeout: 30
    }));

    // Out of range: the Service is skipped with an error naming the field.
    s.spec.as_mut().unwrap().session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(0),
        }),
    });
    let err = service_elements(&s, &[&sl], &cfg()).unwrap_err();
    assert!(err.to_string().contains("timeoutSeconds"), "{err}");

    // No affinity without ClientIP.
    s.spec.as_mut().unwrap().session_affinity = Some("None".into());
    let r = desired_ruleset(&[s], &[sl], &cfg());
    assert!(!r.all().iter().any(|e| matches!(
        e,
        Element::AffinityService { .. } | Element::AffinityEndpoint { .. }
    )));
}

#[test]
fn external_traffic_policy_local_uses_local_endpoints_for_external_traffic_only() {
    let mut s = svc(
        "etp",
        "NodePort",
        "10.96.0.41",
        vec![port("", "TCP", 80, Some(30081))],
    );
    s.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    let sl = slice_on_nodes("etp", &[("10.244.0.1", "node-a"), ("10.244.1.1", "node-b")]);
    let r = desired_ruleset(std::slice::from_ref(&s), std::slice::from_ref(&sl), &cfg());
    let all = r.all();
    let np = dst([192, 168, 1, 10], 30081);
    // External traffic: the local endpoint only, source kept (not in external-services).
    assert_eq!(local_endpoints_of(&r, np), [ip4(10, 244, 0, 1)].into());
    assert!(all.contains(&Element::ExternalLocalService(np)));
    assert!(!all.contains(&Element::ExternalService(np)));
    // Pod and node traffic short-circuit to every endpoint through the cluster buckets.
    let cluster: BTreeSet<IpAddr> = endpoints_of(&r, [192, 168, 1, 10], 30081)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(cluster.len(), 2);
    // ClusterIP traffic is not affected by the external policy.
    assert_eq!(endpoints_of(&r, [10, 96, 0, 41], 80).len(), 4);
    assert!(all.contains(&Element::ServiceIp(dst([10, 96, 0, 41], 80))));

    // No local endpoint: external traffic is dropped, the ClusterIP still balances.
    let remote = slice_on_nodes("etp", &[("10.244.1.1", "node-b")]);
    let r = desired_ruleset(std::slice::from_ref(&s), &[remote], &cfg());
    let all = r.all();
    assert!(local_endpoints_of(&r, np).is_empty());
    assert!(all.contains(&Element::NoLocalEndpointService(np)));
    assert!(all.contains(&Element::ExternalLocalService(np)));
    assert!(!all.contains(&Element::NoEndpointService(np)));
    assert_eq!(endpoints_of(&r, [10, 96, 0, 41], 80).len(), 4);

    // ClusterIP-type Services are not externally accessible: the policy does not apply.
    let mut c = svc("etp", "ClusterIP", "10.96.0.41", vec![port("", "TCP", 80, None)]);
    c.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    let r = desired_ruleset(&[c], &[sl], &cfg());
    assert!(
        !r.all()
            .iter()
            .any(|e| matches!(e, Element::ExternalLocalService(_)))
    );
}

#[test]
fn internal_traffic_policy_local_keeps_cluster_ip_traffic_on_the_node() {
    let mut s = svc("itp", "ClusterIP", "10.96.0.42", vec![port("", "TCP", 80, None)]);
    s.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
    let sl = slice_on_nodes("itp", &[("10.244.0.1", "node-a"), ("10.244.1.1", "node-b")]);
    let r = desired_ruleset(std::slice::from_ref(&s), &[sl], &cfg());
    let eps: BTreeSet<IpAddr> = endpoints_of(&r, [10, 96, 0, 42], 80)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(eps, [ip4(10, 244, 0, 1)].into());

    let remote = slice_on_nodes("itp", &[("10.244.1.1", "node-b")]);
    let r = desired_ruleset(&[s], &[remote], &cfg());
    assert!(endpoints_of(&r, [10, 96, 0, 42], 80).is_empty());
    assert!(
        r.all()
            .contains(&Element::NoLocalEndpointService(dst([10, 96, 0, 42], 80)))
    );
}

#[test]
fn local_policy_falls_back_to_local_serving_terminating_endpoints() {
    let mut s = svc(
        "t",
        "NodePort",
        "10.96.0.43",
        vec![port("", "TCP", 80, Some(30083))],
    );
    s.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    let mut sl = slice(
        "t",
        &[("", "TCP", 8080)],
        &[
            ("10.244.0.1", Some(false), Some(true), Some(true)),
            ready("10.244.1.1"),
        ],
    );
    sl.endpoints[0].node_name = Some("node-a".into());
    sl.endpoints[1].node_name = Some("node-b".into());
    let r = desired_ruleset(&[s], &[sl], &cfg());
    // The only local endpoint is terminating but serving: used for Local traffic.
    assert_eq!(
        local_endpoints_of(&r, dst([192, 168, 1, 10], 30083)),
        [ip4(10, 244, 0, 1)].into()
    );
}

#[test]
fn health_check_counts_ready_local_endpoints() {
    let mut s = svc(
        "lb",
        "LoadBalancer",
        "10.96.0.44",
        vec![port("", "TCP", 80, Some(30084))],
    );
    let sl = slice_on_nodes(
        "lb",
        &[
            ("10.244.0.1", "node-a"),
            ("10.244.0.2", "node-a"),
            ("10.244.1.1", "node-b"),
        ],
    );
    assert_eq!(health_check(&s, &[&sl], Some("node-a")), None, "Cluster policy");
    let spec = s.spec.as_mut().unwrap();
    spec.external_traffic_policy = Some("Local".into());
    spec.health_check_node_port = Some(32000);
    assert_eq!(
        health_check(&s, &[&sl], Some("node-a")),
        Some(HealthCheck {
            port: 32000,
            local_endpoints: 2
        })
    );
    assert_eq!(
        health_check(&s, &[&sl], Some("node-c")),
        Some(HealthCheck {
            port: 32000,
            local_endpoints: 0
        })
    );
}

#[test]
fn every_endpoint_ip_is_a_shared_hairpin_element() {
    let a = svc("a", "ClusterIP", "10.96.0.50", vec![port("", "TCP", 80, None)]);
    let b = svc("b", "ClusterIP", "10.96.0.51", vec![port("", "TCP", 80, None)]);
    let sa = slice(
        "a",
        &[("", "TCP", 8080)],
        &[ready("10.244.0.1"), ready("10.244.0.2")],
    );
    let sb = slice("b", &[("", "TCP", 8080)], &[ready("10.244.0.1")]);
    let r = desired_ruleset(&[a, b], &[sa, sb], &cfg());
    let hp = Element::HairpinEndpoint(ip4(10, 244, 0, 1));
    assert!(hp.is_shared());
    // Both Services carry it (not claimed by the first): the programmer reference-counts it.
    for name in ["a", "b"] {
        let els = &r.by_service[&("default".to_string(), name.to_string())];
        assert!(els.contains(&hp), "{name}");
    }
}

#[test]
fn a_destination_two_services_claim_is_programmed_for_the_first_only() {
    let mut a = svc("a", "ClusterIP", "10.96.0.60", vec![port("", "TCP", 80, None)]);
    let mut b = svc("b", "ClusterIP", "10.96.0.61", vec![port("", "TCP", 80, None)]);
    for s in [&mut a, &mut b] {
        s.spec.as_mut().unwrap().external_ips = Some(vec!["203.0.113.50".into()]);
    }
    let sa = slice("a", &[("", "TCP", 8080)], &[ready("10.244.0.1")]);
    let sb = slice("b", &[("", "TCP", 8080)], &[ready("10.244.0.2")]);
    let r = desired_ruleset(&[a, b], &[sa, sb], &cfg());
    let ext = Destination {
        ip: ip4(203, 0, 113, 50),
        protocol: Protocol::Tcp,
        port: 80,
    };
    let owners = |dst: Destination| -> Vec<&str> {
        r.by_service
            .iter()
            .filter(|(_, els)| els.iter().any(|e| e.destination() == Some(dst)))
            .map(|(k, _)| k.1.as_str())
            .collect()
    };
    assert_eq!(owners(ext), vec!["a"]);
    // Each bucket of the shared destination has one value: a's endpoint.
    assert_eq!(endpoints_of(&r, [203, 0, 113, 50], 80).len(), 4);
    assert!(
        endpoints_of(&r, [203, 0, 113, 50], 80)
            .iter()
            .all(|(_, ip, _)| *ip == ip4(10, 244, 0, 1))
    );
    // b keeps its own ClusterIP.
    let cluster_b = Destination {
        ip: ip4(10, 96, 0, 61),
        ..ext
    };
    assert_eq!(owners(cluster_b), vec!["b"]);
}

#[test]
fn load_balancer_source_ranges_become_firewall_elements_for_ingress_ips_only() {
    let mut s = svc(
        "fw",
        "LoadBalancer",
        "10.96.0.52",
        vec![port("", "TCP", 80, Some(30052))],
    );
    let spec = s.spec.as_mut().unwrap();
    spec.load_balancer_source_ranges = Some(vec![
        "192.168.77.0/24".into(),
        "10.1.2.3/8".into(),
        "bogus".into(),
    ]);
    spec.external_ips = Some(vec!["203.0.113.8".into()]);
    s.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("198.51.100.2".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    let sl = slice("fw", &[("", "TCP", 8080)], &[ready("10.244.0.7")]);
    let r = desired_ruleset(std::slice::from_ref(&s), std::slice::from_ref(&sl), &cfg());
    let lb = dst([198, 51, 100, 2], 80);
    let fw: BTreeSet<Element> = r
        .all()
        .into_iter()
        .filter(|e| matches!(e, Element::FirewallService(_) | Element::FirewallAllow { .. }))
        .collect();
    let want: BTreeSet<Element> = [
        Element::FirewallService(lb),
        Element::FirewallAllow {
            dst: lb,
            net: ip4(192, 168, 77, 0),
            prefix: 24,
        },
        // Host bits are masked off.
        Element::FirewallAllow {
            dst: lb,
            net: ip4(10, 0, 0, 0),
            prefix: 8,
        },
    ]
    .into();
    assert_eq!(fw, want, "external IPs and NodePorts are not firewalled");

    // A range containing a node address also allows the LB IPs themselves (upstream).
    s.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["192.168.1.0/24".into()]);
    let r = desired_ruleset(&[s], &[sl], &cfg());
    assert!(r.all().contains(&Element::FirewallAllow {
        dst: lb,
        net: ip4(198, 51, 100, 2),
        prefix: 32
    }));
}

#[test]
fn dual_stack_service_yields_elements_per_family_from_matching_slices() {
    let mut s = svc(
        "ds",
        "NodePort",
        "10.96.0.60",
        vec![port("", "TCP", 80, Some(30060))],
    );
    let spec = s.spec.as_mut().unwrap();
    spec.cluster_ips = Some(vec!["10.96.0.60".into(), "fd00:96::60".into()]);
    spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    let v4 = slice("ds", &[("", "TCP", 8080)], &[ready("10.244.0.1")]);
    let mut v6 = slice("ds", &[("", "TCP", 8080)], &[ready("fd00:244::1")]);
    v6.address_type = "IPv6".into();
    v6.metadata.name = Some("ds-v6".into());
    let config = ModelConfig {
        node_ips: vec![ip4(192, 168, 1, 10), "fd00:77::1".parse().unwrap()],
        ..cfg()
    };
    let r = desired_ruleset(std::slice::from_ref(&s), &[v4, v6.clone()], &config);
    let v6_vip: IpAddr = "fd00:96::60".parse().unwrap();
    let v6_ep: IpAddr = "fd00:244::1".parse().unwrap();
    let eps = |r: &Ruleset, ip: IpAddr, port: u16| -> BTreeSet<IpAddr> {
        r.all()
            .iter()
            .filter_map(|e| match e {
                Element::ServiceEndpoint { dst, endpoint, .. } if dst.ip == ip && dst.port == port => {
                    Some(*endpoint)
                }
                _ => None,
            })
            .collect()
    };
    // Each family's ClusterIP and NodePort address balance over that family's endpoints only.
    assert_eq!(eps(&r, ip4(10, 96, 0, 60), 80), [ip4(10, 244, 0, 1)].into());
    assert_eq!(eps(&r, v6_vip, 80), [v6_ep].into());
    assert_eq!(eps(&r, "fd00:77::1".parse().unwrap(), 30060), [v6_ep].into());
    assert_eq!(eps(&r, ip4(192, 168, 1, 10), 30060), [ip4(10, 244, 0, 1)].into());
    let v6_only = r.family(Family::V6, None);
    assert!(v6_only.all().iter().all(|e| e.family() == Family::V6));
    assert!(v6_only.all().contains(&Element::ClusterIp(v6_vip)));
    assert!(!v6_only.all().contains(&Element::ClusterIp(ip4(10, 96, 0, 60))));

    // Single-stack IPv6: only the IPv6 table gets elements; an IPv4-only slice leaves it without
    // endpoints (rejected).
    let mut s6 = svc("v6", "ClusterIP", "fd00:96::61", vec![port("", "TCP", 80, None)]);
    s6.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
    let only4 = slice("v6", &[("", "TCP", 8080)], &[ready("10.244.0.2")]);
    let r = desired_ruleset(&[s6], &[only4], &config);
    assert!(r.all().iter().all(|e| e.family() == Family::V6));
    assert!(r.all().contains(&Element::NoEndpointService(Destination {
        ip: "fd00:96::61".parse().unwrap(),
        protocol: Protocol::Tcp,
        port: 80
    })));
}
