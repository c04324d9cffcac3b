//! The applier: [`NftProgrammer`] brings one table (`ip` or `ip6 kube-proxy`) to a desired
//! [`Ruleset`] — it diffs against what it programmed, keeps reference counts of shared elements
//! and the session-affinity timeout classes in use, and sends each sync as one batch on its
//! persistent NETLINK_NETFILTER socket. [`DualStack`] runs it for both families. What the batch
//! contains is computed elsewhere ([`super::skeleton`], [`super::elements`]) and encoded by
//! [`super::batch`]; adoption reads the table back through [`super::readback`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use knode_netlink::Socket;
use nftnl::{Batch, Chain, FinalizedBatch, MsgType, Rule, Table};

use super::batch::{
    add_affinity_class, add_element_changes, add_elements, add_skeleton, delete_affinity_class, delete_set,
    new_table,
};
use super::elements::{SETS, affinity_name, affinity_record_name, parse_addr_port, parse_dst};
use super::readback::{self, Existing, SharedCounts};
use super::skeleton::skeleton;
use super::{NftError, TableConfig, cstring, proto_family};
use crate::diff::{ChangeSet, diff, diff_services};
use crate::model::{Destination, Element, Family, Ruleset, ServiceKey};

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
    pub diff: Duration,
    /// Reference counts and encoding the netlink batch (libnftnl).
    pub encode: Duration,
    /// `sendmsg` of the batch: the kernel validates and commits it in the sending thread.
    pub send: Duration,
    /// Reading the acks.
    pub acks: Duration,
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

impl Rebuild {
    /// Everything is written anew (nothing of the old table is kept).
    fn is_full(rebuild: Option<&Rebuild>) -> bool {
        matches!(rebuild, Some(Rebuild::Create | Rebuild::Replace))
    }
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
    /// kernel's transaction cleanup (see [`Socket`]).
    sock: Option<Socket>,
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
                let t = Instant::now();
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
        let t = Instant::now();
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

    /// A model/table bucket mismatch would leave some `numgen` results without a map element
    /// (connections not load-balanced): refused. Checked on full syncs, which are O(n) anyway.
    fn check_buckets(&self, desired: &Ruleset) -> Result<(), NftError> {
        let max_bucket = desired
            .by_service
            .values()
            .flatten()
            .filter_map(|e| match e {
                Element::ServiceEndpoint { bucket, .. } => Some(bucket),
                _ => None,
            })
            .max();
        let table = self.config.buckets.max(1);
        match max_bucket {
            Some(max) if max + 1 != table => Err(NftError::BucketMismatch {
                model: max + 1,
                table,
            }),
            _ => Ok(()),
        }
    }

