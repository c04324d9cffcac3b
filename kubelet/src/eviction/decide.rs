//! The eviction manager's decisions, as plain functions over plain data: observations from a stats
//! summary, thresholds met with soft grace periods and the pressure-transition period, pod ranking,
//! the eviction messages, local-storage limits and admission under pressure (upstream's
//! `pkg/kubelet/eviction/helpers.go` and `eviction_manager.go`).

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;

use super::{EvictionConfig, NodeCondition, Qty, REASON, Signal, Threshold};
use crate::pods::Rejection;
use crate::pods::resources::{Qos, pod_qos, pod_requests};
use crate::shutdown::{DISRUPTION_TARGET, SYSTEM_CRITICAL_PRIORITY};
use crate::stats::{FsStats, PodStats, Summary};

/// What a signal shows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub available: Qty,
    pub capacity: Qty,
    /// When the stats were taken (RFC 3339), to act only on fresh stats.
    pub time: String,
}

/// Observations by signal.
pub type Observations = BTreeMap<Signal, Observation>;

/// Upstream's `makeSignalObservations`: the signals from a summary (memory from the node's memory,
/// allocatable memory from the `pods` system container, nodefs from the node's fs, imagefs from
/// the runtime's image fs, pids from the rlimit stats). Missing stats give no observation.
pub fn observations(summary: &Summary) -> Observations {
    let mut out = Observations::new();
    let node = &summary.node;
    let mut memory = |signal: Signal, m: Option<&crate::stats::MemoryStats>| {
        if let Some(m) = m
            && let (Some(avail), Some(ws)) = (m.available_bytes, m.working_set_bytes)
        {
            out.insert(
                signal,
                Observation {
                    available: Qty::binary(avail as i64),
                    capacity: Qty::binary(avail.saturating_add(ws) as i64),
                    time: m.time.clone(),
                },
            );
        }
    };
    memory(Signal::MemoryAvailable, node.memory.as_ref());
    memory(
        Signal::AllocatableMemoryAvailable,
        node.system_containers
            .iter()
            .find(|c| c.name == "pods")
            .and_then(|c| c.memory.as_ref()),
    );
    let mut fs = |bytes: Signal, inodes: Signal, f: Option<&FsStats>| {
        let Some(f) = f else { return };
        if let (Some(a), Some(c)) = (f.available_bytes, f.capacity_bytes) {
            out.insert(
                bytes,
                Observation {
                    available: Qty::binary(a as i64),
                    capacity: Qty::binary(c as i64),
                    time: f.time.clone(),
                },
            );
        }
        if let (Some(a), Some(c)) = (f.inodes_free, f.inodes) {
            out.insert(
                inodes,
                Observation {
                    available: Qty::decimal(a as i64),
                    capacity: Qty::decimal(c as i64),
                    time: f.time.clone(),
                },
            );
        }
    };
    fs(
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        node.fs.as_ref(),
    );
    fs(
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        node.runtime.as_ref().and_then(|r| r.image_fs.as_ref()),
    );
    if let Some(r) = &node.rlimit
        && let (Some(max), Some(cur)) = (r.maxpid, r.curproc)
    {
        out.insert(
            Signal::PidAvailable,
            Observation {
                available: Qty::decimal(max - cur),
                capacity: Qty::decimal(max),
                time: r.time.clone(),
            },
        );
    }
    out
}

/// The thresholds (indices into `thresholds`) crossed now, whatever their grace period.
pub fn thresholds_met(thresholds: &[Threshold], obs: &Observations) -> Vec<usize> {
    thresholds
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            obs.get(&t.signal)
                .is_some_and(|o| t.value.quantity(o.capacity.value).value > o.available.value)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The pressure conditions reported on the Node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

impl Conditions {
    fn set(&mut self, c: NodeCondition) {
        match c {
            NodeCondition::MemoryPressure => self.memory = true,
            NodeCondition::DiskPressure => self.disk = true,
            NodeCondition::PidPressure => self.pid = true,
        }
    }

    /// The conditions that hold, in upstream's order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.memory, NodeCondition::MemoryPressure),
            (self.disk, NodeCondition::DiskPressure),
            (self.pid, NodeCondition::PidPressure),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| c.name())
        .collect()
    }
}

/// What the manager remembers between cycles.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// When each threshold (by index) was first seen crossed, while it stays crossed.
    first_observed: BTreeMap<usize, Instant>,
    /// When each pressure condition was last seen.
    condition_seen: BTreeMap<NodeCondition, Instant>,
    /// The stats time of each signal at the last cycle.
    last_times: BTreeMap<Signal, String>,
}

/// One cycle's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub conditions: Conditions,
    /// Thresholds whose grace period is over and whose stats are fresh, memory first: the first
    /// is the one to reclaim for.
    pub thresholds: Vec<Threshold>,
}

