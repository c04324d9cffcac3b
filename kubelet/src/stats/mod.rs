//! Resource usage statistics of the node, its pods and containers — the data behind
//! `/stats/summary`, `/metrics/resource` and the eviction manager.
//!
//! This file is the pure part: upstream's Summary API shape (`stats/v1alpha1`, [`Summary`]), the
//! parsers of the kernel's files (cgroup v1/v2 cpu and memory, `/proc/stat`, `/proc/meminfo`,
//! `/proc/<pid>/net/dev`) and the cpu rate computation from cumulative usage ([`CpuRates`]).
//! [`collect`] reads the files, containerd and the disks.

pub mod collect;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::cgroups::Version;

/// Upstream's `Summary`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

/// Upstream's `NodeStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub system_containers: Vec<ContainerStats>,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
}

/// Upstream's `RuntimeStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_fs: Option<FsStats>,
}

/// Upstream's `RlimitStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RlimitStats {
    pub time: String,
    pub maxpid: Option<i64>,
    pub curproc: Option<i64>,
}

/// Upstream's `PodReference`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl PodReference {
    /// The reference of pod `namespace/name` with `uid`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, uid: impl Into<String>) -> Self {
        PodReference {
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.into(),
        }
    }
}

/// Upstream's `PodStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub start_time: String,
    pub containers: Vec<ContainerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub volume: Vec<VolumeStats>,
    #[serde(rename = "ephemeral-storage", skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<FsStats>,
    #[serde(rename = "process_stats", skip_serializing_if = "Option::is_none")]
    pub process_stats: Option<ProcessStats>,
}

/// Upstream's `ProcessStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    pub process_count: Option<u64>,
}

/// Upstream's `ContainerStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
}

/// Upstream's `CPUStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Upstream's `MemoryStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// Upstream's `NetworkStats` (the default interface's counters inline, plus every interface).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats {
    pub time: String,
    #[serde(flatten)]
    pub default: InterfaceStats,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub interfaces: Vec<InterfaceStats>,
}

/// Upstream's `InterfaceStats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: Option<u64>,
    pub rx_errors: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub tx_errors: Option<u64>,
}

/// Upstream's `FsStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

/// Upstream's `VolumeStats`: the volume's filesystem stats with its name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeStats {
    #[serde(flatten)]
    pub fs: FsStats,
    pub name: String,
}

/// A cgroup's memory counters, from v1 or v2 files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupMemory {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// The limit, when one is set.
    pub limit: Option<u64>,
}

/// `key value` lines (memory.stat, cpu.stat, /proc/vmstat) into a map.
pub fn parse_flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Limits at or above this are "no limit" (v1 reports 2^63 rounded down to the page size).
const NO_LIMIT: u64 = 1 << 62;

/// Memory counters from a cgroup's files: working set = usage − inactive file pages (as cAdvisor
/// and the eviction manager compute it). `usage`/`limit` are `memory.usage_in_bytes`/
/// `memory.limit_in_bytes` on v1, `memory.current`/`memory.max` on v2.
pub fn cgroup_memory(version: Version, usage: &str, stat: &str, limit: &str) -> Option<CgroupMemory> {
    let usage: u64 = usage.trim().parse().ok()?;
    let stat = parse_flat_keyed(stat);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let (inactive_file, rss, pgfault, pgmajfault) = match version {
        Version::V1 => (
            get("total_inactive_file"),
            get("total_rss"),
            get("total_pgfault"),
            get("total_pgmajfault"),
        ),
        Version::V2 => (
            get("inactive_file"),
            get("anon"),
            get("pgfault"),
            get("pgmajfault"),
        ),
    };
    let limit = limit.trim().parse::<u64>().ok().filter(|l| *l < NO_LIMIT);
    Some(CgroupMemory {
        usage,
        working_set: usage.saturating_sub(inactive_file),
        rss,
        page_faults: pgfault,
        major_page_faults: pgmajfault,
        limit,
    })
}

/// Cumulative cpu time in ns: v1 `cpuacct.usage`, v2 `cpu.stat`'s `usage_usec`.
pub fn cgroup_cpu_ns(version: Version, text: &str) -> Option<u64> {
    match version {
        Version::V1 => text.trim().parse().ok(),
        Version::V2 => parse_flat_keyed(text)
            .get("usage_usec")
            .map(|u| u.saturating_mul(1000)),
    }
}

/// The node's cumulative busy cpu time in ns from `/proc/stat` (user, nice, system, irq, softirq,
/// steal of the `cpu` line; USER_HZ = 100).
pub fn proc_stat_cpu_ns(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum();
    Some(busy.saturating_mul(10_000_000))
}

