//! Services + EndpointSlices → the desired nftables ruleset (pure, no I/O).
//!
//! The ruleset is flat (see the crate README): every load-balanced destination is a handful of elements
//! in one data map, `service-endpoints`, keyed by (destination IP . protocol . port . bucket) and mapping
//! to (endpoint IP . port). A packet's bucket is `numgen random mod B`, so each of the B buckets carries
//! 1/B of the new connections; endpoints are spread over the buckets round-robin. Everything a Service
//! contributes is a set of [`Element`]s, so a change to one Service changes only its own elements.
//!
//! Both families are modelled: each element carries its addresses, a Service contributes per
//! family (its `clusterIPs`, the EndpointSlices of that `addressType`, the node addresses of that
//! family), and [`Ruleset::family`] splits the result for the `ip` and `ip6` tables.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::compact::{self, PortInfo, ProjectedService, ProjectedSlice, ServiceInfo, SliceInfo};

mod element_set;
pub use element_set::ElementSet;

/// Label that ties an EndpointSlice to its Service (upstream `discovery.k8s.io` convention).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Default number of buckets per service port: endpoint weights have 1/B granularity, and a service
/// uses at most B endpoints. 16 keeps 10k services at 160k map elements (linear, measured).
pub const DEFAULT_BUCKETS: u32 = 16;

/// Buckets for service ports with more endpoints than [`ModelConfig::buckets`]: those go to the
/// `service-endpoints-large` map (looked up first; a miss falls through to the small map), so big
/// Services use up to 256 endpoints while the common case stays at 16 elements per port.
pub const LARGE_BUCKETS: u32 = 256;

/// Transport protocols kube-proxy load-balances (IP protocol numbers as `meta l4proto` sees them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The name `nft` uses.
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// A Kubernetes `protocol` field (absent = TCP); None for protocols kube-proxy does not serve.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// An IP family (upstream `ipFamilies`): one table per family, `ip` and `ip6 kube-proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The EndpointSlice `addressType` of this family.
    pub fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// Address length in bytes.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// A destination kube-proxy answers for: IP . protocol . port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub ip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// One element of one of the table's maps or sets. Its variant names the map/set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// `service-endpoints` map: (dst . proto . port . bucket) → (endpoint IP . port).
    ServiceEndpoint {
        dst: Destination,
        bucket: u32,
        endpoint: IpAddr,
        endpoint_port: u16,
    },
    /// `service-endpoints-large` map: as `ServiceEndpoint`, with [`LARGE_BUCKETS`] buckets, for
    /// ports with more endpoints than the small map's buckets.
    LargeServiceEndpoint {
        dst: Destination,
        bucket: u32,
        endpoint: IpAddr,
        endpoint_port: u16,
    },
    /// `service-ips` set: destinations with endpoints whose off-cluster-sourced traffic is masqueraded
    /// (ClusterIPs).
    ServiceIp(Destination),
    /// `external-services` set: destinations whose traffic is always masqueraded (NodePorts, external
    /// IPs and LoadBalancer ingress IPs with externalTrafficPolicy Cluster), as upstream does.
    ExternalService(Destination),
    /// `no-endpoint-services` set: destinations without usable endpoints, rejected with ICMP
    /// port-unreachable (a TCP client sees "connection refused" at once).
    NoEndpointService(Destination),
    /// `cluster-ips` set: every ClusterIP, as upstream.
    ClusterIp(IpAddr),
    /// `service-endpoints-local` map: as `ServiceEndpoint`, holding only node-local endpoints, for
    /// external destinations of Services with `externalTrafficPolicy: Local` (used for traffic
    /// that neither comes from a pod nor from the node itself).
    LocalServiceEndpoint {
        dst: Destination,
        bucket: u32,
        endpoint: IpAddr,
        endpoint_port: u16,
    },
    /// `external-local-services` set: external destinations with `externalTrafficPolicy: Local`
    /// and endpoints somewhere. Traffic to them keeps its source IP; pod traffic short-circuits to
    /// all endpoints and node-originated traffic is masqueraded to all endpoints, as upstream.
    ExternalLocalService(Destination),
    /// `no-local-endpoint-services` set: destinations whose traffic policy is Local but that have
    /// no node-local endpoint (while other nodes have some): dropped, as upstream.
    NoLocalEndpointService(Destination),
    /// `service-affinity` verdict map: destinations with `sessionAffinity: ClientIP`, jumping to
    /// the `affinity-<timeout>` chain of their `timeoutSeconds` (reuse a recorded choice).
    AffinityService { dst: Destination, timeout: u32 },
    /// `service-affinity-record` verdict map: the same destinations, looked up by the original
    /// destination in nat-postrouting, jumping to `affinity-record-<timeout>` (record the
    /// endpoint the new connection was DNATed to, refreshing the timeout).
    AffinityRecord { dst: Destination, timeout: u32 },
    /// `affinity-endpoints` set: (destination . endpoint) pairs an affinity entry may still send
    /// to; an entry pointing elsewhere (the endpoint went away) is deleted and a new choice made.
    AffinityEndpoint {
        dst: Destination,
        endpoint: IpAddr,
        endpoint_port: u16,
    },
    /// `hairpin-endpoints` set: (endpoint . endpoint) for every endpoint IP, so a pod that reaches
    /// itself through a Service is masqueraded (upstream's `ip saddr <endpoint> jump
    /// mark-for-masquerade`). Shared between the Services using the endpoint: see
    /// [`Element::is_shared`].
    HairpinEndpoint(IpAddr),
    /// `firewall-ips` set: LoadBalancer ingress destinations with `loadBalancerSourceRanges`;
    /// new connections from other sources are dropped.
    FirewallService(Destination),
    /// `firewall-allow` set: (destination . source network . prefix length) allowed through.
    FirewallAllow {
        dst: Destination,
        net: IpAddr,
        prefix: u8,
    },
}