impl Decision {
    /// The threshold to reclaim for (upstream's `getReclaimableThreshold`).
    pub fn to_reclaim(&self) -> Option<&Threshold> {
        self.thresholds.first()
    }
}

/// Upstream's `synchronize` up to the choice of threshold: crossed thresholds start their grace
/// period, conditions hold for the pressure-transition period after their last observation, and
/// only thresholds past their grace period with fresh stats drive evictions.
pub fn synchronize(state: &mut State, config: &EvictionConfig, obs: &Observations, now: Instant) -> Decision {
    let met = thresholds_met(&config.thresholds, obs);
    state.first_observed = met
        .iter()
        .map(|i| (*i, state.first_observed.get(i).copied().unwrap_or(now)))
        .collect();
    for i in &met {
        state
            .condition_seen
            .insert(config.thresholds[*i].signal.condition(), now);
    }
    let mut conditions = Conditions::default();
    for (c, at) in &state.condition_seen {
        if now.saturating_duration_since(*at) < config.pressure_transition_period {
            conditions.set(*c);
        }
    }
    let mut thresholds: Vec<Threshold> = state
        .first_observed
        .iter()
        .filter(|(i, at)| now.saturating_duration_since(**at) >= config.thresholds[**i].grace_period)
        .map(|(i, _)| config.thresholds[*i])
        .filter(|t| {
            let last = state.last_times.get(&t.signal);
            obs.get(&t.signal)
                .is_some_and(|o| o.time.is_empty() || last.is_none_or(|l| o.time > *l))
        })
        .collect();
    state.last_times = obs.iter().map(|(s, o)| (*s, o.time.clone())).collect();
    // Memory before everything else (upstream's byEvictionPriority).
    thresholds.sort_by_key(|t| t.signal.resource() != "memory");
    Decision {
        conditions,
        thresholds,
    }
}

/// Upstream's `IsCriticalPod`: static and mirror pods, and pods at system-critical priority.
pub fn is_critical(pod: &Pod) -> bool {
    let ann = pod.metadata.annotations.as_ref();
    let static_pod = ann
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api");
    let mirror = ann.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    static_pod || mirror || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// A pod's request of `resource` in whole units (0 when none or unparsable).
fn request(pod: &Pod, resource: &str) -> i128 {
    pod_requests(pod)
        .ok()
        .and_then(|r| r.get(resource).copied())
        .map(|n| n / 1_000_000_000)
        .unwrap_or(0)
}

/// Which of a pod's filesystem usages a disk signal counts (upstream's `fsStatsType`s).
#[derive(Debug, Clone, Copy)]
struct FsMeasure {
    rootfs: bool,
    logs: bool,
    local_volumes: bool,
}

fn measure(signal: Signal, dedicated_image_fs: bool) -> FsMeasure {
    match (dedicated_image_fs, signal) {
        (false, _) => FsMeasure {
            rootfs: true,
            logs: true,
            local_volumes: true,
        },
        (true, Signal::ImageFsAvailable | Signal::ImageFsInodesFree) => FsMeasure {
            rootfs: true,
            logs: false,
            local_volumes: false,
        },
        (true, _) => FsMeasure {
            rootfs: false,
            logs: true,
            local_volumes: true,
        },
    }
}

/// Upstream's `localVolumeNames`: hostPath, configMap, gitRepo and on-disk emptyDir volumes.
fn local_volume_names(pod: &Pod) -> Vec<&str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| {
            v.host_path.is_some()
                || v.config_map.is_some()
                || v.git_repo.is_some()
                || v.empty_dir
                    .as_ref()
                    .is_some_and(|e| e.medium.as_deref().unwrap_or("").is_empty())
        })
        .map(|v| v.name.as_str())
        .collect()
}

/// A pod's disk usage for a signal: bytes, or inodes for the inode signals.
fn disk_usage(pod: &Pod, stats: &PodStats, signal: Signal, dedicated_image_fs: bool) -> i128 {
    let m = measure(signal, dedicated_image_fs);
    let inodes = signal.resource() == "inodes";
    let of = |f: Option<&FsStats>| -> i128 {
        f.and_then(|f| if inodes { f.inodes_used } else { f.used_bytes })
            .map(i128::from)
            .unwrap_or(0)
    };
    let mut total = 0;
    for c in &stats.containers {
        if m.rootfs {
            total += of(c.rootfs.as_ref());
        }
        if m.logs {
            total += of(c.logs.as_ref());
        }
    }
    if m.local_volumes {
        for name in local_volume_names(pod) {
            total += of(stats.volume.iter().find(|v| v.name == name).map(|v| &v.fs));
        }
    }
    total
}

