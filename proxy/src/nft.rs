//! nftables over netlink: the fixed table skeleton (chains, rules, maps, sets) and element changes,
//! encoded with libnftnl (nftnl / nftnl-sys) and sent in one netlink batch per sync.
//!
//! The safe nftnl API lacks data maps, concatenations, numgen and `lookup` with a data register;
//! [`RawExpr`] builds any expression from its libnftnl attributes instead. Batches of any size go out
//! in one `sendmsg` on a fresh NETLINK_NETFILTER socket whose buffers are raised with
//! SO_SNDBUFFORCE/SO_RCVBUFFORCE, so a 10k-service full sync (~13 MB) is one kernel transaction.
//!
//! One [`NftProgrammer`] per family (`ip` / `ip6 kube-proxy`, [`DualStack`] for both): the same
//! layout with family-sized addresses and register offsets. A full resync first reads the table
//! back (netlink dumps of the table, its rules and set elements) and adopts it when its layout
//! matches, so restarts and periodic resyncs only send differences.
//!
//! The socket is opened in the calling thread's network namespace: to program another namespace,
//! call from a thread that did `setns` into it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, c_void};
use std::net::{IpAddr, Ipv4Addr};
use std::ptr::NonNull;

use nftnl::expr::Expression;
use nftnl::nftnl_sys as sys;
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, NlMsg, Policy, ProtoFamily, Rule, Table};

use crate::diff::{ChangeSet, diff, diff_services};
use crate::model::{
    AFFINITY_ENDPOINTS, CLUSTER_IPS, Destination, EXTERNAL_LOCAL_SERVICES, EXTERNAL_SERVICES, Element,
    FIREWALL_ALLOW, FIREWALL_IPS, Family, HAIRPIN_ENDPOINTS, LARGE_BUCKETS, NO_ENDPOINT_SERVICES,
    NO_LOCAL_ENDPOINT_SERVICES, Ruleset, SERVICE_AFFINITY, SERVICE_AFFINITY_RECORD, SERVICE_ENDPOINTS,
    SERVICE_ENDPOINTS_LARGE, SERVICE_ENDPOINTS_LOCAL, SERVICE_IPS, ServiceKey,
};
use crate::netlink::NetlinkSocket;

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

/// What one sync sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// True when the table was (re)created from scratch.
    pub full: bool,
    pub elements_added: usize,
    pub elements_deleted: usize,
    pub batch_bytes: usize,
    /// Where the time went.
    pub phases: SyncPhases,
}

/// Time spent per step of a sync (summed over families for [`DualStack`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncPhases {
    /// Comparing the desired elements with the programmed ones.
    pub diff: std::time::Duration,
    /// Reference counts and encoding the netlink batch (libnftnl).
    pub encode: std::time::Duration,
    /// `sendmsg` of the batch: the kernel validates and commits it in the sending thread.
    pub send: std::time::Duration,
    /// Reading the acks.
    pub acks: std::time::Duration,
}

impl SyncPhases {
    fn add(self, o: SyncPhases) -> SyncPhases {
        SyncPhases {
            diff: self.diff + o.diff,
            encode: self.encode + o.encode,
            send: self.send + o.send,
            acks: self.acks + o.acks,
        }
    }
}

/// Reference counts of the shared elements programmed, by [`Element::shared_key`] (a map keyed by the
/// address alone: at 50k endpoints one keyed by the whole element took 3.6 MiB).
type SharedCounts = std::collections::HashMap<IpAddr, u32>;

/// How a sync writes the table's chains and rules besides the element changes.
///
/// A table is never deleted and re-created while it has this layout: in that one transaction the
/// kernel would hold two copies of every set and NAT chain, and a new connection whose first
/// packet is evaluated across the commit (old rules, but the generation already switched when
/// the old set is looked up — lookups check element activity against the current generation)
/// finds no endpoint, is not DNATed, and its conntrack entry keeps it so until it times out.
/// Sets and base chains that stay make the commit atomic for packets too.
#[derive(Debug)]
enum Rebuild {
    /// There is no table: create it.
    Create,
    /// The table has another layout (an upgrade or a configuration change): delete and re-create
    /// it in one transaction (with the brief race above, on that occasion only).
    Replace,
    /// The table has this layout but its rules were changed: flush and rewrite every rule in
    /// one transaction, delete chains and sets the layout does not have; sets, their elements
    /// and the chains' hooks stay.
    Repair(Existing),
}

/// The chains and named sets of an existing table.
#[derive(Debug, Default)]
struct Existing {
    chains: Vec<String>,
    sets: Vec<String>,
}

/// What [`NftProgrammer::read_back`] found in a table with this layout.
struct Adopted {
    /// Every element, under one pseudo-Service (the first diff hands them to their Services).
    elements: Ruleset,
    /// Affinity timeout classes with their `service-affinity` element counts.
    classes: BTreeMap<u32, usize>,
    /// Shared elements, each counted once.
    shared: SharedCounts,
    /// The chains hold exactly the layout's rules.
    rules_match: bool,
}

/// Programs one table (`ip` or `ip6`, by [`TableConfig::family`]); remembers what it programmed so
/// later syncs send only the difference.
#[derive(Debug)]
pub struct NftProgrammer {
    config: TableConfig,
    programmed: Option<Ruleset>,
    /// Session-affinity timeout classes programmed (an `affinity-<T>` set and chain each), with
    /// the number of `service-affinity` elements pointing at each.
    affinity_classes: BTreeMap<u32, usize>,
    /// Reference counts of shared elements ([`Element::is_shared`]) programmed.
    shared: SharedCounts,
    /// The netlink socket, kept open between syncs: closing one after a commit waits for the
    /// kernel's transaction cleanup (see [`NetlinkSocket`]).
    sock: Option<NetlinkSocket>,
}

impl NftProgrammer {
    pub fn new(config: TableConfig) -> Self {
        NftProgrammer {
            config,
            programmed: None,
            affinity_classes: BTreeMap::new(),
            shared: SharedCounts::new(),
            sock: None,
        }
    }

    /// The socket in the calling thread's network namespace: opened on first use, re-opened
    /// when called from another namespace than last time.
    fn socket(&mut self) -> Result<&mut NetlinkSocket, NftError> {
        if self.sock.as_ref().is_none_or(|s| !s.in_current_netns()) {
            self.sock = Some(NetlinkSocket::open().map_err(NftError::Socket)?);
        }
        self.sock
            .as_mut()
            .ok_or_else(|| NftError::Socket(std::io::Error::other("netlink socket missing")))
    }

