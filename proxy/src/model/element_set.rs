//! [`ElementSet`]: one Service's elements, packed (pure).
//!
//! The programmer keeps every programmed element for as long as the proxy runs (the diff needs
//! them), which at 10k Services is the proxy's largest structure. An [`Element`] is 44 bytes (two
//! `IpAddr`s of 17); an IPv4 element fits in a 16-byte record, so IPv4 elements — nearly all, on
//! most clusters — are kept packed, in one sorted allocation per Service, and others as they are.

use std::net::{IpAddr, Ipv4Addr};

use super::{BucketEntry, BucketMap, Destination, Element, Protocol};

/// One packed IPv4 element: kind, then its fields big-endian (so records sort by content).
type Packed = [u8; 16];

/// A Service's elements: sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementSet {
    v4: Box<[Packed]>,
    other: Box<[Element]>,
}

/// Iterator over an [`ElementSet`] (packed records decoded on the way).
pub type Iter<'a> = std::iter::Chain<
    std::iter::Map<std::slice::Iter<'a, Packed>, fn(&Packed) -> Element>,
    std::iter::Copied<std::slice::Iter<'a, Element>>,
>;

impl ElementSet {
    /// The elements: the packed IPv4 ones, then the others, each part in order.
    pub fn iter(&self) -> Iter<'_> {
        let unpack: fn(&Packed) -> Element = unpack;
        self.v4.iter().map(unpack).chain(self.other.iter().copied())
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, e: &Element) -> bool {
        match pack(e) {
            Some(p) => self.v4.binary_search(&p).is_ok(),
            None => self.other.binary_search(e).is_ok(),
        }
    }

    /// The elements of `self` not in `other`.
    pub fn difference<'a>(&'a self, other: &'a ElementSet) -> impl Iterator<Item = Element> + 'a {
        self.iter().filter(|e| !other.contains(e))
    }
}

impl FromIterator<Element> for ElementSet {
    fn from_iter<I: IntoIterator<Item = Element>>(iter: I) -> Self {
        let (mut v4, mut other) = (Vec::new(), Vec::new());
        for e in iter {
            match pack(&e) {
                Some(p) => v4.push(p),
                None => other.push(e),
            }
        }
        v4.sort_unstable();
        v4.dedup();
        other.sort_unstable();
        other.dedup();
        ElementSet {
            v4: v4.into_boxed_slice(),
            other: other.into_boxed_slice(),
        }
    }
}

