//! The element model of the table: its named sets and maps ([`SETS`]: name, id, key/data
//! [`Layout`]) and how an [`Element`] is stored in them — key and data bytes as the kernel holds
//! them ([`element_bytes`]) and back ([`parse_element`], for read-back). Pure: no netlink here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{
    AFFINITY_ENDPOINTS, BucketEntry, BucketMap, CLUSTER_IPS, Destination, EXTERNAL_LOCAL_SERVICES,
    EXTERNAL_SERVICES, Element, FIREWALL_ALLOW, FIREWALL_IPS, Family, HAIRPIN_ENDPOINTS,
    NO_ENDPOINT_SERVICES, NO_LOCAL_ENDPOINT_SERVICES, Protocol, SERVICE_AFFINITY, SERVICE_AFFINITY_RECORD,
    SERVICE_ENDPOINTS, SERVICE_ENDPOINTS_LARGE, SERVICE_ENDPOINTS_LOCAL, SERVICE_IPS,
};

// nft's datatype ids, concatenated 6 bits apiece, so `nft list` can print the elements.
const T_IPV4: u32 = 7;
const T_IPV6: u32 = 8;
const T_PROTO: u32 = 12;
const T_SERVICE: u32 = 13;
const T_MARK: u32 = 19;
const T_VERDICT: u32 = libc::NFT_DATA_VERDICT;
const fn concat(a: u32, b: u32) -> u32 {
    (a << 6) | b
}

fn t_addr(f: Family) -> u32 {
    match f {
        Family::V4 => T_IPV4,
        Family::V6 => T_IPV6,
    }
}

/// The shape of a set's keys and values; addresses are 4 or 16 bytes by family, every field
/// padded to 4 bytes (concatenation layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// destination . bucket → endpoint address . port
    DstBucketToEndpoint,
    /// destination
    Dst,
    /// destination → verdict
    DstToVerdict,
    /// address
    Addr,
    /// destination . endpoint address . port
    DstEndpoint,
    /// address . address
    AddrAddr,
    /// destination . network . prefix length
    DstNetPrefix,
    /// client address . destination → endpoint address . port (the session-affinity maps)
    ClientDstToEndpoint,
}

impl Layout {
    pub(super) fn key_type(self, f: Family) -> u32 {
        let a = t_addr(f);
        let dst = concat(concat(a, T_PROTO), T_SERVICE);
        match self {
            Layout::DstBucketToEndpoint => concat(dst, T_MARK),
            Layout::Dst | Layout::DstToVerdict => dst,
            Layout::Addr => a,
            Layout::DstEndpoint => concat(concat(dst, a), T_SERVICE),
            Layout::AddrAddr => concat(a, a),
            Layout::DstNetPrefix => concat(concat(dst, a), T_MARK),
            Layout::ClientDstToEndpoint => concat(concat(concat(a, a), T_PROTO), T_SERVICE),
        }
    }

    pub(super) fn key_len(self, f: Family) -> u32 {
        let a = f.addr_len() as u32;
        match self {
            Layout::DstBucketToEndpoint => a + 12,
            Layout::Dst | Layout::DstToVerdict => a + 8,
            Layout::Addr => a,
            Layout::DstEndpoint | Layout::DstNetPrefix => 2 * a + 12,
            Layout::AddrAddr => 2 * a,
            Layout::ClientDstToEndpoint => 2 * a + 8,
        }
    }

    /// (data type, data length) for maps.
    pub(super) fn data(self, f: Family) -> Option<(u32, u32)> {
        match self {
            Layout::DstBucketToEndpoint | Layout::ClientDstToEndpoint => {
                Some((concat(t_addr(f), T_SERVICE), f.addr_len() as u32 + 4))
            }
            Layout::DstToVerdict => Some((T_VERDICT, 0)),
            _ => None,
        }
    }
}

/// One fixed set or map of the table. `id` names it within a batch, so rules added in the same
/// batch as the set can refer to it.
#[derive(Debug)]
pub(super) struct SetSpec {
    pub name: &'static str,
    pub id: u32,
    pub layout: Layout,
}

const fn spec(name: &'static str, id: u32, layout: Layout) -> SetSpec {
    SetSpec { name, id, layout }
}