    /// Brings the kernel to `desired` (a full resync: every Service is compared). The first call
    /// adopts a table with this layout (its elements are read back and only the difference is
    /// sent; rules changed by hand are rewritten in the same transaction), and creates or
    /// replaces any other; later calls send only changed elements.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<SyncStats, NftError> {
        // This family's elements, kept (moved, not copied) as what is programmed afterwards.
        let desired = desired.family(self.config.family, None);
        match &self.programmed {
            None => self.adopt_or_build(desired),
            Some(programmed) => {
                let t = std::time::Instant::now();
                let changes = diff(programmed, &desired);
                let diff_time = t.elapsed();
                let mut stats = self.send_changes(&changes, None)?;
                stats.phases.diff = diff_time;
                self.programmed = Some(desired);
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
            return self.full_sync(desired.family(self.config.family, None));
        };
        let t = std::time::Instant::now();
        let desired = &desired.family(self.config.family, Some(changed));
        let changes = diff_services(programmed, desired, changed);
        let diff_time = t.elapsed();
        let mut stats = self.send_changes(&changes, None)?;
        stats.phases.diff = diff_time;
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

    fn full_sync(&mut self, desired: Ruleset) -> Result<SyncStats, NftError> {
        // A model/table bucket mismatch would leave some `numgen` results without a map element
        // (connections not load-balanced): refuse it. Checked on full syncs, which are O(n) anyway.
        let max_bucket = desired
            .by_service
            .values()
            .flatten()
            .filter_map(|e| match e {
                Element::ServiceEndpoint { bucket, .. } => Some(bucket),
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
        let t = std::time::Instant::now();
        let changes = diff(&Ruleset::default(), &desired);
        let diff_time = t.elapsed();
        self.affinity_classes.clear();
        self.shared.clear();
        let rebuild = match self.table_tag()? {
            None => Rebuild::Create,
            Some(_) => Rebuild::Replace,
        };
        let mut stats = self.send_changes(&changes, Some(&rebuild))?;
        stats.phases.diff = diff_time;
        self.programmed = Some(desired);
        Ok(stats)
    }

    /// The first sync of this programmer: adopts the table in the kernel when it has this layout
    /// (its elements are read back and only the difference to `desired` is sent, so dynamic
    /// state such as session-affinity entries survives; rules changed by hand are rewritten in
    /// the same transaction), else creates or replaces it.
    fn adopt_or_build(&mut self, desired: Ruleset) -> Result<SyncStats, NftError> {
        let Some(adopted) = self.read_back()? else {
            return self.full_sync(desired);
        };
        tracing::debug!(
            elements = adopted.elements.len(),
            rules_match = adopted.rules_match,
            "adopted the programmed table"
        );
        self.affinity_classes = adopted.classes;
        self.shared = adopted.shared;
        let t = std::time::Instant::now();
        let changes = diff(&adopted.elements, &desired);
        let diff_time = t.elapsed();
        let repair = match adopted.rules_match {
            true => None,
            false => {
                tracing::info!("table rules differ from the layout; rewriting them");
                Some(Rebuild::Repair(self.existing_objects()?))
            }
        };
        let mut stats = self.send_changes(&changes, repair.as_ref())?;
        stats.phases.diff = diff_time;
        self.programmed = Some(desired);
        Ok(stats)
    }

    /// The table's chains and named sets as they are in the kernel.
    fn existing_objects(&mut self) -> Result<Existing, NftError> {
        let f = self.config.family;
        let name = self.config.table_name.clone();
        let sock = self.socket()?;
        let mut existing = Existing::default();
        sock.request(
            |seq| nft_request(libc::NFT_MSG_GETCHAIN, true, seq, f, &[(1, name.as_str())]),
            |a| {
                let (mut table, mut chain) = (String::new(), String::new());
                for (ty, p) in crate::netlink::attrs(a) {
                    match ty {
                        NFTA_CHAIN_TABLE => table = c_str(p),
                        NFTA_CHAIN_NAME => chain = c_str(p),
                        _ => {}
                    }
                }
                if table == name {
                    existing.chains.push(chain);
                }
            },
        )
        .map_err(NftError::Receive)?;
        sock.request(
            |seq| nft_request(libc::NFT_MSG_GETSET, true, seq, f, &[(1, name.as_str())]),
            |a| {
                let (mut table, mut set, mut flags) = (String::new(), String::new(), 0u32);
                for (ty, p) in crate::netlink::attrs(a) {
                    match ty {
                        NFTA_SET_TABLE => table = c_str(p),
                        NFTA_SET_NAME => set = c_str(p),
                        NFTA_SET_FLAGS if p.len() >= 4 => {
                            flags = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                        }
                        _ => {}
                    }
                }
                // Anonymous sets belong to their rules and go with them.
                if table == name && flags & NFT_SET_ANONYMOUS == 0 {
                    existing.sets.push(set);
                }
            },
        )
        .map_err(NftError::Receive)?;
        Ok(existing)
    }

    /// The table's layout tag: None when the table does not exist, Some(None) when it has none.
    fn table_tag(&mut self) -> Result<Option<Option<Vec<u8>>>, NftError> {
        let f = self.config.family;
        let name = self.config.table_name.clone();
        let mut tag = None;
        let r = self.socket()?.request(
            |seq| nft_request(libc::NFT_MSG_GETTABLE, false, seq, f, &[(1, name.as_str())]),
            |a| {
                for (ty, p) in crate::netlink::attrs(a) {
                    if ty == NFTA_TABLE_USERDATA {
                        tag = Some(p.to_vec());
                    }
                }
            },
        );
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(NftError::Receive(e)),
            Ok(()) => Ok(Some(tag)),
        }
    }

    /// Sends `changes` in one batch; with `rebuild`, the batch first (re)writes the table's
    /// chains and rules (see [`Rebuild`]). Affinity timeout classes that gain their first
    /// element are created before the elements, those that lose their last are removed after
    /// them.
    fn send_changes(
        &mut self,
        changes: &ChangeSet,
        rebuild: Option<&Rebuild>,
    ) -> Result<SyncStats, NftError> {
        let started = std::time::Instant::now();
        // Shared elements: sent when their count goes 0 → 1 (add) or 1 → 0 (delete); one deleted
        // and re-added in the same batch nets out. Only the touched counts are computed (no copy
        // of the whole table's counts: a partial sync stays O(its changes)).
        let mut effective = ChangeSet::default();
        let mut touched: BTreeMap<IpAddr, (u32, u32)> = BTreeMap::new();
        for e in &changes.delete {
            match e.shared_key() {
                Some(k) => touched.entry(k).or_default().0 += 1,
                None => effective.delete.push(*e),
            }
        }
        for e in &changes.add {
            match e.shared_key() {
                Some(k) => touched.entry(k).or_default().1 += 1,
                None => effective.add.push(*e),
            }
        }
        let mut counts = Vec::with_capacity(touched.len());
        for (k, (dels, adds)) in touched {
            let old = self.shared.get(&k).copied().unwrap_or(0);
            let after_deletes = old.saturating_sub(dels);
            if old > 0 && after_deletes == 0 && adds == 0 {
                effective.delete.push(Element::HairpinEndpoint(k));
            } else if old == 0 && adds > 0 {
                effective.add.push(Element::HairpinEndpoint(k));
            }
            counts.push((k, after_deletes + adds));
        }
        let changes = &effective;
        let stats = self.send_effective(changes, rebuild, started)?;
        for (k, n) in counts {
            if n == 0 {
                self.shared.remove(&k);
            } else {
                self.shared.insert(k, n);
            }
        }
        // Affinity entries pointing at an endpoint their destination just lost: deleted now that
        // no new ones can be made (the batch is in), as upstream drops a gone endpoint's set.
        let re_added: BTreeSet<&Element> = changes
            .add
            .iter()
            .filter(|e| matches!(e, Element::AffinityEndpoint { .. }))
            .collect();
        let lost: BTreeSet<(Destination, IpAddr, u16)> = changes
            .delete
            .iter()
            .filter(|e| !re_added.contains(e))
            .filter_map(|e| match e {
                Element::AffinityEndpoint {
                    dst,
                    endpoint,
                    endpoint_port,
                } => Some((*dst, *endpoint, *endpoint_port)),
                _ => None,
            })
            .collect();
        if !matches!(rebuild, Some(Rebuild::Create | Rebuild::Replace)) && !lost.is_empty() {
            self.forget_affinity(&lost)?;
        }
        Ok(stats)
    }

    /// Deletes the session-affinity entries that send a destination to an endpoint in `lost`.
    fn forget_affinity(&mut self, lost: &BTreeSet<(Destination, IpAddr, u16)>) -> Result<(), NftError> {
        let f = self.config.family;
        let al = f.addr_len();
        let table = self.config.table_name.clone();
        let mut batch = Batch::new();
        let mut count = 0usize;
        let classes: Vec<u32> = self.affinity_classes.keys().copied().collect();
        for t in classes {
            let name = affinity_name(t);
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            self.socket()?
                .request(
                    |seq| {
                        nft_request(
                            libc::NFT_MSG_GETSETELEM,
                            true,
                            seq,
                            f,
                            &[(1, table.as_str()), (2, name.as_str())],
                        )
                    },
                    |a| raw_set_elements(a, &mut entries),
                )
                .map_err(NftError::Receive)?;
            let doomed: Vec<&Vec<u8>> = entries
                .iter()
                .filter(|(k, d)| {
                    let dst = k.get(al..).and_then(|k| parse_dst(k, f));
                    let ep = parse_ip(d, f).zip(d.get(al..al + 2).map(|p| u16::from_be_bytes([p[0], p[1]])));
                    matches!((dst, ep), (Some(dst), Some((ip, port))) if lost.contains(&(dst, ip, port)))
                })
                .map(|(k, _)| k)
                .collect();
            for chunk in doomed.chunks(ELEMENTS_PER_MESSAGE) {
                let mut msg = SetMsg::named(&table, &name, f)?;
                for k in chunk {
                    msg.add_element(k, None, None)?;
                }
                batch.add(&Msg(Op::Elements, &msg), MsgType::Del);
                count += chunk.len();
            }
        }
        if count > 0 {
            match send_batch(self.socket()?, &batch.finalize()) {
                // An entry that expired meanwhile is gone already.
                Err(NftError::Rejected { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
                r => {
                    r?;
                }
            }
            tracing::debug!(entries = count, "forgot session affinity to removed endpoints");
        }
        Ok(())
    }

    fn send_effective(
        &mut self,
        changes: &ChangeSet,
        rebuild: Option<&Rebuild>,
        started: std::time::Instant,
    ) -> Result<SyncStats, NftError> {
        // Created or replaced: everything is written anew. A repair rewrites the rules (those of
        // every affinity class too) but keeps sets, elements and classes.
        let full = matches!(rebuild, Some(Rebuild::Create | Rebuild::Replace));
        let rewrite_rules = rebuild.is_some();
        if !rewrite_rules && changes.is_empty() {
            return Ok(SyncStats {
                full,
                ..SyncStats::default()
            });
        }
        let mut classes = self.affinity_classes.clone();
        for e in &changes.delete {
            if let Element::AffinityService { timeout, .. } = e
                && let Some(n) = classes.get_mut(timeout)
            {
                *n = n.saturating_sub(1);
            }
        }
        for e in &changes.add {
            if let Element::AffinityService { timeout, .. } = e {
                *classes.entry(*timeout).or_insert(0) += 1;
            }
        }
        let created: Vec<u32> = classes
            .iter()
            .filter(|(t, n)| **n > 0 && (rewrite_rules || !self.affinity_classes.contains_key(t)))
            .map(|(t, _)| *t)
            .collect();
        let removed: Vec<u32> = if full {
            Vec::new()
        } else {
            classes
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(t, _)| *t)
                .collect()
        };
        classes.retain(|_, n| *n > 0);

        let table = Table::new(
            &cstring(&self.config.table_name)?,
            proto_family(self.config.family),
        );
        let mut batch = Batch::new();
        match rebuild {
            None => {}
            Some(Rebuild::Create) => {
                // Created with the layout tag the read-back checks before adopting the table.
                batch.add(&Msg(Op::NewTable, &TableMsg::new(&self.config)?), MsgType::Add);
            }
            Some(Rebuild::Replace) => {
                batch.add(&table, MsgType::Add);
                batch.add(&table, MsgType::Del);
                batch.add(&Msg(Op::NewTable, &TableMsg::new(&self.config)?), MsgType::Add);
            }
            Some(Rebuild::Repair(existing)) => {
                // Every rule first (they reference the sets and chains), then what is not part
                // of the layout. The layout's sets and chains stay, with their elements and
                // hooks: a packet in flight during the commit meets either the old rules or the
                // new ones, over the same sets (see [`Rebuild`]).
                for name in &existing.chains {
                    batch.add(&Rule::new(&Chain::new(&cstring(name)?, &table)), MsgType::Del);
                }
                let chains = expected_rule_counts(&self.config);
                // Affinity classes that stay are rewritten below, those that go are removed
                // after the elements; any other affinity chain or set is a stray.
                let ours = |n: &str| {
                    classes
                        .keys()
                        .chain(&removed)
                        .any(|t| n == affinity_name(*t) || n == affinity_record_name(*t))
                };
                for set in existing
                    .sets
                    .iter()
                    .filter(|n| !ours(n) && !SETS.iter().any(|s| s.name == n.as_str()))
                {
                    batch.add(
                        &Msg(
                            Op::DelSet,
                            &SetMsg::named(&self.config.table_name, set, self.config.family)?,
                        ),
                        MsgType::Del,
                    );
                }
                for name in existing
                    .chains
                    .iter()
                    .filter(|n| !ours(n) && !chains.contains_key(n.as_str()))
                {
                    batch.add(&Chain::new(&cstring(name)?, &table), MsgType::Del);
                }
            }
        }
        if rebuild.is_some() {
            build_skeleton(&mut batch, &table, &self.config)?;
        }
        for t in &created {
            add_affinity_class(&mut batch, &table, &self.config, *t)?;
        }
        add_element_messages(&mut batch, &self.config.table_name, self.config.family, changes)?;
        for t in &removed {
            let chain = Chain::new(&cstring(&affinity_name(*t))?, &table);
            batch.add(&chain, MsgType::Del);
            let chain = Chain::new(&cstring(&affinity_record_name(*t))?, &table);
            batch.add(&chain, MsgType::Del);
            batch.add(
                &Msg(
                    Op::DelSet,
                    &SetMsg::named(&self.config.table_name, &affinity_name(*t), self.config.family)?,
                ),
                MsgType::Del,
            );
        }
        let batch = batch.finalize();
        let encode = started.elapsed();
        let sent = send_batch(self.socket()?, &batch)?;
        self.affinity_classes = classes;
        Ok(SyncStats {
            full,
            elements_added: changes.add.len(),
            elements_deleted: changes.delete.len(),
            batch_bytes: sent.bytes,
            phases: SyncPhases {
                diff: std::time::Duration::ZERO,
                encode,
                send: sent.send,
                acks: sent.acks,
            },
        })
    }

    /// A full resync that keeps what is right in the kernel: what this programmer remembers is
    /// dropped and the table is adopted again as on a first sync (see [`Self::sync`]), so
    /// elements and rules changed by hand are repaired. Used at start-up (adopting a previous
    /// run's table) and for the periodic resync.
    pub fn resync(&mut self, desired: &Ruleset) -> Result<SyncStats, NftError> {
        self.invalidate();
        self.sync(desired)
    }

    /// Reads the table back: None unless it exists with this configuration's layout tag and
    /// every set of the layout.
    fn read_back(&mut self) -> Result<Option<Adopted>, NftError> {
        let f = self.config.family;
        let name = &self.config.table_name.clone();
        let layout = layout_tag(&self.config);
        let Some(tag) = self.table_tag()? else {
            return Ok(None);
        };
        if tag.as_deref() != Some(layout.as_bytes()) {
            tracing::info!("existing table has another layout; replacing it");
            return Ok(None);
        }
        let sock = self.socket()?;
        let mut rules: BTreeMap<String, usize> = BTreeMap::new();
        sock.request(
            |seq| nft_request(libc::NFT_MSG_GETRULE, true, seq, f, &[(1, name.as_str())]),
            |a| {
                for (ty, p) in crate::netlink::attrs(a) {
                    if ty == NFTA_RULE_CHAIN {
                        *rules.entry(c_str(p)).or_insert(0) += 1;
                    }
                }
            },
        )
        .map_err(NftError::Receive)?;
        let mut by_service = BTreeSet::new();
        for spec in &SETS {
            let r = sock.request(
                |seq| {
                    nft_request(
                        libc::NFT_MSG_GETSETELEM,
                        true,
                        seq,
                        f,
                        &[(1, name.as_str()), (2, spec.name)],
                    )
                },
                |a| parse_set_elements(spec.name, f, a, &mut by_service),
            );
            match r {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    tracing::info!(
                        set = spec.name,
                        "a set of the layout is missing; replacing the table"
                    );
                    return Ok(None);
                }
                r => r.map_err(NftError::Receive)?,
            }
        }
        let mut classes: BTreeMap<u32, usize> = BTreeMap::new();
        for e in &by_service {
            if let Element::AffinityService { timeout, .. } = e {
                *classes.entry(*timeout).or_insert(0) += 1;
            }
        }
        let mut expected = expected_rule_counts(&self.config);
        for t in classes.keys() {
            expected.insert(affinity_name(*t), 1);
            expected.insert(affinity_record_name(*t), 1);
        }
        if rules != expected {
            tracing::debug!(found = ?rules, expected = ?expected, "table rules differ from the layout");
        }
        let shared = by_service
            .iter()
            .filter_map(Element::shared_key)
            .map(|k| (k, 1))
            .collect();
        Ok(Some(Adopted {
            elements: Ruleset {
                by_service: [(ADOPTED.clone(), by_service.into_iter().collect())].into(),
            },
            classes,
            shared,
            rules_match: rules == expected,
        }))
    }

    /// Closes the netlink socket (the next call opens a new one in the caller's namespace).
    /// Closing waits for the kernel's cleanup of the last transaction; benchmarks use this to
    /// show that cost.
    pub fn release_socket(&mut self) {
        self.sock = None;
    }

    /// Buckets per service port of this table.
    pub fn buckets(&self) -> u32 {
        self.config.buckets
    }

    /// Forgets what was programmed, so the next sync rebuilds the table (repairs any drift).
    pub fn invalidate(&mut self) {
        self.programmed = None;
        self.affinity_classes.clear();
        self.shared.clear();
    }

    /// Removes the table (if present).
    pub fn delete_table(&mut self) -> Result<(), NftError> {
        let table = Table::new(
            &cstring(&self.config.table_name)?,
            proto_family(self.config.family),
        );
        let mut batch = Batch::new();
        batch.add(&table, MsgType::Add);
        batch.add(&table, MsgType::Del);
        send_batch(self.socket()?, &batch.finalize())?;
        self.programmed = None;
        Ok(())
    }
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

/// 32-bit registers an address takes.
fn aw(f: Family) -> u32 {
    (f.addr_len() / 4) as u32
}

/// Network header offsets of the source and destination addresses.
fn saddr_offset(f: Family) -> u32 {
    match f {
        Family::V4 => 12,
        Family::V6 => 8,
    }
}

fn saddr(f: Family, dreg: u32) -> RawExpr {
    payload(
        libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
        saddr_offset(f),
        f.addr_len() as u32,
        dreg,
    )
}

fn daddr(f: Family, dreg: u32) -> RawExpr {
    payload(
        libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
        saddr_offset(f) + f.addr_len() as u32,
        f.addr_len() as u32,
        dreg,
    )
}

fn addr_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The two tables of a dual-stack node, `ip kube-proxy` and `ip6 kube-proxy`, programmed one
/// after the other with the same desired state (each keeps its family's elements).
#[derive(Debug)]
pub struct DualStack {
    pub v4: NftProgrammer,
    pub v6: NftProgrammer,
}

impl DualStack {
    /// Programmers for both families from one configuration (`cluster_cidrs` per family).
    pub fn new(config: TableConfig, cluster_cidr_v6: Option<(IpAddr, u8)>) -> Self {
        let v6 = TableConfig {
            family: Family::V6,
            cluster_cidr: cluster_cidr_v6,
            ..config.clone()
        };
        DualStack {
            v4: NftProgrammer::new(TableConfig {
                family: Family::V4,
                ..config
            }),
            v6: NftProgrammer::new(v6),
        }
    }

    fn both(
        &mut self,
        mut f: impl FnMut(&mut NftProgrammer) -> Result<SyncStats, NftError>,
    ) -> Result<SyncStats, NftError> {
        let a = f(&mut self.v4)?;
        let b = f(&mut self.v6)?;
        Ok(SyncStats {
            full: a.full || b.full,
            elements_added: a.elements_added + b.elements_added,
            elements_deleted: a.elements_deleted + b.elements_deleted,
            batch_bytes: a.batch_bytes + b.batch_bytes,
            phases: a.phases.add(b.phases),
        })
    }

    /// [`NftProgrammer::sync`] for both families.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<SyncStats, NftError> {
        self.both(|p| p.sync(desired))
    }

    /// [`NftProgrammer::sync_services`] for both families.
    pub fn sync_services(
        &mut self,
        desired: &Ruleset,
        changed: &BTreeSet<ServiceKey>,
    ) -> Result<SyncStats, NftError> {
        self.both(|p| p.sync_services(desired, changed))
    }

    /// [`NftProgrammer::resync`] for both families.
    pub fn resync(&mut self, desired: &Ruleset) -> Result<SyncStats, NftError> {
        self.both(|p| p.resync(desired))
    }

    /// Removes both tables.
    pub fn delete_tables(&mut self) -> Result<(), NftError> {
        self.v4.delete_table()?;
        self.v6.delete_table()
    }
}

fn cstring(s: &str) -> Result<CString, NftError> {
    CString::new(s).map_err(|_| NftError::BadName(s.to_string()))
}

// ---- read-back ------------------------------------------------------------------------------

/// The pseudo-Service owning adopted elements until the first diff hands them to their Services.
static ADOPTED: std::sync::LazyLock<ServiceKey> =
    std::sync::LazyLock::new(|| (String::new(), "(adopted from the kernel)".to_string()));

const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFT_SET_ANONYMOUS: u32 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// What identifies this build's table layout for a configuration (stored as table userdata).
fn layout_tag(config: &TableConfig) -> String {
    format!(
        "knode kube-proxy layout 2; family {:?}; buckets {}; masquerade-all {}; cluster-cidr {:?}",
        config.family,
        config.buckets.max(1),
        config.masquerade_all,
        config.cluster_cidr
    )
}

/// Rules per fixed chain, as [`build_skeleton`] writes them.
fn expected_rule_counts(config: &TableConfig) -> BTreeMap<String, usize> {
    let cluster_mark = usize::from(config.masquerade_all || config.cluster_cidr.is_some());
    // Marks (ClusterIP, external, node-local to Local policy), affinity dispatch, 4 choices.
    let nat = cluster_mark + 2 + 1 + 4;
    [
        ("nat-prerouting", nat),
        ("nat-output", nat),
        ("nat-postrouting", 3),
        ("firewall-check", 8 * config.family.addr_len() + 2),
        ("filter-prerouting", 1),
        ("filter-input", 2),
        ("filter-forward", 2),
        ("filter-output", 3),
    ]
    .into_iter()
    .map(|(c, n)| (c.to_string(), n))
    .collect()
}

/// A NUL-terminated netlink string attribute as a String.
fn c_str(p: &[u8]) -> String {
    let end = p.iter().position(|b| *b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// An nf_tables GET request with string attributes.
fn nft_request(msg: i32, dump: bool, seq: u32, f: Family, strings: &[(u16, &str)]) -> Vec<u8> {
    let mut attrs = Vec::new();
    for (ty, v) in strings {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        crate::netlink::put_attr(&mut attrs, *ty, &b);
    }
    let flags = libc::NLM_F_REQUEST | if dump { libc::NLM_F_DUMP } else { libc::NLM_F_ACK };
    crate::netlink::nf_message(
        ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | msg as u16,
        flags as u16,
        seq,
        nfproto(f) as u8,
        &attrs,
    )
}

/// The elements of one NEWSETELEM dump message of set `set`.
fn parse_set_elements(set: &str, f: Family, a: &[u8], out: &mut BTreeSet<Element>) {
    use crate::netlink::attrs;
    for (ty, list) in attrs(a) {
        if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (ty, elem) in attrs(list) {
            if ty != NFTA_LIST_ELEM {
                continue;
            }
            let (mut key, mut data, mut chain) = (None, None, None);
            for (ty, p) in attrs(elem) {
                match ty {
                    NFTA_SET_ELEM_KEY => key = attrs(p).find(|(t, _)| *t == NFTA_DATA_VALUE).map(|x| x.1),
                    NFTA_SET_ELEM_DATA => {
                        for (t, v) in attrs(p) {
                            match t {
                                NFTA_DATA_VALUE => data = Some(v),
                                NFTA_DATA_VERDICT => {
                                    chain = attrs(v)
                                        .find(|(t, _)| *t == NFTA_VERDICT_CHAIN)
                                        .map(|x| c_str(x.1))
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            match key.and_then(|k| parse_element(set, f, k, data, chain.as_deref())) {
                Some(e) => {
                    out.insert(e);
                }
                None => tracing::debug!(set, "ignoring an element that is not one of ours"),
            }
        }
    }
}

/// The raw (key, data) of every element of one NEWSETELEM dump message.
fn raw_set_elements(a: &[u8], out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    use crate::netlink::attrs;
    for (ty, list) in attrs(a) {
        if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, elem) in attrs(list).filter(|(t, _)| *t == NFTA_LIST_ELEM) {
            let (mut key, mut data) = (None, None);
            for (ty, p) in attrs(elem) {
                let value = attrs(p)
                    .find(|(t, _)| *t == NFTA_DATA_VALUE)
                    .map(|x| x.1.to_vec());
                match ty {
                    NFTA_SET_ELEM_KEY => key = value,
                    NFTA_SET_ELEM_DATA => data = value,
                    _ => {}
                }
            }
            if let (Some(k), Some(d)) = (key, data) {
                out.push((k, d));
            }
        }
    }
}

/// A destination from its key bytes (address . protocol . port, each padded to 4 bytes).
fn parse_dst(k: &[u8], f: Family) -> Option<Destination> {
    let al = f.addr_len();
    let ip = parse_ip(k, f)?;
    let protocol = match *k.get(al)? {
        6 => crate::model::Protocol::Tcp,
        17 => crate::model::Protocol::Udp,
        132 => crate::model::Protocol::Sctp,
        _ => return None,
    };
    let port = u16::from_be_bytes(<[u8; 2]>::try_from(k.get(al + 4..al + 6)?).ok()?);
    Some(Destination { ip, protocol, port })
}

fn parse_ip(k: &[u8], f: Family) -> Option<IpAddr> {
    Some(match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(k.get(0..4)?).ok()?)),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(
            <[u8; 16]>::try_from(k.get(0..16)?).ok()?,
        )),
    })
}

fn parse_u32_ne(k: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(<[u8; 4]>::try_from(k.get(0..4)?).ok()?))
}

/// The inverse of [`element_bytes`] for the element of set `set` in a table of family `f`.
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
    let endpoint = || -> Option<(IpAddr, u16)> {
        let d = data?;
        Some((
            parse_ip(d, f)?,
            u16::from_be_bytes(<[u8; 2]>::try_from(d.get(al..al + 2)?).ok()?),
        ))
    };
    let dst = || parse_dst(k, f);
    Some(match set {
        SERVICE_ENDPOINTS | SERVICE_ENDPOINTS_LARGE | SERVICE_ENDPOINTS_LOCAL => {
            let (dst, bucket) = (dst()?, parse_u32_ne(k.get(dl..dl + 4)?)?);
            let (endpoint, endpoint_port) = endpoint()?;
            match set {
                SERVICE_ENDPOINTS => Element::ServiceEndpoint {
                    dst,
                    bucket,
                    endpoint,
                    endpoint_port,
                },
                SERVICE_ENDPOINTS_LARGE => Element::LargeServiceEndpoint {
                    dst,
                    bucket,
                    endpoint,
                    endpoint_port,
                },
                _ => Element::LocalServiceEndpoint {
                    dst,
                    bucket,
                    endpoint,
                    endpoint_port,
                },
            }
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
        AFFINITY_ENDPOINTS => Element::AffinityEndpoint {
            dst: dst()?,
            endpoint: parse_ip(k.get(dl..)?, f)?,
            endpoint_port: u16::from_be_bytes(<[u8; 2]>::try_from(k.get(dl + al..dl + al + 2)?).ok()?),
        },
        FIREWALL_ALLOW => Element::FirewallAllow {
            dst: dst()?,
            net: parse_ip(k.get(dl..)?, f)?,
            prefix: u8::try_from(parse_u32_ne(k.get(dl + al..dl + al + 4)?)?).ok()?,
        },
        _ => return None,
    })
}

/// NEWTABLE carrying the layout tag as userdata.
struct TableMsg {
    table: NonNull<sys::nftnl_table>,
    family: u16,
}

impl TableMsg {
    fn new(config: &TableConfig) -> Result<TableMsg, NftError> {
        let name = cstring(&config.table_name)?;
        let tag = layout_tag(config);
        // SAFETY: allocation is checked; setters copy their arguments.
        unsafe {
            let t = NonNull::new(sys::nftnl_table_alloc())
                .ok_or_else(|| NftError::Socket(std::io::Error::from(std::io::ErrorKind::OutOfMemory)))?;
            sys::nftnl_table_set_str(t.as_ptr(), sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
            sys::nftnl_table_set_u32(t.as_ptr(), sys::NFTNL_TABLE_FAMILY as u16, nfproto(config.family));
            sys::nftnl_table_set_data(
                t.as_ptr(),
                sys::NFTNL_TABLE_USERDATA as u16,
                tag.as_ptr().cast(),
                tag.len() as u32,
            );
            Ok(TableMsg {
                table: t,
                family: nfproto(config.family) as u16,
            })
        }
    }
}

impl Drop for TableMsg {
    fn drop(&mut self) {
        // SAFETY: we own the table object.
        unsafe { sys::nftnl_table_free(self.table.as_ptr()) };
    }
}

impl Payload for TableMsg {
    fn family(&self) -> u16 {
        self.family
    }

    unsafe fn build(&self, hdr: *mut libc::nlmsghdr, _op: Op) {
        // SAFETY: the caller's header sits in a buffer of nft_nlmsg_maxsize bytes.
        unsafe { sys::nftnl_table_nlmsg_build_payload(hdr, self.table.as_ptr()) };
    }
}

// ---- batch messages --------------------------------------------------------------------------

/// What a batch message does with its libnftnl object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    NewTable,
    NewSet,
    DelSet,
    /// NEWSETELEM or DELSETELEM, by the batch's [`MsgType`].
    Elements,
}

impl Op {
    /// Message type and flags (every message is acked, so a rejected one is reported by seq).
    fn header(self, msg_type: MsgType) -> (i32, i32) {
        let (ty, flags) = match (self, msg_type) {
            (Op::NewTable, _) => (libc::NFT_MSG_NEWTABLE, libc::NLM_F_CREATE),
            (Op::NewSet, _) => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE),
            (Op::DelSet, _) => (libc::NFT_MSG_DELSET, 0),
            (Op::Elements, MsgType::Add) => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE | libc::NLM_F_EXCL),
            (Op::Elements, MsgType::Del) => (libc::NFT_MSG_DELSETELEM, 0),
        };
        (ty, flags | libc::NLM_F_ACK)
    }
}

/// A libnftnl object that writes itself as a message payload.
trait Payload {
    /// The netfilter family for the message header.
    fn family(&self) -> u16;
    /// Appends the payload for `op` after `hdr`.
    ///
    /// # Safety
    /// `hdr` must be a header nftnl_nlmsg_build_hdr wrote into a buffer of nft_nlmsg_maxsize
    /// bytes, and the payload must fit in it.
    unsafe fn build(&self, hdr: *mut libc::nlmsghdr, op: Op);
}

/// One batch message: `op` on an object (the header/payload pattern in one place).
struct Msg<'a, P: Payload>(Op, &'a P);

// SAFETY: `write` only serializes the borrowed libnftnl object into the buffer the batch gives.
unsafe impl<P: Payload> NlMsg for Msg<'_, P> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = self.0.header(msg_type);
        // SAFETY: the batch gives a buffer of nft_nlmsg_maxsize bytes; element messages carry at
        // most ELEMENTS_PER_MESSAGE elements, which keeps them within it.
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(buf.cast(), ty as u16, self.1.family(), flags as u16, seq);
            self.1.build(hdr, self.0);
        }
    }
}