/// The three maps that pick an endpoint by bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketMap {
    /// `service-endpoints` ([`Element::ServiceEndpoint`]).
    Small,
    /// `service-endpoints-large` ([`Element::LargeServiceEndpoint`]).
    Large,
    /// `service-endpoints-local` ([`Element::LocalServiceEndpoint`]).
    Local,
}

/// The fields of an element of a [`BucketMap`]: (dst . bucket) → (endpoint . port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketEntry {
    pub dst: Destination,
    pub bucket: u32,
    pub endpoint: IpAddr,
    pub endpoint_port: u16,
}

impl BucketEntry {
    /// The element of this entry in `map`.
    pub fn element(self, map: BucketMap) -> Element {
        let BucketEntry {
            dst,
            bucket,
            endpoint,
            endpoint_port,
        } = self;
        match map {
            BucketMap::Small => Element::ServiceEndpoint {
                dst,
                bucket,
                endpoint,
                endpoint_port,
            },
            BucketMap::Large => Element::LargeServiceEndpoint {
                dst,
                bucket,
                endpoint,
                endpoint_port,
            },
            BucketMap::Local => Element::LocalServiceEndpoint {
                dst,
                bucket,
                endpoint,
                endpoint_port,
            },
        }
    }
}

impl Element {
    /// For the elements of the bucket maps, the map and the entry's fields (one place to match
    /// the three alike variants); None for every other kind.
    pub fn bucket_entry(&self) -> Option<(BucketMap, BucketEntry)> {
        let (map, dst, bucket, endpoint, endpoint_port) = match *self {
            Element::ServiceEndpoint {
                dst,
                bucket,
                endpoint,
                endpoint_port,
            } => (BucketMap::Small, dst, bucket, endpoint, endpoint_port),
            Element::LargeServiceEndpoint {
                dst,
                bucket,
                endpoint,
                endpoint_port,
            } => (BucketMap::Large, dst, bucket, endpoint, endpoint_port),
            Element::LocalServiceEndpoint {
                dst,
                bucket,
                endpoint,
                endpoint_port,
            } => (BucketMap::Local, dst, bucket, endpoint, endpoint_port),
            _ => return None,
        };
        let entry = BucketEntry {
            dst,
            bucket,
            endpoint,
            endpoint_port,
        };
        Some((map, entry))
    }

