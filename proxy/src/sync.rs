//! Watch events → what changed and when to sync next (pure: no I/O, time passed in).
//!
//! [`Tracker`] keeps the Services, EndpointSlices and the local Node as the watchers report them
//! (kube-rs `watcher::Event`s, relists included), remembers which Services a change touched, and
//! decides when the next sync is due with upstream's `BoundedFrequencyRunner` semantics:
//!
//! - nothing is programmed before the initial lists (Services and EndpointSlices, as upstream,
//!   and the local Node's) are complete; then the first sync is immediate and rebuilds the table;
//! - a change is applied at once if the last sync is at least `minSyncPeriod` old, else at
//!   `last + minSyncPeriod` (changes arriving meanwhile are coalesced into that one sync);
//! - `syncPeriod` after the last sync, a full resync rebuilds the table (repairs drift);
//! - a failed sync is retried after `minSyncPeriod` (at least 1 s) as a rebuild.
//!
//! Per-Service changes become a partial sync (only those Services' elements are diffed); a change
//! of the node's NodePort addresses compares every Service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::Event;

use crate::compact::{self, Projected, ProjectedService, ProjectedSlice, ServiceInfo, SliceInfo};
use crate::config::Cidr;
use crate::model::{
    HealthCheck, ModelConfig, Ruleset, ServiceError, ServiceKey, assemble, elements, service_health,
};

/// Upstream's annotation on EndpointSlices: when the change that produced this slice happened;
/// the start of `kubeproxy_network_programming_duration_seconds`.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Label selector of the Services watch (upstream: headless Services and Services owned by
/// another proxy are not ours).
pub const SERVICE_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

/// Shortest retry interval after a failed sync, so `minSyncPeriod: 0s` cannot spin.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// `syncPeriod` / `minSyncPeriod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub min_sync_period: Duration,
    pub sync_period: Duration,
}

/// Which addresses NodePorts answer on (upstream `nodePortAddresses`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePortAddresses {
    /// "primary" (or nothing configured, nftables mode's default): the Node's own addresses.
    pub primary: bool,
    /// CIDRs: the local interface addresses inside them.
    pub cidrs: Vec<Cidr>,
    /// The node's interface addresses (both families; updated when they change, see
    /// [`Tracker::set_local_addrs`]).
    pub local_addrs: Vec<IpAddr>,
}

impl NodePortAddresses {
    /// From the configured list (`["primary"]`, CIDRs, or empty) and the local addresses.
    pub fn new(configured: &[String], local_addrs: Vec<IpAddr>) -> Self {
        let cidrs: Vec<Cidr> = configured.iter().filter_map(|c| c.parse().ok()).collect();
        NodePortAddresses {
            primary: configured.is_empty() || configured.iter().any(|c| c == "primary"),
            cidrs,
            local_addrs,
        }
    }

    /// The addresses NodePorts are served on for this Node (sorted, deduplicated; both
    /// families): the Node's InternalIPs (ExternalIPs if it has none) for "primary", plus local
    /// addresses within the CIDRs.
    pub fn resolve(&self, node: Option<&Node>) -> Vec<IpAddr> {
        let mut out = BTreeSet::new();
        if self.primary {
            let addrs: Vec<(String, IpAddr)> = node
                .and_then(|n| n.status.as_ref())
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|a| Some((a.type_.clone(), a.address.parse::<IpAddr>().ok()?)))
                .collect();
            let internal: Vec<IpAddr> = addrs
                .iter()
                .filter(|(t, _)| t == "InternalIP")
                .map(|(_, ip)| *ip)
                .collect();
            if internal.is_empty() {
                out.extend(addrs.iter().filter(|(t, _)| t == "ExternalIP").map(|(_, ip)| *ip));
            } else {
                out.extend(internal);
            }
        }
        for ip in &self.local_addrs {
            if self.cidrs.iter().any(|c| cidr_contains(c, *ip)) {
                out.insert(*ip);
            }
        }
        out.into_iter().collect()
    }
}