// ---- set layout ------------------------------------------------------------------------------

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
#[derive(Clone, Copy)]
enum Layout {
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
}

impl Layout {
    fn key_type(self, f: Family) -> u32 {
        let a = t_addr(f);
        let dst = concat(concat(a, T_PROTO), T_SERVICE);
        match self {
            Layout::DstBucketToEndpoint => concat(dst, T_MARK),
            Layout::Dst | Layout::DstToVerdict => dst,
            Layout::Addr => a,
            Layout::DstEndpoint => concat(concat(dst, a), T_SERVICE),
            Layout::AddrAddr => concat(a, a),
            Layout::DstNetPrefix => concat(concat(dst, a), T_MARK),
        }
    }

    fn key_len(self, f: Family) -> u32 {
        let a = f.addr_len() as u32;
        match self {
            Layout::DstBucketToEndpoint => a + 12,
            Layout::Dst | Layout::DstToVerdict => a + 8,
            Layout::Addr => a,
            Layout::DstEndpoint | Layout::DstNetPrefix => 2 * a + 12,
            Layout::AddrAddr => 2 * a,
        }
    }

    /// (data type, data length) for maps.
    fn data(self, f: Family) -> Option<(u32, u32)> {
        match self {
            Layout::DstBucketToEndpoint => Some((concat(t_addr(f), T_SERVICE), f.addr_len() as u32 + 4)),
            Layout::DstToVerdict => Some((T_VERDICT, 0)),
            _ => None,
        }
    }
}

