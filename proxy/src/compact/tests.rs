use super::*;
use k8s_openapi::api::discovery::v1::EndpointConditions;

/// A LoadBalancer Service as an API server returns it: everything set, most of it irrelevant to
/// the proxy.
fn full_service() -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "web", "namespace": "shop", "uid": "5d0c3f4e-1111-2222-3333-444455556666",
            "resourceVersion": "4711", "generation": 3,
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\": \"blob\"}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}}}}]
        },
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "selector": {"app": "web"},
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http", "nodePort": 30080,
                 "appProtocol": "http"},
                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353, "nodePort": 30053}
            ],
            "externalIPs": ["192.0.2.7"],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Cluster",
            "healthCheckNodePort": 32000,
            "loadBalancerSourceRanges": ["198.51.100.0/24"],
            "allocateLoadBalancerNodePorts": true
        },
        "status": {
            "loadBalancer": {"ingress": [
                {"ip": "203.0.113.9", "ipMode": "VIP", "ports": [{"port": 80, "protocol": "TCP"}]},
                {"hostname": "lb.example.com"}
            ]},
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-02T03:04:05Z",
                            "reason": "Ok", "message": "ok"}]
        }
    }))
    .unwrap()
}

fn full_slice() -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "web-x7k2p", "namespace": "shop", "generateName": "web-",
            "uid": "aaaa", "resourceVersion": "4712",
            "labels": {"kubernetes.io/service-name": "web",
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2025-01-02T03:04:06Z",
                            "other": "x"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "5d0c"}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.1.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
             "nodeName": "node-a", "zone": "z1", "hostname": "web-0",
             "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "p0"},
             "hints": {"forZones": [{"name": "z1"}]}},
            {"addresses": ["10.244.2.6"], "conditions": {"ready": false, "serving": true, "terminating": true},
             "nodeName": "node-b",
             "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "p1"}}
        ],
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"},
            {"name": "dns", "protocol": "UDP", "port": 5353}
        ]
    }))
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_service_is_projected_onto_what_the_model_reads() {
    let p = service(&full_service());
    assert_eq!(p.key, ("shop".to_string(), "web".to_string()));
    let info = p.value.unwrap();
    assert_eq!(info.cluster_ips, vec![ip("10.96.0.10")]);
    // externalIPs, then the ingress IPs; the hostname-only ingress carries no IP to program.
    assert_eq!(info.external_ips, vec![ip("192.0.2.7"), ip("203.0.113.9")]);
    assert_eq!(info.lb_ips, vec![ip("203.0.113.9")]);
    assert_eq!(
        info.ports,
        vec![
            PortInfo {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30080)
            },
            PortInfo {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 53,
                node_port: Some(30053)
            },
        ]
    );
    assert!(info.node_ports && info.external_local && !info.internal_local);
    assert_eq!(info.affinity, Some(60));
    assert_eq!(info.source_ranges, vec![(ip("198.51.100.0"), 24)]);
    assert_eq!(info.health_check_port, Some(32000));
}

#[test]
fn a_slice_is_projected_with_upstreams_condition_defaults() {
    let p = endpoint_slice(&full_slice());
    assert_eq!(p.key, ("shop".to_string(), "web-x7k2p".to_string()));
    let sl = p.value;
    assert_eq!(sl.service.as_deref(), Some("web"));
    assert_eq!(sl.trigger, Some("2025-01-02T03:04:06Z".parse().unwrap()));
    assert_eq!(sl.family, Some(Family::V4));
    assert_eq!(sl.ports.len(), 2);
    assert_eq!(
        (&*sl.ports[1].name, sl.ports[1].protocol, sl.ports[1].port),
        ("dns", Some(Protocol::Udp), Some(5353))
    );
    assert_eq!(
        sl.endpoints[1],
        EndpointInfo {
            address: ip("10.244.2.6"),
            ready: false,
            serving: true,
            terminating: true,
            node_name: Some("node-b".into()),
        }
    );

    // Missing conditions: ready, serving = ready, not terminating.
    let mut bare = full_slice();
    bare.endpoints[0].conditions = None;
    bare.endpoints[1].conditions = Some(EndpointConditions {
        ready: Some(false),
        ..Default::default()
    });
    let sl = endpoint_slice(&bare).value;
    assert!(sl.endpoints[0].ready && sl.endpoints[0].serving && !sl.endpoints[0].terminating);
    assert!(!sl.endpoints[1].ready && !sl.endpoints[1].serving);
    // Node names are shared between endpoints.
    let (a, b) = (
        endpoint_slice(&full_slice()).value,
        endpoint_slice(&full_slice()).value,
    );
    assert!(Arc::ptr_eq(
        a.endpoints[0].node_name.as_ref().unwrap(),
        b.endpoints[0].node_name.as_ref().unwrap()
    ));
}

