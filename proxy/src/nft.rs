//! nftables over netlink: the fixed table skeleton (chains, rules, maps, sets) and element changes,
//! encoded with libnftnl (nftnl / nftnl-sys) and sent in one netlink batch per sync.
//!
//! The safe nftnl API lacks data maps, concatenations, numgen and `lookup` with a data register;
//! [`RawExpr`] builds any expression from its libnftnl attributes instead. Batches of any size go out
//! in one `sendmsg` on a fresh NETLINK_NETFILTER socket whose buffers are raised with
//! SO_SNDBUFFORCE/SO_RCVBUFFORCE, so a 10k-service full sync (~13 MB) is one kernel transaction.
//!
//! The socket is opened in the calling thread's network namespace: to program another namespace,
//! call from a thread that did `setns` into it.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString, c_void};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use nftnl::expr::Expression;
use nftnl::nftnl_sys as sys;
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, NlMsg, Policy, ProtoFamily, Rule, Table};

use crate::diff::{ChangeSet, diff, diff_services};
use crate::model::{
    CLUSTER_IPS, Destination, EXTERNAL_SERVICES, Element, LARGE_BUCKETS, NO_ENDPOINT_SERVICES, Ruleset,
    SERVICE_ENDPOINTS, SERVICE_ENDPOINTS_LARGE, SERVICE_IPS, ServiceKey,
};

/// Upstream's table name (in family `ip`).
pub const TABLE_NAME: &str = "kube-proxy";
/// Upstream's masquerade mark bit.
pub const MASQUERADE_MARK: u32 = 0x4000;
/// Elements per NEWSETELEM/DELSETELEM message; keeps each message well under the 64 KiB limit.
const ELEMENTS_PER_MESSAGE: usize = 400;

/// Errors from programming nftables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("sending the nftables batch ({bytes} bytes): {source}")]
    Send {
        bytes: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("receiving nftables acks: {0}")]
    Receive(#[source] std::io::Error),
    #[error(
        "the kernel rejected nftables message {seq} of the batch: {source} (the whole batch was rolled back)"
    )]
    Rejected {
        seq: u32,
        #[source]
        source: std::io::Error,
    },
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
    /// Pod network (upstream `--cluster-cidr`): ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
    /// Table name (`kube-proxy` in production; tests may use another to run side by side).
    pub table_name: String,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            buckets: crate::model::DEFAULT_BUCKETS,
            masquerade_all: false,
            cluster_cidr: None,
            table_name: TABLE_NAME.to_string(),
        }
    }
}

/// What one sync sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// True when the table was (re)created from scratch.
    pub full: bool,
    pub elements_added: usize,
    pub elements_deleted: usize,
    pub batch_bytes: usize,
}

/// Programs one `ip` table; remembers what it programmed so later syncs send only the difference.
#[derive(Debug)]
pub struct NftProgrammer {
    config: TableConfig,
    programmed: Option<Ruleset>,
}

impl NftProgrammer {
    pub fn new(config: TableConfig) -> Self {
        NftProgrammer {
            config,
            programmed: None,
        }
    }