/// Every fixed set and map, in declaration order.
pub(super) const SETS: [SetSpec; 15] = [
    spec(SERVICE_ENDPOINTS, 1, Layout::DstBucketToEndpoint),
    spec(SERVICE_ENDPOINTS_LARGE, 6, Layout::DstBucketToEndpoint),
    spec(SERVICE_IPS, 2, Layout::Dst),
    spec(EXTERNAL_SERVICES, 3, Layout::Dst),
    spec(NO_ENDPOINT_SERVICES, 4, Layout::Dst),
    spec(CLUSTER_IPS, 5, Layout::Addr),
    spec(SERVICE_ENDPOINTS_LOCAL, 7, Layout::DstBucketToEndpoint),
    spec(EXTERNAL_LOCAL_SERVICES, 8, Layout::Dst),
    spec(NO_LOCAL_ENDPOINT_SERVICES, 9, Layout::Dst),
    spec(SERVICE_AFFINITY, 10, Layout::DstToVerdict),
    spec(SERVICE_AFFINITY_RECORD, 15, Layout::DstToVerdict),
    spec(AFFINITY_ENDPOINTS, 11, Layout::DstEndpoint),
    spec(HAIRPIN_ENDPOINTS, 12, Layout::AddrAddr),
    spec(FIREWALL_IPS, 13, Layout::Dst),
    spec(FIREWALL_ALLOW, 14, Layout::DstNetPrefix),
];

/// The spec of one of [`SETS`] by name (only called with the names defined there; the unit test
/// checks the layout).
pub(super) fn set_spec(name: &str) -> &'static SetSpec {
    SETS.iter().find(|s| s.name == name).unwrap_or(&SETS[0])
}

/// Name of the map and the lookup chain of one affinity timeout class.
pub fn affinity_name(timeout: u32) -> String {
    format!("affinity-{timeout}")
}

/// Name of the recording chain of one affinity timeout class.
pub fn affinity_record_name(timeout: u32) -> String {
    format!("affinity-record-{timeout}")
}

/// Set id of an affinity class's map (distinct from the fixed sets' ids, for same-batch rules).
pub(super) fn affinity_set_id(timeout: u32) -> u32 {
    100_000 + timeout
}

pub(super) fn addr_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Key bytes of a destination in concatenation layout: each field padded to 4 bytes.
fn dst_key(d: &Destination) -> Vec<u8> {
    let mut k = addr_bytes(&d.ip);
    k.extend_from_slice(&[d.protocol.number(), 0, 0, 0]);
    k.extend_from_slice(&d.port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// An address and a port, the port padded to 4 bytes.
fn addr_port(ip: &IpAddr, port: u16) -> Vec<u8> {
    let mut b = addr_bytes(ip);
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b
}

/// (key, data) bytes of an element as the kernel stores them.
pub fn element_bytes(e: &Element) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = match e {
        Element::ServiceEndpoint { dst, bucket, .. }
        | Element::LargeServiceEndpoint { dst, bucket, .. }
        | Element::LocalServiceEndpoint { dst, bucket, .. } => {
            // numgen writes the bucket in host byte order.
            [dst_key(dst), bucket.to_ne_bytes().to_vec()].concat()
        }
        Element::ServiceIp(d)
        | Element::ExternalService(d)
        | Element::NoEndpointService(d)
        | Element::ExternalLocalService(d)
        | Element::NoLocalEndpointService(d)
        | Element::AffinityService { dst: d, .. }
        | Element::AffinityRecord { dst: d, .. }
        | Element::FirewallService(d) => dst_key(d),
        Element::ClusterIp(ip) => addr_bytes(ip),
        Element::HairpinEndpoint(ip) => [addr_bytes(ip), addr_bytes(ip)].concat(),
        Element::AffinityEndpoint {
            dst,
            endpoint,
            endpoint_port,
        } => [dst_key(dst), addr_port(endpoint, *endpoint_port)].concat(),
        Element::FirewallAllow { dst, net, prefix } => [
            dst_key(dst),
            addr_bytes(net),
            u32::from(*prefix).to_ne_bytes().to_vec(),
        ]
        .concat(),
    };
    let data = e
        .bucket_entry()
        .map(|(_, b)| addr_port(&b.endpoint, b.endpoint_port));
    (key, data)
}

/// A destination from its key bytes (address . protocol . port, each padded to 4 bytes).
pub(super) fn parse_dst(k: &[u8], f: Family) -> Option<Destination> {
    let al = f.addr_len();
    let ip = parse_ip(k, f)?;
    let protocol = match *k.get(al)? {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        132 => Protocol::Sctp,
        _ => return None,
    };
    Some(Destination {
        ip,
        protocol,
        port: parse_port(k.get(al + 4..)?)?,
    })
}

/// The address at the start of `k`.
pub(super) fn parse_ip(k: &[u8], f: Family) -> Option<IpAddr> {
    Some(match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(k.get(0..4)?).ok()?)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(k.get(0..16)?).ok()?)),
    })
}