/// Upstream's rank functions: memory — pods over their requests first, then lower priority, then
/// more usage above requests; disk — the same with the signal's disk usage; pids — lower priority,
/// then more processes. Pods without stats go first. The order is stable otherwise.
pub fn rank(signal: Signal, pods: &mut [Pod], stats: &BTreeMap<String, PodStats>, dedicated_image_fs: bool) {
    let key = |pod: &Pod| -> (bool, bool, i32, i128) {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let Some(s) = stats.get(uid) else {
            return (false, false, priority(pod), 0);
        };
        match signal.resource() {
            "pids" => {
                let n = s
                    .process_stats
                    .as_ref()
                    .and_then(|p| p.process_count)
                    .unwrap_or(0);
                (true, false, priority(pod), -i128::from(n))
            }
            "memory" => {
                let usage = i128::from(s.memory.as_ref().and_then(|m| m.working_set_bytes).unwrap_or(0));
                let req = request(pod, "memory");
                (true, usage <= req, priority(pod), req - usage)
            }
            resource => {
                let usage = disk_usage(pod, s, signal, dedicated_image_fs);
                // As upstream: "exceeds" compares with the resource's request, the amount above
                // requests subtracts the ephemeral-storage request.
                let exceeds = usage > request(pod, resource);
                (
                    true,
                    !exceeds,
                    priority(pod),
                    request(pod, "ephemeral-storage") - usage,
                )
            }
        }
    };
    if signal.resource() == "pids" {
        pods.sort_by_cached_key(|p| {
            let (found, _, prio, n) = key(p);
            (prio, found, n)
        });
    } else {
        pods.sort_by_cached_key(|p| key(p));
    }
}

/// A container's request of `resource` as its spec writes it (`0` when none).
fn container_request(c: &k8s_openapi::api::core::v1::Container, resource: &str) -> Qty {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(resource))
        .and_then(|q| Qty::parse(&q.0).ok())
        .unwrap_or(Qty::decimal(0))
}

/// Upstream's `evictionMessage`: "The node was low on resource: memory. Threshold quantity: 100Mi,
/// available: 12Ki. Container c was using 200Mi, request is 0, has larger consumption of memory. "
pub fn eviction_message(
    resource: &str,
    pod: &Pod,
    stats: Option<&PodStats>,
    thresholds: &[Threshold],
    obs: &Observations,
) -> String {
    let mut message = format!("The node was low on resource: {resource}. ");
    if let Some((t, o)) = thresholds
        .iter()
        .filter(|t| t.signal.resource() == resource)
        .find_map(|t| obs.get(&t.signal).map(|o| (t, o)))
    {
        message += &format!(
            "Threshold quantity: {}, available: {}. ",
            t.value.quantity(o.capacity.value),
            o.available
        );
    }
    let Some(stats) = stats else {
        return message;
    };
    let spec = pod.spec.as_ref();
    let containers: Vec<_> = spec
        .iter()
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .collect();
    for cs in &stats.containers {
        let Some(c) = containers.iter().find(|c| c.name == cs.name) else {
            continue;
        };
        let usage = match resource {
            "ephemeral-storage" => match (
                cs.rootfs.as_ref().and_then(|f| f.used_bytes),
                cs.logs.as_ref().and_then(|f| f.used_bytes),
            ) {
                (Some(r), Some(l)) => Some(Qty::binary((r + l) as i64)),
                _ => None,
            },
            "memory" => cs
                .memory
                .as_ref()
                .and_then(|m| m.working_set_bytes)
                .map(|w| Qty::binary(w as i64)),
            _ => None,
        };
        let req = container_request(c, resource);
        if let Some(u) = usage
            && u.value > req.value
        {
            message += &format!(
                "Container {} was using {u}, request is {req}, has larger consumption of {resource}. ",
                c.name
            );
        }
    }
    message
}

/// A pod over one of its local-storage limits (upstream's `localStorageEviction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitViolation {
    pub message: String,
    /// The `kubelet_evictions` label: `emptydirfs.limit`, `ephemeralpodfs.limit` or
    /// `ephemeralcontainerfs.limit`.
    pub signal: &'static str,
}

