//! Host-gw routing between nodes, as flannel's `host-gw` backend does it: every node routes each
//! other node's podCIDR via that node's InternalIP, so pod IPs are reachable across nodes without
//! encapsulation. The requirement that comes with it: the nodes share one L2 segment (each node's
//! InternalIP is a directly reachable next hop).
//!
//! Pure core: [`Peer::from_node`] reads a Node, [`desired`] computes the route table, [`diff`]
//! compares it with what the kernel has. Edge: [`Routes`] reads and writes the main routing table
//! over rtnetlink. knode-hostgw's routes carry protocol [`ROUTE_PROTOCOL`] (`ip route show proto
//! 76`), so after a restart it finds and corrects its own routes and never touches anyone else's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::ipnet::Ipv4Net;

/// The routing protocol number marking knode-hostgw's routes.
pub const ROUTE_PROTOCOL: u8 = 76;

/// What can fail talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum HostGwError {
    #[error("{action}: {source} (knode-hostgw needs CAP_NET_ADMIN in the node's network namespace)")]
    Netlink {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
}

/// Another node as routing sees it: its pod subnet and the address that reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Ipv4Net,
    pub node_ip: Ipv4Addr,
}

impl Peer {
    /// The node's IPv4 podCIDR (`spec.podCIDRs`, else `spec.podCIDR`) and first IPv4 InternalIP;
    /// `None` while either is missing (a node nodeipam has not reached yet).
    pub fn from_node(node: &Node) -> Option<Peer> {
        let name = node.metadata.name.clone()?;
        let spec = node.spec.as_ref()?;
        let cidrs = spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter());
        let pod_cidr = cidrs.filter_map(|c| c.parse::<Ipv4Net>().ok()).next()?.trunc();
        let node_ip = node
            .status
            .as_ref()?
            .addresses
            .iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok())?;
        Some(Peer {
            name,
            pod_cidr,
            node_ip,
        })
    }
}

/// The routes this node wants: every other peer's podCIDR via its InternalIP. A podCIDR claimed
/// by two nodes (a stale Node object) goes to the first by name, deterministically.
pub fn desired<'a>(peers: impl IntoIterator<Item = &'a Peer>, me: &str) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let mut sorted: Vec<&Peer> = peers.into_iter().filter(|p| p.name != me).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut routes = BTreeMap::new();
    for p in sorted {
        routes.entry(p.pod_cidr).or_insert(p.node_ip);
    }
    routes
}

/// One change to the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    Add { dst: Ipv4Net, via: Ipv4Addr },
    Replace { dst: Ipv4Net, via: Ipv4Addr },
    Delete { dst: Ipv4Net, via: Ipv4Addr },
}

/// What turns `current` (our routes in the kernel) into `desired`.
pub fn diff(
    current: &BTreeMap<Ipv4Net, Ipv4Addr>,
    desired: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> Vec<RouteChange> {
    let mut changes = Vec::new();
    for (dst, via) in current {
        if !desired.contains_key(dst) {
            changes.push(RouteChange::Delete { dst: *dst, via: *via });
        }
    }
    for (dst, via) in desired {
        match current.get(dst) {
            None => changes.push(RouteChange::Add { dst: *dst, via: *via }),
            Some(have) if have != via => changes.push(RouteChange::Replace { dst: *dst, via: *via }),
            Some(_) => {}
        }
    }
    changes
}

/// The main routing table of the current network namespace, over rtnetlink.
pub struct Routes {
    handle: Handle,
}

fn nl(action: String) -> impl FnOnce(rtnetlink::Error) -> HostGwError {
    move |source| HostGwError::Netlink { action, source }
}

fn message(dst: Ipv4Net, via: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.addr, dst.prefix)
        .gateway(via)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build()
}