    /// The name of the map/set this element lives in.
    pub fn set_name(&self) -> &'static str {
        match self {
            Element::ServiceEndpoint { .. } => SERVICE_ENDPOINTS,
            Element::LargeServiceEndpoint { .. } => SERVICE_ENDPOINTS_LARGE,
            Element::ServiceIp(_) => SERVICE_IPS,
            Element::ExternalService(_) => EXTERNAL_SERVICES,
            Element::NoEndpointService(_) => NO_ENDPOINT_SERVICES,
            Element::ClusterIp(_) => CLUSTER_IPS,
            Element::LocalServiceEndpoint { .. } => SERVICE_ENDPOINTS_LOCAL,
            Element::ExternalLocalService(_) => EXTERNAL_LOCAL_SERVICES,
            Element::NoLocalEndpointService(_) => NO_LOCAL_ENDPOINT_SERVICES,
            Element::AffinityService { .. } => SERVICE_AFFINITY,
            Element::AffinityRecord { .. } => SERVICE_AFFINITY_RECORD,
            Element::AffinityEndpoint { .. } => AFFINITY_ENDPOINTS,
            Element::HairpinEndpoint(_) => HAIRPIN_ENDPOINTS,
            Element::FirewallService(_) => FIREWALL_IPS,
            Element::FirewallAllow { .. } => FIREWALL_ALLOW,
        }
    }

    /// The IP family (table) this element belongs to.
    pub fn family(&self) -> Family {
        match self {
            Element::ClusterIp(ip) | Element::HairpinEndpoint(ip) => Family::of(ip),
            other => other.destination().map_or(Family::V4, |d| Family::of(&d.ip)),
        }
    }

    /// The destination the element serves, for all but the per-IP sets (`cluster-ips`,
    /// `hairpin-endpoints`).
    pub fn destination(&self) -> Option<Destination> {
        match self {
            Element::ClusterIp(_) | Element::HairpinEndpoint(_) => None,
            Element::ServiceEndpoint { dst, .. }
            | Element::LargeServiceEndpoint { dst, .. }
            | Element::LocalServiceEndpoint { dst, .. }
            | Element::AffinityService { dst, .. }
            | Element::AffinityRecord { dst, .. }
            | Element::AffinityEndpoint { dst, .. }
            | Element::FirewallAllow { dst, .. }
            | Element::ServiceIp(dst)
            | Element::ExternalService(dst)
            | Element::NoEndpointService(dst)
            | Element::ExternalLocalService(dst)
            | Element::NoLocalEndpointService(dst)
            | Element::FirewallService(dst) => Some(*dst),
        }
    }

    /// True for elements several Services may contribute at once (an endpoint IP behind two
    /// Services): they are programmed while at least one Service wants them (reference counted
    /// by the programmer) instead of being owned by one.
    pub fn is_shared(&self) -> bool {
        self.shared_key().is_some()
    }

    /// The reference-count key of a shared element: hairpin elements, one per endpoint IP, are
    /// the only shared kind.
    pub fn shared_key(&self) -> Option<IpAddr> {
        match self {
            Element::HairpinEndpoint(ip) => Some(*ip),
            _ => None,
        }
    }
}

pub const SERVICE_ENDPOINTS: &str = "service-endpoints";
pub const SERVICE_ENDPOINTS_LARGE: &str = "service-endpoints-large";
pub const SERVICE_IPS: &str = "service-ips";
pub const EXTERNAL_SERVICES: &str = "external-services";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const CLUSTER_IPS: &str = "cluster-ips";
pub const SERVICE_ENDPOINTS_LOCAL: &str = "service-endpoints-local";
pub const EXTERNAL_LOCAL_SERVICES: &str = "external-local-services";
pub const NO_LOCAL_ENDPOINT_SERVICES: &str = "no-local-endpoint-services";
pub const SERVICE_AFFINITY: &str = "service-affinity";
pub const SERVICE_AFFINITY_RECORD: &str = "service-affinity-record";
pub const AFFINITY_ENDPOINTS: &str = "affinity-endpoints";
pub const HAIRPIN_ENDPOINTS: &str = "hairpin-endpoints";
pub const FIREWALL_IPS: &str = "firewall-ips";
pub const FIREWALL_ALLOW: &str = "firewall-allow";

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// Upstream's maximum `timeoutSeconds` (1 day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// Node-level settings the model needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Buckets per service port (`numgen random mod B`).
    pub buckets: u32,
    /// The node's addresses NodePorts are served on (upstream `--nodeport-addresses`, resolved).
    pub node_ips: Vec<IpAddr>,
    /// This node's name (`--hostname-override`): endpoints whose `nodeName` equals it are
    /// node-local for the Local traffic policies. None: no endpoint is local.
    pub node_name: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            buckets: DEFAULT_BUCKETS,
            node_ips: Vec::new(),
            node_name: None,
        }
    }
}