    /// Brings the kernel to `desired` (a full resync: every Service is compared). The first call
    /// replaces any existing table atomically (add, delete, re-create in one transaction); later
    /// calls send only changed elements.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<SyncStats, NftError> {
        match &self.programmed {
            None => self.full_sync(desired),
            Some(programmed) => {
                let changes = diff(programmed, desired);
                let stats = self.send_changes(&changes, None)?;
                self.programmed = Some(desired.clone());
                Ok(stats)
            }
        }
    }

    /// Applies the Services named in `changed` (as they are in `desired`; absent = deleted) and
    /// leaves every other Service alone: O(the changed Services' elements), flat in cluster size.
    /// Falls back to a full sync when nothing has been programmed yet.
    pub fn sync_services(
        &mut self,
        desired: &Ruleset,
        changed: &BTreeSet<ServiceKey>,
    ) -> Result<SyncStats, NftError> {
        let Some(programmed) = &self.programmed else {
            return self.full_sync(desired);
        };
        let changes = diff_services(programmed, desired, changed);
        let stats = self.send_changes(&changes, None)?;
        if let Some(programmed) = self.programmed.as_mut() {
            for key in changed {
                match desired.by_service.get(key) {
                    Some(els) => {
                        programmed.by_service.insert(key.clone(), els.clone());
                    }
                    None => {
                        programmed.by_service.remove(key);
                    }
                }
            }
        }
        Ok(stats)
    }

    fn full_sync(&mut self, desired: &Ruleset) -> Result<SyncStats, NftError> {
        // A model/table bucket mismatch would leave some `numgen` results without a map element
        // (connections not load-balanced): refuse it. Checked on full syncs, which are O(n) anyway.
        let max_bucket = desired
            .by_service
            .values()
            .flatten()
            .filter_map(|e| match e {
                Element::ServiceEndpoint { bucket, .. } => Some(*bucket),
                _ => None,
            })
            .max();
        if let Some(max) = max_bucket
            && max + 1 != self.config.buckets.max(1)
        {
            return Err(NftError::BucketMismatch {
                model: max + 1,
                table: self.config.buckets.max(1),
            });
        }
        let changes = diff(&Ruleset::default(), desired);
        let stats = self.send_changes(&changes, Some(()))?;
        self.programmed = Some(desired.clone());
        Ok(stats)
    }

    /// Sends `changes` in one batch; with `skeleton`, the batch first replaces the whole table.
    fn send_changes(&self, changes: &ChangeSet, skeleton: Option<()>) -> Result<SyncStats, NftError> {
        let full = skeleton.is_some();
        if !full && changes.is_empty() {
            return Ok(SyncStats {
                full,
                elements_added: 0,
                elements_deleted: 0,
                batch_bytes: 0,
            });
        }
        let table = Table::new(&cstring(&self.config.table_name)?, ProtoFamily::Ipv4);
        let mut batch = Batch::new();
        if full {
            batch.add(&table, MsgType::Add);
            batch.add(&table, MsgType::Del);
            batch.add(&table, MsgType::Add);
            build_skeleton(&mut batch, &table, &self.config)?;
        }
        add_element_messages(&mut batch, &self.config.table_name, changes)?;
        let bytes = send_batch(&batch.finalize())?;
        Ok(SyncStats {
            full,
            elements_added: changes.add.len(),
            elements_deleted: changes.delete.len(),
            batch_bytes: bytes,
        })
    }

    /// Forgets what was programmed, so the next sync rebuilds the table (repairs any drift).
    pub fn invalidate(&mut self) {
        self.programmed = None;
    }

    /// Removes the table (if present).
    pub fn delete_table(&mut self) -> Result<(), NftError> {
        let table = Table::new(&cstring(&self.config.table_name)?, ProtoFamily::Ipv4);
        let mut batch = Batch::new();
        batch.add(&table, MsgType::Add);
        batch.add(&table, MsgType::Del);
        send_batch(&batch.finalize())?;
        self.programmed = None;
        Ok(())
    }
}

fn cstring(s: &str) -> Result<CString, NftError> {
    CString::new(s).map_err(|_| NftError::BadName(s.to_string()))
}

// ---- set layout ------------------------------------------------------------------------------

// nft's datatype ids, concatenated 6 bits apiece, so `nft list` can print the elements.
const T_IPV4: u32 = 7;
const T_PROTO: u32 = 12;
const T_SERVICE: u32 = 13;
const T_MARK: u32 = 19;
const fn concat(a: u32, b: u32) -> u32 {
    (a << 6) | b
}

struct SetSpec {
    name: &'static str,
    id: u32,
    key_type: u32,
    key_len: u32,
    /// (data type, data length) for maps.
    data: Option<(u32, u32)>,
}

const SETS: [SetSpec; 6] = [
    SetSpec {
        name: SERVICE_ENDPOINTS,
        id: 1,
        key_type: concat(concat(concat(T_IPV4, T_PROTO), T_SERVICE), T_MARK),
        key_len: 16,
        data: Some((concat(T_IPV4, T_SERVICE), 8)),
    },
    SetSpec {
        name: SERVICE_ENDPOINTS_LARGE,
        id: 6,
        key_type: concat(concat(concat(T_IPV4, T_PROTO), T_SERVICE), T_MARK),
        key_len: 16,
        data: Some((concat(T_IPV4, T_SERVICE), 8)),
    },
    SetSpec {
        name: SERVICE_IPS,
        id: 2,
        key_type: concat(concat(T_IPV4, T_PROTO), T_SERVICE),
        key_len: 12,
        data: None,
    },
    SetSpec {
        name: EXTERNAL_SERVICES,
        id: 3,
        key_type: concat(concat(T_IPV4, T_PROTO), T_SERVICE),
        key_len: 12,
        data: None,
    },
    SetSpec {
        name: NO_ENDPOINT_SERVICES,
        id: 4,
        key_type: concat(concat(T_IPV4, T_PROTO), T_SERVICE),
        key_len: 12,
        data: None,
    },
    SetSpec {
        name: CLUSTER_IPS,
        id: 5,
        key_type: T_IPV4,
        key_len: 4,
        data: None,
    },
];

