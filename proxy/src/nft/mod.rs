//! kube-proxy's nftables table, programmed over netlink: the fixed skeleton (chains, rules, sets)
//! and the per-Service elements, encoded with libnftnl (nftnl / nftnl-sys) and sent in one
//! netlink batch per sync.
//!
//! What is computed and what is applied are separate files:
//!
//! - `elements` (pure): the sets and maps of the layout and how an [`Element`](crate::model::Element)
//!   is stored in them, key/data bytes both ways.
//! - `skeleton` (pure): the chains and rules of a [`TableConfig`] — the fixed part of the table
//!   — and those of each session-affinity timeout class, as data.
//! - `expr`: expression encoding: [`RawExpr`] (any libnftnl expression by name and attributes)
//!   and the constructors the skeleton is written with.
//! - `batch`: the libnftnl objects of a batch: the table with its layout tag, set declarations,
//!   element lists, chains and rules.
//! - `programmer`: the applier, [`NftProgrammer`] (one table) and [`DualStack`] (`ip` and `ip6`):
//!   diff, reference counts, affinity classes, one batch per sync.
//! - `readback`: netlink dumps of an existing table, for adopting it at start-up and on resyncs.
//!
//! Framing, batch sending (one `sendmsg` on the programmer's persistent NETLINK_NETFILTER socket,
//! buffers raised with SO_SNDBUFFORCE/SO_RCVBUFFORCE, so a 10k-Service full sync of ~13 MB is one
//! kernel transaction) and acks are the `knode-netlink` crate's.
//!
//! The socket is opened in the calling thread's network namespace: to program another namespace,
//! call from a thread that did `setns` into it.

mod batch;
mod elements;
mod expr;
mod programmer;
mod readback;
mod skeleton;

use std::ffi::CString;
use std::net::IpAddr;

use nftnl::ProtoFamily;

pub use elements::{affinity_name, affinity_record_name, element_bytes, parse_element};
pub use expr::RawExpr;
pub use programmer::{DualStack, NftProgrammer, SyncPhases, SyncStats};

use crate::model::Family;

/// Upstream's table name (in family `ip`).
pub const TABLE_NAME: &str = "kube-proxy";
/// Upstream's masquerade mark bit.
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Errors from programming nftables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// Opening the socket, sending, receiving, or a request the kernel answered with an error.
    #[error("nftables over netlink: {0}")]
    Netlink(#[from] knode_netlink::Error),
    #[error(
        "the kernel rejected nftables message {index} of the batch: {source} (the whole batch was rolled back)"
    )]
    Rejected {
        index: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("out of memory allocating a libnftnl object")]
    OutOfMemory,
    #[error("a name contains a NUL byte: {0:?}")]
    BadName(String),
    #[error(
        "the ruleset uses {model} buckets per service port but the table is configured for {table}: \
         give ModelConfig and TableConfig the same `buckets`"
    )]
    BucketMismatch { model: u32, table: u32 },
}

/// Settings that shape the fixed part of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Buckets per service port: the `numgen random mod B` modulus; must equal the model's
    /// [`crate::model::ModelConfig::buckets`] (a full sync refuses a mismatch).
    pub buckets: u32,
    /// Masquerade all traffic to ClusterIPs (upstream `--masquerade-all`).
    pub masquerade_all: bool,
    /// Pod network of this family (upstream `--cluster-cidr`): ClusterIP traffic from outside it
    /// is masqueraded.
    pub cluster_cidr: Option<(IpAddr, u8)>,
    /// The family of the table: `ip kube-proxy` (IPv4) or `ip6 kube-proxy` (IPv6).
    pub family: Family,
    /// Table name (`kube-proxy` in production; tests may use another to run side by side).
    pub table_name: String,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            buckets: crate::model::DEFAULT_BUCKETS,
            masquerade_all: false,
            cluster_cidr: None,
            family: Family::V4,
            table_name: TABLE_NAME.to_string(),
        }
    }
}

fn cstring(s: &str) -> Result<CString, NftError> {
    CString::new(s).map_err(|_| NftError::BadName(s.to_string()))
}

/// Netfilter protocol family number of a table family.
fn nfproto(f: Family) -> u32 {
    match f {
        Family::V4 => libc::NFPROTO_IPV4 as u32,
        Family::V6 => libc::NFPROTO_IPV6 as u32,
    }
}

fn proto_family(f: Family) -> ProtoFamily {
    match f {
        Family::V4 => ProtoFamily::Ipv4,
        Family::V6 => ProtoFamily::Ipv6,
    }
}