/// The desired content of the table's maps and sets, grouped by the Service that owns each element.
/// Chains and rules are fixed per configuration (see [`crate::nft`]), so the whole per-Service state
/// is its element set; grouping lets a change to one Service be diffed and applied without looking
/// at the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub by_service: BTreeMap<ServiceKey, ElementSet>,
}

impl Ruleset {
    /// Every element of every Service (O(n); for inspection and tests).
    pub fn all(&self) -> BTreeSet<Element> {
        self.by_service.values().flatten().collect()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.by_service.values().map(ElementSet::len).sum()
    }

    /// True when no Service contributes anything.
    pub fn is_empty(&self) -> bool {
        self.by_service.values().all(ElementSet::is_empty)
    }

    /// The elements of one IP family (one table), for the named Services or (None) all.
    pub fn family(&self, family: Family, only: Option<&BTreeSet<ServiceKey>>) -> Ruleset {
        let pick = |els: &ElementSet| -> ElementSet { els.iter().filter(|e| e.family() == family).collect() };
        let by_service = match only {
            None => self
                .by_service
                .iter()
                .map(|(k, v)| (k.clone(), pick(v)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            Some(keys) => keys
                .iter()
                .filter_map(|k| Some((k.clone(), pick(self.by_service.get(k)?))))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        };
        Ruleset { by_service }
    }
}

/// A Service's identity: namespace/name.
pub type ServiceKey = (String, String);

/// The identity of a Service object.
pub fn service_key(svc: &Service) -> ServiceKey {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// An endpoint usable for one service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Backend {
    ip: IpAddr,
    port: u16,
    /// On this node (EndpointSlice `nodeName` == the node's name).
    local: bool,
}

/// Builds the desired ruleset from a snapshot of API objects (projected first, see
/// [`crate::compact`]). Bad Services are skipped with a warning naming them and the field; they
/// never fail the whole sync.
pub fn desired_ruleset<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    config: &ModelConfig,
) -> Ruleset {
    let slices: Vec<ProjectedSlice> = slices.into_iter().map(compact::endpoint_slice).collect();
    let by_service = group_slices(&slices);
    let services: Vec<ProjectedService> = services.into_iter().map(compact::service).collect();
    assemble(
        services.iter().map(|s| (&s.key, &s.value)),
        |key| by_service.get(key).cloned().unwrap_or_default(),
        config,
    )
}

/// The desired ruleset of projected Services, in the order given; `slices_of` yields a Service's
/// EndpointSlices. Services that failed projection are skipped (they were logged then).
pub fn assemble<'a, 'b>(
    services: impl IntoIterator<Item = (&'a ServiceKey, &'a Result<ServiceInfo, ServiceError>)>,
    slices_of: impl Fn(&ServiceKey) -> Vec<&'b SliceInfo>,
    config: &ModelConfig,
) -> Ruleset {
    let mut ruleset = Ruleset::default();
    // A destination (IP . protocol . port) claimed by two Services (e.g. the same external IP
    // and port) is kept for the first only: the kernel holds one value per map key. Claims are
    // per destination, not per element (two Services' buckets for one destination differ in
    // value), and a set of destinations stays small beside the elements.
    let mut claimed: HashSet<Destination> = HashSet::new();
    for (key, svc) in services {
        let Ok(svc) = svc else {
            continue;
        };
        let mut els = elements(svc, &slices_of(key), config);
        let mine: BTreeSet<Destination> = els.iter().filter_map(Element::destination).collect();
        let taken: BTreeSet<Destination> = mine.iter().filter(|d| claimed.contains(d)).copied().collect();
        for dst in &taken {
            tracing::warn!(service = %format!("{}/{}", key.0, key.1), destination = ?dst, "destination already claimed by another Service; skipped");
        }
        if !taken.is_empty() {
            els.retain(|e| e.destination().is_none_or(|d| !taken.contains(&d)));
        }
        claimed.extend(mine.difference(&taken));
        let mine: ElementSet = els.into_iter().collect();
        if !mine.is_empty() {
            ruleset.by_service.insert(key.clone(), mine);
        }
    }
    ruleset
}

/// Why a Service was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("spec.clusterIP {0:?} is not an IP address")]
    BadClusterIp(String),
    #[error("spec.ports[{0}].port {1} is out of range (1-65535)")]
    BadPort(usize, i32),
    #[error("spec.ports[{0}].nodePort {1} is out of range (1-65535)")]
    BadNodePort(usize, i32),
    #[error("spec.ports[{0}].protocol {1:?} is not TCP, UDP or SCTP")]
    BadProtocol(usize, String),
    #[error("spec.externalIPs entry {0:?} is not an IP address")]
    BadExternalIp(String),
    #[error("spec.sessionAffinityConfig.clientIP.timeoutSeconds {0} is out of range (1-86400)")]
    BadAffinityTimeout(i32),
}