/// Key bytes of a destination in concatenation layout: each field padded to 4 bytes.
fn dst_key(d: &Destination) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&d.ip.octets());
    k.extend_from_slice(&[d.protocol.number(), 0, 0, 0]);
    k.extend_from_slice(&d.port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// (key, data) bytes of an element as the kernel stores them.
pub fn element_bytes(e: &Element) -> (Vec<u8>, Option<Vec<u8>>) {
    match e {
        Element::ServiceEndpoint {
            dst,
            bucket,
            endpoint,
            endpoint_port,
        }
        | Element::LargeServiceEndpoint {
            dst,
            bucket,
            endpoint,
            endpoint_port,
        } => {
            let mut k = dst_key(dst);
            // numgen writes the bucket in host byte order.
            k.extend_from_slice(&bucket.to_ne_bytes());
            let mut d = endpoint.octets().to_vec();
            d.extend_from_slice(&endpoint_port.to_be_bytes());
            d.extend_from_slice(&[0, 0]);
            (k, Some(d))
        }
        Element::ServiceIp(d) | Element::ExternalService(d) | Element::NoEndpointService(d) => {
            (dst_key(d), None)
        }
        Element::ClusterIp(ip) => (ip.octets().to_vec(), None),
    }
}

/// A set declaration (NEWSET).
struct SetMsg {
    set: NonNull<sys::nftnl_set>,
}

impl SetMsg {
    fn declaration(table: &str, spec: &SetSpec) -> Result<SetMsg, NftError> {
        let set = Self::named(table, spec.name)?;
        // SAFETY: `set` is a valid, exclusively owned nftnl_set.
        unsafe {
            let p = set.set.as_ptr();
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_ID as u16, spec.id);
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_TYPE as u16, spec.key_type);
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_LEN as u16, spec.key_len);
            if let Some((ty, len)) = spec.data {
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_FLAGS as u16, libc::NFT_SET_MAP as u32);
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_TYPE as u16, ty);
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_LEN as u16, len);
            } else {
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_FLAGS as u16, 0);
            }
        }
        Ok(set)
    }

    fn named(table: &str, name: &str) -> Result<SetMsg, NftError> {
        let table = cstring(table)?;
        let name = cstring(name)?;
        // SAFETY: allocation is checked; string setters copy their arguments.
        unsafe {
            let set = NonNull::new(sys::nftnl_set_alloc())
                .ok_or_else(|| NftError::Socket(std::io::Error::from(std::io::ErrorKind::OutOfMemory)))?;
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(
                set.as_ptr(),
                sys::NFTNL_SET_FAMILY as u16,
                libc::NFPROTO_IPV4 as u32,
            );
            Ok(SetMsg { set })
        }
    }

    fn add_element(&mut self, key: &[u8], data: Option<&[u8]>) -> Result<(), NftError> {
        // SAFETY: the element is allocated, filled (setters copy) and handed to the set, which
        // owns it from then on.
        unsafe {
            let elem = sys::nftnl_set_elem_alloc();
            if elem.is_null() {
                return Err(NftError::Socket(std::io::Error::from(
                    std::io::ErrorKind::OutOfMemory,
                )));
            }
            sys::nftnl_set_elem_set(
                elem,
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast(),
                key.len() as u32,
            );
            if let Some(d) = data {
                sys::nftnl_set_elem_set(
                    elem,
                    sys::NFTNL_SET_ELEM_DATA as u16,
                    d.as_ptr().cast(),
                    d.len() as u32,
                );
            }
            sys::nftnl_set_elem_add(self.set.as_ptr(), elem);
        }
        Ok(())
    }
}

impl Drop for SetMsg {
    fn drop(&mut self) {
        // SAFETY: we own the set (and thereby its elements).
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) };
    }
}

