//! Watched objects trimmed to the fields kube-proxy reads (pure).
//!
//! The watch caches hold every Service and EndpointSlice of the cluster for as long as the proxy
//! runs; at 10k Services most of an object is metadata and fields no sync looks at (managedFields,
//! ownerReferences, selectors, endpoints' targetRefs, …). Each object is projected onto what the
//! model ([`crate::model`]), the sync tracker and the health checks read before it is kept, so
//! the caches cost a fraction of the full objects, and a change only in a dropped field (a new
//! `resourceVersion`, a label) is no change at all.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;

use crate::model::SERVICE_NAME_LABEL;
use crate::sync::LAST_CHANGE_TRIGGER_TIME;

/// Namespace and name only.
fn identity(meta: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        ..ObjectMeta::default()
    }
}

/// Keeps only the entry `key` of a label/annotation map.
fn only(map: Option<BTreeMap<String, String>>, key: &str) -> Option<BTreeMap<String, String>> {
    let v = map?.remove(key)?;
    Some(BTreeMap::from([(key.to_string(), v)]))
}

/// A Service with what the model and the health checks read: identity, the spec fields that
/// shape rules (type, ClusterIPs, ports with their names/protocols/NodePorts, externalIPs,
/// affinity, traffic policies, source ranges, healthCheckNodePort) and the LoadBalancer ingress
/// IPs.
pub fn service(svc: Service) -> Service {
    let spec = svc.spec.map(|s| ServiceSpec {
        type_: s.type_,
        cluster_ip: s.cluster_ip,
        cluster_ips: s.cluster_ips,
        external_ips: s.external_ips,
        ports: s.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| ServicePort {
                    name: p.name,
                    protocol: p.protocol,
                    port: p.port,
                    node_port: p.node_port,
                    ..ServicePort::default()
                })
                .collect()
        }),
        session_affinity: s.session_affinity,
        session_affinity_config: s.session_affinity_config,
        external_traffic_policy: s.external_traffic_policy,
        internal_traffic_policy: s.internal_traffic_policy,
        load_balancer_source_ranges: s.load_balancer_source_ranges,
        health_check_node_port: s.health_check_node_port,
        ..ServiceSpec::default()
    });
    let ingress: Vec<LoadBalancerIngress> = svc
        .status
        .and_then(|st| st.load_balancer)
        .and_then(|lb| lb.ingress)
        .into_iter()
        .flatten()
        .filter(|i| i.ip.is_some())
        .map(|i| LoadBalancerIngress {
            ip: i.ip,
            ..LoadBalancerIngress::default()
        })
        .collect();
    Service {
        metadata: identity(svc.metadata),
        spec,
        status: (!ingress.is_empty()).then(|| ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(ingress),
            }),
            ..ServiceStatus::default()
        }),
    }
}

/// An EndpointSlice with its Service label, its `last-change-trigger-time` annotation, address
/// type, ports and endpoints (addresses, conditions, node name).
pub fn endpoint_slice(slice: EndpointSlice) -> EndpointSlice {
    let mut meta = slice.metadata;
    let labels = only(meta.labels.take(), SERVICE_NAME_LABEL);
    let annotations = only(meta.annotations.take(), LAST_CHANGE_TRIGGER_TIME);
    EndpointSlice {
        metadata: ObjectMeta {
            labels,
            annotations,
            ..identity(meta)
        },
        address_type: slice.address_type,
        endpoints: slice
            .endpoints
            .into_iter()
            .map(|e| Endpoint {
                addresses: e.addresses,
                conditions: e.conditions,
                node_name: e.node_name,
                ..Endpoint::default()
            })
            .collect(),
        ports: slice.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| EndpointPort {
                    name: p.name,
                    protocol: p.protocol,
                    port: p.port,
                    ..EndpointPort::default()
                })
                .collect()
        }),
    }
}

/// Applies `f` to the object an event carries.
pub fn event<K>(e: Event<K>, f: fn(K) -> K) -> Event<K> {
    match e {
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests;
