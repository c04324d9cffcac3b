//! knode-bridge: the reference `bridge` plugin's behaviour with built-in host-local IPAM, done over
//! rtnetlink (links, addresses, routes) and nftables netlink (masquerade). Configuration parsing and
//! result construction are pure; [`NetOps`] performs the kernel work.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use serde_json::Value;

use crate::ipam::HostLocalConf;
use crate::ipnet::{CidrError, Ipv4Net};
use crate::types::{CniError, ErrorCode, Interface, IpConfig, NetConf, PluginResult, Route};

/// The `bridge`-plugin fields knode-bridge honours (same names and defaults as the reference plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    /// Network name.
    pub network: String,
    /// Bridge device name (default `cni0`).
    pub bridge: String,
    /// Give the bridge the gateway address.
    pub is_gateway: bool,
    /// Install a default route via the gateway in the pod (implies `is_gateway`).
    pub is_default_gateway: bool,
    /// Masquerade traffic from the subnet to outside it.
    pub ip_masq: bool,
    /// `clusterCIDR` (knode's own field): with `ipMasq`, traffic to this range (all nodes' pod
    /// subnets, reached by host-gw routes) is not masqueraded either. Must contain the subnet.
    pub cluster_cidr: Option<Ipv4Net>,
    /// Hairpin mode on the host veth port.
    pub hairpin_mode: bool,
    /// MTU of the bridge and veths (default 1500).
    pub mtu: u32,
    /// IPAM settings.
    pub ipam: HostLocalConf,
}

fn invalid(msg: String) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg, "")
}

fn bool_field(conf: &NetConf, key: &str) -> Result<bool, CniError> {
    match conf.extra.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(invalid(format!("{key}: expected true or false, got {v}"))),
    }
}

impl BridgeConf {
    /// Validates the plugin config.
    pub fn from_conf(conf: &NetConf) -> Result<Self, CniError> {
        if conf.name.is_empty() {
            return Err(invalid("network config has no \"name\"".into()));
        }
        let bridge = match conf.extra.get("bridge") {
            None => "cni0".to_string(),
            Some(Value::String(s)) if !s.is_empty() && s.len() < 16 && !s.contains(['/', ' ']) => s.clone(),
            Some(v) => {
                return Err(invalid(format!(
                    "bridge: {v} is not a valid interface name (1-15 chars)"
                )));
            }
        };
        let mtu = match conf.extra.get("mtu") {
            None => 1500,
            Some(v) => match v.as_u64() {
                Some(m) if (68..=65535).contains(&m) => m as u32,
                _ => return Err(invalid(format!("mtu: {v} is not an MTU between 68 and 65535"))),
            },
        };
        let ipam = conf
            .ipam
            .as_ref()
            .ok_or_else(|| invalid("\"ipam\" section is required".into()))?;
        let is_default_gateway = bool_field(conf, "isDefaultGateway")?;
        let ipam = HostLocalConf::from_ipam(ipam)?;
        let cluster_cidr = match conf.extra.get("clusterCIDR") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let net: Ipv4Net = s
                    .parse()
                    .map_err(|e: CidrError| invalid(format!("clusterCIDR: {}", e.0)))?;
                let net = net.trunc();
                if !net.contains(ipam.subnet.network()) || net.mask() > ipam.subnet.mask() {
                    return Err(invalid(format!(
                        "clusterCIDR: {s} does not contain the IPAM subnet {}",
                        ipam.subnet
                    )));
                }
                Some(net)
            }
            Some(v) => return Err(invalid(format!("clusterCIDR: expected a CIDR string, got {v}"))),
        };
        Ok(BridgeConf {
            network: conf.name.clone(),
            bridge,
            is_gateway: bool_field(conf, "isGateway")? || is_default_gateway,
            is_default_gateway,
            ip_masq: bool_field(conf, "ipMasq")?,
            cluster_cidr,
            hairpin_mode: bool_field(conf, "hairpinMode")?,
            mtu,
            ipam,
        })
    }
}

/// Host-side veth name for a container: `veth` + 8 hex digits derived from (container id, ifname), so
/// a DEL (or an ADD retried after a crash) finds the same device.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across builds, unlike std's randomly keyed hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