fn cidr_contains(c: &Cidr, ip: IpAddr) -> bool {
    let (net, ip, bits) = match (c.addr, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    let prefix = u32::from(c.prefix).min(bits);
    let mask = if prefix == 0 {
        0
    } else {
        (u128::MAX >> (128 - bits)) & !((1u128 << (bits - prefix)) - 1)
    };
    net & mask == ip & mask
}

/// A watched collection: projected objects by namespace/name, with relists (`Init` … `InitDone`)
/// buffered and swapped in atomically.
#[derive(Debug)]
struct Store<T> {
    items: BTreeMap<ServiceKey, T>,
    relist: Option<BTreeMap<ServiceKey, T>>,
    synced: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// One object that changed: its key, the old and the new value.
type Change<T> = (ServiceKey, Option<T>, Option<T>);

impl<T: Clone + PartialEq> Store<T> {
    /// Applies one event; returns the objects that actually changed.
    fn apply(&mut self, event: Event<Projected<T>>) -> Vec<Change<T>> {
        match event {
            Event::Apply(Projected { key, value }) => {
                let old = self.items.insert(key.clone(), value.clone());
                if old.as_ref() == Some(&value) {
                    return Vec::new();
                }
                vec![(key, old, Some(value))]
            }
            Event::Delete(Projected { key, .. }) => match self.items.remove(&key) {
                Some(old) => vec![(key, Some(old), None)],
                None => Vec::new(),
            },
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(Projected { key, value }) => {
                self.relist.get_or_insert_default().insert(key, value);
                Vec::new()
            }
            Event::InitDone => {
                let new = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.items, new);
                self.synced = true;
                let keys: BTreeSet<&ServiceKey> = old.keys().chain(self.items.keys()).collect();
                keys.into_iter()
                    .filter_map(|k| {
                        let (o, n) = (old.get(k), self.items.get(k));
                        (o != n).then(|| (k.clone(), o.cloned(), n.cloned()))
                    })
                    .collect()
            }
        }
    }
}

/// What kind of sync is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncKind {
    /// Replace the table atomically from the full desired state (first sync, periodic resync,
    /// retry after a failure).
    Rebuild,
    /// Compare every Service with what is programmed (the node's addresses changed).
    All,
    /// Diff only these Services.
    Services(BTreeSet<ServiceKey>),
}

/// One sync to run, as handed out by [`Tracker::take_due`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyncPlan {
    pub kind: SyncKind,
    /// The earliest `last-change-trigger-time` per Service changed since the last sync
    /// (for `kubeproxy_network_programming_duration_seconds`).
    pub triggers: Vec<jiff::Timestamp>,
}

/// Change counters (upstream `kubeproxy_sync_proxy_rules_{service,endpoint}_changes_total`) and
/// the changes not yet synced (`…_changes_pending`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub service_changes: u64,
    pub endpoint_changes: u64,
    /// Services changed by Service events since the last sync began (upstream: the entries of
    /// the ServiceChangeTracker).
    pub service_changes_pending: u64,
    /// EndpointSlice changes since the last sync began (upstream: incremented per needed
    /// EndpointSlice change, zeroed when a sync checks the changes out).
    pub endpoint_changes_pending: u64,
}

/// The watched state and the sync schedule.
#[derive(Debug)]
pub struct Tracker {
    timing: Timing,
    nodeport: NodePortAddresses,
    buckets: u32,
    services: Store<Result<ServiceInfo, ServiceError>>,
    slices: Store<SliceInfo>,
    /// EndpointSlice keys by the Service they belong to, so a partial sync reads only the
    /// changed Services' slices. A Vec: most Services have one slice, and a one-element
    /// `BTreeSet` allocates a whole node (~0.5 KB).
    slice_index: BTreeMap<ServiceKey, Vec<ServiceKey>>,
    node: Store<Node>,
    node_ips: Vec<IpAddr>,
    dirty: BTreeSet<ServiceKey>,
    need_all: bool,
    need_rebuild: bool,
    failed: bool,
    last_sync: Option<Instant>,
    triggers: BTreeMap<ServiceKey, jiff::Timestamp>,
    counters: Counters,
    /// Services changed by Service events since the last sync began.
    services_pending: BTreeSet<ServiceKey>,
    /// This node's name: endpoints on it are local for the Local traffic policies.
    node_name: Option<String>,
}

impl Tracker {
    pub fn new(timing: Timing, nodeport: NodePortAddresses, buckets: u32) -> Self {
        let node_ips = nodeport.resolve(None);
        Tracker {
            timing,
            nodeport,
            buckets,
            services: Store::default(),
            slices: Store::default(),
            slice_index: BTreeMap::new(),
            node: Store::default(),
            node_ips,
            dirty: BTreeSet::new(),
            need_all: false,
            need_rebuild: true,
            failed: false,
            last_sync: None,
            triggers: BTreeMap::new(),
            counters: Counters::default(),
            services_pending: BTreeSet::new(),
            node_name: None,
        }
    }