/// Projected EndpointSlices grouped by the Service they belong to (label
/// `kubernetes.io/service-name`, in the slice's namespace).
pub fn group_slices<'a>(
    slices: impl IntoIterator<Item = &'a ProjectedSlice>,
) -> BTreeMap<ServiceKey, Vec<&'a SliceInfo>> {
    let mut map: BTreeMap<ServiceKey, Vec<&SliceInfo>> = BTreeMap::new();
    for slice in slices {
        if let Some(svc) = &slice.value.service {
            map.entry((slice.key.0.clone(), svc.to_string()))
                .or_default()
                .push(&slice.value);
        }
    }
    map
}

/// The elements of one Service given as API objects (both families), or why it is skipped.
/// Headless and ExternalName Services yield no elements.
pub fn service_elements(
    svc: &Service,
    slices: &[&EndpointSlice],
    config: &ModelConfig,
) -> Result<Vec<Element>, ServiceError> {
    let info = compact::service_info(svc)?;
    let slices: Vec<SliceInfo> = slices.iter().map(|s| compact::endpoint_slice(s).value).collect();
    Ok(elements(&info, &slices.iter().collect::<Vec<_>>(), config))
}

/// The elements of one projected Service (both families).
pub fn elements(svc: &ServiceInfo, slices: &[&SliceInfo], config: &ModelConfig) -> Vec<Element> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        // Dual-stack: each family's table serves its own ClusterIP.
        let Some(&cluster_ip) = svc.cluster_ips.iter().find(|ip| Family::of(ip) == family) else {
            continue;
        };
        let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
            ips.iter()
                .copied()
                .filter(|ip| Family::of(ip) == family)
                .collect()
        };
        let external_ips = of_family(&svc.external_ips);
        let lb_ips = of_family(&svc.lb_ips);
        let node_ips = of_family(&config.node_ips);
        let source_ranges = if lb_ips.is_empty() {
            Vec::new()
        } else {
            firewall_sources(&svc.source_ranges, &lb_ips, &node_ips, family)
        };
        out.push(Element::ClusterIp(cluster_ip));
        port_elements(
            svc,
            slices,
            config,
            family,
            PortContext {
                cluster_ip,
                external_ips: &external_ips,
                lb_ips: &lb_ips,
                node_ips: &node_ips,
                source_ranges: &source_ranges,
            },
            &mut out,
        );
    }
    out
}

/// The addresses a Service's ports share within one family.
struct PortContext<'a> {
    cluster_ip: IpAddr,
    external_ips: &'a [IpAddr],
    lb_ips: &'a [IpAddr],
    node_ips: &'a [IpAddr],
    source_ranges: &'a [(IpAddr, u8)],
}

