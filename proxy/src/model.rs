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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

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

    fn parse(s: Option<&str>) -> Option<Protocol> {
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

impl Element {
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
            | Element::FirewallService(dst) => Family::of(&dst.ip),
        }
    }

    /// True for elements several Services may contribute at once (an endpoint IP behind two
    /// Services): they are programmed while at least one Service wants them (reference counted
    /// by the programmer) instead of being owned by one.
    pub fn is_shared(&self) -> bool {
        matches!(self, Element::HairpinEndpoint(_))
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
    pub by_service: BTreeMap<ServiceKey, BTreeSet<Element>>,
}

impl Ruleset {
    /// Every element of every Service (O(n); for inspection and tests).
    pub fn all(&self) -> BTreeSet<Element> {
        self.by_service.values().flatten().copied().collect()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.by_service.values().map(BTreeSet::len).sum()
    }

    /// True when no Service contributes anything.
    pub fn is_empty(&self) -> bool {
        self.by_service.values().all(BTreeSet::is_empty)
    }

    /// The elements of one IP family (one table), for the named Services or (None) all.
    pub fn family(&self, family: Family, only: Option<&BTreeSet<ServiceKey>>) -> Ruleset {
        let pick = |els: &BTreeSet<Element>| -> BTreeSet<Element> {
            els.iter().filter(|e| e.family() == family).copied().collect()
        };
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

/// Builds the desired ruleset from a snapshot. Bad Services are skipped with a warning naming them
/// and the field; they never fail the whole sync.
pub fn desired_ruleset<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    config: &ModelConfig,
) -> Ruleset {
    let slices_by_service = group_slices(slices);
    let mut ruleset = Ruleset::default();
    // An element claimed by two Services (e.g. the same external IP and port) is kept for the first
    // only: the kernel holds one value per key.
    let mut claimed: BTreeSet<Element> = BTreeSet::new();
    for svc in services {
        let key = service_key(svc);
        let svc_slices = slices_by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        match service_elements(svc, svc_slices, config) {
            Ok(elements) => {
                let mine: BTreeSet<Element> = elements
                    .into_iter()
                    .filter(|e| {
                        if e.is_shared() {
                            return true;
                        }
                        let fresh = claimed.insert(*e);
                        if !fresh {
                            tracing::warn!(service = %format!("{}/{}", key.0, key.1), element = ?e, "element already claimed by another Service; skipped");
                        }
                        fresh
                    })
                    .collect();
                if !mine.is_empty() {
                    ruleset.by_service.insert(key, mine);
                }
            }
            Err(err) => tracing::warn!(
                service = %format!("{}/{}", key.0, key.1),
                error = %err,
                "skipping Service"
            ),
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

/// EndpointSlices grouped by the Service they belong to (label `kubernetes.io/service-name`).
pub fn group_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<ServiceKey, Vec<&'a EndpointSlice>> {
    let mut map: BTreeMap<ServiceKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        map.entry((ns, svc.clone())).or_default().push(slice);
    }
    map
}

/// The elements of one Service (both families), or why it is skipped. Headless and ExternalName
/// Services yield no elements.
pub fn service_elements(
    svc: &Service,
    slices: &[&EndpointSlice],
    config: &ModelConfig,
) -> Result<Vec<Element>, ServiceError> {
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(Vec::new());
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Vec::new());
    }
    if matches!(spec.cluster_ip.as_deref(), None | Some("") | Some("None")) {
        return Ok(Vec::new());
    }
    // Dual-stack: `clusterIPs` lists one ClusterIP per family (`clusterIP` first); each family's
    // table serves its own.
    let listed: Vec<String> = match spec.cluster_ips.as_ref().filter(|l| !l.is_empty()) {
        Some(l) => l.clone(),
        None => spec.cluster_ip.iter().cloned().collect(),
    };
    let mut cluster_ips = Vec::new();
    for s in &listed {
        cluster_ips.push(
            s.parse::<IpAddr>()
                .map_err(|_| ServiceError::BadClusterIp(s.clone()))?,
        );
    }
    let mut all_external_ips = Vec::new();
    let mut all_lb_ips = Vec::new();
    for s in spec.external_ips.iter().flatten() {
        match s.parse::<IpAddr>() {
            Ok(ip) => all_external_ips.push(ip),
            Err(_) => return Err(ServiceError::BadExternalIp(s.clone())),
        }
    }
    // LoadBalancer ingress IPs: a malformed status entry is the load balancer's problem, not the
    // Service's; skip just that entry.
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for ing in ingress.into_iter().flatten() {
            if let Some(Ok(ip)) = ing.ip.as_deref().map(str::parse::<IpAddr>) {
                all_external_ips.push(ip);
                all_lb_ips.push(ip);
            }
        }
    }
    let with_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    // Upstream: the external policy applies to externally accessible Services only (NodePort,
    // LoadBalancer, or with externalIPs); the internal one to ClusterIP traffic.
    let externally_accessible = with_node_ports || !all_external_ips.is_empty();
    let external_local = externally_accessible && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity = affinity_timeout(svc)?;

    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let Some(&cluster_ip) = cluster_ips.iter().find(|ip| Family::of(ip) == family) else {
            continue;
        };
        let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
            ips.iter()
                .copied()
                .filter(|ip| Family::of(ip) == family)
                .collect()
        };
        let external_ips = of_family(&all_external_ips);
        let lb_ips = of_family(&all_lb_ips);
        let node_ips = of_family(&config.node_ips);
        let source_ranges = if lb_ips.is_empty() {
            Vec::new()
        } else {
            firewall_sources(
                spec.load_balancer_source_ranges.as_deref().unwrap_or_default(),
                &lb_ips,
                &node_ips,
                family,
            )
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
                with_node_ports,
                external_local,
                internal_local,
                affinity,
            },
            &mut out,
        )?;
    }
    Ok(out)
}

