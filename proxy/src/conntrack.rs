//! Stale UDP conntrack entries (upstream pkg/proxy/conntrack/cleanup.go), deleted over ctnetlink.
//!
//! UDP has no connection end, so a flow DNATed to an endpoint keeps going there through its
//! conntrack entry after the endpoint is gone (or, before a Service had endpoints, keeps not
//! being DNATed). As upstream, after a sync kube-proxy lists the UDP conntrack entries and deletes
//! those whose original destination is a Service IP:port (ClusterIP, external IP, LoadBalancer
//! IP) — or whose original destination port is a NodePort — and whose reply source is not one of
//! that Service port's serving endpoints. Nothing else is touched.
//!
//! [`stale`] is the pure selection; [`Conntrack`] is the thin netlink adapter (NETLINK_NETFILTER,
//! subsystem CTNETLINK: one dump, one delete per stale entry).

use crate::model::{Element, Protocol};
use knode_netlink::Socket;
use knode_netlink::attr::{attrs, nested, put_attr};
use knode_netlink::message::nf_message;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a UDP Service port can be reached, with its serving endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpTargets {
    /// (Service IP, port) → serving endpoint IPs.
    pub service_ips: BTreeMap<(IpAddr, u16), BTreeSet<IpAddr>>,
    /// NodePort → serving endpoint IPs.
    pub node_ports: BTreeMap<u16, BTreeSet<IpAddr>>,
}

impl UdpTargets {
    /// True when no UDP Service port is covered.
    pub fn is_empty(&self) -> bool {
        self.service_ips.is_empty() && self.node_ports.is_empty()
    }

    /// The UDP destinations of a ruleset's elements with the endpoints they send to (none for
    /// rejected or dropped destinations). NodePorts are covered as (node IP, port) destinations,
    /// the only ones this proxy DNATs.
    pub fn from_elements(elements: impl IntoIterator<Item = Element>) -> Self {
        let mut t = UdpTargets::default();
        for e in elements {
            let (dst, endpoint) = match e {
                Element::ServiceEndpoint { dst, endpoint, .. }
                | Element::LargeServiceEndpoint { dst, endpoint, .. }
                | Element::LocalServiceEndpoint { dst, endpoint, .. } => (dst, Some(endpoint)),
                Element::NoEndpointService(dst) | Element::NoLocalEndpointService(dst) => (dst, None),
                _ => continue,
            };
            if dst.protocol != Protocol::Udp {
                continue;
            }
            let eps = t.service_ips.entry((dst.ip, dst.port)).or_default();
            eps.extend(endpoint);
        }
        t
    }
}

/// One IPv4 conntrack entry, as far as the cleanup needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub protocol: u8,
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub orig_sport: u16,
    pub orig_dport: u16,
    pub reply_src: IpAddr,
    pub zone: Option<u16>,
}

const IPPROTO_UDP: u8 = 17;

/// The entries to delete: UDP, sent to a Service IP:port or a NodePort, answered by something
/// that is not a serving endpoint of that Service port.
pub fn stale(flows: &[Flow], targets: &UdpTargets) -> Vec<Flow> {
    flows
        .iter()
        .filter(|f| f.protocol == IPPROTO_UDP)
        .filter(|f| {
            let by_ip = targets
                .service_ips
                .get(&(f.orig_dst, f.orig_dport))
                .is_some_and(|eps| !eps.contains(&f.reply_src));
            let by_node_port = targets
                .node_ports
                .get(&f.orig_dport)
                .is_some_and(|eps| !eps.contains(&f.reply_src));
            by_ip || by_node_port
        })
        .copied()
        .collect()
}