/// Builds the ADD result in the reference plugin's shape: interfaces [bridge, host veth, container],
/// the IP on interface 2, IPAM routes plus the default route when `isDefaultGateway`.
pub fn build_result(
    conf: &BridgeConf,
    net: &NetConf,
    ip: Ipv4Addr,
    macs: [&str; 3],
    host_veth: &str,
    ifname: &str,
    netns: &str,
) -> PluginResult {
    let mut routes = conf.ipam.routes.clone();
    // Like the reference plugin, the default route is added only if IPAM did not already give one.
    if conf.is_default_gateway && !routes.iter().any(|r| r.dst == "0.0.0.0/0") {
        routes.push(Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(conf.ipam.gateway.to_string()),
        });
    }
    PluginResult {
        cni_version: net.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: macs[0].into(),
                ..Default::default()
            },
            Interface {
                name: host_veth.into(),
                mac: macs[1].into(),
                ..Default::default()
            },
            Interface {
                name: ifname.into(),
                mac: macs[2].into(),
                sandbox: netns.into(),
                ..Default::default()
            },
        ],
        ips: vec![IpConfig {
            address: Ipv4Net {
                addr: ip,
                prefix: conf.ipam.subnet.prefix,
            }
            .to_string(),
            gateway: Some(conf.ipam.gateway.to_string()),
            interface: Some(2),
        }],
        routes,
        dns: net.dns.clone().unwrap_or_default(),
    }
}

/// A failed kernel operation.
fn nl_err(what: String, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Generic, what, e.to_string())
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
        _ => 0,
    }
}

