use super::*;
use crate::model::{ModelConfig, health_check, service_elements};

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

#[test]
fn compact_objects_give_the_same_rules_and_health_checks() {
    let config = ModelConfig {
        node_ips: vec!["192.168.1.10".parse().unwrap()],
        node_name: Some("node-a".into()),
        ..ModelConfig::default()
    };
    let (svc, sl) = (full_service(), full_slice());
    let (small_svc, small_sl) = (service(svc.clone()), endpoint_slice(sl.clone()));
    let full = service_elements(&svc, &[&sl], &config).unwrap();
    assert!(full.len() > 10, "the fixture must exercise the model: {full:?}");
    assert_eq!(service_elements(&small_svc, &[&small_sl], &config).unwrap(), full);
    assert_eq!(
        health_check(&small_svc, &[&small_sl], Some("node-a")),
        health_check(&svc, &[&sl], Some("node-a"))
    );
    assert!(health_check(&small_svc, &[&small_sl], Some("node-a")).is_some());
}

#[test]
fn compact_objects_drop_what_no_sync_reads() {
    let svc = service(full_service());
    assert_eq!(svc.metadata.name.as_deref(), Some("web"));
    assert_eq!(svc.metadata.namespace.as_deref(), Some("shop"));
    assert!(svc.metadata.managed_fields.is_none() && svc.metadata.annotations.is_none());
    assert!(svc.metadata.labels.is_none() && svc.metadata.resource_version.is_none());
    let spec = svc.spec.as_ref().unwrap();
    assert!(spec.selector.is_none() && spec.ip_families.is_none());
    assert!(
        spec.ports
            .iter()
            .flatten()
            .all(|p| p.target_port.is_none() && p.app_protocol.is_none())
    );
    let status = svc.status.as_ref().unwrap();
    assert!(status.conditions.is_none());
    let ingress = status.load_balancer.as_ref().unwrap().ingress.as_ref().unwrap();
    assert_eq!(ingress.len(), 1, "hostname-only ingress carries no IP to program");
    assert!(ingress[0].ports.is_none() && ingress[0].ip_mode.is_none());

    let sl = endpoint_slice(full_slice());
    assert_eq!(
        sl.metadata.labels,
        Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into())
    );
    assert_eq!(
        sl.metadata.annotations,
        Some(
            [(
                LAST_CHANGE_TRIGGER_TIME.to_string(),
                "2025-01-02T03:04:06Z".to_string()
            )]
            .into()
        )
    );
    assert!(sl.metadata.owner_references.is_none() && sl.metadata.managed_fields.is_none());
    assert!(
        sl.endpoints
            .iter()
            .all(|e| e.target_ref.is_none() && e.zone.is_none() && e.hints.is_none() && e.hostname.is_none())
    );
    assert_eq!(sl.endpoints[1].node_name.as_deref(), Some("node-b"));
}

#[test]
fn a_change_only_in_dropped_fields_is_no_change() {
    let mut a = full_service();
    let mut b = full_service();
    a.metadata.resource_version = Some("1".into());
    b.metadata.resource_version = Some("2".into());
    b.spec.as_mut().unwrap().selector = Some([("app".to_string(), "other".to_string())].into());
    assert_eq!(service(a), service(b));

    // A Service without LoadBalancer IPs keeps no status at all.
    let mut c = full_service();
    c.status = None;
    assert!(service(c).status.is_none());
}

#[test]
fn events_are_mapped_object_by_object() {
    let e = event(Event::Apply(full_slice()), endpoint_slice);
    let Event::Apply(sl) = e else {
        panic!("variant changed")
    };
    assert!(sl.metadata.managed_fields.is_none());
    assert!(matches!(
        event(Event::<Service>::InitDone, service),
        Event::InitDone
    ));
}