/// The first local-storage limit the pod exceeds: an emptyDir's sizeLimit, the pod's total
/// ephemeral-storage limit, or a container's ephemeral-storage limit (logs, plus the writable
/// layer without a dedicated image filesystem).
pub fn local_storage_violation(
    pod: &Pod,
    stats: &PodStats,
    dedicated_image_fs: bool,
) -> Option<LimitViolation> {
    let spec = pod.spec.as_ref()?;
    for v in spec.volumes.iter().flatten() {
        let Some(limit) = v
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            .and_then(|q| Qty::parse(&q.0).ok())
        else {
            continue;
        };
        let used = stats
            .volume
            .iter()
            .find(|s| s.name == v.name)
            .and_then(|s| s.fs.used_bytes);
        if limit.value > 0 && used.is_some_and(|u| u as i128 > i128::from(limit.value)) {
            return Some(LimitViolation {
                message: format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                    v.name,
                    limit.to_string()
                ),
                signal: "emptydirfs.limit",
            });
        }
    }
    let limit_of = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("ephemeral-storage"))
            .and_then(|q| Qty::parse(&q.0).ok())
    };
    // Upstream's PodLimits: the app containers' sum or the largest init container, whichever is
    // larger; absent when no container sets the limit.
    let app: Vec<Qty> = spec.containers.iter().filter_map(limit_of).collect();
    let init: Vec<Qty> = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(limit_of)
        .collect();
    if let Some(first) = app.first().or(init.first()) {
        let sum: i64 = app.iter().map(|q| q.value).sum();
        let max_init = init.iter().map(|q| q.value).max().unwrap_or(0);
        let limit = Qty {
            value: sum.max(max_init),
            format: first.format,
        };
        let used = stats
            .ephemeral_storage
            .as_ref()
            .and_then(|f| f.used_bytes)
            .unwrap_or(0);
        if used as i128 > i128::from(limit.value) {
            return Some(LimitViolation {
                message: format!(
                    "Pod ephemeral local storage usage exceeds the total limit of containers {limit}. "
                ),
                signal: "ephemeralpodfs.limit",
            });
        }
    }
    for cs in &stats.containers {
        let Some(limit) = spec
            .containers
            .iter()
            .find(|c| c.name == cs.name)
            .and_then(limit_of)
            .filter(|q| q.value != 0)
        else {
            continue;
        };
        let mut used = cs.logs.as_ref().and_then(|f| f.used_bytes).unwrap_or(0);
        if !dedicated_image_fs {
            used += cs.rootfs.as_ref().and_then(|f| f.used_bytes).unwrap_or(0);
        }
        if used as i128 > i128::from(limit.value) {
            return Some(LimitViolation {
                message: format!(
                    "Container {} exceeded its local ephemeral storage limit {:?}. ",
                    cs.name,
                    limit.to_string()
                ),
                signal: "ephemeralcontainerfs.limit",
            });
        }
    }
    None
}

/// Upstream's eviction admission: under memory pressure alone, BestEffort pods (unless they
/// tolerate the memory-pressure taint) are refused; under any other pressure every pod is;
/// critical pods always pass.
pub fn admit(conditions: Conditions, pod: &Pod) -> Result<(), Rejection> {
    let names = conditions.names();
    if names.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if names == ["MemoryPressure"] {
        let tolerates = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|ts| {
                ts.iter().any(|t| {
                    let key_ok = match t.key.as_deref() {
                        None | Some("") => t.operator.as_deref() == Some("Exists"),
                        Some(k) => k == "node.kubernetes.io/memory-pressure",
                    };
                    let effect_ok = matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
                    let value_ok = t.operator.as_deref() == Some("Exists")
                        || t.value.as_deref().unwrap_or("").is_empty();
                    key_ok && effect_ok && value_ok
                })
            });
        if pod_qos(pod) != Qos::BestEffort || tolerates {
            return Ok(());
        }
    }
    Err(Rejection {
        reason: REASON.into(),
        message: format!("The node had condition: [{}]. ", names.join(" ")),
    })
}

/// The status of an evicted pod: phase `Failed`, reason `Evicted`, the message, and — for
/// evictions under node pressure (`disruption`) — the `DisruptionTarget` condition with reason
/// `TerminationByKubelet` (kept as it was when already set).
pub fn evicted_status(status: PodStatus, message: &str, disruption: bool, now: Timestamp) -> PodStatus {
    // The node shutdown's terminated status sets the same condition (same type and reason).
    let mut status = if disruption {
        crate::shutdown::terminated_status(status, now)
    } else {
        status
    };
    status.phase = Some("Failed".into());
    status.reason = Some(REASON.into());
    status.message = Some(message.into());
    for c in status.conditions.iter_mut().flatten() {
        if c.type_ == DISRUPTION_TARGET {
            c.message = Some(message.into());
        }
    }
    status
}

/// A pod's grace period when evicted for `threshold` (upstream: 1 s for hard thresholds; soft
/// ones cap the pod's own at `evictionMaxPodGracePeriod`, a negative cap meaning the pod's own).
pub fn grace_seconds(pod: &Pod, threshold: &Threshold, max_pod_grace: i64) -> i64 {
    if threshold.is_hard() {
        return IMMEDIATE_GRACE_SECONDS;
    }
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    if max_pod_grace < 0 {
        own
    } else {
        own.min(max_pod_grace)
    }
}

/// Upstream's `immediateEvictionGracePeriodSeconds`.
pub const IMMEDIATE_GRACE_SECONDS: i64 = 1;