impl<'a> IntoIterator for &'a ElementSet {
    type Item = Element;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

// Record kinds (byte 0).
const SERVICE_ENDPOINT: u8 = 0;
const LARGE_SERVICE_ENDPOINT: u8 = 1;
const LOCAL_SERVICE_ENDPOINT: u8 = 2;
const SERVICE_IP: u8 = 3;
const EXTERNAL_SERVICE: u8 = 4;
const NO_ENDPOINT_SERVICE: u8 = 5;
const CLUSTER_IP: u8 = 6;
const EXTERNAL_LOCAL_SERVICE: u8 = 7;
const NO_LOCAL_ENDPOINT_SERVICE: u8 = 8;
const AFFINITY_SERVICE: u8 = 9;
const AFFINITY_RECORD: u8 = 10;
const AFFINITY_ENDPOINT: u8 = 11;
const HAIRPIN_ENDPOINT: u8 = 12;
const FIREWALL_SERVICE: u8 = 13;
const FIREWALL_ALLOW: u8 = 14;

fn v4(ip: &IpAddr) -> Option<[u8; 4]> {
    match ip {
        IpAddr::V4(a) => Some(a.octets()),
        IpAddr::V6(_) => None,
    }
}

/// Writes a destination at bytes 1..8.
fn put_dst(p: &mut Packed, d: &Destination) -> Option<()> {
    p[1..5].copy_from_slice(&v4(&d.ip)?);
    p[5] = d.protocol.number();
    p[6..8].copy_from_slice(&d.port.to_be_bytes());
    Some(())
}

/// The packed record of an IPv4 element; None for IPv6 ones (and buckets past u16).
fn pack(e: &Element) -> Option<Packed> {
    let mut p = [0u8; 16];
    if let Some((map, b)) = e.bucket_entry() {
        p[0] = match map {
            BucketMap::Small => SERVICE_ENDPOINT,
            BucketMap::Large => LARGE_SERVICE_ENDPOINT,
            BucketMap::Local => LOCAL_SERVICE_ENDPOINT,
        };
        put_dst(&mut p, &b.dst)?;
        p[8..10].copy_from_slice(&u16::try_from(b.bucket).ok()?.to_be_bytes());
        p[10..14].copy_from_slice(&v4(&b.endpoint)?);
        p[14..16].copy_from_slice(&b.endpoint_port.to_be_bytes());
        return Some(p);
    }
    match e {
        Element::ServiceIp(d)
        | Element::ExternalService(d)
        | Element::NoEndpointService(d)
        | Element::ExternalLocalService(d)
        | Element::NoLocalEndpointService(d)
        | Element::FirewallService(d) => {
            p[0] = match e {
                Element::ServiceIp(_) => SERVICE_IP,
                Element::ExternalService(_) => EXTERNAL_SERVICE,
                Element::NoEndpointService(_) => NO_ENDPOINT_SERVICE,
                Element::ExternalLocalService(_) => EXTERNAL_LOCAL_SERVICE,
                Element::NoLocalEndpointService(_) => NO_LOCAL_ENDPOINT_SERVICE,
                _ => FIREWALL_SERVICE,
            };
            put_dst(&mut p, d)?;
        }
        Element::ClusterIp(ip) | Element::HairpinEndpoint(ip) => {
            p[0] = match e {
                Element::ClusterIp(_) => CLUSTER_IP,
                _ => HAIRPIN_ENDPOINT,
            };
            p[1..5].copy_from_slice(&v4(ip)?);
        }
        Element::AffinityService { dst, timeout } | Element::AffinityRecord { dst, timeout } => {
            p[0] = match e {
                Element::AffinityService { .. } => AFFINITY_SERVICE,
                _ => AFFINITY_RECORD,
            };
            put_dst(&mut p, dst)?;
            p[8..12].copy_from_slice(&timeout.to_be_bytes());
        }
        Element::AffinityEndpoint {
            dst,
            endpoint,
            endpoint_port,
        } => {
            p[0] = AFFINITY_ENDPOINT;
            put_dst(&mut p, dst)?;
            p[8..12].copy_from_slice(&v4(endpoint)?);
            p[12..14].copy_from_slice(&endpoint_port.to_be_bytes());
        }
        Element::FirewallAllow { dst, net, prefix } => {
            p[0] = FIREWALL_ALLOW;
            put_dst(&mut p, dst)?;
            p[8..12].copy_from_slice(&v4(net)?);
            p[12] = *prefix;
        }
        // Packed above.
        Element::ServiceEndpoint { .. }
        | Element::LargeServiceEndpoint { .. }
        | Element::LocalServiceEndpoint { .. } => return None,
    }
    Some(p)
}

fn ip_at(p: &Packed, at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]))
}