/// The node's memory from `/proc/meminfo` and `/proc/vmstat`, as the root cgroup would show it:
/// usage = total − free, working set = usage − inactive file pages, available = total − working set.
pub fn node_memory(meminfo: &str, vmstat: &str) -> Option<(CgroupMemory, u64)> {
    let kb: HashMap<&str, u64> = meminfo
        .lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            let v = rest.split_whitespace().next()?.parse::<u64>().ok()?;
            Some((k, v * 1024))
        })
        .collect();
    let total = *kb.get("MemTotal")?;
    let usage = total.saturating_sub(kb.get("MemFree").copied().unwrap_or(0));
    let working_set = usage.saturating_sub(kb.get("Inactive(file)").copied().unwrap_or(0));
    let vm = parse_flat_keyed(vmstat);
    Some((
        CgroupMemory {
            usage,
            working_set,
            rss: kb.get("AnonPages").copied().unwrap_or(0),
            page_faults: vm.get("pgfault").copied().unwrap_or(0),
            major_page_faults: vm.get("pgmajfault").copied().unwrap_or(0),
            limit: Some(total),
        },
        total,
    ))
}

/// Interfaces from `/proc/<pid>/net/dev` (loopback left out).
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (v.len() >= 11).then(|| InterfaceStats {
                name: name.to_string(),
                rx_bytes: Some(v[0]),
                rx_errors: Some(v[2]),
                tx_bytes: Some(v[8]),
                tx_errors: Some(v[10]),
            })
        })
        .collect()
}

/// Network stats with the default interface (`eth0` when present, as upstream) inline.
pub fn network_stats(time: &str, mut interfaces: Vec<InterfaceStats>) -> Option<NetworkStats> {
    if interfaces.is_empty() {
        return None;
    }
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    let default = interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .unwrap_or(&interfaces[0])
        .clone();
    Some(NetworkStats {
        time: time.to_string(),
        default,
        interfaces,
    })
}

/// Memory stats in the Summary shape; available = limit − working set when limited, else
/// `capacity` − working set when a capacity is given (the node).
pub fn memory_stats(time: &str, m: &CgroupMemory, capacity: Option<u64>) -> MemoryStats {
    MemoryStats {
        time: time.to_string(),
        available_bytes: m.limit.or(capacity).map(|l| l.saturating_sub(m.working_set)),
        usage_bytes: Some(m.usage),
        working_set_bytes: Some(m.working_set),
        rss_bytes: Some(m.rss),
        page_faults: Some(m.page_faults),
        major_page_faults: Some(m.major_page_faults),
    }
}

/// Cpu rates from cumulative usage samples: `usageNanoCores` is the usage delta over the time
/// delta between the last two samples that are at least [`CpuRates::MIN_INTERVAL_NS`] apart.
#[derive(Debug, Default)]
pub struct CpuRates {
    samples: Mutex<BTreeMap<String, Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ns: u64,
    usage_ns: u64,
    rate: Option<u64>,
}

impl CpuRates {
    /// Samples closer than this keep the previous rate (a quick second scrape is not noise).
    pub const MIN_INTERVAL_NS: u64 = 1_000_000_000;

    /// Records a sample of `key` and returns its current rate in nanocores.
    pub fn observe(&self, key: &str, at_ns: u64, usage_ns: u64) -> Option<u64> {
        let mut s = crate::lock::lock(&self.samples);
        match s.get_mut(key) {
            Some(prev) if usage_ns < prev.usage_ns => {
                // A new cgroup under the same key (container restarted): start over.
                *prev = Sample {
                    at_ns,
                    usage_ns,
                    rate: None,
                };
                None
            }
            Some(prev) if at_ns >= prev.at_ns + Self::MIN_INTERVAL_NS => {
                let rate = (usage_ns - prev.usage_ns) as u128 * 1_000_000_000 / (at_ns - prev.at_ns) as u128;
                *prev = Sample {
                    at_ns,
                    usage_ns,
                    rate: Some(rate as u64),
                };
                prev.rate
            }
            Some(prev) => prev.rate,
            None => {
                s.insert(
                    key.to_string(),
                    Sample {
                        at_ns,
                        usage_ns,
                        rate: None,
                    },
                );
                None
            }
        }
    }

    /// Forgets keys not in `keep` (pods and containers that went away).
    pub fn retain(&self, keep: &std::collections::BTreeSet<String>) {
        let mut s = crate::lock::lock(&self.samples);
        s.retain(|k, _| keep.contains(k));
    }
}

#[cfg(test)]
mod tests;
