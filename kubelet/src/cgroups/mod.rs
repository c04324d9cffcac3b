//! cgroups by QoS class, as upstream's kubelet container manager (`pkg/kubelet/cm`): the node-level
//! `kubepods` cgroup sized to the node's allocatable, its `burstable` and `besteffort` children
//! (Guaranteed pods sit directly under `kubepods`), a cgroup per pod (`pod<uid>`) with the pod's
//! limits, and the containers under it.
//!
//! This file is the pure part: cgroup names for both drivers ([`CgroupName`], [`Layout`]), the
//! resource settings of every level ([`pod_config`], [`container_config`], [`qos_configs`],
//! [`node_config`]), `oom_score_adj` by QoS ([`oom_score_adj`]), node allocatable
//! ([`allocatable`]) and the files those settings become on cgroup v1 and v2 ([`files`]).
//! [`fs`] is the adapter over the cgroups-rs crate (creates, configures, removes, reads cgroups);
//! [`manager`] keeps the hierarchy in line with the pods.

pub mod fs;
pub mod manager;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::pods::resources::parse_quantity;
use crate::pods::sidecars::is_sidecar;

pub use fs::{CgroupFs, MemoryReading};
pub use manager::CgroupManager;

/// Upstream's `MinShares`: the cpu.shares of BestEffort (and of a pod or container requesting 0).
pub const MIN_SHARES: u64 = 2;
/// Upstream's `MaxShares`, the kernel's cap.
pub const MAX_SHARES: u64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
/// The CFS period the kubelet sets (100 ms, upstream's `QuotaPeriod`), in µs.
pub const QUOTA_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts (1 ms), in µs.
pub const MIN_QUOTA_US: i64 = 1000;
const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
const BESTEFFORT_OOM_SCORE_ADJ: i32 = 1000;
/// Nano-units per unit ([`parse_quantity`]'s scale).
const NANO: i128 = 1_000_000_000;

/// Errors of the cgroup layer: what failed, on which cgroup or setting.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("--cgroup-driver must be \"cgroupfs\" or \"systemd\", got {0:?}")]
    BadDriver(String),
    #[error("{field}: {message}")]
    BadReservation { field: String, message: String },
    #[error("cgroup {path}: {action}: {source}")]
    Cgroup {
        path: String,
        action: String,
        source: cgroups_rs::error::Error,
    },
    #[error("cgroup {path}: {action}: {source}")]
    Io {
        path: String,
        action: String,
        source: std::io::Error,
    },
}

/// A pod's QoS class (upstream's `GetPodQOS`, see [`crate::pods::pod_qos`]).
pub use crate::pods::resources::Qos;

impl Qos {
    /// The class of a pod.
    pub fn of(pod: &Pod) -> Qos {
        crate::pods::pod_qos(pod)
    }

    /// The name of its cgroup under `kubepods` (none for Guaranteed).
    fn cgroup(self) -> Option<&'static str> {
        match self {
            Qos::Guaranteed => None,
            Qos::Burstable => Some("burstable"),
            Qos::BestEffort => Some("besteffort"),
        }
    }
}

/// The cgroup driver (`cgroupDriver` / `--cgroup-driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

impl Driver {
    pub fn parse(s: &str) -> Result<Driver, CgroupError> {
        match s {
            "cgroupfs" => Ok(Driver::Cgroupfs),
            "systemd" => Ok(Driver::Systemd),
            _ => Err(CgroupError::BadDriver(s.to_string())),
        }
    }
}

/// A driver-independent cgroup name, as upstream's `CgroupName`: its components from the root.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CgroupName(pub Vec<String>);