/// Writes NEWSET when used as a declaration; see [`ElemsMsg`] for elements.
// SAFETY: `write` only serializes the owned nftnl_set into the batch buffer nftnl hands it.
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        // SAFETY: the batch gives a buffer of nft_nlmsg_maxsize bytes.
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                libc::NFT_MSG_NEWSET as u16,
                libc::NFPROTO_IPV4 as u16,
                (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16,
                seq,
            );
            sys::nftnl_set_nlmsg_build_payload(hdr, self.set.as_ptr());
        }
    }
}

/// A NEWSETELEM / DELSETELEM message carrying a chunk of one set's elements.
struct ElemsMsg(SetMsg);

// SAFETY: as for SetMsg; at most ELEMENTS_PER_MESSAGE elements keep the payload within the buffer.
unsafe impl NlMsg for ElemsMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (
                libc::NFT_MSG_NEWSETELEM,
                libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK,
            ),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        // SAFETY: as for SetMsg; the chunk size keeps the payload under the buffer size.
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                ty as u16,
                libc::NFPROTO_IPV4 as u16,
                flags as u16,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload(hdr, self.0.set.as_ptr());
        }
    }
}

fn add_element_messages(batch: &mut Batch, table: &str, changes: &ChangeSet) -> Result<(), NftError> {
    for (elements, msg_type) in [(&changes.delete, MsgType::Del), (&changes.add, MsgType::Add)] {
        for spec in &SETS {
            let mine: Vec<&Element> = elements.iter().filter(|e| e.set_name() == spec.name).collect();
            for chunk in mine.chunks(ELEMENTS_PER_MESSAGE) {
                let mut msg = SetMsg::named(table, spec.name)?;
                for e in chunk {
                    let (k, d) = element_bytes(e);
                    msg.add_element(&k, d.as_deref())?;
                }
                batch.add(&ElemsMsg(msg), msg_type);
            }
        }
    }
    Ok(())
}

// ---- expressions ---------------------------------------------------------------------------

/// One nftables expression given by its libnftnl name and attributes.
#[derive(Debug, Clone)]
pub struct RawExpr {
    name: &'static CStr,
    u32s: Vec<(u32, u32)>,
    data: Vec<(u32, Vec<u8>)>,
    strs: Vec<(u32, CString)>,
}

impl RawExpr {
    fn new(name: &'static CStr) -> Self {
        RawExpr {
            name,
            u32s: Vec::new(),
            data: Vec::new(),
            strs: Vec::new(),
        }
    }
    fn u32(mut self, attr: u32, v: u32) -> Self {
        self.u32s.push((attr, v));
        self
    }
    fn bytes(mut self, attr: u32, v: &[u8]) -> Self {
        self.data.push((attr, v.to_vec()));
        self
    }
    fn string(mut self, attr: u32, v: CString) -> Self {
        self.strs.push((attr, v));
        self
    }
}

impl Expression for RawExpr {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: libnftnl copies every attribute it is given.
        unsafe {
            let expr = sys::nftnl_expr_alloc(self.name.as_ptr());
            let Some(expr) = NonNull::new(expr) else {
                // Allocation failure: nftnl itself aborts in this case too.
                std::process::abort();
            };
            for (attr, v) in &self.u32s {
                sys::nftnl_expr_set_u32(expr.as_ptr(), *attr as u16, *v);
            }
            for (attr, v) in &self.data {
                sys::nftnl_expr_set(expr.as_ptr(), *attr as u16, v.as_ptr().cast(), v.len() as u32);
            }
            for (attr, v) in &self.strs {
                sys::nftnl_expr_set_str(expr.as_ptr(), *attr as u16, v.as_ptr());
            }
            expr
        }
    }
}