struct SetSpec {
    name: &'static str,
    id: u32,
    layout: Layout,
}

const SETS: [SetSpec; 15] = [
    SetSpec {
        name: SERVICE_ENDPOINTS,
        id: 1,
        layout: Layout::DstBucketToEndpoint,
    },
    SetSpec {
        name: SERVICE_ENDPOINTS_LARGE,
        id: 6,
        layout: Layout::DstBucketToEndpoint,
    },
    SetSpec {
        name: SERVICE_IPS,
        id: 2,
        layout: Layout::Dst,
    },
    SetSpec {
        name: EXTERNAL_SERVICES,
        id: 3,
        layout: Layout::Dst,
    },
    SetSpec {
        name: NO_ENDPOINT_SERVICES,
        id: 4,
        layout: Layout::Dst,
    },
    SetSpec {
        name: CLUSTER_IPS,
        id: 5,
        layout: Layout::Addr,
    },
    SetSpec {
        name: SERVICE_ENDPOINTS_LOCAL,
        id: 7,
        layout: Layout::DstBucketToEndpoint,
    },
    SetSpec {
        name: EXTERNAL_LOCAL_SERVICES,
        id: 8,
        layout: Layout::Dst,
    },
    SetSpec {
        name: NO_LOCAL_ENDPOINT_SERVICES,
        id: 9,
        layout: Layout::Dst,
    },
    SetSpec {
        name: SERVICE_AFFINITY,
        id: 10,
        layout: Layout::DstToVerdict,
    },
    SetSpec {
        name: SERVICE_AFFINITY_RECORD,
        id: 15,
        layout: Layout::DstToVerdict,
    },
    SetSpec {
        name: AFFINITY_ENDPOINTS,
        id: 11,
        layout: Layout::DstEndpoint,
    },
    SetSpec {
        name: HAIRPIN_ENDPOINTS,
        id: 12,
        layout: Layout::AddrAddr,
    },
    SetSpec {
        name: FIREWALL_IPS,
        id: 13,
        layout: Layout::Dst,
    },
    SetSpec {
        name: FIREWALL_ALLOW,
        id: 14,
        layout: Layout::DstNetPrefix,
    },
];