impl CgroupName {
    /// From a cgroupfs path such as `--cgroup-root` (`/` is the root, empty components dropped).
    pub fn parse_cgroupfs(path: &str) -> CgroupName {
        CgroupName(
            path.split('/')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    pub fn child(&self, component: &str) -> CgroupName {
        let mut v = self.0.clone();
        v.push(component.to_string());
        CgroupName(v)
    }

    /// The cgroupfs path: `/a/b/c`.
    pub fn to_cgroupfs(&self) -> String {
        format!("/{}", self.0.join("/"))
    }

    /// The systemd path: components become nested slices with `-` escaped to `_`
    /// (`[kubepods, burstable]` → `/kubepods.slice/kubepods-burstable.slice`), as upstream's
    /// `CgroupName.ToSystemd` with libcontainer's `ExpandSlice`.
    pub fn to_systemd(&self) -> String {
        if self.0.is_empty() {
            return "/".into();
        }
        let mut out = String::new();
        let mut prefix = String::new();
        for c in &self.0 {
            let esc = c.replace('-', "_");
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(&esc);
            out.push('/');
            out.push_str(&prefix);
            out.push_str(".slice");
        }
        out
    }
}

/// Where the kubelet's cgroups live: driver, `--cgroup-root` and `cgroupsPerQOS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub driver: Driver,
    pub root: CgroupName,
    pub per_qos: bool,
}

impl Layout {
    pub fn new(driver: Driver, cgroup_root: &str, per_qos: bool) -> Layout {
        Layout {
            driver,
            root: CgroupName::parse_cgroupfs(cgroup_root),
            per_qos,
        }
    }

    /// The node allocatable cgroup: `<root>/kubepods` (the root itself without `cgroupsPerQOS`).
    pub fn node(&self) -> CgroupName {
        if self.per_qos {
            self.root.child("kubepods")
        } else {
            self.root.clone()
        }
    }

    /// The QoS class's cgroup (`kubepods` itself for Guaranteed).
    pub fn qos(&self, qos: Qos) -> CgroupName {
        match qos.cgroup() {
            Some(q) if self.per_qos => self.node().child(q),
            _ => self.node(),
        }
    }

    /// The pod's cgroup `pod<uid>` under its QoS class (the root without `cgroupsPerQOS`).
    pub fn pod(&self, qos: Qos, uid: &str) -> CgroupName {
        if self.per_qos {
            self.qos(qos).child(&format!("pod{uid}"))
        } else {
            self.root.clone()
        }
    }

    /// The literal path of a cgroup for this driver.
    pub fn path(&self, name: &CgroupName) -> String {
        match self.driver {
            Driver::Cgroupfs => name.to_cgroupfs(),
            Driver::Systemd => name.to_systemd(),
        }
    }

