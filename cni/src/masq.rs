//! IP masquerade for traffic leaving a pod subnet, programmed with nftables over netlink (no iptables,
//! no nft CLI). Layout, in the node netns:
//!
//! ```text
//! table ip knode-cni {
//!     chain masq-<network> { type nat hook postrouting priority srcnat;
//!         ip saddr <subnet> ip daddr != <subnet> masquerade } }
//! ```
//! One chain per network, rewritten atomically (add table, add chain, flush chain, add rule) by every
//! ADD, so the ruleset does not grow with the number of pods and a concurrent ADD cannot duplicate it.

use std::ffi::CString;
use std::net::Ipv4Addr;

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

/// The comment (rule userdata) that identifies the rule for `subnet`.
fn comment(subnet: Ipv4Net) -> String {
    format!("knode-cni masquerade {subnet}")
}

/// Installs the masquerade rule for `subnet` of `network`, unless exactly that rule is already the
/// chain's only rule: a read-only dump is much cheaper than an nftables transaction, and every ADD
/// calls this.
pub fn ensure(network: &str, subnet: Ipv4Net) -> Result<(), CniError> {
    let subnet = subnet.trunc();
    if matches!(is_programmed(network, subnet), Ok(true)) {
        return Ok(());
    }
    program(network, subnet)
}

/// Whether the chain of `network` holds exactly one rule, carrying the comment for `subnet`.
pub fn is_programmed(network: &str, subnet: Ipv4Net) -> std::io::Result<bool> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETRULE: u16 = 7;
    const NFTA_RULE_TABLE: u16 = 1;
    const NFTA_RULE_CHAIN: u16 = 2;
    let mut attrs = Vec::new();
    for (ty, val) in [
        (NFTA_RULE_TABLE, TABLE.to_string()),
        (NFTA_RULE_CHAIN, chain_name(network)),
    ] {
        let mut v = val.into_bytes();
        v.push(0);
        let len = 4 + v.len();
        attrs.extend_from_slice(&(len as u16).to_ne_bytes());
        attrs.extend_from_slice(&ty.to_ne_bytes());
        attrs.extend_from_slice(&v);
        attrs.resize(attrs.len().div_ceil(4) * 4, 0);
    }
    let total = 16 + 4 + attrs.len();
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE).to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel assigns
    msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]); // nfgenmsg: family, version, res_id
    msg.extend_from_slice(&attrs);
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.send(&msg, 0)?;
    let want = comment(subnet).into_bytes();
    let (mut rules, mut matching) = (0, 0);
    let mut rbuf = vec![0u8; 65536];
    loop {
        let n = sock.recv(&mut &mut rbuf[..], 0)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes([rbuf[off], rbuf[off + 1], rbuf[off + 2], rbuf[off + 3]]) as usize;
            let ty = u16::from_ne_bytes([rbuf[off + 4], rbuf[off + 5]]);
            if len < 16 || off + len > n {
                return Ok(false);
            }
            if ty == libc::NLMSG_DONE as u16 {
                return Ok(rules == 1 && matching == 1);
            }
            if ty == libc::NLMSG_ERROR as u16 {
                // ENOENT: table or chain missing.
                return Ok(false);
            }
            rules += 1;
            if rbuf[off..off + len]
                .windows(want.len())
                .any(|w| w == want.as_slice())
            {
                matching += 1;
            }
            off += (len + 3) & !3;
        }
    }
}

/// Writes table, chain and rule in one transaction (flushing the chain first).
fn program(network: &str, subnet: Ipv4Net) -> Result<(), CniError> {
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
    let note = CString::new(comment(subnet)).map_err(|e| err("rule comment".into(), e))?;
    rule.set_comment(&note)
        .map_err(|e| err("rule comment".into(), e))?;
    let mask = Ipv4Addr::from(subnet.mask());
    rule.add_expr(&nft_expr!(payload ipv4 saddr));
    rule.add_expr(&nft_expr!(bitwise mask mask, xor Ipv4Addr::UNSPECIFIED));
    rule.add_expr(&nft_expr!(cmp == subnet.addr));
    rule.add_expr(&nft_expr!(payload ipv4 daddr));
    rule.add_expr(&nft_expr!(bitwise mask mask, xor Ipv4Addr::UNSPECIFIED));
    rule.add_expr(&nft_expr!(cmp != subnet.addr));
    rule.add_expr(&nft_expr!(masquerade));
    batch.add(&rule, MsgType::Add);
    let fin = batch.finalize();
    let mut buf = Vec::new();
    for page in &fin {
        buf.extend_from_slice(page);
    }
    send(&buf, fin.sequence_numbers().len())
        .map_err(|e| err(format!("programming nft masquerade for {subnet}"), e))
}

/// Sends one batch on a NETLINK_NETFILTER socket and waits for `acks` acknowledgements or an error.
fn send(buf: &[u8], acks: usize) -> std::io::Result<()> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.send(buf, 0)?;
    let mut seen = 0;
    let mut rbuf = vec![0u8; 65536];
    while seen < acks {
        let n = sock.recv(&mut &mut rbuf[..], 0)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes([rbuf[off], rbuf[off + 1], rbuf[off + 2], rbuf[off + 3]]) as usize;
            let ty = u16::from_ne_bytes([rbuf[off + 4], rbuf[off + 5]]);
            if len < 16 || off + len > n {
                break;
            }
            if ty == libc::NLMSG_ERROR as u16 && len >= 20 {
                let code =
                    i32::from_ne_bytes([rbuf[off + 16], rbuf[off + 17], rbuf[off + 18], rbuf[off + 19]]);
                if code != 0 {
                    return Err(std::io::Error::from_raw_os_error(-code));
                }
                seen += 1;
            }
            off += (len + 3) & !3;
        }
    }
    Ok(())
}