/// The (network order) port at the start of `k`.
fn parse_port(k: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(<[u8; 2]>::try_from(k.get(0..2)?).ok()?))
}

/// An address and the port after it (as [`addr_port`] writes them).
pub(super) fn parse_addr_port(k: &[u8], f: Family) -> Option<(IpAddr, u16)> {
    Some((parse_ip(k, f)?, parse_port(k.get(f.addr_len()..)?)?))
}

fn parse_u32_ne(k: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(<[u8; 4]>::try_from(k.get(0..4)?).ok()?))
}

/// The inverse of [`element_bytes`] for the element of set `set` in a table of family `f`
/// (`chain`: the jump target of a verdict map's element).
pub fn parse_element(
    set: &str,
    f: Family,
    k: &[u8],
    data: Option<&[u8]>,
    chain: Option<&str>,
) -> Option<Element> {
    let spec = SETS.iter().find(|s| s.name == set)?;
    if k.len() != spec.layout.key_len(f) as usize {
        return None;
    }
    let al = f.addr_len();
    let dl = al + 8; // destination: address . protocol . port
    let dst = || parse_dst(k, f);
    Some(match set {
        SERVICE_ENDPOINTS | SERVICE_ENDPOINTS_LARGE | SERVICE_ENDPOINTS_LOCAL => {
            let (endpoint, endpoint_port) = parse_addr_port(data?, f)?;
            let entry = BucketEntry {
                dst: dst()?,
                bucket: parse_u32_ne(k.get(dl..)?)?,
                endpoint,
                endpoint_port,
            };
            entry.element(match set {
                SERVICE_ENDPOINTS => BucketMap::Small,
                SERVICE_ENDPOINTS_LARGE => BucketMap::Large,
                _ => BucketMap::Local,
            })
        }
        SERVICE_IPS => Element::ServiceIp(dst()?),
        EXTERNAL_SERVICES => Element::ExternalService(dst()?),
        NO_ENDPOINT_SERVICES => Element::NoEndpointService(dst()?),
        EXTERNAL_LOCAL_SERVICES => Element::ExternalLocalService(dst()?),
        NO_LOCAL_ENDPOINT_SERVICES => Element::NoLocalEndpointService(dst()?),
        FIREWALL_IPS => Element::FirewallService(dst()?),
        CLUSTER_IPS => Element::ClusterIp(parse_ip(k, f)?),
        HAIRPIN_ENDPOINTS => Element::HairpinEndpoint(parse_ip(k, f)?),
        SERVICE_AFFINITY => Element::AffinityService {
            dst: dst()?,
            timeout: chain?.strip_prefix("affinity-")?.parse().ok()?,
        },
        SERVICE_AFFINITY_RECORD => Element::AffinityRecord {
            dst: dst()?,
            timeout: chain?.strip_prefix("affinity-record-")?.parse().ok()?,
        },
        AFFINITY_ENDPOINTS => {
            let (endpoint, endpoint_port) = parse_addr_port(k.get(dl..)?, f)?;
            Element::AffinityEndpoint {
                dst: dst()?,
                endpoint,
                endpoint_port,
            }
        }
        FIREWALL_ALLOW => Element::FirewallAllow {
            dst: dst()?,
            net: parse_ip(k.get(dl..)?, f)?,
            prefix: u8::try_from(parse_u32_ne(k.get(dl + al..)?)?).ok()?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn every_element_kind_reads_back_as_written() {
        let dst = Destination {
            ip: ip4(10, 96, 0, 10),
            protocol: Protocol::Udp,
            port: 53,
        };
        let (endpoint, endpoint_port) = (ip4(10, 244, 1, 2), 5353);
        let all = [
            Element::ServiceEndpoint {
                dst,
                bucket: 3,
                endpoint,
                endpoint_port,
            },
            Element::LargeServiceEndpoint {
                dst,
                bucket: 200,
                endpoint,
                endpoint_port,
            },
            Element::LocalServiceEndpoint {
                dst,
                bucket: 1,
                endpoint,
                endpoint_port,
            },
            Element::ServiceIp(dst),
            Element::ExternalService(dst),
            Element::NoEndpointService(dst),
            Element::ExternalLocalService(dst),
            Element::NoLocalEndpointService(dst),
            Element::FirewallService(dst),
            Element::ClusterIp(dst.ip),
            Element::HairpinEndpoint(endpoint),
            Element::AffinityService { dst, timeout: 600 },
            Element::AffinityRecord { dst, timeout: 600 },
            Element::AffinityEndpoint {
                dst,
                endpoint,
                endpoint_port,
            },
            Element::FirewallAllow {
                dst,
                net: ip4(192, 168, 0, 0),
                prefix: 16,
            },
        ];
        for e in all {
            let (k, d) = element_bytes(&e);
            let chain = match e {
                Element::AffinityService { timeout, .. } => Some(affinity_name(timeout)),
                Element::AffinityRecord { timeout, .. } => Some(affinity_record_name(timeout)),
                _ => None,
            };
            assert_eq!(
                parse_element(e.set_name(), Family::V4, &k, d.as_deref(), chain.as_deref()),
                Some(e),
                "{e:?}"
            );
            assert_eq!(
                k.len(),
                set_spec(e.set_name()).layout.key_len(Family::V4) as usize,
                "{e:?}"
            );
        }
        assert_eq!(
            parse_element(SERVICE_IPS, Family::V4, &[1, 2, 3], None, None),
            None
        );
    }

    #[test]
    fn ipv6_elements_read_back_as_written() {
        let dst = Destination {
            ip: "fd00:96::10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let endpoint: IpAddr = "fd00:244::5".parse().unwrap();
        for e in [
            Element::ServiceEndpoint {
                dst,
                bucket: 7,
                endpoint,
                endpoint_port: 8080,
            },
            Element::ClusterIp(dst.ip),
            Element::HairpinEndpoint(endpoint),
            Element::AffinityEndpoint {
                dst,
                endpoint,
                endpoint_port: 8080,
            },
            Element::FirewallAllow {
                dst,
                net: "2001:db8::".parse().unwrap(),
                prefix: 32,
            },
        ] {
            let (k, d) = element_bytes(&e);
            assert_eq!(
                k.len(),
                set_spec(e.set_name()).layout.key_len(Family::V6) as usize,
                "{e:?}"
            );
            assert_eq!(
                parse_element(e.set_name(), Family::V6, &k, d.as_deref(), None),
                Some(e),
                "{e:?}"
            );
        }
    }

    #[test]
    fn endpoint_element_layout_matches_concatenation_registers() {
        let e = Element::ServiceEndpoint {
            dst: Destination {
                ip: ip4(10, 96, 0, 10),
                protocol: Protocol::Udp,
                port: 53,
            },
            bucket: 3,
            endpoint: ip4(10, 244, 1, 2),
            endpoint_port: 5353,
        };
        let (k, d) = element_bytes(&e);
        let mut want = vec![10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0];
        want.extend_from_slice(&3u32.to_ne_bytes());
        assert_eq!(k, want);
        assert_eq!(d, Some(vec![10, 244, 1, 2, 0x14, 0xe9, 0, 0]));
        for spec in &SETS {
            for f in [Family::V4, Family::V6] {
                assert_eq!(spec.layout.key_len(f) % 4, 0);
            }
        }
        assert_eq!(
            u32::try_from(k.len()).ok(),
            Some(set_spec(SERVICE_ENDPOINTS).layout.key_len(Family::V4))
        );
    }
}