    /// The container's cgroup (the OCI spec's `cgroupsPath`): `<pod>/<id>` for cgroupfs, the
    /// `cri-containerd-<id>.scope` systemd would create for the systemd driver.
    pub fn container_path(&self, qos: Qos, uid: &str, id: &str) -> String {
        let pod = self.path(&self.pod(qos, uid));
        let pod = pod.trim_end_matches('/');
        match self.driver {
            Driver::Cgroupfs => format!("{pod}/{id}"),
            Driver::Systemd => format!("{pod}/cri-containerd-{id}.scope"),
        }
    }
}

/// Settings of one cgroup (upstream's `ResourceConfig`); `None` leaves the kernel's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs per period.
    pub cpu_quota: Option<i64>,
    /// CFS period in µs.
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Upstream's `MilliCPUToShares`: 1024 shares per CPU, at least [`MIN_SHARES`], at most
/// [`MAX_SHARES`].
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    let shares = (milli.saturating_mul(SHARES_PER_CPU) / 1000) as u64;
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// Upstream's `MilliCPUToQuota`: the CFS quota for a cpu limit (0 = no limit), at least 1 ms.
pub fn milli_cpu_to_quota(milli: i64, period_us: u64) -> i64 {
    if milli <= 0 {
        return 0;
    }
    (milli.saturating_mul(period_us as i64) / 1000).max(MIN_QUOTA_US)
}

/// Nano-units → milli-units, rounded up as `Quantity.MilliValue`.
fn to_milli(nano: i128) -> i64 {
    let unit = NANO / 1000;
    (nano.saturating_add(unit - 1).div_euclid(unit)).clamp(0, i64::MAX as i128) as i64
}

/// Nano-units → whole units, rounded up as `Quantity.Value`.
fn to_units(nano: i128) -> i64 {
    (nano.saturating_add(NANO - 1).div_euclid(NANO)).clamp(0, i64::MAX as i128) as i64
}

type Amounts = BTreeMap<String, i128>;

fn parse_list(m: Option<&BTreeMap<String, Quantity>>) -> Amounts {
    // Quantities that do not parse count as absent: the admission check rejects such pods first.
    m.into_iter()
        .flatten()
        .filter_map(|(k, v)| parse_quantity(&v.0).ok().map(|n| (k.clone(), n)))
        .collect()
}

fn limits_of(c: &Container) -> Amounts {
    parse_list(c.resources.as_ref().and_then(|r| r.limits.as_ref()))
}

fn requests_of(c: &Container) -> Amounts {
    let mut req = parse_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    for (k, v) in limits_of(c) {
        req.entry(k).or_insert(v);
    }
    req
}

/// Upstream's `PodRequests`/`PodLimits` over one resource list accessor: regular containers and
/// sidecars add up; a regular init container needs its own amount plus the sidecars started before
/// it; the pod needs the larger of both, plus its overhead.
fn pod_amounts(pod: &Pod, of: fn(&Container) -> Amounts) -> Amounts {
    let Some(spec) = pod.spec.as_ref() else {
        return Amounts::new();
    };
    let add = |acc: &mut Amounts, x: &Amounts| {
        for (k, v) in x {
            let e = acc.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    };
    let mut sum = Amounts::new();
    for c in &spec.containers {
        add(&mut sum, &of(c));
    }
    let mut sidecars = Amounts::new();
    let mut init_max = Amounts::new();
    for c in spec.init_containers.iter().flatten() {
        let own = of(c);
        if is_sidecar(c) {
            add(&mut sidecars, &own);
            add(&mut sum, &own);
            for (k, v) in &sidecars {
                let e = init_max.entry(k.clone()).or_default();
                *e = (*e).max(*v);
            }
        } else {
            let mut need = sidecars.clone();
            add(&mut need, &own);
            for (k, v) in need {
                let e = init_max.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
    }
    for (k, v) in init_max {
        let e = sum.entry(k).or_default();
        *e = (*e).max(v);
    }
    add(&mut sum, &parse_list(spec.overhead.as_ref()));
    sum
}

/// The pod's effective requests per resource (nano-units).
pub fn pod_requests(pod: &Pod) -> BTreeMap<String, i128> {
    pod_amounts(pod, requests_of)
}

/// Upstream's `ResourceConfigForPod` (CFS quota enforced, period 100 ms) plus `podPidsLimit`:
/// Guaranteed pods get shares, quota and memory limit; Burstable ones shares, and quota or memory
/// limit when every container declares that limit; BestEffort pods the minimum shares.
pub fn pod_config(pod: &Pod, pids_limit: i64) -> ResourceConfig {
    let reqs = pod_requests(pod);
    let limits = pod_amounts(pod, limits_of);
    let all: Vec<&Container> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .collect();
    let declared = |r: &str| all.iter().all(|c| limits_of(c).get(r).is_some_and(|v| *v > 0));
    let cpu_req = to_milli(reqs.get("cpu").copied().unwrap_or(0));
    let cpu_lim = to_milli(limits.get("cpu").copied().unwrap_or(0));
    let mem_lim = to_units(limits.get("memory").copied().unwrap_or(0));
    let shares = milli_cpu_to_shares(cpu_req);
    let quota = milli_cpu_to_quota(cpu_lim, QUOTA_PERIOD_US);
    let mut cfg = ResourceConfig::default();
    match Qos::of(pod) {
        Qos::Guaranteed => {
            cfg.cpu_shares = Some(shares);
            cfg.cpu_quota = Some(quota);
            cfg.cpu_period = Some(QUOTA_PERIOD_US);
            cfg.memory_limit = Some(mem_lim);
        }
        Qos::Burstable => {
            cfg.cpu_shares = Some(shares);
            if declared("cpu") {
                cfg.cpu_quota = Some(quota);
                cfg.cpu_period = Some(QUOTA_PERIOD_US);
            }
            if declared("memory") {
                cfg.memory_limit = Some(mem_lim);
            }
        }
        Qos::BestEffort => cfg.cpu_shares = Some(MIN_SHARES),
    }
    if pids_limit > 0 {
        cfg.pids_limit = Some(pids_limit);
    }
    cfg
}

/// Upstream's container resources (`calculateLinuxResources`): shares from the cpu request (the
/// limit when no request is given), the period always, a quota for a cpu limit, the memory limit.
pub fn container_config(c: &Container) -> ResourceConfig {
    let res = c.resources.as_ref();
    let req = parse_list(res.and_then(|r| r.requests.as_ref()));
    let lim = limits_of(c);
    let cpu_req = req.get("cpu").or(lim.get("cpu")).copied().unwrap_or(0);
    let cpu_lim = to_milli(lim.get("cpu").copied().unwrap_or(0));
    let mem_lim = to_units(lim.get("memory").copied().unwrap_or(0));
    let quota = milli_cpu_to_quota(cpu_lim, QUOTA_PERIOD_US);
    ResourceConfig {
        cpu_shares: Some(milli_cpu_to_shares(to_milli(cpu_req))),
        cpu_quota: (quota > 0).then_some(quota),
        cpu_period: Some(QUOTA_PERIOD_US),
        memory_limit: (mem_lim > 0).then_some(mem_lim),
        pids_limit: None,
    }
}

/// Upstream's `GetContainerOOMScoreAdjust`: node-critical and Guaranteed −997, BestEffort 1000,
/// Burstable `1000 − 1000 × memoryRequest / memoryCapacity` kept within [3, 999] (above every
/// Guaranteed process, below BestEffort); a sidecar never above the pod's smallest regular one.
pub fn oom_score_adj(pod: &Pod, c: &Container, memory_capacity: i64) -> i32 {
    // Upstream's IsNodeCriticalPod: the system-node-critical priority class.
    let critical = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.priority_class_name.as_deref() == Some("system-node-critical"));
    if critical {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match Qos::of(pod) {
        Qos::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        Qos::BestEffort => return BESTEFFORT_OOM_SCORE_ADJ,
        Qos::Burstable => {}
    }
    let cap = memory_capacity.max(1) as i128;
    let mem_req = |c: &Container| to_units(requests_of(c).get("memory").copied().unwrap_or(0)) as i128;
    let formula = |req: i128| 1000 - (1000 * req) / cap;
    let mut adj = formula(mem_req(c));
    let sidecar = is_sidecar(c)
        && pod
            .spec
            .as_ref()
            .is_some_and(|s| s.init_containers.iter().flatten().any(|i| i.name == c.name));
    if sidecar {
        let min_regular = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(mem_req)
            .min()
            .unwrap_or(0);
        adj = adj.min(formula(min_regular));
    }
    let floor = (1000 + GUARANTEED_OOM_SCORE_ADJ) as i128;
    if adj < floor {
        return floor as i32;
    }
    if adj == BESTEFFORT_OOM_SCORE_ADJ as i128 {
        return BESTEFFORT_OOM_SCORE_ADJ - 1;
    }
    adj as i32
}

/// The QoS parents' settings (upstream's `setCPUCgroupConfig`): BestEffort keeps the minimum
/// shares; Burstable gets shares for the sum of its active pods' cpu requests.
pub fn qos_configs<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> (ResourceConfig, ResourceConfig) {
    let milli: i64 = pods
        .into_iter()
        .filter(|p| Qos::of(p) == Qos::Burstable)
        .map(|p| to_milli(pod_requests(p).get("cpu").copied().unwrap_or(0)))
        .sum();
    burstable_and_besteffort(milli)
}

/// [`qos_configs`] from the summed cpu request (millicores) of the Burstable pods.
pub fn burstable_and_besteffort(burstable_milli: i64) -> (ResourceConfig, ResourceConfig) {
    (
        ResourceConfig {
            cpu_shares: Some(milli_cpu_to_shares(burstable_milli)),
            ..Default::default()
        },
        ResourceConfig {
            cpu_shares: Some(MIN_SHARES),
            ..Default::default()
        },
    )
}

/// The `kubepods` cgroup's settings (upstream's `getCgroupConfig` of the enforced allocatable):
/// shares for the cpus, the memory limit, and a pids limit when one is reserved.
pub fn node_config(allocatable: &BTreeMap<String, i128>) -> ResourceConfig {
    ResourceConfig {
        cpu_shares: allocatable.get("cpu").map(|v| milli_cpu_to_shares(to_milli(*v))),
        memory_limit: allocatable.get("memory").map(|v| to_units(*v)),
        pids_limit: allocatable.get("pid").map(|v| to_units(*v)),
        ..Default::default()
    }
}

/// An item of a map flag that is not `name<sep>value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{item:?} is not name{sep}value")]
pub struct MapFlagError {
    pub item: String,
    pub sep: char,
}

/// Parses a map flag: `--system-reserved=cpu=100m,memory=1Gi` (`sep` `=`) or
/// `--eviction-hard=memory.available<100Mi,nodefs.available<10%` (`sep` `<`).
pub fn parse_map_flag(s: &str, sep: char) -> Result<BTreeMap<String, String>, MapFlagError> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            kv.split_once(sep)
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| MapFlagError {
                    item: kv.to_string(),
                    sep,
                })
        })
        .collect()
}

