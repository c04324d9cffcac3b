//! `knode-bridge`: knode's CNI plugin — a Linux bridge with veth pairs, built-in host-local-compatible
//! IPAM and nftables masquerade, configured like the reference `bridge` + `host-local` plugins:
//!
//! ```json
//! {"cniVersion":"1.0.0","name":"knode","type":"knode-bridge","bridge":"knode0","isDefaultGateway":true,
//!  "ipMasq":true,"clusterCIDR":"10.244.0.0/16","hairpinMode":true,"mtu":1500,
//!  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24"}]],"dataDir":"/var/lib/cni/networks"}}
//! ```
//!
//! `clusterCIDR` (optional, knode's own) exempts traffic to the other nodes' pod subnets from the
//! masquerade, for host-gw routing between nodes (`knode-hostgw`).

use std::net::Ipv4Addr;

use cni::bridge::{BridgeConf, NetOps};
use cni::ipam::Store;
use cni::plugin::{Plugin, PluginArgs};
use cni::types::{CniError, ErrorCode, NetConf, PluginResult};

struct KnodeBridge;

/// Runs `f` on a current-thread runtime: every netns switch happens on this one thread.
fn block_on<T>(f: impl AsyncFnOnce(NetOps) -> Result<T, CniError>) -> Result<T, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| CniError::new(ErrorCode::IoFailure, "starting runtime", e.to_string()))?;
    rt.block_on(async {
        let ops = NetOps::new()?;
        f(ops).await
    })
}

impl Plugin for KnodeBridge {
    fn add(&mut self, args: &PluginArgs, conf: &NetConf) -> Result<PluginResult, CniError> {
        let c = BridgeConf::from_conf(conf)?;
        let store = Store::open(&c.ipam.data_dir, &c.network)?;
        // A repeated ADD must not disturb (or, through the undo below, tear down) the existing attachment.
        if let Some(ip) = store.find(&args.container_id, &args.ifname)? {
            return Err(CniError::new(
                ErrorCode::Generic,
                format!(
                    "container {} {} already has IP {ip} in network {}",
                    args.container_id, args.ifname, c.network
                ),
                "DEL the container first",
            ));
        }
        let ip = store.allocate(&c.ipam, &args.container_id, &args.ifname)?;
        let r = block_on(async |ops| {
            ops.add(&c, conf, &args.container_id, &args.netns, &args.ifname, ip)
                .await
        })
        .and_then(|r| {
            if c.ip_masq {
                cni::masq::ensure(&c.network, c.ipam.subnet, c.cluster_cidr.unwrap_or(c.ipam.subnet))?;
            }
            Ok(r)
        });
        if r.is_err() {
            // Undo so a failed ADD leaks neither the IP nor a half-made veth.
            let _ = block_on(async |ops| ops.del(&args.container_id, &args.netns, &args.ifname).await);
            let _ = store.release(&args.container_id, &args.ifname);
        }
        r
    }

    fn del(&mut self, args: &PluginArgs, conf: &NetConf) -> Result<(), CniError> {
        let c = BridgeConf::from_conf(conf)?;
        block_on(async |ops| ops.del(&args.container_id, &args.netns, &args.ifname).await)?;
        let store = Store::open(&c.ipam.data_dir, &c.network)?;
        store.release(&args.container_id, &args.ifname)?;
        Ok(())
    }

    fn check(&mut self, args: &PluginArgs, conf: &NetConf) -> Result<(), CniError> {
        let c = BridgeConf::from_conf(conf)?;
        let prev: PluginResult = match &conf.prev_result {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                CniError::new(ErrorCode::DecodingFailure, "decoding prevResult", e.to_string())
            })?,
            None => {
                return Err(CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    "CHECK requires prevResult",
                    "",
                ));
            }
        };
        let ip: Ipv4Addr = prev
            .ips
            .first()
            .and_then(|i| i.address.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    "prevResult has no IPv4 address",
                    "",
                )
            })?;
        let store = Store::open(&c.ipam.data_dir, &c.network)?;
        if store.find(&args.container_id, &args.ifname)? != Some(ip) {
            return Err(CniError::new(
                ErrorCode::Generic,
                format!(
                    "IP {ip} is not reserved for container {} {}",
                    args.container_id, args.ifname
                ),
                "",
            ));
        }
        drop(store);
        block_on(async |ops| {
            ops.check(&c, &args.container_id, &args.netns, &args.ifname, ip)
                .await
        })
    }
}

fn main() {
    std::process::exit(cni::plugin::run(&mut KnodeBridge));
}