/// Name of the map and the lookup chain of one affinity timeout class.
pub fn affinity_name(timeout: u32) -> String {
    format!("affinity-{timeout}")
}

/// Name of the recording chain of one affinity timeout class.
pub fn affinity_record_name(timeout: u32) -> String {
    format!("affinity-record-{timeout}")
}

/// Set id of an affinity class's set (distinct from the fixed sets' ids, for same-batch rules).
fn affinity_set_id(timeout: u32) -> u32 {
    100_000 + timeout
}

/// Key bytes of a destination in concatenation layout: each field padded to 4 bytes.
fn dst_key(d: &Destination) -> Vec<u8> {
    let mut k = addr_bytes(&d.ip);
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
        }
        | Element::LocalServiceEndpoint {
            dst,
            bucket,
            endpoint,
            endpoint_port,
        } => {
            let mut k = dst_key(dst);
            // numgen writes the bucket in host byte order.
            k.extend_from_slice(&bucket.to_ne_bytes());
            let mut d = addr_bytes(endpoint);
            d.extend_from_slice(&endpoint_port.to_be_bytes());
            d.extend_from_slice(&[0, 0]);
            (k, Some(d))
        }
        Element::ServiceIp(d)
        | Element::ExternalService(d)
        | Element::NoEndpointService(d)
        | Element::ExternalLocalService(d)
        | Element::NoLocalEndpointService(d)
        | Element::AffinityService { dst: d, .. }
        | Element::AffinityRecord { dst: d, .. }
        | Element::FirewallService(d) => (dst_key(d), None),
        Element::ClusterIp(ip) => (addr_bytes(ip), None),
        Element::HairpinEndpoint(ip) => {
            let mut k = addr_bytes(ip);
            k.extend_from_slice(&addr_bytes(ip));
            (k, None)
        }
        Element::AffinityEndpoint {
            dst,
            endpoint,
            endpoint_port,
        } => {
            let mut k = dst_key(dst);
            k.extend_from_slice(&addr_bytes(endpoint));
            k.extend_from_slice(&endpoint_port.to_be_bytes());
            k.extend_from_slice(&[0, 0]);
            (k, None)
        }
        Element::FirewallAllow { dst, net, prefix } => {
            let mut k = dst_key(dst);
            k.extend_from_slice(&addr_bytes(net));
            k.extend_from_slice(&u32::from(*prefix).to_ne_bytes());
            (k, None)
        }
    }
}

/// A set declaration (NEWSET).
struct SetMsg {
    set: NonNull<sys::nftnl_set>,
    family: u16,
}