fn parse_reserved(field: &str, m: &BTreeMap<String, String>) -> Result<Amounts, CgroupError> {
    m.iter()
        .map(|(k, v)| {
            let n = parse_quantity(v).map_err(|e| CgroupError::BadReservation {
                field: format!("{field}.{k}"),
                message: e.to_string(),
            })?;
            if n < 0 {
                return Err(CgroupError::BadReservation {
                    field: format!("{field}.{k}"),
                    message: format!("must not be negative, got {v:?}"),
                });
            }
            Ok((k.clone(), n))
        })
        .collect()
}

/// The node's capacity and what is carved out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocatable {
    /// Reported as `status.allocatable`: capacity − system-reserved − kube-reserved − hard
    /// eviction thresholds (upstream's `GetNodeAllocatableReservation`), floored at 0.
    pub reported: BTreeMap<String, i128>,
    /// Enforced on `kubepods`: capacity − system-reserved − kube-reserved (eviction thresholds are
    /// the eviction manager's business, as upstream).
    pub enforced: BTreeMap<String, i128>,
}

/// Node allocatable from `capacity` (nano-units: `cpu`, `memory`, `ephemeral-storage`, `pods`, …).
/// Hard eviction thresholds reserve `memory.available` from memory and `nodefs.available` from
/// ephemeral-storage, absolute or as a percentage of capacity.
pub fn allocatable(
    capacity: &BTreeMap<String, i128>,
    system_reserved: &BTreeMap<String, String>,
    kube_reserved: &BTreeMap<String, String>,
    eviction_hard: &BTreeMap<String, String>,
) -> Result<Allocatable, CgroupError> {
    let mut reserved = parse_reserved("systemReserved", system_reserved)?;
    for (k, v) in parse_reserved("kubeReserved", kube_reserved)? {
        let e = reserved.entry(k).or_default();
        *e = e.saturating_add(v);
    }
    let subtract = |from: &BTreeMap<String, i128>, what: &Amounts| -> BTreeMap<String, i128> {
        from.iter()
            .map(|(k, v)| (k.clone(), (v - what.get(k).copied().unwrap_or(0)).max(0)))
            .collect()
    };
    let enforced = subtract(capacity, &reserved);
    let mut with_eviction = reserved.clone();
    for (signal, resource) in [
        ("memory.available", "memory"),
        ("nodefs.available", "ephemeral-storage"),
    ] {
        let Some(v) = eviction_hard.get(signal) else {
            continue;
        };
        let cap = capacity.get(resource).copied().unwrap_or(0);
        let amount = if let Some(pct) = v.strip_suffix('%') {
            let p: f64 = pct.trim().parse().map_err(|_| CgroupError::BadReservation {
                field: format!("evictionHard.{signal}"),
                message: format!("invalid percentage {v:?}"),
            })?;
            ((cap as f64) * p / 100.0) as i128
        } else {
            parse_quantity(v).map_err(|e| CgroupError::BadReservation {
                field: format!("evictionHard.{signal}"),
                message: e.to_string(),
            })?
        };
        let e = with_eviction.entry(resource.to_string()).or_default();
        *e = e.saturating_add(amount);
    }
    Ok(Allocatable {
        reported: subtract(capacity, &with_eviction),
        enforced,
    })
}