/// What a Service's ports share within one family.
struct PortContext<'a> {
    cluster_ip: IpAddr,
    external_ips: &'a [IpAddr],
    lb_ips: &'a [IpAddr],
    node_ips: &'a [IpAddr],
    source_ranges: &'a [(IpAddr, u8)],
    with_node_ports: bool,
    external_local: bool,
    internal_local: bool,
    affinity: Option<u32>,
}

/// The elements of every port of a Service in one family.
fn port_elements(
    svc: &Service,
    slices: &[&EndpointSlice],
    config: &ModelConfig,
    family: Family,
    cx: PortContext<'_>,
    out: &mut Vec<Element>,
) -> Result<(), ServiceError> {
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(());
    };
    let PortContext {
        cluster_ip,
        external_ips,
        lb_ips,
        node_ips,
        source_ranges,
        with_node_ports,
        external_local,
        internal_local,
        affinity,
    } = cx;
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let protocol = Protocol::parse(port.protocol.as_deref())
            .ok_or_else(|| ServiceError::BadProtocol(i, port.protocol.clone().unwrap_or_default()))?;
        let service_port = valid_port(port.port).ok_or(ServiceError::BadPort(i, port.port))?;
        let node_port = match port.node_port {
            Some(np) if with_node_ports => Some(valid_port(np).ok_or(ServiceError::BadNodePort(i, np))?),
            _ => None,
        };
        let (backends, local) =
            backends_for_port(port, protocol, slices, config.node_name.as_deref(), family);

        let cluster_dst = Destination {
            ip: cluster_ip,
            protocol,
            port: service_port,
        };
        let mut external_dsts: Vec<Destination> = external_ips
            .iter()
            .map(|&ip| Destination {
                ip,
                protocol,
                port: service_port,
            })
            .collect();
        if let Some(np) = node_port {
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
                    port: service_port,
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
        let internal = if internal_local { &local } else { &backends };
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
            if !external_local {
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
    Ok(())
}

/// `loadBalancerSourceRanges` of one family as (network, prefix length); unparseable entries
/// are skipped with a warning (the API server validates them). As upstream, when a range contains
/// one of the node's addresses, the LoadBalancer IPs themselves are allowed as sources too (a VIP
/// bound locally loops the node's own requests back with the VIP as source).
fn firewall_sources(
    ranges: &[String],
    lb_ips: &[IpAddr],
    node_ips: &[IpAddr],
    family: Family,
) -> Vec<(IpAddr, u8)> {
    let mut out = BTreeSet::new();
    let mut allow_from_node = false;
    for r in ranges {
        let parsed = r.trim().split_once('/').and_then(|(a, p)| {
            let a: IpAddr = a.parse().ok()?;
            let p: u8 = p
                .parse()
                .ok()
                .filter(|p| usize::from(*p) <= Family::of(&a).addr_len() * 8)?;
            Some((a, p))
        });
        let Some((addr, prefix)) = parsed else {
            tracing::warn!(range = %r, "skipping unparseable spec.loadBalancerSourceRanges entry");
            continue;
        };
        if Family::of(&addr) != family {
            continue;
        }
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
    for bucket in 0..buckets {
        let b = local[bucket as usize % local.len()];
        out.push(Element::LocalServiceEndpoint {
            dst,
            bucket,
            endpoint: b.ip,
            endpoint_port: b.port,
        });
    }
}

fn valid_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|&p| p != 0)
}