    /// Sets this node's name (`--hostname-override` or the hostname), which makes endpoints with
    /// that `nodeName` local.
    pub fn with_node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = Some(name.into());
        self
    }

    /// A Services watch event (objects are kept in [`crate::compact`] form; already projected
    /// ones are taken as they are).
    pub fn service_event<S: Into<ProjectedService>>(&mut self, event: Event<S>) {
        for (key, _, _) in self.services.apply(compact::event(event, Into::into)) {
            self.counters.service_changes += 1;
            self.dirty.insert(key.clone());
            self.services_pending.insert(key);
            self.counters.service_changes_pending = self.services_pending.len() as u64;
        }
    }

    /// An EndpointSlices watch event (objects are kept in [`crate::compact`] form; already
    /// projected ones are taken as they are).
    pub fn slice_event<S: Into<ProjectedSlice>>(&mut self, event: Event<S>) {
        for (slice_key, old, new) in self.slices.apply(compact::event(event, Into::into)) {
            self.counters.endpoint_changes += 1;
            self.counters.endpoint_changes_pending += 1;
            if let Some(key) = old.as_ref().and_then(|o| slice_service(&slice_key, o)) {
                if let Some(set) = self.slice_index.get_mut(&key) {
                    set.retain(|k| *k != slice_key);
                    if set.is_empty() {
                        self.slice_index.remove(&key);
                    }
                }
                self.dirty.insert(key);
            }
            if let Some(new) = &new
                && let Some(key) = slice_service(&slice_key, new)
            {
                if let Some(t) = new.trigger {
                    let e = self.triggers.entry(key.clone()).or_insert(t);
                    *e = (*e).min(t);
                }
                let slices = self.slice_index.entry(key.clone()).or_default();
                if !slices.contains(&slice_key) {
                    slices.push(slice_key.clone());
                }
                self.dirty.insert(key);
            }
        }
    }

    /// A watch event of the local Node (watched by name).
    pub fn node_event(&mut self, event: Event<Node>) {
        let event = compact::event(event, |node: Node| Projected {
            key: (String::new(), node.metadata.name.clone().unwrap_or_default()),
            value: node,
        });
        if self.node.apply(event).is_empty() {
            return;
        }
        let ips = self.nodeport.resolve(self.node());
        if ips != self.node_ips {
            tracing::info!(node_ips = ?ips, "NodePort addresses changed");
            self.node_ips = ips;
            self.need_all = true;
        }
    }

    /// A complete relist of Services and EndpointSlices and an empty one of the Node: what the
    /// watches deliver at start-up, at once (benchmarks and tests).
    pub fn initial_lists<S, E>(
        &mut self,
        services: impl IntoIterator<Item = S>,
        slices: impl IntoIterator<Item = E>,
    ) where
        S: Into<ProjectedService>,
        E: Into<ProjectedSlice>,
    {
        self.service_event(Event::<S>::Init);
        for s in services {
            self.service_event(Event::InitApply(s));
        }
        self.service_event(Event::<S>::InitDone);
        self.slice_event(Event::<E>::Init);
        for s in slices {
            self.slice_event(Event::InitApply(s));
        }
        self.slice_event(Event::<E>::InitDone);
        self.node_event(Event::Init);
        self.node_event(Event::InitDone);
    }

    /// The node's interface addresses changed (read again after an rtnetlink address event):
    /// NodePorts follow `--nodeport-addresses` CIDRs onto addresses that appear later and leave
    /// those that go.
    pub fn set_local_addrs(&mut self, addrs: Vec<IpAddr>) {
        if addrs == self.nodeport.local_addrs {
            return;
        }
        self.nodeport.local_addrs = addrs;
        let ips = self.nodeport.resolve(self.node());
        if ips != self.node_ips {
            tracing::info!(node_ips = ?ips, "NodePort addresses changed (interface addresses)");
            self.node_ips = ips;
            self.need_all = true;
        }
    }

    /// The local Node, if it exists.
    pub fn node(&self) -> Option<&Node> {
        self.node.items.values().next()
    }

    /// False while the Node is being deleted (upstream's `nodeEligible` in /healthz).
    pub fn node_eligible(&self) -> bool {
        self.node()
            .is_none_or(|n| n.metadata.deletion_timestamp.is_none())
    }

    /// True once the initial lists of Services, EndpointSlices and the Node are complete (the
    /// Node's list completes, empty, when the Node does not exist: it never blocks start-up, but
    /// when it exists the first sync already serves NodePorts on its addresses).
    pub fn ready(&self) -> bool {
        self.services.synced && self.slices.synced && self.node.synced
    }

    /// True when a change waits to be programmed.
    pub fn pending(&self) -> bool {
        self.need_rebuild || self.need_all || !self.dirty.is_empty()
    }

    /// The change counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Number of Services and EndpointSlices known.
    pub fn sizes(&self) -> (usize, usize) {
        (self.services.items.len(), self.slices.items.len())
    }

    /// The NodePort addresses currently in effect.
    pub fn node_ips(&self) -> &[IpAddr] {
        &self.node_ips
    }

    /// When the next sync is due (`now` for the first one; None: not before the initial lists
    /// are complete).
    pub fn next_sync(&self, now: Instant) -> Option<Instant> {
        if !self.ready() {
            return None;
        }
        let Some(last) = self.last_sync else {
            return Some(now);
        };
        let periodic = last + self.timing.sync_period;
        if self.failed {
            return Some(last + self.timing.min_sync_period.max(MIN_RETRY));
        }
        if self.pending() {
            return Some(periodic.min(last + self.timing.min_sync_period));
        }
        Some(periodic)
    }

    /// The sync to run now, if one is due at `now`; the changes it covers are taken out.
    pub fn take_due(&mut self, now: Instant) -> Option<SyncPlan> {
        let due = self.next_sync(now)?;
        if due > now {
            return None;
        }
        let periodic = self.last_sync.is_none_or(|l| now >= l + self.timing.sync_period);
        let kind = if self.need_rebuild || periodic {
            SyncKind::Rebuild
        } else if self.need_all {
            SyncKind::All
        } else {
            SyncKind::Services(self.dirty.clone())
        };
        self.dirty.clear();
        self.services_pending.clear();
        self.counters.service_changes_pending = 0;
        self.counters.endpoint_changes_pending = 0;
        self.need_all = false;
        self.need_rebuild = false;
        let triggers = std::mem::take(&mut self.triggers).into_values().collect();
        Some(SyncPlan { kind, triggers })
    }

    /// Records the outcome of the sync handed out last; a failure schedules a rebuild.
    pub fn finished(&mut self, now: Instant, ok: bool) {
        self.last_sync = Some(now);
        self.failed = !ok;
        if !ok {
            self.need_rebuild = true;
        }
    }

    /// The model settings for the current node addresses.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            buckets: self.buckets,
            node_ips: self.node_ips.clone(),
            node_name: self.node_name.clone(),
        }
    }

    /// The projected EndpointSlices of one Service.
    fn slices_of(&self, key: &ServiceKey) -> Vec<&SliceInfo> {
        self.slice_index
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.items.get(k))
            .collect()
    }

    /// The desired elements of the named Services only (absent = deleted, unprogrammable or
    /// contributing nothing): O(those Services and their slices), for a partial sync. Unlike
    /// [`Self::desired`] it does not arbitrate an element claimed by two Services (the same
    /// external IP and port); such a conflict fails the batch in the kernel, and the retry is a
    /// rebuild, which does.
    pub fn desired_for(&self, keys: &BTreeSet<ServiceKey>) -> Ruleset {
        let config = self.model_config();
        let mut out = Ruleset::default();
        for key in keys {
            let Some(Ok(svc)) = self.services.items.get(key) else {
                continue;
            };
            let els = elements(svc, &self.slices_of(key), &config);
            if !els.is_empty() {
                out.by_service.insert(key.clone(), els.into_iter().collect());
            }
        }
        out
    }

    /// The health check of one Service (`externalTrafficPolicy: Local` with a
    /// `healthCheckNodePort`), if it has one: O(that Service's slices).
    pub fn health_check(&self, key: &ServiceKey) -> Option<HealthCheck> {
        let svc = self.services.items.get(key)?.as_ref().ok()?;
        service_health(svc, &self.slices_of(key), self.node_name.as_deref())
    }

    /// Keys of every known Service.
    pub fn service_keys(&self) -> BTreeSet<ServiceKey> {
        self.services.items.keys().cloned().collect()
    }

    /// The desired ruleset from everything known.
    pub fn desired(&self) -> Ruleset {
        assemble(&self.services.items, |k| self.slices_of(k), &self.model_config())
    }
}

/// The Service an EndpointSlice belongs to (same namespace).
fn slice_service(slice_key: &ServiceKey, slice: &SliceInfo) -> Option<ServiceKey> {
    Some((slice_key.0.clone(), slice.service.as_deref()?.to_string()))
}

#[cfg(test)]
mod tests;