fn mac_of(msg: &LinkMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) => {
                Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// Opens a network namespace file (e.g. `/var/run/netns/x`); `Ok(None)` when it no longer exists.
pub fn open_netns(path: &str) -> Result<Option<OwnedFd>, CniError> {
    match std::fs::File::open(path) {
        // A pin file whose namespace is gone (the node rebooted, the pin was unmounted) is no
        // namespace: DEL then still removes the host side and releases the address.
        Ok(f) if !is_nsfs(&f) => Ok(None),
        Ok(f) => Ok(Some(OwnedFd::from(f))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::new(
            ErrorCode::IoFailure,
            format!("opening netns {path}"),
            e.to_string(),
        )),
    }
}

fn is_nsfs(f: &std::fs::File) -> bool {
    nix::sys::statfs::fstatfs(f).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// The container's netns, which must exist (code 3, unknown container, when it does not).
fn existing_netns(path: &str) -> Result<OwnedFd, CniError> {
    open_netns(path)?.ok_or_else(|| {
        CniError::new(
            ErrorCode::UnknownContainer,
            format!("netns {path} does not exist"),
            "",
        )
    })
}

/// An rtnetlink handle whose socket lives in the netns `ns`: the socket is created while this thread
/// is switched into `ns`, then the thread switches back (a socket keeps the netns it was created in).
fn handle_in(ns: &OwnedFd) -> Result<Handle, CniError> {
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| CniError::new(ErrorCode::IoFailure, "opening own netns", e.to_string()))?;
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| nl_err("entering the pod netns".into(), e))?;
    let conn = rtnetlink::new_connection();
    let back = nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET);
    if let Err(e) = back {
        // Continuing in the wrong netns would configure the wrong interfaces: stop here.
        return Err(nl_err("returning to the node netns".into(), e));
    }
    let (conn, handle, _) = conn.map_err(|e| nl_err("opening netlink socket in the pod netns".into(), e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Kernel operations for one invocation (node-side handle; pod-side handles opened on demand).
pub struct NetOps {
    node: Handle,
}

impl NetOps {
    /// Connects to rtnetlink in the current (node) netns. Must run inside a tokio runtime.
    pub fn new() -> Result<Self, CniError> {
        let (conn, node, _) =
            rtnetlink::new_connection().map_err(|e| nl_err("opening netlink socket".into(), e))?;
        tokio::spawn(conn);
        Ok(NetOps { node })
    }

    async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
        match h
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
        {
            Ok(m) => Ok(m),
            Err(e) if errno(&e) == libc::ENODEV => Ok(None),
            Err(e) => Err(nl_err(format!("looking up link {name}"), e)),
        }
    }

    async fn ensure_bridge(&self, c: &BridgeConf) -> Result<LinkMessage, CniError> {
        if Self::link_by_name(&self.node, &c.bridge).await?.is_none() {
            let msg = LinkBridge::new(&c.bridge).mtu(c.mtu).build();
            if let Err(e) = self.node.link().add(msg).execute().await {
                // A concurrent ADD may have created it first.
                if errno(&e) != libc::EEXIST {
                    return Err(nl_err(format!("creating bridge {}", c.bridge), e));
                }
            }
        }
        let br = Self::link_by_name(&self.node, &c.bridge)
            .await?
            .ok_or_else(|| nl_err(format!("bridge {} vanished after creation", c.bridge), ""))?;
        let idx = br.header.index;
        if c.is_gateway {
            let gw = IpAddr::V4(c.ipam.gateway);
            if let Err(e) = self
                .node
                .address()
                .add(idx, gw, c.ipam.subnet.prefix)
                .execute()
                .await
                && errno(&e) != libc::EEXIST
            {
                return Err(nl_err(format!("adding gateway {gw} to bridge {}", c.bridge), e));
            }
        }
        self.node
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(format!("setting bridge {} up", c.bridge), e))?;
        Ok(br)
    }

    /// ADD: bridge, veth (peer created directly in the pod netns under `ifname`), addresses, routes.
    pub async fn add(
        &self,
        c: &BridgeConf,
        net: &NetConf,
        container_id: &str,
        netns_path: &str,
        ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<PluginResult, CniError> {
        let ns = existing_netns(netns_path)?;
        let pod = handle_in(&ns)?;
        if Self::link_by_name(&pod, ifname).await?.is_some() {
            return Err(CniError::new(
                ErrorCode::Generic,
                format!("interface {ifname} already exists in netns {netns_path}"),
                "DEL the container first or choose another CNI_IFNAME",
            ));
        }
        let br = self.ensure_bridge(c).await?;
        let host = host_veth_name(container_id, ifname);
        // Leftover from an ADD killed midway (the peer was never moved): remove it and start over.
        if let Some(old) = Self::link_by_name(&self.node, &host).await? {
            let _ = self.node.link().del(old.header.index).execute().await;
        }
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(ifname.to_string())
            .mtu(c.mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let veth = LinkVeth::new(&host, ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(c.mtu)
            .controller(br.header.index)
            .up()
            .build();
        self.node
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(|e| nl_err(format!("creating veth {host}/{ifname} for {container_id}"), e))?;
        let host_link = Self::link_by_name(&self.node, &host)
            .await?
            .ok_or_else(|| nl_err(format!("veth {host} missing after creation"), ""))?;
        if c.hairpin_mode {
            self.node
                .link()
                .set_port(LinkBridgePort::new(host_link.header.index).hairpin(true).build())
                .execute()
                .await
                .map_err(|e| nl_err(format!("setting hairpin mode on {host}"), e))?;
        }
        // Inside the pod: loopback up, interface up with its address, routes.
        if let Some(lo) = Self::link_by_name(&pod, "lo").await? {
            pod.link()
                .set(LinkUnspec::new_with_index(lo.header.index).up().build())
                .execute()
                .await
                .map_err(|e| nl_err("setting lo up in the pod".into(), e))?;
        }
        let pod_link = Self::link_by_name(&pod, ifname)
            .await?
            .ok_or_else(|| nl_err(format!("{ifname} missing in pod netns after creation"), ""))?;
        let idx = pod_link.header.index;
        pod.address()
            .add(idx, IpAddr::V4(ip), c.ipam.subnet.prefix)
            .execute()
            .await
            .map_err(|e| {
                nl_err(
                    format!("adding {ip}/{} to {ifname} in the pod", c.ipam.subnet.prefix),
                    e,
                )
            })?;
        pod.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(format!("setting {ifname} up in the pod"), e))?;
        let mut routes: Vec<(Ipv4Net, Ipv4Addr)> = Vec::new();
        for r in &c.ipam.routes {
            let dst: Ipv4Net = r.dst.parse().map_err(|e| invalid(format!("ipam route: {e}")))?;
            let gw = match &r.gw {
                Some(g) => g
                    .parse()
                    .map_err(|_| invalid(format!("ipam route gw {g:?} is not an IPv4 address")))?,
                None => c.ipam.gateway,
            };
            routes.push((dst, gw));
        }
        if c.is_default_gateway {
            routes.push((
                Ipv4Net {
                    addr: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                },
                c.ipam.gateway,
            ));
        }
        routes.dedup();
        for (dst, gw) in routes {
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.addr, dst.prefix)
                .gateway(gw)
                .output_interface(idx)
                .build();
            if let Err(e) = pod.route().add(msg).execute().await
                && errno(&e) != libc::EEXIST
            {
                return Err(nl_err(format!("adding route {dst} via {gw} in the pod"), e));
            }
        }
        let macs = [mac_of(&br), mac_of(&host_link), mac_of(&pod_link)];
        Ok(build_result(
            c,
            net,
            ip,
            [&macs[0], &macs[1], &macs[2]],
            &host,
            ifname,
            netns_path,
        ))
    }

    /// DEL: remove the veth (from the pod side if the netns exists, and the host side by name).
    /// Missing netns or interfaces are success.
    pub async fn del(&self, container_id: &str, netns_path: &str, ifname: &str) -> Result<(), CniError> {
        if !netns_path.is_empty()
            && let Some(ns) = open_netns(netns_path)?
        {
            let pod = handle_in(&ns)?;
            if let Some(l) = Self::link_by_name(&pod, ifname).await?
                && let Err(e) = pod.link().del(l.header.index).execute().await
                && errno(&e) != libc::ENODEV
            {
                return Err(nl_err(format!("deleting {ifname} in netns {netns_path}"), e));
            }
        }
        let host = host_veth_name(container_id, ifname);
        if let Some(l) = Self::link_by_name(&self.node, &host).await?
            && let Err(e) = self.node.link().del(l.header.index).execute().await
            && errno(&e) != libc::ENODEV
        {
            return Err(nl_err(format!("deleting host veth {host}"), e));
        }
        Ok(())
    }

    /// CHECK: the pod interface exists with the expected address, the host veth is on the bridge.
    pub async fn check(
        &self,
        c: &BridgeConf,
        container_id: &str,
        netns_path: &str,
        ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<(), CniError> {
        let fail = |m: String| CniError::new(ErrorCode::Generic, m, "");
        let pod = handle_in(&existing_netns(netns_path)?)?;
        let link = Self::link_by_name(&pod, ifname)
            .await?
            .ok_or_else(|| fail(format!("interface {ifname} missing in netns {netns_path}")))?;
        let addrs: Vec<_> = pod
            .address()
            .get()
            .set_link_index_filter(link.header.index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing addresses of {ifname}"), e))?;
        let has_ip = addrs.iter().any(|a| {
            a.attributes
                .iter()
                .any(|x| matches!(x, AddressAttribute::Address(IpAddr::V4(v)) if *v == ip))
        });
        if !has_ip {
            return Err(fail(format!(
                "{ifname} in {netns_path} does not have address {ip}"
            )));
        }
        let host = host_veth_name(container_id, ifname);
        let br = Self::link_by_name(&self.node, &c.bridge)
            .await?
            .ok_or_else(|| fail(format!("bridge {} missing", c.bridge)))?;
        let hl = Self::link_by_name(&self.node, &host)
            .await?
            .ok_or_else(|| fail(format!("host veth {host} missing")))?;
        let on_bridge = hl
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(i) if *i == br.header.index));
        if !on_bridge {
            return Err(fail(format!(
                "host veth {host} is not attached to bridge {}",
                c.bridge
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_pin_file_without_its_namespace_is_no_netns() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(open_netns(f.path().to_str().unwrap()).unwrap().is_none());
        assert!(open_netns("/nonexistent/netns").unwrap().is_none());
        assert!(open_netns("/proc/self/ns/net").unwrap().is_some());
    }

    fn net(v: serde_json::Value) -> NetConf {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn conf_defaults_and_result_shape() {
        let n = net(
            serde_json::json!({"cniVersion":"1.0.0","name":"k","type":"knode-bridge","isDefaultGateway":true,
            "ipam":{"type":"host-local","subnet":"10.30.0.0/24","routes":[{"dst":"10.96.0.0/12"}]}}),
        );
        let c = BridgeConf::from_conf(&n).unwrap();
        assert_eq!(
            (c.bridge.as_str(), c.mtu, c.is_gateway, c.ip_masq),
            ("cni0", 1500, true, false)
        );
        let r = build_result(
            &c,
            &n,
            Ipv4Addr::new(10, 30, 0, 2),
            ["a", "b", "c"],
            "vethx",
            "eth0",
            "/n",
        );
        assert_eq!(r.ips[0].address, "10.30.0.2/24");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.30.0.1"));
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.interfaces[2].sandbox, "/n");
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.routes[1].dst, "0.0.0.0/0");
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = |v| BridgeConf::from_conf(&net(v)).unwrap_err().msg;
        assert!(bad(serde_json::json!({"name":"k","type":"t","mtu":10,"ipam":{"type":"host-local","subnet":"10.0.0.0/24"}})).contains("mtu"));
        assert!(
            bad(serde_json::json!({"name":"k","type":"t","bridge":"averyveryverylongname"}))
                .contains("bridge")
        );
        assert!(bad(serde_json::json!({"name":"k","type":"t","ipMasq":"yes","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}})).contains("ipMasq"));
        assert!(bad(serde_json::json!({"name":"k","type":"t"})).contains("ipam"));
        assert!(bad(serde_json::json!({"name":"k","type":"t","clusterCIDR":"10.1.0.0/16","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}})).contains("does not contain"));
        assert!(bad(serde_json::json!({"name":"k","type":"t","clusterCIDR":"10.0.0.0/28","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}})).contains("does not contain"));
        assert!(bad(serde_json::json!({"name":"k","type":"t","clusterCIDR":"nope","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}})).contains("clusterCIDR"));
    }

    #[test]
    fn cluster_cidr_contains_the_node_subnet() {
        let n = net(
            serde_json::json!({"name":"k","type":"t","ipMasq":true,"clusterCIDR":"10.244.0.0/16",
            "ipam":{"type":"host-local","subnet":"10.244.3.0/24"}}),
        );
        let c = BridgeConf::from_conf(&n).unwrap();
        assert_eq!(
            c.cluster_cidr.map(|n| n.to_string()).as_deref(),
            Some("10.244.0.0/16")
        );
    }

    #[test]
    fn host_veth_name_is_stable_and_short() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert!(a.len() <= 15);
    }
}