#[test]
fn endpoints_use_their_first_address_and_bad_ones_are_dropped() {
    let mut s = full_slice();
    s.endpoints[0].addresses = vec!["10.244.1.7".into(), "10.244.1.8".into()];
    let sl = endpoint_slice(&s).value;
    assert_eq!(sl.endpoints[0].address, ip("10.244.1.7"));
    for bad in ["not-an-ip", "fd00::1"] {
        s.endpoints[0].addresses = vec![bad.into(), "10.244.1.7".into()];
        let sl = endpoint_slice(&s).value;
        assert_eq!(sl.endpoints.len(), 1, "{bad}: the endpoint is dropped");
        assert_eq!(sl.endpoints[0].address, ip("10.244.2.6"));
    }
    s.endpoints[0].addresses = Vec::new();
    assert_eq!(endpoint_slice(&s).value.endpoints.len(), 1);

    s.address_type = "FQDN".into();
    let sl = endpoint_slice(&s).value;
    assert_eq!((sl.family, sl.endpoints.len()), (None, 0));
}

#[test]
fn an_unprogrammable_service_is_kept_as_its_error() {
    let mut s = full_service();
    s.spec.as_mut().unwrap().ports.as_mut().unwrap()[1].port = 0;
    assert_eq!(service(&s).value, Err(ServiceError::BadPort(1, 0)));
    let mut s = full_service();
    s.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.300".into()]);
    assert!(matches!(service(&s).value, Err(ServiceError::BadClusterIp(_))));
    let mut s = full_service();
    s.spec.as_mut().unwrap().session_affinity_config = None;
    assert_eq!(
        service(&s).value.unwrap().affinity,
        Some(DEFAULT_AFFINITY_TIMEOUT)
    );
}

#[test]
fn headless_and_external_name_services_have_no_cluster_ips() {
    let mut s = full_service();
    s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    // Even an invalid port does not matter: nothing is programmed for it.
    s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 0;
    let info = service(&s).value.unwrap();
    assert!(info.cluster_ips.is_empty() && info.ports.is_empty());
    let mut s = full_service();
    s.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    assert!(service(&s).value.unwrap().cluster_ips.is_empty());
}

#[test]
fn node_ports_and_the_local_policy_need_an_externally_accessible_service() {
    let mut s = full_service();
    let spec = s.spec.as_mut().unwrap();
    spec.type_ = Some("ClusterIP".into());
    spec.external_ips = None;
    let info = service(&s).value.unwrap();
    assert!(info.lb_ips.is_empty() && info.external_ips.is_empty());
    assert!(info.ports.iter().all(|p| p.node_port.is_none()));
    assert!(!info.node_ports && !info.external_local);
}

#[test]
fn a_change_only_in_fields_not_read_is_no_change() {
    let mut a = full_service();
    let mut b = full_service();
    a.metadata.resource_version = Some("1".into());
    b.metadata.resource_version = Some("2".into());
    b.spec.as_mut().unwrap().selector = Some([("app".to_string(), "other".to_string())].into());
    assert_eq!(service(&a), service(&b));

    let mut c = full_slice();
    c.endpoints[0].target_ref = None;
    c.metadata.resource_version = Some("9".into());
    assert_eq!(endpoint_slice(&c), endpoint_slice(&full_slice()));
}

#[test]
fn events_are_mapped_object_by_object() {
    let e = event(Event::Apply(full_slice()), ProjectedSlice::from);
    let Event::Apply(sl) = e else {
        panic!("variant changed")
    };
    assert_eq!(sl.value.endpoints.len(), 2);
    assert!(matches!(
        event(Event::<Service>::InitDone, ProjectedService::from),
        Event::InitDone
    ));
}