/// Errors from ctnetlink.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("ctnetlink socket: {0}")]
    Socket(#[source] knode_netlink::Error),
    #[error("listing conntrack entries: {0}")]
    Dump(#[source] knode_netlink::Error),
    #[error("deleting the conntrack entry {flow:?}: {source}")]
    Delete {
        flow: Box<Flow>,
        #[source]
        source: knode_netlink::Error,
    },
}

// ---- netlink encoding (linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h) -------------------

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// A ctnetlink message for address family `family` (AF_UNSPEC dumps both).
fn message(msg_type: u16, flags: u16, seq: u32, family: i32, attrs: &[u8]) -> Vec<u8> {
    nf_message(
        (NFNL_SUBSYS_CTNETLINK << 8) | msg_type,
        flags,
        seq,
        family as u8,
        attrs,
    )
}

/// The DELETE request for one entry, identified by its original tuple (and zone).
pub fn delete_request(f: &Flow, seq: u32) -> Vec<u8> {
    let tuple = nested(CTA_TUPLE_ORIG, |t| {
        t.extend(nested(CTA_TUPLE_IP, |ip| match (f.orig_src, f.orig_dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                put_attr(ip, CTA_IP_V4_SRC, &s.octets());
                put_attr(ip, CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                put_attr(ip, CTA_IP_V6_SRC, &v6_bytes(s));
                put_attr(ip, CTA_IP_V6_DST, &v6_bytes(d));
            }
        }));
        t.extend(nested(CTA_TUPLE_PROTO, |p| {
            put_attr(p, CTA_PROTO_NUM, &[f.protocol]);
            put_attr(p, CTA_PROTO_SRC_PORT, &f.orig_sport.to_be_bytes());
            put_attr(p, CTA_PROTO_DST_PORT, &f.orig_dport.to_be_bytes());
        }));
    });
    let mut attrs = tuple;
    if let Some(z) = f.zone {
        put_attr(&mut attrs, CTA_ZONE, &z.to_be_bytes());
    }
    let family = if f.orig_dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    message(
        IPCTNL_MSG_CT_DELETE,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        seq,
        family,
        &attrs,
    )
}

#[derive(Default)]
struct Tuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: Option<u8>,
    sport: Option<u16>,
    dport: Option<u16>,
}

