//! Watched objects projected onto what kube-proxy reads, parsed once (pure).
//!
//! The watch caches hold every Service and EndpointSlice of the cluster for as long as the proxy
//! runs. A k8s-openapi `Service` is ~0.8 KB before any string and an `EndpointSlice` endpoint
//! ~0.35 KB, mostly fields no sync looks at; at 10k Services the caches alone were ~60 MiB. Each
//! object is therefore projected, when it arrives, onto a small plain type — [`ServiceInfo`],
//! [`SliceInfo`] — with its addresses and ports already parsed:
//!
//! - a Service that cannot be programmed (unparseable ClusterIP, port 0, …) is found out once, at
//!   ingest, and logged once, instead of at every sync; it is kept as its [`ServiceError`] so the
//!   tracker still knows it exists;
//! - a change only in a field kube-proxy does not read (a new `resourceVersion`, a label) projects
//!   to the same value and is no change at all.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;

use crate::model::{
    DEFAULT_AFFINITY_TIMEOUT, Family, MAX_AFFINITY_TIMEOUT, Protocol, SERVICE_NAME_LABEL, ServiceError,
    ServiceKey,
};
use crate::sync::LAST_CHANGE_TRIGGER_TIME;

/// A Service as the model reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// One ClusterIP per family (`clusterIPs`, else `clusterIP`). Empty for headless and
    /// ExternalName Services, which contribute no rules.
    pub cluster_ips: Vec<IpAddr>,
    /// `externalIPs` followed by the LoadBalancer ingress IPs.
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress IPs (`type: LoadBalancer` only; entries without a valid IP skipped).
    pub lb_ips: Vec<IpAddr>,
    pub ports: Vec<PortInfo>,
    /// `type` NodePort or LoadBalancer: the ports' NodePorts are served.
    pub node_ports: bool,
    /// `externalTrafficPolicy: Local` on an externally accessible Service.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity: Option<u32>,
    /// `loadBalancerSourceRanges` as (address, prefix length), unmasked.
    pub source_ranges: Vec<(IpAddr, u8)>,
    /// `healthCheckNodePort` of a Service with `externalTrafficPolicy: Local`.
    pub health_check_port: Option<u16>,
}

/// One Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port name ("" when unnamed), matched against the EndpointSlice ports.
    pub name: Box<str>,
    pub protocol: Protocol,
    pub port: u16,
    /// Only for Services that serve NodePorts.
    pub node_port: Option<u16>,
}

/// An EndpointSlice as the model and the tracker read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceInfo {
    /// The Service it belongs to (label `kubernetes.io/service-name`), in the slice's namespace.
    pub service: Option<Box<str>>,
    /// Upstream's `last-change-trigger-time` annotation.
    pub trigger: Option<jiff::Timestamp>,
    /// The `addressType`'s family; None for FQDN slices, which kube-proxy ignores.
    pub family: Option<Family>,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<EndpointInfo>,
}

/// One EndpointSlice port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: Box<str>,
    /// None: a protocol kube-proxy does not serve (matches no Service port).
    pub protocol: Option<Protocol>,
    /// None when missing or out of range.
    pub port: Option<u16>,
}

/// One endpoint, with upstream's defaults for missing conditions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Its first address, as upstream uses (`addresses[0]`; the API allows only one).
    pub address: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Interned: a cluster has few nodes and every endpoint names one.
    pub node_name: Option<Arc<str>>,
}

/// A watched object's identity (namespace, name) and its projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projected<T> {
    pub key: ServiceKey,
    pub value: T,
}

/// A projected Service: what the model reads, or why the Service cannot be programmed.
pub type ProjectedService = Projected<Result<ServiceInfo, ServiceError>>;
/// A projected EndpointSlice.
pub type ProjectedSlice = Projected<SliceInfo>;

fn object_key(meta: &ObjectMeta) -> ServiceKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl From<Service> for ProjectedService {
    fn from(svc: Service) -> Self {
        service(&svc)
    }
}

impl From<EndpointSlice> for ProjectedSlice {
    fn from(slice: EndpointSlice) -> Self {
        endpoint_slice(&slice)
    }
}

/// Projects a Service; an invalid one is logged here, once per change.
pub fn service(svc: &Service) -> ProjectedService {
    let key = object_key(&svc.metadata);
    let value = service_info(svc);
    if let Err(e) = &value {
        tracing::warn!(service = %format!("{}/{}", key.0, key.1), error = %e, "skipping Service");
    }
    Projected { key, value }
}