/// The elements of every port of a Service in one family.
fn port_elements(
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
    config: &ModelConfig,
    family: Family,
    cx: PortContext<'_>,
    out: &mut Vec<Element>,
) {
    let PortContext {
        cluster_ip,
        external_ips,
        lb_ips,
        node_ips,
        source_ranges,
    } = cx;
    let affinity = svc.affinity;
    for port in &svc.ports {
        let protocol = port.protocol;
        let (backends, local) = backends_for_port(port, slices, config.node_name.as_deref(), family);

        let cluster_dst = Destination {
            ip: cluster_ip,
            protocol,
            port: port.port,
        };
        let mut external_dsts: Vec<Destination> = external_ips
            .iter()
            .map(|&ip| Destination {
                ip,
                protocol,
                port: port.port,
            })
            .collect();
        if let Some(np) = port.node_port {
            external_dsts.extend(node_ips.iter().map(|&ip| Destination {
                ip,
                protocol,
                port: np,
            }));
        }

        if !source_ranges.is_empty() {
            for &ip in lb_ips {
                let dst = Destination {
                    ip,
                    protocol,
                    port: port.port,
                };
                out.push(Element::FirewallService(dst));
                out.extend(source_ranges.iter().map(|&(net, prefix)| Element::FirewallAllow {
                    dst,
                    net,
                    prefix,
                }));
            }
        }
        out.extend(backends.iter().map(|b| Element::HairpinEndpoint(b.ip)));
        if backends.is_empty() {
            out.push(Element::NoEndpointService(cluster_dst));
            out.extend(external_dsts.into_iter().map(Element::NoEndpointService));
            continue;
        }
        // ClusterIP traffic: all endpoints, or only local ones with internalTrafficPolicy Local
        // (none local: dropped, as upstream).
        let internal = if svc.internal_local { &local } else { &backends };
        if internal.is_empty() {
            out.push(Element::NoLocalEndpointService(cluster_dst));
        } else {
            out.push(Element::ServiceIp(cluster_dst));
            push_buckets(out, cluster_dst, internal, config.buckets);
            push_affinity(out, cluster_dst, internal, affinity);
        }
        for dst in external_dsts {
            // The cluster-wide buckets also serve Local-policy destinations: pod traffic is
            // short-circuited to them and node traffic goes to them masqueraded (upstream).
            push_buckets(out, dst, &backends, config.buckets);
            push_affinity(out, dst, &backends, affinity);
            if !svc.external_local {
                out.push(Element::ExternalService(dst));
                continue;
            }
            out.push(Element::ExternalLocalService(dst));
            if local.is_empty() {
                out.push(Element::NoLocalEndpointService(dst));
            } else {
                push_local_buckets(out, dst, &local, config.buckets);
                push_affinity(out, dst, &local, affinity);
            }
        }
    }
}

/// `loadBalancerSourceRanges` of one family as (network, prefix length). As upstream, when a
/// range contains one of the node's addresses, the LoadBalancer IPs themselves are allowed as
/// sources too (a VIP bound locally loops the node's own requests back with the VIP as source).
fn firewall_sources(
    ranges: &[(IpAddr, u8)],
    lb_ips: &[IpAddr],
    node_ips: &[IpAddr],
    family: Family,
) -> Vec<(IpAddr, u8)> {
    let mut out = BTreeSet::new();
    let mut allow_from_node = false;
    for &(addr, prefix) in ranges.iter().filter(|(a, _)| Family::of(a) == family) {
        let net = mask_ip(addr, prefix);
        if node_ips.iter().any(|ip| mask_ip(*ip, prefix) == net) {
            allow_from_node = true;
        }
        out.insert((net, prefix));
    }
    if allow_from_node {
        out.extend(lb_ips.iter().map(|ip| (*ip, family.addr_len() as u8 * 8)));
    }
    out.into_iter().collect()
}

/// The IPv4 netmask of a prefix length (0..=32).
pub fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

/// The network of `ip` with `prefix` bits kept.
pub fn mask_ip(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & prefix_mask(prefix))),
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

fn push_affinity(out: &mut Vec<Element>, dst: Destination, backends: &[Backend], timeout: Option<u32>) {
    let Some(timeout) = timeout else {
        return;
    };
    // Set semantics dedupe the entry when the cluster and local lists overlap.
    out.push(Element::AffinityService { dst, timeout });
    out.push(Element::AffinityRecord { dst, timeout });
    out.extend(backends.iter().map(|b| Element::AffinityEndpoint {
        dst,
        endpoint: b.ip,
        endpoint_port: b.port,
    }));
}

/// Local endpoints of a Local-policy destination, in `service-endpoints-local` (B buckets; a
/// node rarely has more local endpoints of one Service than that, the rest are logged and unused).
fn push_local_buckets(out: &mut Vec<Element>, dst: Destination, local: &[Backend], buckets: u32) {
    let buckets = buckets.max(1);
    if local.len() > buckets as usize {
        tracing::warn!(destination = ?dst, endpoints = local.len(), used = buckets, "more local endpoints than buckets; only the first receive external traffic");
    }
    fill_buckets(out, dst, local, buckets, BucketMap::Local);
}

/// `n` buckets of `map` for `dst`, the backends assigned to them round-robin.
fn fill_buckets(out: &mut Vec<Element>, dst: Destination, backends: &[Backend], n: u32, map: BucketMap) {
    out.extend((0..n).map(|bucket| {
        let b = backends[bucket as usize % backends.len()];
        BucketEntry {
            dst,
            bucket,
            endpoint: b.ip,
            endpoint_port: b.port,
        }
        .element(map)
    }));
}