impl SetMsg {
    fn declaration(table: &str, spec: &SetSpec, f: Family) -> Result<SetMsg, NftError> {
        let set = Self::named(table, spec.name, f)?;
        // SAFETY: `set` is a valid, exclusively owned nftnl_set.
        unsafe {
            let p = set.set.as_ptr();
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_ID as u16, spec.id);
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_TYPE as u16, spec.layout.key_type(f));
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_LEN as u16, spec.layout.key_len(f));
            if let Some((ty, len)) = spec.layout.data(f) {
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_FLAGS as u16, libc::NFT_SET_MAP as u32);
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_TYPE as u16, ty);
                if len > 0 {
                    sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_LEN as u16, len);
                }
            } else {
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_FLAGS as u16, 0);
            }
        }
        Ok(set)
    }

    fn named(table: &str, name: &str, f: Family) -> Result<SetMsg, NftError> {
        let table = cstring(table)?;
        let name = cstring(name)?;
        // SAFETY: allocation is checked; string setters copy their arguments.
        unsafe {
            let set = NonNull::new(sys::nftnl_set_alloc())
                .ok_or_else(|| NftError::Socket(std::io::Error::from(std::io::ErrorKind::OutOfMemory)))?;
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(set.as_ptr(), sys::NFTNL_SET_FAMILY as u16, nfproto(f));
            Ok(SetMsg {
                set,
                family: nfproto(f) as u16,
            })
        }
    }

    fn add_element(&mut self, key: &[u8], data: Option<&[u8]>, goto: Option<&CStr>) -> Result<(), NftError> {
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
            if let Some(chain) = goto {
                sys::nftnl_set_elem_set_u32(elem, sys::NFTNL_SET_ELEM_VERDICT as u16, libc::NFT_JUMP as u32);
                sys::nftnl_set_elem_set_str(elem, sys::NFTNL_SET_ELEM_CHAIN as u16, chain.as_ptr());
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

/// The set itself (NEWSET/DELSET) or its elements (NEWSETELEM/DELSETELEM).
impl Payload for SetMsg {
    fn family(&self) -> u16 {
        self.family
    }

    unsafe fn build(&self, hdr: *mut libc::nlmsghdr, op: Op) {
        // SAFETY: as the trait requires; the set owns its elements.
        unsafe {
            if op == Op::Elements {
                sys::nftnl_set_elems_nlmsg_build_payload(hdr, self.set.as_ptr());
            } else {
                sys::nftnl_set_nlmsg_build_payload(hdr, self.set.as_ptr());
            }
        }
    }
}

/// The dynamic map of one affinity class: (client IP . destination) → chosen endpoint, with
/// elements expiring `timeout` seconds after the client's last new connection.
fn affinity_set(table: &str, timeout: u32, f: Family) -> Result<SetMsg, NftError> {
    let set = SetMsg::named(table, &affinity_name(timeout), f)?;
    // SAFETY: `set` is a valid, exclusively owned nftnl_set.
    unsafe {
        let p = set.set.as_ptr();
        sys::nftnl_set_set_u32(p, sys::NFTNL_SET_ID as u16, affinity_set_id(timeout));
        sys::nftnl_set_set_u32(
            p,
            sys::NFTNL_SET_KEY_TYPE as u16,
            concat(concat(concat(t_addr(f), t_addr(f)), T_PROTO), T_SERVICE),
        );
        sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_LEN as u16, 2 * f.addr_len() as u32 + 8);
        sys::nftnl_set_set_u32(
            p,
            sys::NFTNL_SET_FLAGS as u16,
            (libc::NFT_SET_MAP | libc::NFT_SET_TIMEOUT | libc::NFT_SET_EVAL) as u32,
        );
        sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_TYPE as u16, concat(t_addr(f), T_SERVICE));
        sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_LEN as u16, f.addr_len() as u32 + 4);
        sys::nftnl_set_set_u64(p, sys::NFTNL_SET_TIMEOUT as u16, u64::from(timeout) * 1000);
    }
    Ok(set)
}