    fn full_sync(&mut self, desired: Ruleset) -> Result<SyncStats, NftError> {
        self.check_buckets(&desired)?;
        let t = Instant::now();
        let changes = diff(&Ruleset::default(), &desired);
        let diff_time = t.elapsed();
        self.affinity_classes.clear();
        self.shared.clear();
        let rebuild = match readback::table_tag(socket(&mut self.sock)?, &self.config)? {
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
        let Some(adopted) = readback::read_back(socket(&mut self.sock)?, &self.config)? else {
            return self.full_sync(desired);
        };
        tracing::debug!(
            elements = adopted.elements.len(),
            rules_match = adopted.rules_match,
            "adopted the programmed table"
        );
        self.affinity_classes = adopted.classes;
        self.shared = adopted.shared;
        let t = Instant::now();
        let changes = diff(&adopted.elements, &desired);
        let diff_time = t.elapsed();
        let repair = match adopted.rules_match {
            true => None,
            false => {
                tracing::info!("table rules differ from the layout; rewriting them");
                let existing = readback::existing_objects(socket(&mut self.sock)?, &self.config)?;
                Some(Rebuild::Repair(existing))
            }
        };
        let mut stats = self.send_changes(&changes, repair.as_ref())?;
        stats.phases.diff = diff_time;
        self.programmed = Some(desired);
        Ok(stats)
    }

    /// Sends `changes` in one batch; with `rebuild`, the batch first (re)writes the table's
    /// chains and rules (see [`Rebuild`]). Shared elements are sent when their count goes
    /// 0 → 1 or 1 → 0; affinity entries pointing at an endpoint the changes removed are
    /// forgotten afterwards.
    fn send_changes(
        &mut self,
        changes: &ChangeSet,
        rebuild: Option<&Rebuild>,
    ) -> Result<SyncStats, NftError> {
        let started = Instant::now();
        let (effective, counts) = net_shared(&self.shared, changes);
        let stats = self.send_effective(&effective, rebuild, started)?;
        for (k, n) in counts {
            if n == 0 {
                self.shared.remove(&k);
            } else {
                self.shared.insert(k, n);
            }
        }
        let lost = lost_affinity(&effective);
        if !Rebuild::is_full(rebuild) && !lost.is_empty() {
            self.forget_affinity(&lost)?;
        }
        Ok(stats)
    }

    /// Deletes the session-affinity entries that send a destination to an endpoint in `lost`
    /// (as upstream drops a gone endpoint's set): now that the batch is in, no new ones can be
    /// made.
    fn forget_affinity(&mut self, lost: &BTreeSet<(Destination, IpAddr, u16)>) -> Result<(), NftError> {
        let (config, f) = (&self.config, self.config.family);
        let mut batch = Batch::new();
        let mut count = 0usize;
        for t in self.affinity_classes.keys().copied() {
            let doomed = readback::affinity_keys(socket(&mut self.sock)?, config, t, |k, d| {
                let dst = k.get(f.addr_len()..).and_then(|k| parse_dst(k, f));
                matches!((dst, parse_addr_port(d, f)), (Some(dst), Some((ip, port))) if lost.contains(&(dst, ip, port)))
            })?;
            count += doomed.len();
            let keys = doomed.into_iter().map(|k| Ok((k, None, None)));
            add_elements(&mut batch, config, &affinity_name(t), MsgType::Del, keys)?;
        }
        if count > 0 {
            match send(socket(&mut self.sock)?, &batch.finalize()) {
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
        started: Instant,
    ) -> Result<SyncStats, NftError> {
        let full = Rebuild::is_full(rebuild);
        if rebuild.is_none() && changes.is_empty() {
            return Ok(SyncStats {
                full,
                ..SyncStats::default()
            });
        }
        let plan = plan_classes(&self.affinity_classes, changes, rebuild);
        let config = &self.config;
        let table = Table::new(&cstring(&config.table_name)?, proto_family(config.family));
        let mut batch = Batch::new();
        if let Some(rebuild) = rebuild {
            write_rebuild(&mut batch, &table, config, rebuild, &plan)?;
            add_skeleton(&mut batch, &table, config, &skeleton(config)?)?;
        }
        for t in &plan.created {
            add_affinity_class(&mut batch, &table, config, *t)?;
        }
        add_element_changes(&mut batch, config, changes)?;
        for t in &plan.removed {
            delete_affinity_class(&mut batch, &table, config, *t)?;
        }
        let batch = batch.finalize();
        let encode = started.elapsed();
        let sent = send(socket(&mut self.sock)?, &batch)?;
        self.affinity_classes = plan.classes;
        Ok(SyncStats {
            full,
            elements_added: changes.add.len(),
            elements_deleted: changes.delete.len(),
            batch_bytes: sent.bytes,
            phases: SyncPhases {
                diff: Duration::ZERO,
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
        send(socket(&mut self.sock)?, &batch.finalize())?;
        self.programmed = None;
        Ok(())
    }
}

/// The socket in `slot`, in the calling thread's network namespace: opened on first use,
/// re-opened when called from another namespace than last time.
fn socket(slot: &mut Option<Socket>) -> Result<&mut Socket, NftError> {
    let sock = match slot.take().filter(Socket::in_current_netns) {
        Some(s) => s,
        None => Socket::open(libc::NETLINK_NETFILTER)?,
    };
    Ok(slot.insert(sock))
}

/// Sends a finalized batch on `sock` (one `sendmsg`, every message acked); a message the kernel
/// rejected rolled the whole batch back.
fn send(sock: &mut Socket, batch: &FinalizedBatch) -> Result<knode_netlink::BatchTimes, NftError> {
    let pages: Vec<&[u8]> = batch.iter().collect();
    sock.send_batch(&pages, batch.sequence_numbers())
        .map_err(|e| match e {
            knode_netlink::Error::Rejected { index, source } => NftError::Rejected { index, source },
            e => NftError::Netlink(e),
        })
}

/// The changes to send for shared elements ([`Element::shared_key`]), counted per key: sent when
/// the count goes 0 → 1 (add) or 1 → 0 (delete); one deleted and re-added in the same batch nets
/// out. Returns the effective changes and the new counts of the touched keys (only those are
/// computed, so a partial sync stays O(its changes)).
fn net_shared(shared: &SharedCounts, changes: &ChangeSet) -> (ChangeSet, Vec<(IpAddr, u32)>) {
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
        let old = shared.get(&k).copied().unwrap_or(0);
        let after_deletes = old.saturating_sub(dels);
        if old > 0 && after_deletes == 0 && adds == 0 {
            effective.delete.push(Element::HairpinEndpoint(k));
        } else if old == 0 && adds > 0 {
            effective.add.push(Element::HairpinEndpoint(k));
        }
        counts.push((k, after_deletes + adds));
    }
    (effective, counts)
}

/// The (destination, endpoint, port) pairs `changes` take out of `affinity-endpoints` for good.
fn lost_affinity(changes: &ChangeSet) -> BTreeSet<(Destination, IpAddr, u16)> {
    let re_added: BTreeSet<&Element> = changes
        .add
        .iter()
        .filter(|e| matches!(e, Element::AffinityEndpoint { .. }))
        .collect();
    changes
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
        .collect()
}

/// The affinity timeout classes after a batch and what the batch does to them.
#[derive(Debug, Default, PartialEq, Eq)]
struct ClassPlan {
    /// Classes in use afterwards, with their `service-affinity` element counts.
    classes: BTreeMap<u32, usize>,
    /// Written before the elements: new classes (every class in use when rules are rewritten).
    created: Vec<u32>,
    /// Removed after the elements: classes that lose their last element.
    removed: Vec<u32>,
}

fn plan_classes(current: &BTreeMap<u32, usize>, changes: &ChangeSet, rebuild: Option<&Rebuild>) -> ClassPlan {
    // Created or replaced: everything is written anew. A repair rewrites the rules (those of
    // every affinity class too) but keeps sets, elements and classes.
    let rewrite_rules = rebuild.is_some();
    let mut classes = current.clone();
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
    let created = classes
        .iter()
        .filter(|(t, n)| **n > 0 && (rewrite_rules || !current.contains_key(t)))
        .map(|(t, _)| *t)
        .collect();
    let removed = match Rebuild::is_full(rebuild) {
        true => Vec::new(),
        false => classes
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(t, _)| *t)
            .collect(),
    };
    classes.retain(|_, n| *n > 0);
    ClassPlan {
        classes,
        created,
        removed,
    }
}

/// What a batch with `rebuild` writes before the skeleton: the table (created with the layout
/// tag, or replaced), or for a repair every rule flushed and what the layout does not have
/// deleted.
fn write_rebuild(
    batch: &mut Batch,
    table: &Table,
    config: &TableConfig,
    rebuild: &Rebuild,
    plan: &ClassPlan,
) -> Result<(), NftError> {
    let existing = match rebuild {
        Rebuild::Create => return new_table(batch, config),
        Rebuild::Replace => {
            batch.add(table, MsgType::Add);
            batch.add(table, MsgType::Del);
            return new_table(batch, config);
        }
        Rebuild::Repair(existing) => existing,
    };
    // Every rule first (they reference the sets and chains), then what is not part of the
    // layout. The layout's sets and chains stay, with their elements and hooks: a packet in
    // flight during the commit meets either the old rules or the new ones, over the same sets
    // (see [`Rebuild`]).
    for name in &existing.chains {
        batch.add(&Rule::new(&Chain::new(&cstring(name)?, table)), MsgType::Del);
    }
    let fixed_chains: BTreeSet<String> = skeleton(config)?.chains.into_iter().map(|c| c.name).collect();
    // Affinity classes that stay are rewritten, those that go are removed after the elements;
    // any other affinity chain or set is a stray.
    let ours = |n: &str| {
        plan.classes
            .keys()
            .chain(&plan.removed)
            .any(|t| n == affinity_name(*t) || n == affinity_record_name(*t))
    };
    for set in existing
        .sets
        .iter()
        .filter(|n| !ours(n) && !SETS.iter().any(|s| s.name == n.as_str()))
    {
        delete_set(batch, config, set)?;
    }
    for name in existing
        .chains
        .iter()
        .filter(|n| !ours(n) && !fixed_chains.contains(n.as_str()))
    {
        batch.add(&Chain::new(&cstring(name)?, table), MsgType::Del);
    }
    Ok(())
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

#[cfg(test)]
mod tests;