/// A quantity string for a nano-unit amount: millicores for cpu when fractional, else whole units.
pub fn format_quantity(resource: &str, nano: i128) -> String {
    if resource == "cpu" && nano % NANO != 0 {
        return format!("{}m", to_milli(nano));
    }
    let units = to_units(nano);
    if matches!(resource, "memory" | "ephemeral-storage") && units % 1024 == 0 {
        return format!("{}Ki", units / 1024);
    }
    units.to_string()
}

/// cgroup v1 (a hierarchy per controller) or v2 (one unified hierarchy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One setting as a file write: `<mount>/<controller>/<cgroup>/<file>` on v1 (controller `""` on
/// v2: `<mount>/<cgroup>/<file>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFile {
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
}

/// runc's conversion of cpu.shares [2, 262144] to cgroup v2's cpu.weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The files a [`ResourceConfig`] becomes, in a safe order (the CFS period before the quota): what
/// the cgroups-rs adapter ([`CgroupFs::ensure`]) writes; its unit tests check it against this list.
pub fn files(cfg: &ResourceConfig, version: Version) -> Vec<CgroupFile> {
    let f = |controller, file, value: String| CgroupFile {
        controller,
        file,
        value,
    };
    let mut out = Vec::new();
    match version {
        Version::V1 => {
            if let Some(s) = cfg.cpu_shares {
                out.push(f("cpu", "cpu.shares", s.to_string()));
            }
            if let Some(p) = cfg.cpu_period {
                out.push(f("cpu", "cpu.cfs_period_us", p.to_string()));
            }
            if let Some(q) = cfg.cpu_quota {
                // 0 means "no quota" to the kubelet; the v1 file spells that -1.
                let q = if q > 0 { q } else { -1 };
                out.push(f("cpu", "cpu.cfs_quota_us", q.to_string()));
            }
            if let Some(m) = cfg.memory_limit {
                let m = if m > 0 { m } else { -1 };
                out.push(f("memory", "memory.limit_in_bytes", m.to_string()));
            }
            if let Some(p) = cfg.pids_limit.filter(|p| *p > 0) {
                out.push(f("pids", "pids.max", p.to_string()));
            }
        }
        Version::V2 => {
            if let Some(s) = cfg.cpu_shares {
                out.push(f("", "cpu.weight", shares_to_weight(s).to_string()));
            }
            if cfg.cpu_quota.is_some() || cfg.cpu_period.is_some() {
                let period = cfg.cpu_period.unwrap_or(QUOTA_PERIOD_US);
                let quota = match cfg.cpu_quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                out.push(f("", "cpu.max", format!("{quota} {period}")));
            }
            if let Some(m) = cfg.memory_limit {
                let m = if m > 0 { m.to_string() } else { "max".into() };
                out.push(f("", "memory.max", m));
            }
            if let Some(p) = cfg.pids_limit.filter(|p| *p > 0) {
                out.push(f("", "pids.max", p.to_string()));
            }
        }
    }
    out
}

/// The OCI spec's `linux.resources` for a container's [`ResourceConfig`].
pub fn oci_resources(cfg: &ResourceConfig) -> Option<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(s) = cfg.cpu_shares {
        cpu = cpu.shares(s);
    }
    if let Some(q) = cfg.cpu_quota {
        cpu = cpu.quota(q);
    }
    if let Some(p) = cfg.cpu_period {
        cpu = cpu.period(p);
    }
    let mut b = LinuxResourcesBuilder::default();
    if let Ok(c) = cpu.build() {
        b = b.cpu(c);
    }
    if let Some(m) = cfg.memory_limit
        && let Ok(mem) = LinuxMemoryBuilder::default().limit(m).build()
    {
        b = b.memory(mem);
    }
    b.build().ok()
}

#[cfg(test)]
mod tests;