/// The model's view of a Service, or the first field that makes it unprogrammable.
pub fn service_info(svc: &Service) -> Result<ServiceInfo, ServiceError> {
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(ServiceInfo::default());
    };
    let health_check_port = (spec.external_traffic_policy.as_deref() == Some("Local"))
        .then(|| spec.health_check_node_port.and_then(valid_port))
        .flatten();
    let headless = matches!(spec.cluster_ip.as_deref(), None | Some("") | Some("None"));
    if spec.type_.as_deref() == Some("ExternalName") || headless {
        return Ok(ServiceInfo {
            health_check_port,
            ..ServiceInfo::default()
        });
    }
    // Dual-stack: `clusterIPs` lists one ClusterIP per family (`clusterIP` first).
    let listed = match spec.cluster_ips.as_deref() {
        Some(l) if !l.is_empty() => l,
        _ => spec.cluster_ip.as_slice(),
    };
    let cluster_ips = listed
        .iter()
        .map(|s| s.parse().map_err(|_| ServiceError::BadClusterIp(s.clone())))
        .collect::<Result<Vec<IpAddr>, _>>()?;
    let mut external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .map(|s| s.parse().map_err(|_| ServiceError::BadExternalIp(s.clone())))
        .collect::<Result<Vec<IpAddr>, _>>()?;
    // LoadBalancer ingress IPs: a malformed status entry is the load balancer's problem, not the
    // Service's; skip just that entry.
    let mut lb_ips = Vec::new();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        lb_ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok()),
        );
        external_ips.extend(&lb_ips);
    }
    let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = Protocol::parse(p.protocol.as_deref())
            .ok_or_else(|| ServiceError::BadProtocol(i, p.protocol.clone().unwrap_or_default()))?;
        let port = valid_port(p.port).ok_or(ServiceError::BadPort(i, p.port))?;
        let node_port = match p.node_port {
            Some(np) if node_ports => Some(valid_port(np).ok_or(ServiceError::BadNodePort(i, np))?),
            _ => None,
        };
        ports.push(PortInfo {
            name: p.name.as_deref().unwrap_or_default().into(),
            protocol,
            port,
            node_port,
        });
    }
    // Upstream: the external policy applies to externally accessible Services only (NodePort,
    // LoadBalancer, or with externalIPs); the internal one to ClusterIP traffic.
    let externally_accessible = node_ports || !external_ips.is_empty();
    Ok(ServiceInfo {
        cluster_ips,
        external_ips,
        lb_ips,
        ports,
        node_ports,
        external_local: externally_accessible && spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        affinity: affinity_timeout(svc)?,
        source_ranges: source_ranges(spec.load_balancer_source_ranges.as_deref().unwrap_or_default()),
        health_check_port,
    })
}

/// `sessionAffinity: ClientIP` → its timeout (default 3 h); None without affinity.
fn affinity_timeout(svc: &Service) -> Result<Option<u32>, ServiceError> {
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(None);
    };
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return Ok(None);
    }
    let configured = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    match configured {
        None => Ok(Some(DEFAULT_AFFINITY_TIMEOUT)),
        Some(t) => u32::try_from(t)
            .ok()
            .filter(|t| (1..=MAX_AFFINITY_TIMEOUT).contains(t))
            .map(Some)
            .ok_or(ServiceError::BadAffinityTimeout(t)),
    }
}

/// `loadBalancerSourceRanges`; unparseable entries are skipped with a warning (the API server
/// validates them).
fn source_ranges(ranges: &[String]) -> Vec<(IpAddr, u8)> {
    ranges
        .iter()
        .filter_map(|r| {
            let parsed = r.trim().split_once('/').and_then(|(a, p)| {
                let a: IpAddr = a.parse().ok()?;
                let p: u8 = p
                    .parse()
                    .ok()
                    .filter(|p| usize::from(*p) <= Family::of(&a).addr_len() * 8)?;
                Some((a, p))
            });
            if parsed.is_none() {
                tracing::warn!(range = %r, "skipping unparseable spec.loadBalancerSourceRanges entry");
            }
            parsed
        })
        .collect()
}

/// A port number in 1..=65535.
pub fn valid_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|&p| p != 0)
}

/// Projects an EndpointSlice.
pub fn endpoint_slice(slice: &EndpointSlice) -> ProjectedSlice {
    let meta = &slice.metadata;
    let family = match slice.address_type.as_str() {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    };
    let trigger = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
        .and_then(|v| match v.parse() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!(value = %v, error = %e, "unparseable {LAST_CHANGE_TRIGGER_TIME}");
                None
            }
        });
    let endpoints = match family {
        None => Vec::new(),
        Some(family) => slice
            .endpoints
            .iter()
            .filter_map(|ep| {
                let first = ep.addresses.first()?;
                let address = match first.parse::<IpAddr>() {
                    Ok(ip) if Family::of(&ip) == family => ip,
                    _ => {
                        tracing::warn!(address = %first, address_type = %slice.address_type, "skipping unparseable endpoint address");
                        return None;
                    }
                };
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                Some(EndpointInfo {
                    address,
                    ready,
                    // A missing `serving` is `ready`; a missing `terminating` false (upstream).
                    serving: cond.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                    node_name: ep.node_name.as_deref().map(node_name),
                })
            })
            .collect(),
    };
    Projected {
        key: object_key(meta),
        value: SliceInfo {
            service: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(|s| s.as_str().into()),
            trigger,
            family,
            ports: slice
                .ports
                .iter()
                .flatten()
                .map(|p| SlicePort {
                    name: p.name.as_deref().unwrap_or_default().into(),
                    protocol: Protocol::parse(p.protocol.as_deref()),
                    port: p.port.and_then(valid_port),
                })
                .collect(),
            endpoints,
        },
    }
}

/// The shared copy of a node name.
fn node_name(name: &str) -> Arc<str> {
    static NAMES: LazyLock<Mutex<HashSet<Arc<str>>>> = LazyLock::new(Mutex::default);
    let Ok(mut names) = NAMES.lock() else {
        return name.into();
    };
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = name.into();
    names.insert(n.clone());
    n
}

/// Maps the object an event carries.
pub fn event<K, T>(e: Event<K>, f: impl Fn(K) -> T) -> Event<T> {
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
