//! IP masquerade for traffic leaving a pod subnet, programmed with nftables over netlink (no iptables,
//! no nft CLI). Layout, in the node netns:
//!
//! ```text
//! table ip knode-cni {
//!     chain masq-<network> { type nat hook postrouting priority srcnat;
//!         ip saddr <subnet> ip daddr != <exempt> masquerade } }
//! ```
//! `<exempt>` is the node's subnet, or the whole cluster CIDR when the network config gives
//! `clusterCIDR`: pod-to-pod traffic between nodes (host-gw routes) keeps its source address, only
//! traffic leaving the cluster is masqueraded. One chain per network. Every ADD reads the chain back (one dump) and, unless it holds exactly
//! this rule, rewrites it atomically (add table, add chain, flush chain, add rule), so the ruleset
//! does not grow with the number of pods and a concurrent ADD cannot duplicate it. Framing, the
//! batch send and ack handling are `knode-netlink`'s; libnftnl encodes the objects.

use std::ffi::CString;
use std::net::Ipv4Addr;

use knode_netlink::Socket;
use knode_netlink::message::nft_get;
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, ProtoFamily, Rule, Table, nft_expr};

use crate::ipnet::Ipv4Net;
use crate::types::{CniError, ErrorCode};

/// The nftables table knode-bridge owns.
pub const TABLE: &str = "knode-cni";
/// `srcnat` priority.
const SRCNAT: i32 = 100;

fn err(what: String, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Generic, what, e.to_string())
}

/// Chain name for a network (nft names are limited to 256 bytes; network names are short).
pub fn chain_name(network: &str) -> String {
    format!("masq-{network}")
}

/// The comment (rule userdata) that identifies the rule for `subnet` exempting `exempt`.
fn comment(subnet: Ipv4Net, exempt: Ipv4Net) -> String {
    if subnet == exempt {
        format!("knode-cni masquerade {subnet}")
    } else {
        format!("knode-cni masquerade {subnet} except {exempt}")
    }
}

/// Installs the masquerade rule for `subnet` of `network` (traffic to `exempt`, which contains the
/// subnet, is not masqueraded), unless exactly that rule is already the chain's only rule: a
/// read-only dump is much cheaper than an nftables transaction, and every ADD calls this.
pub fn ensure(network: &str, subnet: Ipv4Net, exempt: Ipv4Net) -> Result<(), CniError> {
    let subnet = subnet.trunc();
    let exempt = exempt.trunc();
    let mut sock = Socket::open(libc::NETLINK_NETFILTER).map_err(|e| kernel_err(subnet, e))?;
    if matches!(is_programmed(&mut sock, network, subnet, exempt), Ok(true)) {
        return Ok(());
    }
    program(&mut sock, network, subnet, exempt)
}

fn kernel_err(subnet: Ipv4Net, e: knode_netlink::Error) -> CniError {
    err(format!("programming nft masquerade for {subnet}"), e)
}

/// Whether the chain of `network` holds exactly one rule, carrying the comment for `subnet` and
/// `exempt`.
pub fn is_programmed(
    sock: &mut Socket,
    network: &str,
    subnet: Ipv4Net,
    exempt: Ipv4Net,
) -> Result<bool, knode_netlink::Error> {
    const NFTA_RULE_TABLE: u16 = 1;
    const NFTA_RULE_CHAIN: u16 = 2;
    let chain = chain_name(network);
    let want = comment(subnet, exempt).into_bytes();
    let (mut rules, mut matching) = (0, 0);
    let r = sock.request(
        |seq| {
            nft_get(
                libc::NFT_MSG_GETRULE as u16,
                true,
                seq,
                libc::NFPROTO_IPV4 as u8,
                &[(NFTA_RULE_TABLE, TABLE), (NFTA_RULE_CHAIN, &chain)],
            )
        },
        |attrs| {
            rules += 1;
            if attrs.windows(want.len()).any(|w| w == want.as_slice()) {
                matching += 1;
            }
        },
    );
    match r {
        // ENOENT: table or chain missing.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        r => r.map(|()| rules == 1 && matching == 1),
    }
}

/// Writes table, chain and rule in one transaction (flushing the chain first).
fn program(sock: &mut Socket, network: &str, subnet: Ipv4Net, exempt: Ipv4Net) -> Result<(), CniError> {
    let table_name = CString::new(TABLE).map_err(|e| err("table name".into(), e))?;
    let chain = CString::new(chain_name(network))
        .map_err(|e| err(format!("network name {network:?} cannot name an nft chain"), e))?;
    let table = Table::new(&table_name, ProtoFamily::Ipv4);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    let mut ch = Chain::new(&chain, &table);
    ch.set_hook(Hook::PostRouting, SRCNAT);
    ch.set_type(ChainType::Nat);
    batch.add(&ch, MsgType::Add);
    // A rule delete without a handle flushes the chain.
    batch.add(&Rule::new(&ch), MsgType::Del);
    let mut rule = Rule::new(&ch);
    let note = CString::new(comment(subnet, exempt)).map_err(|e| err("rule comment".into(), e))?;
    rule.set_comment(&note)
        .map_err(|e| err("rule comment".into(), e))?;
    let mask = Ipv4Addr::from(subnet.mask());
    rule.add_expr(&nft_expr!(payload ipv4 saddr));
    rule.add_expr(&nft_expr!(bitwise mask mask, xor Ipv4Addr::UNSPECIFIED));
    rule.add_expr(&nft_expr!(cmp == subnet.addr));
    rule.add_expr(&nft_expr!(payload ipv4 daddr));
    let exempt_mask = Ipv4Addr::from(exempt.mask());
    rule.add_expr(&nft_expr!(bitwise mask exempt_mask, xor Ipv4Addr::UNSPECIFIED));
    rule.add_expr(&nft_expr!(cmp != exempt.addr));
    rule.add_expr(&nft_expr!(masquerade));
    batch.add(&rule, MsgType::Add);
    let fin = batch.finalize();
    let pages: Vec<&[u8]> = fin.iter().collect();
    sock.send_batch(&pages, fin.sequence_numbers())
        .map(|_| ())
        .map_err(|e| kernel_err(subnet, e))
}