impl Routes {
    /// Opens a netlink connection (its task runs on the current tokio runtime).
    pub fn open() -> Result<Routes, HostGwError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(HostGwError::Socket)?;
        tokio::spawn(conn);
        Ok(Routes { handle })
    }

    /// knode-hostgw's routes now in the main table: destination → gateway.
    pub async fn ours(&self) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>, HostGwError> {
        let mut stream = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut found = BTreeMap::new();
        while let Some(route) = stream
            .try_next()
            .await
            .map_err(nl("listing IPv4 routes".into()))?
        {
            if route.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            let mut dst = None;
            let mut via = None;
            for attr in &route.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(*a),
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(*a),
                    _ => {}
                }
            }
            if let (Some(addr), Some(via)) = (dst, via) {
                let net = Ipv4Net {
                    addr,
                    prefix: route.header.destination_prefix_length,
                };
                found.insert(net, via);
            }
        }
        Ok(found)
    }

    /// Applies one change.
    pub async fn apply(&self, change: &RouteChange) -> Result<(), HostGwError> {
        match *change {
            RouteChange::Add { dst, via } => self
                .handle
                .route()
                .add(message(dst, via))
                .execute()
                .await
                .map_err(nl(format!("adding route {dst} via {via}"))),
            RouteChange::Replace { dst, via } => self
                .handle
                .route()
                .add(message(dst, via))
                .replace()
                .execute()
                .await
                .map_err(nl(format!("replacing route {dst} via {via}"))),
            RouteChange::Delete { dst, via } => self
                .handle
                .route()
                .del(message(dst, via))
                .execute()
                .await
                .map_err(nl(format!("deleting route {dst} via {via}"))),
        }
    }

    /// Makes the table match `want`; returns the changes made.
    pub async fn reconcile(
        &self,
        want: &BTreeMap<Ipv4Net, Ipv4Addr>,
    ) -> Result<Vec<RouteChange>, HostGwError> {
        let changes = diff(&self.ours().await?, want);
        for c in &changes {
            self.apply(c).await?;
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": cidr.map(|c| serde_json::json!({"podCIDR": c, "podCIDRs": [c]})).unwrap_or_default(),
            "status": {"addresses": ip.map(|i| vec![
                serde_json::json!({"type": "Hostname", "address": name}),
                serde_json::json!({"type": "InternalIP", "address": i}),
            ]).unwrap_or_default()},
        }))
        .unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn peers_need_a_pod_cidr_and_an_internal_ip() {
        let p = Peer::from_node(&node("a", Some("10.244.1.0/24"), Some("10.0.0.2"))).unwrap();
        assert_eq!(
            (p.pod_cidr, p.node_ip),
            (net("10.244.1.0/24"), Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(Peer::from_node(&node("b", None, Some("10.0.0.3"))), None);
        assert_eq!(Peer::from_node(&node("c", Some("10.244.2.0/24"), None)), None);
        // IPv6 first in a dual-stack list: the IPv4 one is used.
        let mut n = node("d", Some("10.244.3.0/24"), Some("10.0.0.4"));
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["fd00::/64".into(), "10.244.3.0/24".into()]);
        assert_eq!(Peer::from_node(&n).unwrap().pod_cidr, net("10.244.3.0/24"));
    }

    #[test]
    fn desired_routes_skip_this_node_and_resolve_conflicts_by_name() {
        let peers = [
            Peer {
                name: "b".into(),
                pod_cidr: net("10.244.1.0/24"),
                node_ip: Ipv4Addr::new(10, 0, 0, 3),
            },
            Peer {
                name: "a".into(),
                pod_cidr: net("10.244.1.0/24"),
                node_ip: Ipv4Addr::new(10, 0, 0, 2),
            },
            Peer {
                name: "me".into(),
                pod_cidr: net("10.244.0.0/24"),
                node_ip: Ipv4Addr::new(10, 0, 0, 1),
            },
        ];
        let want = desired(&peers, "me");
        assert_eq!(want.len(), 1);
        assert_eq!(want[&net("10.244.1.0/24")], Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn diff_adds_replaces_and_deletes_only_what_changed() {
        let ip = |d| Ipv4Addr::new(10, 0, 0, d);
        let current = BTreeMap::from([
            (net("10.244.1.0/24"), ip(2)),
            (net("10.244.2.0/24"), ip(3)),
            (net("10.244.9.0/24"), ip(9)),
        ]);
        let want = BTreeMap::from([
            (net("10.244.1.0/24"), ip(2)),
            (net("10.244.2.0/24"), ip(4)),
            (net("10.244.3.0/24"), ip(5)),
        ]);
        assert_eq!(
            diff(&current, &want),
            [
                RouteChange::Delete {
                    dst: net("10.244.9.0/24"),
                    via: ip(9)
                },
                RouteChange::Replace {
                    dst: net("10.244.2.0/24"),
                    via: ip(4)
                },
                RouteChange::Add {
                    dst: net("10.244.3.0/24"),
                    via: ip(5)
                },
            ]
        );
        assert!(diff(&want, &want).is_empty());
    }
}