fn push_buckets(out: &mut Vec<Element>, dst: Destination, backends: &[Backend], buckets: u32) {
    let buckets = buckets.max(1);
    if backends.len() <= buckets as usize {
        fill_buckets(out, dst, backends, buckets, BucketMap::Small);
        return;
    }
    if backends.len() > LARGE_BUCKETS as usize {
        tracing::warn!(
            destination = ?dst,
            endpoints = backends.len(),
            used = LARGE_BUCKETS,
            "more endpoints than buckets; only the first {LARGE_BUCKETS} receive traffic"
        );
    }
    fill_buckets(out, dst, backends, LARGE_BUCKETS, BucketMap::Large);
}

/// The target port of Service port `port` in a slice: the first slice port with its name and
/// protocol (named ports) and a valid number.
fn target_port(slice: &SliceInfo, port: &PortInfo) -> Option<u16> {
    slice
        .ports
        .iter()
        .filter(|p| p.name == port.name && p.protocol == Some(port.protocol))
        .find_map(|p| p.port)
}

/// The endpoints a service port sends to, cluster-wide and node-local, with upstream's condition
/// handling per category: ready endpoints; if there are none, serving-and-terminating ones
/// (graceful termination fallback).
fn backends_for_port(
    port: &PortInfo,
    slices: &[&SliceInfo],
    node_name: Option<&str>,
    family: Family,
) -> (Vec<Backend>, Vec<Backend>) {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices.iter().filter(|s| s.family == Some(family)) {
        let Some(target_port) = target_port(slice, port) else {
            continue;
        };
        for ep in &slice.endpoints {
            let b = Backend {
                ip: ep.address,
                port: target_port,
                local: node_name.is_some() && ep.node_name.as_deref() == node_name,
            };
            if ep.ready && !ep.terminating {
                ready.insert(b);
            } else if ep.serving && ep.terminating {
                terminating.insert(b);
            }
        }
    }
    let pick = |only_local: bool| -> Vec<Backend> {
        let r: Vec<Backend> = ready.iter().copied().filter(|b| !only_local || b.local).collect();
        if !r.is_empty() {
            return r;
        }
        terminating
            .iter()
            .copied()
            .filter(|b| !only_local || b.local)
            .collect()
    };
    (pick(false), pick(true))
}

/// What the service health server reports for a Service with `externalTrafficPolicy: Local` and
/// a `healthCheckNodePort` (upstream pkg/proxy/healthcheck/service_health.go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub port: u16,
    /// Node-local ready endpoints (distinct address:port over the Service's ports).
    pub local_endpoints: usize,
}

/// The health check of a Service given as API objects, if it has one (see [`service_health`]).
pub fn health_check(
    svc: &Service,
    slices: &[&EndpointSlice],
    node_name: Option<&str>,
) -> Option<HealthCheck> {
    let info = compact::service_info(svc).ok()?;
    let slices: Vec<SliceInfo> = slices.iter().map(|s| compact::endpoint_slice(s).value).collect();
    service_health(&info, &slices.iter().collect::<Vec<_>>(), node_name)
}

/// The health check of a projected Service, if it has one: `externalTrafficPolicy: Local` and a
/// valid `healthCheckNodePort`.
pub fn service_health(
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
    node_name: Option<&str>,
) -> Option<HealthCheck> {
    let port = svc.health_check_port?;
    let Some(node_name) = node_name else {
        return Some(HealthCheck {
            port,
            local_endpoints: 0,
        });
    };
    // Distinct address:port of ready local endpoints over the Service's ports, as upstream's
    // `LocalReadyEndpoints` (no terminating fallback here).
    let mut local: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
    for slice in slices.iter().filter(|s| s.family.is_some()) {
        for sp in &svc.ports {
            let Some(target) = target_port(slice, sp) else {
                continue;
            };
            for ep in &slice.endpoints {
                if ep.ready && ep.node_name.as_deref() == Some(node_name) {
                    local.insert((ep.address, target));
                }
            }
        }
    }
    Some(HealthCheck {
        port,
        local_endpoints: local.len(),
    })
}

#[cfg(test)]
mod tests;