fn add_element_messages(
    batch: &mut Batch,
    table: &str,
    f: Family,
    changes: &ChangeSet,
) -> Result<(), NftError> {
    for (elements, msg_type) in [(&changes.delete, MsgType::Del), (&changes.add, MsgType::Add)] {
        for spec in &SETS {
            let mine: Vec<&Element> = elements.iter().filter(|e| e.set_name() == spec.name).collect();
            for chunk in mine.chunks(ELEMENTS_PER_MESSAGE) {
                let mut msg = SetMsg::named(table, spec.name, f)?;
                for e in chunk {
                    let (k, d) = element_bytes(e);
                    // Verdict-map values matter only when adding.
                    let goto = match (e, msg_type) {
                        (Element::AffinityService { timeout, .. }, MsgType::Add) => {
                            Some(cstring(&affinity_name(*timeout))?)
                        }
                        (Element::AffinityRecord { timeout, .. }, MsgType::Add) => {
                            Some(cstring(&affinity_record_name(*timeout))?)
                        }
                        _ => None,
                    };
                    // A delete names the key only: the value would be dead weight in the batch.
                    let d = if matches!(msg_type, MsgType::Del) { None } else { d };
                    msg.add_element(&k, d.as_deref(), goto.as_deref())?;
                }
                batch.add(&Msg(Op::Elements, &msg), msg_type);
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
    u64s: Vec<(u32, u64)>,
    u8s: Vec<(u32, u8)>,
    data: Vec<(u32, Vec<u8>)>,
    strs: Vec<(u32, CString)>,
}

impl RawExpr {
    fn new(name: &'static CStr) -> Self {
        RawExpr {
            name,
            u32s: Vec::new(),
            u64s: Vec::new(),
            u8s: Vec::new(),
            data: Vec::new(),
            strs: Vec::new(),
        }
    }
    fn u32(mut self, attr: u32, v: u32) -> Self {
        self.u32s.push((attr, v));
        self
    }
    fn u8(mut self, attr: u32, v: u8) -> Self {
        self.u8s.push((attr, v));
        self
    }
    fn u64(mut self, attr: u32, v: u64) -> Self {
        self.u64s.push((attr, v));
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
            for (attr, v) in &self.u8s {
                sys::nftnl_expr_set_u8(expr.as_ptr(), *attr as u16, *v);
            }
            for (attr, v) in &self.u64s {
                sys::nftnl_expr_set_u64(expr.as_ptr(), *attr as u16, *v);
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

fn bitwise_bytes(reg: u32, mask: &[u8], xor: &[u8]) -> RawExpr {
    RawExpr::new(c"bitwise")
        .u32(sys::NFTNL_EXPR_BITWISE_SREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_DREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
        .bytes(sys::NFTNL_EXPR_BITWISE_MASK, mask)
        .bytes(sys::NFTNL_EXPR_BITWISE_XOR, xor)
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
fn load_destination(f: Family) -> [RawExpr; 3] {
    load_destination_at(f, 0)
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

/// `NFT_CT_DST_IP` / `NFT_CT_DST_IP6` (addresses of a conntrack tuple; not in libc).
fn ct_dst_ip(f: Family) -> i32 {
    match f {
        Family::V4 => 20,
        Family::V6 => 22,
    }
}
/// Upstream's filter chain priority: dstnat - 10.
const FILTER_PRIORITY: i32 = -110;
/// `IPS_DST_NAT` (conntrack status bit) and `NF_CT_STATE_BIT(IP_CT_NEW)`.
const IPS_DST_NAT: u32 = 1 << 5;
const CT_STATE_NEW: u32 = 1 << 3;

/// An immediate verdict (accept, drop).
fn verdict(v: i32) -> RawExpr {
    RawExpr::new(c"immediate")
        .u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
        .u32(sys::NFTNL_EXPR_IMM_VERDICT, v as u32)
}

/// `NFTA_FIB_F_SADDR` / `NFT_FIB_RESULT_ADDRTYPE` from linux/netfilter/nf_tables.h.
const NFTA_FIB_F_SADDR: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;

fn reg(i: u32) -> u32 {
    REG32_00 + i
}

/// Where the endpoint (or bucket) goes in rules that load the client address at 0 and the
/// destination after it.
fn endpoint_reg(f: Family) -> u32 {
    2 * aw(f) + 2
}

/// `ip daddr . meta l4proto . th dport` into 32-bit registers from `base` (address: 1 register
/// for IPv4, 4 for IPv6; then protocol and port).
fn load_destination_at(f: Family, base: u32) -> [RawExpr; 3] {
    let a = aw(f);
    [
        daddr(f, reg(base)),
        meta_load(libc::NFT_META_L4PROTO as u32, reg(base + a)),
        payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 2, 2, reg(base + a + 1)),
    ]
}

fn numgen(modulus: u32, dreg: u32) -> RawExpr {
    RawExpr::new(c"numgen")
        .u32(sys::NFTNL_EXPR_NG_TYPE, libc::NFT_NG_RANDOM as u32)
        .u32(sys::NFTNL_EXPR_NG_MODULUS, modulus)
        .u32(sys::NFTNL_EXPR_NG_OFFSET, 0)
        .u32(sys::NFTNL_EXPR_NG_DREG, dreg)
}

/// `dnat ip to` the address in 32-bit register `base` and the port in `base+1`.
fn dnat_to(f: Family, base: u32) -> RawExpr {
    RawExpr::new(c"nat")
        .u32(sys::NFTNL_EXPR_NAT_TYPE, libc::NFT_NAT_DNAT as u32)
        .u32(sys::NFTNL_EXPR_NAT_FAMILY, nfproto(f))
        .u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, reg(base))
        .u32(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, reg(base + aw(f)))
}

fn named_lookup(
    name: &str,
    id: u32,
    sreg: u32,
    dreg: Option<u32>,
    inverted: bool,
) -> Result<RawExpr, NftError> {
    let mut e = RawExpr::new(c"lookup")
        .u32(sys::NFTNL_EXPR_LOOKUP_SREG, sreg)
        .string(sys::NFTNL_EXPR_LOOKUP_SET, cstring(name)?)
        .u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, id);
    if let Some(d) = dreg {
        e = e.u32(sys::NFTNL_EXPR_LOOKUP_DREG, d);
    }
    if inverted {
        e = e.u32(sys::NFTNL_EXPR_LOOKUP_FLAGS, libc::NFT_LOOKUP_F_INV as u32);
    }
    Ok(e)
}

/// `update @affinity-<T> { <client . destination> timeout <T>s : <endpoint> }` with the key in
/// registers 0..3 and the endpoint in 4..5.
fn affinity_dynset(f: Family, timeout: u32, op: u32) -> Result<RawExpr, NftError> {
    let mut e = RawExpr::new(c"dynset")
        .u32(sys::NFTNL_EXPR_DYNSET_OP, op)
        .u32(sys::NFTNL_EXPR_DYNSET_SREG_KEY, reg(0))
        .string(sys::NFTNL_EXPR_DYNSET_SET_NAME, cstring(&affinity_name(timeout))?)
        .u32(sys::NFTNL_EXPR_DYNSET_SET_ID, affinity_set_id(timeout));
    e = e
        .u32(sys::NFTNL_EXPR_DYNSET_SREG_DATA, reg(endpoint_reg(f)))
        .u64(sys::NFTNL_EXPR_DYNSET_TIMEOUT, u64::from(timeout) * 1000);
    Ok(e)
}

/// Conditions of "external" traffic for the Local traffic policy: not from a pod (source outside
/// `--cluster-cidr`, when known) and not from the node itself (`fib saddr type != local`).
/// Uses the 128-bit scratch register, so it must precede the loads into registers 0..5.
fn external_source(config: &TableConfig) -> Vec<RawExpr> {
    let mut r = Vec::new();
    if let Some((net, len)) = config.cluster_cidr {
        r.extend(source_outside(config.family, net, len));
    }
    r.push(
        RawExpr::new(c"fib")
            .u32(sys::NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_SADDR)
            .u32(sys::NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
            .u32(sys::NFTNL_EXPR_FIB_DREG, REG1),
    );
    r.push(cmp(
        libc::NFT_CMP_NEQ as u32,
        REG1,
        &u32::from(libc::RTN_LOCAL).to_ne_bytes(),
    ));
    r
}

/// `ip saddr != <net>/<len>` (in the 16-byte scratch register, which holds either family).
fn source_outside(f: Family, net: IpAddr, len: u8) -> [RawExpr; 3] {
    let mask = addr_bytes(&crate::model::mask_ip(
        match f {
            Family::V4 => IpAddr::V4(Ipv4Addr::BROADCAST),
            Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(u128::MAX)),
        },
        len,
    ));
    let net = addr_bytes(&crate::model::mask_ip(net, len));
    [
        saddr(f, REG1),
        bitwise_bytes(REG1, &mask, &vec![0; mask.len()]),
        cmp(libc::NFT_CMP_NEQ as u32, REG1, &net),
    ]
}

/// Which endpoint map a DNAT rule draws from.
#[derive(Clone, Copy)]
enum Pick {
    Large,
    Small,
    /// Node-local endpoints of Local-policy destinations, for external sources only.
    Local,
}

/// One DNAT rule: pick a bucket with `numgen`, look the endpoint up in the map (a miss ends the
/// rule) and DNAT to it. Registers: client IP in 0, destination in 1..3, bucket in 4, endpoint
/// in 4..5.
fn dnat_rule(pick: Pick, config: &TableConfig) -> Result<Vec<RawExpr>, NftError> {
    let (map, modulus) = match pick {
        Pick::Large => (SERVICE_ENDPOINTS_LARGE, LARGE_BUCKETS),
        Pick::Small => (SERVICE_ENDPOINTS, config.buckets.max(1)),
        Pick::Local => (SERVICE_ENDPOINTS_LOCAL, config.buckets.max(1)),
    };
    let mut r = Vec::new();
    if matches!(pick, Pick::Local) {
        r.extend(external_source(config));
    }
    let f = config.family;
    let ep = endpoint_reg(f);
    r.push(saddr(f, reg(0)));
    r.extend(load_destination_at(f, aw(f)));
    r.push(numgen(modulus, reg(ep)));
    r.push(lookup(set_spec(map), reg(aw(f)), Some(reg(ep)))?);
    r.push(dnat_to(f, ep));
    Ok(r)
}

/// External traffic to a Local-policy destination that found no local endpoint stops here (no
/// DNAT); `no-local-endpoint-services` then drops it in the filter chains, as upstream.
fn local_policy_stop(config: &TableConfig) -> Result<Vec<RawExpr>, NftError> {
    let mut r = external_source(config);
    r.extend(load_destination(config.family));
    r.push(lookup(set_spec(EXTERNAL_LOCAL_SERVICES), REG32_00, None)?);
    r.push(
        RawExpr::new(c"immediate")
            .u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
            .u32(sys::NFTNL_EXPR_IMM_VERDICT, libc::NF_ACCEPT as u32),
    );
    Ok(r)
}

/// The endpoint-choosing rules: Local policy first, then the large and the small map.
fn choice_rules(config: &TableConfig) -> Result<Vec<Vec<RawExpr>>, NftError> {
    Ok(vec![
        dnat_rule(Pick::Local, config)?,
        local_policy_stop(config)?,
        // Large map first: a lookup miss ends the rule and falls through to the small map.
        dnat_rule(Pick::Large, config)?,
        dnat_rule(Pick::Small, config)?,
    ])
}

/// The map and chains of one session-affinity timeout class (upstream: per-endpoint sets with
/// the timeout, checked before the random choice and updated by the endpoint chain):
///
/// - `affinity-<T>` (jumped to from nat-prerouting/-output before the endpoint choice):
///   `dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @affinity-<T>` — a client with
///   a live entry goes to its endpoint; others fall back to the usual choice;
/// - `affinity-record-<T>` (jumped to from nat-postrouting, first packet of each connection):
///   `update @affinity-<T> { ip saddr . ct original ip daddr . meta l4proto . ct original
///   proto-dst timeout <T>s : ip daddr . th dport }` — records the endpoint the connection was
///   DNATed to, or refreshes the entry's timeout.
///
/// Every operand is a plain packet or conntrack field, so `nft list` prints the rules. Entries
/// pointing at an endpoint the destination lost are deleted after the sync that removed it
/// (see [`NftProgrammer::forget_affinity`]).
fn add_affinity_class(
    batch: &mut Batch,
    table: &Table,
    config: &TableConfig,
    timeout: u32,
) -> Result<(), NftError> {
    let f = config.family;
    let ep = endpoint_reg(f);
    batch.add(
        &Msg(Op::NewSet, &affinity_set(&config.table_name, timeout, f)?),
        MsgType::Add,
    );
    let name = affinity_name(timeout);
    let id = affinity_set_id(timeout);
    let chain = Chain::new(&cstring(&name)?, table);
    batch.add(&chain, MsgType::Add);
    let mut hit = vec![saddr(f, reg(0))];
    hit.extend(load_destination_at(f, aw(f)));
    hit.push(named_lookup(&name, id, reg(0), Some(reg(ep)), false)?);
    hit.push(dnat_to(f, ep));
    add_rule(batch, &chain, &hit);

    let chain = Chain::new(&cstring(&affinity_record_name(timeout))?, table);
    batch.add(&chain, MsgType::Add);
    let ct_orig = |key: i32, dreg: u32| {
        RawExpr::new(c"ct")
            .u32(sys::NFTNL_EXPR_CT_KEY, key as u32)
            .u8(sys::NFTNL_EXPR_CT_DIR, 0)
            .u32(sys::NFTNL_EXPR_CT_DREG, dreg)
    };
    let record = vec![
        saddr(f, reg(0)),
        ct_orig(ct_dst_ip(f), reg(aw(f))),
        meta_load(libc::NFT_META_L4PROTO as u32, reg(2 * aw(f))),
        ct_orig(libc::NFT_CT_PROTO_DST, reg(2 * aw(f) + 1)),
        daddr(f, reg(ep)),
        payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 2, 2, reg(ep + aw(f))),
        affinity_dynset(f, timeout, libc::NFT_DYNSET_OP_UPDATE as u32)?,
    ];
    add_rule(batch, &chain, &record);
    Ok(())
}

/// Sets, chains and rules: fixed for a configuration, so written only on a full sync (the
/// affinity classes' sets and chains come and go with their elements; see
/// [`add_affinity_class`]).
fn build_skeleton(batch: &mut Batch, table: &Table, config: &TableConfig) -> Result<(), NftError> {
    let f = config.family;
    for spec in &SETS {
        batch.add(
            &Msg(Op::NewSet, &SetMsg::declaration(&config.table_name, spec, f)?),
            MsgType::Add,
        );
    }

    // NAT: mark what must be masqueraded, then DNAT through the flat maps.
    let mut marks: Vec<Vec<RawExpr>> = Vec::new();
    if config.masquerade_all || config.cluster_cidr.is_some() {
        let mut r: Vec<RawExpr> = load_destination(f).into();
        r.push(lookup(set_spec(SERVICE_IPS), REG32_00, None)?);
        if let (false, Some((net, len))) = (config.masquerade_all, config.cluster_cidr) {
            r.extend(source_outside(f, net, len));
        }
        r.extend(mark_for_masquerade());
        marks.push(r);
    }
    let mut r: Vec<RawExpr> = load_destination(f).into();
    r.push(lookup(set_spec(EXTERNAL_SERVICES), REG32_00, None)?);
    r.extend(mark_for_masquerade());
    marks.push(r);
    // Node-originated traffic to a Local-policy destination is masqueraded (upstream: "masquerade
    // local traffic"); it then goes to any endpoint.
    let mut local_marks = marks.clone();
    let mut r: Vec<RawExpr> = load_destination(f).into();
    r.push(lookup(set_spec(EXTERNAL_LOCAL_SERVICES), REG32_00, None)?);
    r.extend(mark_for_masquerade());
    local_marks.push(r.clone());
    let mut fib_local = vec![
        RawExpr::new(c"fib")
            .u32(sys::NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_SADDR)
            .u32(sys::NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
            .u32(sys::NFTNL_EXPR_FIB_DREG, REG1),
        cmp(
            libc::NFT_CMP_EQ as u32,
            REG1,
            &u32::from(libc::RTN_LOCAL).to_ne_bytes(),
        ),
    ];
    fib_local.extend(r);
    marks.push(fib_local);

    let mut dispatch: Vec<RawExpr> = load_destination(f).into();
    dispatch.push(lookup(
        set_spec(SERVICE_AFFINITY),
        REG32_00,
        Some(libc::NFT_REG_VERDICT as u32),
    )?);
    let choices = choice_rules(config)?;

    for (name, hook, mark_rules) in [
        ("nat-prerouting", Hook::PreRouting, &marks),
        ("nat-output", Hook::Out, &local_marks),
    ] {
        let mut chain = Chain::new(&cstring(name)?, table);
        chain.set_hook(hook, -100);
        chain.set_type(ChainType::Nat);
        chain.set_policy(Policy::Accept);
        batch.add(&chain, MsgType::Add);
        for r in mark_rules.iter().chain([&dispatch]).chain(choices.iter()) {
            add_rule(batch, &chain, r);
        }
    }

    // Masquerade what was marked, clearing the mark first so it does not leak further.
    let mut chain = Chain::new(c"nat-postrouting", table);
    chain.set_hook(Hook::PostRouting, 100);
    chain.set_type(ChainType::Nat);
    chain.set_policy(Policy::Accept);
    batch.add(&chain, MsgType::Add);
    // Session affinity: record the endpoint of each new connection to an affinity destination
    // (looked up by the original destination; before the masquerade rules, which end the chain).
    add_rule(
        batch,
        &chain,
        &[
            RawExpr::new(c"ct")
                .u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATUS as u32)
                .u32(sys::NFTNL_EXPR_CT_DREG, REG1),
            bitwise(REG1, IPS_DST_NAT, 0),
            cmp(libc::NFT_CMP_NEQ as u32, REG1, &0u32.to_ne_bytes()),
            RawExpr::new(c"ct")
                .u32(sys::NFTNL_EXPR_CT_KEY, ct_dst_ip(f) as u32)
                .u8(sys::NFTNL_EXPR_CT_DIR, 0)
                .u32(sys::NFTNL_EXPR_CT_DREG, REG32_00),
            meta_load(libc::NFT_META_L4PROTO as u32, reg(aw(f))),
            RawExpr::new(c"ct")
                .u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_PROTO_DST as u32)
                .u8(sys::NFTNL_EXPR_CT_DIR, 0)
                .u32(sys::NFTNL_EXPR_CT_DREG, reg(aw(f) + 1)),
            lookup(
                set_spec(SERVICE_AFFINITY_RECORD),
                REG32_00,
                Some(libc::NFT_REG_VERDICT as u32),
            )?,
        ],
    );
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

    // Hairpin (after the marked traffic): a pod DNATed to itself (source == destination after
    // DNAT) is masqueraded, or its own reply would not come back through the node (upstream
    // marks it in the endpoint chain).
    add_rule(
        batch,
        &chain,
        &[
            RawExpr::new(c"ct")
                .u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATUS as u32)
                .u32(sys::NFTNL_EXPR_CT_DREG, REG1),
            bitwise(REG1, IPS_DST_NAT, 0),
            cmp(libc::NFT_CMP_NEQ as u32, REG1, &0u32.to_ne_bytes()),
            payload(
                libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
                saddr_offset(f),
                2 * f.addr_len() as u32,
                REG32_00,
            ),
            lookup(set_spec(HAIRPIN_ENDPOINTS), REG32_00, None)?,
            RawExpr::new(c"masq").u32(sys::NFTNL_EXPR_MASQ_FLAGS, NF_NAT_RANGE_PROTO_RANDOM_FULLY),
        ],
    );

    // loadBalancerSourceRanges: new connections to a firewalled LoadBalancer destination pass
    // only from an allowed network. The allow set is exact-match, so one rule per prefix length
    // masks the source and looks (destination . network . length) up; the last rule drops.
    let firewall = Chain::new(c"firewall-check", table);
    batch.add(&firewall, MsgType::Add);
    let (a, bits) = (aw(f), 8 * f.addr_len() as u32);
    let ones = match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::BROADCAST),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(u128::MAX)),
    };
    for prefix in 0..=bits {
        let mut r: Vec<RawExpr> = load_destination(f).into();
        let mask = addr_bytes(&crate::model::mask_ip(ones, prefix as u8));
        r.push(saddr(f, reg(a + 2)));
        r.push(bitwise_bytes(reg(a + 2), &mask, &vec![0; mask.len()]));
        r.push(
            RawExpr::new(c"immediate")
                .u32(sys::NFTNL_EXPR_IMM_DREG, reg(2 * a + 2))
                .bytes(sys::NFTNL_EXPR_IMM_DATA, &prefix.to_ne_bytes()),
        );
        r.push(lookup(set_spec(FIREWALL_ALLOW), REG32_00, None)?);
        r.push(verdict(libc::NF_ACCEPT));
        add_rule(batch, &firewall, &r);
    }
    add_rule(batch, &firewall, &[verdict(libc::NF_DROP)]);
    let firewall_jump = {
        let mut r = vec![
            RawExpr::new(c"ct")
                .u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATE as u32)
                .u32(sys::NFTNL_EXPR_CT_DREG, REG1),
            bitwise(REG1, CT_STATE_NEW, 0),
            cmp(libc::NFT_CMP_NEQ as u32, REG1, &0u32.to_ne_bytes()),
        ];
        r.extend(load_destination(f));
        r.push(lookup(set_spec(FIREWALL_IPS), REG32_00, None)?);
        r.push(
            RawExpr::new(c"immediate")
                .u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
                .u32(sys::NFTNL_EXPR_IMM_VERDICT, libc::NFT_JUMP as u32)
                .string(sys::NFTNL_EXPR_IMM_CHAIN, cstring("firewall-check")?),
        );
        r
    };
    let mut chain = Chain::new(c"filter-prerouting", table);
    chain.set_hook(Hook::PreRouting, FILTER_PRIORITY);
    chain.set_type(ChainType::Filter);
    chain.set_policy(Policy::Accept);
    batch.add(&chain, MsgType::Add);
    add_rule(batch, &chain, &firewall_jump);

    // Reject destinations without endpoints (ICMP port unreachable: TCP sees ECONNREFUSED at once).
    // Upstream's priority (dstnat - 10): in output this runs before DNAT.
    for (name, hook) in [
        ("filter-input", Hook::In),
        ("filter-forward", Hook::Forward),
        ("filter-output", Hook::Out),
    ] {
        let mut chain = Chain::new(&cstring(name)?, table);
        chain.set_hook(hook, FILTER_PRIORITY);
        chain.set_type(ChainType::Filter);
        chain.set_policy(Policy::Accept);
        batch.add(&chain, MsgType::Add);
        if name == "filter-output" {
            add_rule(batch, &chain, &firewall_jump);
        }
        let mut r: Vec<RawExpr> = load_destination(f).into();
        r.push(lookup(set_spec(NO_ENDPOINT_SERVICES), REG32_00, None)?);
        r.push(
            RawExpr::new(c"reject")
                .u32(sys::NFTNL_EXPR_REJECT_TYPE, libc::NFT_REJECT_ICMP_UNREACH as u32)
                // Port unreachable: ICMP code 3, ICMPv6 code 4.
                .u32(
                    sys::NFTNL_EXPR_REJECT_CODE,
                    match f {
                        Family::V4 => 3,
                        Family::V6 => 4,
                    },
                ),
        );
        add_rule(batch, &chain, &r);
        // Local policy without a local endpoint: drop (what was short-circuited to another
        // endpoint was DNATed already and no longer matches).
        let mut r: Vec<RawExpr> = load_destination(f).into();
        r.push(lookup(set_spec(NO_LOCAL_ENDPOINT_SERVICES), REG32_00, None)?);
        r.push(verdict(libc::NF_DROP));
        add_rule(batch, &chain, &r);
    }
    Ok(())
}