fn parse_tuple(buf: &[u8]) -> Tuple {
    let mut t = Tuple::default();
    let v4 = |p: &[u8]| <[u8; 4]>::try_from(p).ok().map(|a| IpAddr::V4(Ipv4Addr::from(a)));
    let v6 = |p: &[u8]| {
        <[u8; 16]>::try_from(p)
            .ok()
            .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
    };
    let port = |p: &[u8]| <[u8; 2]>::try_from(p).ok().map(u16::from_be_bytes);
    for (ty, p) in attrs(buf) {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, p) in attrs(p) {
                    match ty {
                        CTA_IP_V4_SRC => t.src = v4(p),
                        CTA_IP_V4_DST => t.dst = v4(p),
                        CTA_IP_V6_SRC => t.src = v6(p),
                        CTA_IP_V6_DST => t.dst = v6(p),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, p) in attrs(p) {
                    match ty {
                        CTA_PROTO_NUM => t.proto = p.first().copied(),
                        CTA_PROTO_SRC_PORT => t.sport = port(p),
                        CTA_PROTO_DST_PORT => t.dport = port(p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

fn v6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// Parses the attributes of one conntrack message (after nfgenmsg) into a [`Flow`]; None for
/// entries without addresses and ports.
pub fn parse_flow(attrs_buf: &[u8]) -> Option<Flow> {
    let (mut orig, mut reply, mut zone) = (None, None, None);
    for (ty, p) in attrs(attrs_buf) {
        match ty {
            CTA_TUPLE_ORIG => orig = Some(parse_tuple(p)),
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(p)),
            CTA_ZONE => zone = <[u8; 2]>::try_from(p).ok().map(u16::from_be_bytes),
            _ => {}
        }
    }
    let (orig, reply) = (orig?, reply?);
    Some(Flow {
        protocol: orig.proto?,
        orig_src: orig.src?,
        orig_dst: orig.dst?,
        orig_sport: orig.sport?,
        orig_dport: orig.dport?,
        reply_src: reply.src?,
        zone,
    })
}

/// A ctnetlink socket in the calling thread's network namespace.
pub struct Conntrack {
    sock: Socket,
}

impl Conntrack {
    pub fn open() -> Result<Self, ConntrackError> {
        Ok(Conntrack {
            sock: Socket::open(libc::NETLINK_NETFILTER).map_err(ConntrackError::Socket)?,
        })
    }

    /// Every IPv4 and IPv6 conntrack entry with ports.
    pub fn list(&mut self) -> Result<Vec<Flow>, ConntrackError> {
        let mut out = Vec::new();
        self.sock
            .request(
                |seq| {
                    message(
                        IPCTNL_MSG_CT_GET,
                        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
                        seq,
                        libc::AF_UNSPEC,
                        &[],
                    )
                },
                |a| out.extend(parse_flow(a)),
            )
            .map_err(ConntrackError::Dump)?;
        Ok(out)
    }

    /// Deletes one entry; one already gone (ENOENT) is not an error.
    pub fn delete(&mut self, f: &Flow) -> Result<(), ConntrackError> {
        match self.sock.request(|seq| delete_request(f, seq), |_| {}) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map_err(|source| ConntrackError::Delete {
                flow: Box::new(*f),
                source,
            }),
        }
    }
}

/// Lists the conntrack table and deletes the stale UDP entries for `targets`; returns how many
/// were deleted. Does nothing (no dump) when `targets` is empty.
pub fn clean_stale_udp(targets: &UdpTargets) -> Result<usize, ConntrackError> {
    if targets.is_empty() {
        return Ok(0);
    }
    let mut ct = Conntrack::open()?;
    let flows = ct.list()?;
    let doomed = stale(&flows, targets);
    for f in &doomed {
        ct.delete(f)?;
        tracing::debug!(flow = ?f, "deleted stale UDP conntrack entry");
    }
    Ok(doomed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(dst: [u8; 4], dport: u16, reply_src: [u8; 4]) -> Flow {
        Flow {
            protocol: IPPROTO_UDP,
            orig_src: Ipv4Addr::new(192, 168, 77, 2).into(),
            orig_dst: Ipv4Addr::from(dst).into(),
            orig_sport: 40000,
            orig_dport: dport,
            reply_src: Ipv4Addr::from(reply_src).into(),
            zone: None,
        }
    }

    #[test]
    fn only_udp_flows_to_service_ports_answered_by_non_endpoints_are_stale() {
        let targets = UdpTargets {
            service_ips: [(
                (Ipv4Addr::new(10, 96, 0, 10).into(), 53),
                [IpAddr::from(Ipv4Addr::new(10, 244, 0, 11))].into(),
            )]
            .into(),
            node_ports: [(30053, [IpAddr::from(Ipv4Addr::new(10, 244, 0, 11))].into())].into(),
        };
        let gone = flow([10, 96, 0, 10], 53, [10, 244, 0, 10]);
        let live = flow([10, 96, 0, 10], 53, [10, 244, 0, 11]);
        // Sent while the Service had no endpoints: not DNATed, the reply comes from the VIP.
        let undnated = flow([10, 96, 0, 10], 53, [10, 96, 0, 10]);
        let node_port = flow([192, 168, 77, 1], 30053, [10, 244, 0, 10]);
        let other_port = flow([10, 96, 0, 10], 54, [10, 244, 0, 10]);
        let mut tcp = gone;
        tcp.protocol = 6;
        let flows = [gone, live, undnated, node_port, other_port, tcp];
        assert_eq!(stale(&flows, &targets), vec![gone, undnated, node_port]);
        assert!(stale(&flows, &UdpTargets::default()).is_empty());
    }

    #[test]
    fn delete_request_round_trips_through_the_parser() {
        let mut f = flow([10, 96, 0, 10], 53, [10, 244, 0, 10]);
        f.zone = Some(7);
        let msg = delete_request(&f, 9);
        assert_eq!(
            u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), (1 << 8) | 2);
        // The parser needs a reply tuple too: append one and read the flow back.
        let mut attrs = msg[20..].to_vec();
        attrs.extend(nested(CTA_TUPLE_REPLY, |t| {
            t.extend(nested(CTA_TUPLE_IP, |ip| {
                put_attr(ip, CTA_IP_V4_SRC, &[10, 244, 0, 10]);
                put_attr(ip, CTA_IP_V4_DST, &[192, 168, 77, 2]);
            }));
        }));
        assert_eq!(parse_flow(&attrs), Some(f));

        // IPv6: V6 address attributes and family AF_INET6.
        let f6 = Flow {
            protocol: IPPROTO_UDP,
            orig_src: "fd00:77::2".parse().unwrap(),
            orig_dst: "fd00:96::53".parse().unwrap(),
            orig_sport: 40000,
            orig_dport: 53,
            reply_src: "fd00:244::10".parse().unwrap(),
            zone: None,
        };
        let msg = delete_request(&f6, 10);
        assert_eq!(msg[16], libc::AF_INET6 as u8);
        let mut attrs = msg[20..].to_vec();
        attrs.extend(nested(CTA_TUPLE_REPLY, |t| {
            t.extend(nested(CTA_TUPLE_IP, |ip| {
                put_attr(ip, CTA_IP_V6_SRC, &v6_bytes(f6.reply_src));
                put_attr(ip, CTA_IP_V6_DST, &v6_bytes(f6.orig_src));
            }));
        }));
        assert_eq!(parse_flow(&attrs), Some(f6));
    }
}