/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY` from linux/netfilter/nf_nat.h (not in libc).
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;
const REG1: u32 = libc::NFT_REG_1 as u32;
const REG32_00: u32 = libc::NFT_REG32_00 as u32;

fn payload(base: u32, offset: u32, len: u32, dreg: u32) -> RawExpr {
    RawExpr::new(c"payload")
        .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
        .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, dreg)
}

fn meta_load(key: u32, dreg: u32) -> RawExpr {
    RawExpr::new(c"meta")
        .u32(sys::NFTNL_EXPR_META_KEY, key)
        .u32(sys::NFTNL_EXPR_META_DREG, dreg)
}

fn meta_store(key: u32, sreg: u32) -> RawExpr {
    RawExpr::new(c"meta")
        .u32(sys::NFTNL_EXPR_META_KEY, key)
        .u32(sys::NFTNL_EXPR_META_SREG, sreg)
}

fn bitwise(reg: u32, mask: u32, xor: u32) -> RawExpr {
    RawExpr::new(c"bitwise")
        .u32(sys::NFTNL_EXPR_BITWISE_SREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_DREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_LEN, 4)
        .bytes(sys::NFTNL_EXPR_BITWISE_MASK, &mask.to_ne_bytes())
        .bytes(sys::NFTNL_EXPR_BITWISE_XOR, &xor.to_ne_bytes())
}

fn cmp(op: u32, reg: u32, data: &[u8]) -> RawExpr {
    RawExpr::new(c"cmp")
        .u32(sys::NFTNL_EXPR_CMP_SREG, reg)
        .u32(sys::NFTNL_EXPR_CMP_OP, op)
        .bytes(sys::NFTNL_EXPR_CMP_DATA, data)
}

fn lookup(set: &SetSpec, sreg: u32, dreg: Option<u32>) -> Result<RawExpr, NftError> {
    let mut e = RawExpr::new(c"lookup")
        .u32(sys::NFTNL_EXPR_LOOKUP_SREG, sreg)
        .string(sys::NFTNL_EXPR_LOOKUP_SET, cstring(set.name)?)
        .u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, set.id);
    if let Some(d) = dreg {
        e = e.u32(sys::NFTNL_EXPR_LOOKUP_DREG, d);
    }
    Ok(e)
}

/// `ip daddr . meta l4proto . th dport` into REG32_00..02.
fn load_destination() -> [RawExpr; 3] {
    [
        payload(libc::NFT_PAYLOAD_NETWORK_HEADER as u32, 16, 4, REG32_00),
        meta_load(libc::NFT_META_L4PROTO as u32, REG32_00 + 1),
        payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 2, 2, REG32_00 + 2),
    ]
}

/// `meta mark set meta mark | 0x4000`
fn mark_for_masquerade() -> [RawExpr; 3] {
    [
        meta_load(libc::NFT_META_MARK as u32, REG1),
        bitwise(REG1, !MASQUERADE_MARK, MASQUERADE_MARK),
        meta_store(libc::NFT_META_MARK as u32, REG1),
    ]
}

/// The spec of one of [`SETS`] by name (only called with the names defined there; the unit test
/// checks the layout).
fn set_spec(name: &str) -> &'static SetSpec {
    SETS.iter().find(|s| s.name == name).unwrap_or(&SETS[0])
}

fn add_rule(batch: &mut Batch, chain: &Chain, exprs: &[RawExpr]) {
    let mut rule = Rule::new(chain);
    for e in exprs {
        rule.add_expr(e);
    }
    batch.add(&rule, MsgType::Add);
}

/// `dnat ip to ip daddr . meta l4proto . th dport . numgen random mod B map @<map>`
fn dnat_rule(map: &SetSpec, buckets: u32) -> Result<Vec<RawExpr>, NftError> {
    let mut r: Vec<RawExpr> = load_destination().into();
    r.push(
        RawExpr::new(c"numgen")
            .u32(sys::NFTNL_EXPR_NG_TYPE, libc::NFT_NG_RANDOM as u32)
            .u32(sys::NFTNL_EXPR_NG_MODULUS, buckets)
            .u32(sys::NFTNL_EXPR_NG_OFFSET, 0)
            .u32(sys::NFTNL_EXPR_NG_DREG, REG32_00 + 3),
    );
    r.push(lookup(map, REG32_00, Some(REG32_00))?);
    r.push(
        RawExpr::new(c"nat")
            .u32(sys::NFTNL_EXPR_NAT_TYPE, libc::NFT_NAT_DNAT as u32)
            .u32(sys::NFTNL_EXPR_NAT_FAMILY, libc::NFPROTO_IPV4 as u32)
            .u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, REG32_00)
            .u32(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, REG32_00 + 1),
    );
    Ok(r)
}

/// Sets, chains and rules: fixed for a configuration, so written only on a full sync.
fn build_skeleton(batch: &mut Batch, table: &Table, config: &TableConfig) -> Result<(), NftError> {
    for spec in &SETS {
        batch.add(&SetMsg::declaration(&config.table_name, spec)?, MsgType::Add);
    }

    // NAT: mark what must be masqueraded, then DNAT through the flat map.
    let mut nat_rules: Vec<Vec<RawExpr>> = Vec::new();
    if config.masquerade_all || config.cluster_cidr.is_some() {
        let mut r: Vec<RawExpr> = load_destination().into();
        r.push(lookup(set_spec(SERVICE_IPS), REG32_00, None)?);
        if let (false, Some((net, len))) = (config.masquerade_all, config.cluster_cidr) {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            r.push(payload(libc::NFT_PAYLOAD_NETWORK_HEADER as u32, 12, 4, REG1));
            r.push(bitwise(REG1, mask.to_be(), 0));
            let net = u32::from(net) & mask;
            r.push(cmp(libc::NFT_CMP_NEQ as u32, REG1, &net.to_be_bytes()));
        }
        r.extend(mark_for_masquerade());
        nat_rules.push(r);
    }
    let mut r: Vec<RawExpr> = load_destination().into();
    r.push(lookup(set_spec(EXTERNAL_SERVICES), REG32_00, None)?);
    r.extend(mark_for_masquerade());
    nat_rules.push(r);
    // Large map first: a lookup miss ends the rule and falls through to the small map.
    nat_rules.push(dnat_rule(set_spec(SERVICE_ENDPOINTS_LARGE), LARGE_BUCKETS)?);
    nat_rules.push(dnat_rule(set_spec(SERVICE_ENDPOINTS), config.buckets.max(1))?);

    for (name, hook) in [("nat-prerouting", Hook::PreRouting), ("nat-output", Hook::Out)] {
        let mut chain = Chain::new(&cstring(name)?, table);
        chain.set_hook(hook, -100);
        chain.set_type(ChainType::Nat);
        chain.set_policy(Policy::Accept);
        batch.add(&chain, MsgType::Add);
        for r in &nat_rules {
            add_rule(batch, &chain, r);
        }
    }

    // Masquerade what was marked, clearing the mark first so it does not leak further.
    let mut chain = Chain::new(c"nat-postrouting", table);
    chain.set_hook(Hook::PostRouting, 100);
    chain.set_type(ChainType::Nat);
    chain.set_policy(Policy::Accept);
    batch.add(&chain, MsgType::Add);
    add_rule(
        batch,
        &chain,
        &[
            meta_load(libc::NFT_META_MARK as u32, REG1),
            bitwise(REG1, MASQUERADE_MARK, 0),
            cmp(libc::NFT_CMP_EQ as u32, REG1, &MASQUERADE_MARK.to_ne_bytes()),
            meta_load(libc::NFT_META_MARK as u32, REG1),
            bitwise(REG1, !MASQUERADE_MARK, 0),
            meta_store(libc::NFT_META_MARK as u32, REG1),
            RawExpr::new(c"masq").u32(sys::NFTNL_EXPR_MASQ_FLAGS, NF_NAT_RANGE_PROTO_RANDOM_FULLY),
        ],
    );

    // Reject destinations without endpoints (ICMP port unreachable: TCP sees ECONNREFUSED at once).
    for (name, hook) in [
        ("filter-input", Hook::In),
        ("filter-forward", Hook::Forward),
        ("filter-output", Hook::Out),
    ] {
        let mut chain = Chain::new(&cstring(name)?, table);
        chain.set_hook(hook, -10);
        chain.set_type(ChainType::Filter);
        chain.set_policy(Policy::Accept);
        batch.add(&chain, MsgType::Add);
        let mut r: Vec<RawExpr> = load_destination().into();
        r.push(lookup(set_spec(NO_ENDPOINT_SERVICES), REG32_00, None)?);
        r.push(
            RawExpr::new(c"reject")
                .u32(sys::NFTNL_EXPR_REJECT_TYPE, libc::NFT_REJECT_ICMP_UNREACH as u32)
                .u32(sys::NFTNL_EXPR_REJECT_CODE, 3),
        );
        add_rule(batch, &chain, &r);
    }
    Ok(())
}

// ---- socket ----------------------------------------------------------------------------------

/// Sends a finalized batch in one sendmsg and waits for every ack. Returns the bytes sent.
fn send_batch(batch: &nftnl::FinalizedBatch) -> Result<usize, NftError> {
    let pages: Vec<&[u8]> = batch.iter().collect();
    let bytes: usize = pages.iter().map(|p| p.len()).sum();
    let seqs = batch.sequence_numbers();
    let expected = seqs.len();

    // SAFETY: plain socket syscalls on a descriptor we own; buffers outlive the calls.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        );
        if fd < 0 {
            return Err(NftError::Socket(std::io::Error::last_os_error()));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let raw = fd.as_raw_fd();
        let set_int = |level: i32, opt: i32, v: i32| {
            libc::setsockopt(
                raw,
                level,
                opt,
                (&v as *const i32).cast(),
                std::mem::size_of::<i32>() as u32,
            )
        };
        // Room for the whole batch and one (capped) ack per message.
        let snd = i32::try_from(bytes + (1 << 20)).unwrap_or(i32::MAX);
        let rcv = i32::try_from(expected * 64 + (1 << 20)).unwrap_or(i32::MAX);
        if set_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, snd) < 0 {
            set_int(libc::SOL_SOCKET, libc::SO_SNDBUF, snd);
        }
        if set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcv) < 0 {
            set_int(libc::SOL_SOCKET, libc::SO_RCVBUF, rcv);
        }
        // Acks without the echoed request keep the receive side small.
        set_int(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let tv = libc::timeval {
            tv_sec: 30,
            tv_usec: 0,
        };
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        if libc::bind(
            raw,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ) < 0
        {
            return Err(NftError::Socket(std::io::Error::last_os_error()));
        }

        let mut iov: Vec<libc::iovec> = pages
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        if libc::sendmsg(raw, &msg, 0) < 0 {
            return Err(NftError::Send {
                bytes,
                source: std::io::Error::last_os_error(),
            });
        }

        let mut acked = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while acked < expected {
            let n = libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return Err(NftError::Receive(std::io::Error::last_os_error()));
            }
            let mut off = 0usize;
            let n = n as usize;
            let hdr_len = std::mem::size_of::<libc::nlmsghdr>();
            while off + hdr_len <= n {
                let hdr: libc::nlmsghdr = std::ptr::read_unaligned(buf.as_ptr().add(off).cast());
                let len = hdr.nlmsg_len as usize;
                if len < hdr_len || off + len > n {
                    break;
                }
                if hdr.nlmsg_type == libc::NLMSG_ERROR as u16 && len >= hdr_len + 4 {
                    let err: i32 = std::ptr::read_unaligned(buf.as_ptr().add(off + hdr_len).cast());
                    if err != 0 {
                        return Err(NftError::Rejected {
                            seq: hdr.nlmsg_seq.wrapping_sub(seqs.start),
                            source: std::io::Error::from_raw_os_error(-err),
                        });
                    }
                    acked += 1;
                }
                off += (len + 3) & !3;
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn bucket_mismatch_is_refused_before_touching_the_kernel() {
        let dst = Destination {
            ip: Ipv4Addr::new(10, 96, 0, 1),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let desired = Ruleset {
            by_service: [(
                ("default".to_string(), "a".to_string()),
                (0..8)
                    .map(|bucket| Element::ServiceEndpoint {
                        dst,
                        bucket,
                        endpoint: Ipv4Addr::new(10, 244, 0, 2),
                        endpoint_port: 80,
                    })
                    .collect(),
            )]
            .into(),
        };
        let mut p = NftProgrammer::new(TableConfig::default());
        assert!(matches!(
            p.sync(&desired),
            Err(NftError::BucketMismatch { model: 8, table: 16 })
        ));
    }

    #[test]
    fn endpoint_element_layout_matches_concatenation_registers() {
        let e = Element::ServiceEndpoint {
            dst: Destination {
                ip: Ipv4Addr::new(10, 96, 0, 10),
                protocol: Protocol::Udp,
                port: 53,
            },
            bucket: 3,
            endpoint: Ipv4Addr::new(10, 244, 1, 2),
            endpoint_port: 5353,
        };
        let (k, d) = element_bytes(&e);
        let mut want = vec![10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0];
        want.extend_from_slice(&3u32.to_ne_bytes());
        assert_eq!(k, want);
        assert_eq!(d, Some(vec![10, 244, 1, 2, 0x14, 0xe9, 0, 0]));
        for spec in &SETS {
            assert!(spec.key_len == 4 || spec.key_len % 4 == 0);
        }
        assert_eq!(
            u32::try_from(k.len()).ok(),
            Some(set_spec(SERVICE_ENDPOINTS).key_len)
        );
    }
}