// ---- socket ----------------------------------------------------------------------------------

/// What [`send_batch`] did.
struct Sent {
    bytes: usize,
    send: std::time::Duration,
    acks: std::time::Duration,
}

/// Sends a finalized batch in one sendmsg on `sock` and waits for every ack. After an error the socket may hold unread acks: [`NetlinkSocket::drain`] runs first.
fn send_batch(sock: &mut NetlinkSocket, batch: &nftnl::FinalizedBatch) -> Result<Sent, NftError> {
    let pages: Vec<&[u8]> = batch.iter().collect();
    let bytes: usize = pages.iter().map(|p| p.len()).sum();
    let seqs = batch.sequence_numbers();
    let expected = seqs.len();
    // Room for the whole batch and one (capped) ack per message.
    sock.reserve(bytes + (1 << 20), expected * 64 + (1 << 20));
    sock.drain();
    let raw = sock.raw_fd();
    let send;
    let acks_started;

    // SAFETY: plain socket syscalls on a descriptor `sock` owns; buffers outlive the calls.
    unsafe {
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
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
        let t = std::time::Instant::now();
        if libc::sendmsg(raw, &msg, 0) < 0 {
            return Err(NftError::Send {
                bytes,
                source: std::io::Error::last_os_error(),
            });
        }
        send = t.elapsed();

        acks_started = std::time::Instant::now();
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
                if hdr.nlmsg_type == libc::NLMSG_ERROR as u16
                    && len >= hdr_len + 4
                    && seqs.contains(&hdr.nlmsg_seq)
                {
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
    Ok(Sent {
        bytes,
        send,
        acks: acks_started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn bucket_mismatch_is_refused_before_touching_the_kernel() {
        let dst = Destination {
            ip: ip4(10, 96, 0, 1),
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
                        endpoint: ip4(10, 244, 0, 2),
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