fn u16_at(p: &Packed, at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn dst_of(p: &Packed) -> Destination {
    Destination {
        ip: ip_at(p, 1),
        protocol: match p[5] {
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            _ => Protocol::Tcp,
        },
        port: u16_at(p, 6),
    }
}

/// The element a record was packed from.
fn unpack(p: &Packed) -> Element {
    let dst = dst_of(p);
    let bucket_entry = |map| {
        BucketEntry {
            dst,
            bucket: u32::from(u16_at(p, 8)),
            endpoint: ip_at(p, 10),
            endpoint_port: u16_at(p, 14),
        }
        .element(map)
    };
    match p[0] {
        SERVICE_ENDPOINT => bucket_entry(BucketMap::Small),
        LARGE_SERVICE_ENDPOINT => bucket_entry(BucketMap::Large),
        LOCAL_SERVICE_ENDPOINT => bucket_entry(BucketMap::Local),
        SERVICE_IP => Element::ServiceIp(dst),
        EXTERNAL_SERVICE => Element::ExternalService(dst),
        NO_ENDPOINT_SERVICE => Element::NoEndpointService(dst),
        EXTERNAL_LOCAL_SERVICE => Element::ExternalLocalService(dst),
        NO_LOCAL_ENDPOINT_SERVICE => Element::NoLocalEndpointService(dst),
        FIREWALL_SERVICE => Element::FirewallService(dst),
        CLUSTER_IP => Element::ClusterIp(ip_at(p, 1)),
        HAIRPIN_ENDPOINT => Element::HairpinEndpoint(ip_at(p, 1)),
        AFFINITY_SERVICE | AFFINITY_RECORD => {
            let timeout = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            if p[0] == AFFINITY_SERVICE {
                Element::AffinityService { dst, timeout }
            } else {
                Element::AffinityRecord { dst, timeout }
            }
        }
        AFFINITY_ENDPOINT => Element::AffinityEndpoint {
            dst,
            endpoint: ip_at(p, 8),
            endpoint_port: u16_at(p, 12),
        },
        _ => Element::FirewallAllow {
            dst,
            net: ip_at(p, 8),
            prefix: p[12],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind(ip: IpAddr, other: IpAddr) -> Vec<Element> {
        let dst = Destination {
            ip,
            protocol: Protocol::Udp,
            port: 53,
        };
        vec![
            Element::ServiceEndpoint {
                dst,
                bucket: 15,
                endpoint: other,
                endpoint_port: 5353,
            },
            Element::LargeServiceEndpoint {
                dst,
                bucket: 255,
                endpoint: other,
                endpoint_port: 1,
            },
            Element::LocalServiceEndpoint {
                dst,
                bucket: 0,
                endpoint: other,
                endpoint_port: 65535,
            },
            Element::ServiceIp(dst),
            Element::ExternalService(dst),
            Element::NoEndpointService(dst),
            Element::ClusterIp(ip),
            Element::ExternalLocalService(dst),
            Element::NoLocalEndpointService(dst),
            Element::AffinityService { dst, timeout: 10800 },
            Element::AffinityRecord { dst, timeout: 86400 },
            Element::AffinityEndpoint {
                dst,
                endpoint: other,
                endpoint_port: 8080,
            },
            Element::HairpinEndpoint(other),
            Element::FirewallService(Destination {
                protocol: Protocol::Sctp,
                ..dst
            }),
            Element::FirewallAllow {
                dst,
                net: other,
                prefix: 24,
            },
        ]
    }

    #[test]
    fn every_ipv4_kind_packs_and_unpacks_to_itself() {
        let els = every_kind("10.96.0.10".parse().unwrap(), "10.244.1.7".parse().unwrap());
        for e in &els {
            let p = pack(e).unwrap_or_else(|| panic!("{e:?} packs"));
            assert_eq!(unpack(&p), *e);
        }
        let set: ElementSet = els.iter().copied().collect();
        assert_eq!((set.len(), set.other.len()), (els.len(), 0));
        assert!(els.iter().all(|e| set.contains(e)));
    }

    #[test]
    fn ipv6_elements_and_huge_buckets_stay_unpacked() {
        let els = every_kind("fd00::10".parse().unwrap(), "fd00:244::7".parse().unwrap());
        assert!(els.iter().all(|e| pack(e).is_none()));
        let big = Element::ServiceEndpoint {
            dst: Destination {
                ip: "10.96.0.1".parse().unwrap(),
                protocol: Protocol::Tcp,
                port: 80,
            },
            bucket: 70_000,
            endpoint: "10.244.0.1".parse().unwrap(),
            endpoint_port: 80,
        };
        assert!(pack(&big).is_none());
        let set: ElementSet = els.iter().copied().chain([big]).collect();
        assert_eq!(set.len(), els.len() + 1);
        assert!(set.contains(&big) && els.iter().all(|e| set.contains(e)));
    }

    #[test]
    fn sets_dedupe_and_difference_works_across_both_parts() {
        let a4 = every_kind("10.96.0.10".parse().unwrap(), "10.244.1.7".parse().unwrap());
        let a6 = every_kind("fd00::10".parse().unwrap(), "fd00:244::7".parse().unwrap());
        let a: ElementSet = a4.iter().chain(&a6).chain(&a4).copied().collect();
        assert_eq!(a.len(), a4.len() + a6.len(), "duplicates dropped");
        let b: ElementSet = a4[1..].iter().chain(&a6[1..]).copied().collect();
        assert_eq!(a.difference(&b).collect::<Vec<_>>(), vec![a4[0], a6[0]]);
        assert_eq!(b.difference(&a).count(), 0);
        assert_eq!(a, a.iter().collect::<ElementSet>());
    }
}