fn push_buckets(out: &mut Vec<Element>, dst: Destination, backends: &[Backend], buckets: u32) {
    let buckets = buckets.max(1);
    if backends.len() <= buckets as usize {
        for bucket in 0..buckets {
            let b = backends[bucket as usize % backends.len()];
            out.push(Element::ServiceEndpoint {
                dst,
                bucket,
                endpoint: b.ip,
                endpoint_port: b.port,
            });
        }
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
    for bucket in 0..LARGE_BUCKETS {
        let b = backends[bucket as usize % backends.len()];
        out.push(Element::LargeServiceEndpoint {
            dst,
            bucket,
            endpoint: b.ip,
            endpoint_port: b.port,
        });
    }
}

/// The endpoints a service port sends to, cluster-wide and node-local, with upstream's condition
/// handling per category: ready endpoints; if there are none, serving-and-terminating ones
/// (graceful termination fallback). A missing `ready` or `serving` counts as true, a missing
/// `terminating` as false. The port is matched by name (named ports) and protocol.
fn backends_for_port(
    port: &ServicePort,
    protocol: Protocol,
    slices: &[&EndpointSlice],
    node_name: Option<&str>,
    family: Family,
) -> (Vec<Backend>, Vec<Backend>) {
    let want_name = port.name.clone().unwrap_or_default();
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        if slice.address_type != family.address_type() {
            continue;
        }
        let Some(target_port) = slice.ports.iter().flatten().find_map(|p| {
            let name_ok = p.name.clone().unwrap_or_default() == want_name;
            let proto_ok = Protocol::parse(p.protocol.as_deref()) == Some(protocol);
            if name_ok && proto_ok {
                p.port.and_then(valid_port)
            } else {
                None
            }
        }) else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            let is_ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = cond.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let local = node_name.is_some() && ep.node_name.as_deref() == node_name;
            for addr in &ep.addresses {
                let ip = match addr.parse::<IpAddr>() {
                    Ok(ip) if Family::of(&ip) == family => ip,
                    _ => {
                        tracing::warn!(address = %addr, address_type = %slice.address_type, "skipping unparseable endpoint address");
                        continue;
                    }
                };
                let b = Backend {
                    ip,
                    port: target_port,
                    local,
                };
                if is_ready && !is_terminating {
                    ready.insert(b);
                } else if is_serving && is_terminating {
                    terminating.insert(b);
                }
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

/// The health check of a Service, if it has one: LoadBalancer (or NodePort) type with
/// `externalTrafficPolicy: Local` and a valid `healthCheckNodePort`.
pub fn health_check(
    svc: &Service,
    slices: &[&EndpointSlice],
    node_name: Option<&str>,
) -> Option<HealthCheck> {
    let spec = svc.spec.as_ref()?;
    if spec.external_traffic_policy.as_deref() != Some("Local") {
        return None;
    }
    let port = spec.health_check_node_port.and_then(valid_port)?;
    let Some(node_name) = node_name else {
        return Some(HealthCheck {
            port,
            local_endpoints: 0,
        });
    };
    // Distinct address:port of ready local endpoints over the Service's ports, as upstream's
    // `LocalReadyEndpoints` (no terminating fallback here).
    let mut local: BTreeSet<(&str, u16)> = BTreeSet::new();
    for slice in slices
        .iter()
        .filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6"))
    {
        for sp in spec.ports.iter().flatten() {
            let want = sp.name.as_deref().unwrap_or_default();
            let proto = Protocol::parse(sp.protocol.as_deref());
            let Some(target) = slice.ports.iter().flatten().find_map(|p| {
                (p.name.as_deref().unwrap_or_default() == want
                    && Protocol::parse(p.protocol.as_deref()) == proto)
                    .then_some(p.port.and_then(valid_port))
                    .flatten()
            }) else {
                continue;
            };
            for ep in &slice.endpoints {
                let is_ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if is_ready && ep.node_name.as_deref() == Some(node_name) {
                    local.extend(ep.addresses.iter().map(|a| (a.as_str(), target)));
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
