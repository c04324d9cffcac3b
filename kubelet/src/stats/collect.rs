//! Collects the [`Summary`]: running containers from containerd with the cgroup path and start time
//! the kubelet recorded for them, their and their pods' cgroups (cpu, memory, processes), the pod's
//! network namespace counters (`/proc/<pid>/net/dev` of a container process), writable layers from
//! containerd's snapshotter (`Snapshots.Usage`), logs and volumes by walking their directories, the
//! node from procfs and statvfs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{
    ContainerStats, CpuRates, CpuStats, FsStats, NodeStats, PodReference, PodStats, ProcessStats,
    RlimitStats, RuntimeStats, Summary, VolumeStats, cgroup_memory, memory_stats, network_stats, node_memory,
    parse_net_dev, proc_stat_cpu_ns,
};
use crate::cgroups::CgroupFs;
use crate::pods::executor::NodeContext;
use crate::runtime::container::{ListedContainer, TaskState};

/// The node's stats source, shared by the kubelet API and the eviction manager.
pub struct StatsProvider {
    ctx: Arc<NodeContext>,
    rates: CpuRates,
    start_time: String,
    /// The last summary, reused by callers asking within a second of each other.
    last: Mutex<Option<(std::time::Instant, Arc<Summary>)>>,
}

impl std::fmt::Debug for StatsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsProvider").finish_non_exhaustive()
    }
}

static PROVIDER: OnceLock<Arc<StatsProvider>> = OnceLock::new();

/// Makes `p` the process's stats source (the kubelet API's `/stats` and `/metrics/resource`).
pub fn install(p: Arc<StatsProvider>) {
    let _ = PROVIDER.set(p);
}

/// The installed stats source, if the kubelet set one up.
pub fn provider() -> Option<Arc<StatsProvider>> {
    PROVIDER.get().cloned()
}

/// A filesystem's totals from statvfs.
pub fn statvfs_fs(path: &Path, time: &str) -> Option<FsStats> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size();
    let capacity = s.blocks() * frag;
    let available = s.blocks_available() * frag;
    Some(FsStats {
        time: time.to_string(),
        available_bytes: Some(available),
        capacity_bytes: Some(capacity),
        used_bytes: Some(capacity.saturating_sub(s.blocks_free() * frag)),
        inodes_free: Some(s.files_free()),
        inodes: Some(s.files()),
        inodes_used: Some(s.files().saturating_sub(s.files_free())),
    })
}

/// Disk usage of a directory tree (allocated blocks, as `du`) and its inode count; does not cross
/// into other filesystems.
pub fn dir_usage(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let dev = meta.dev();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut seen = BTreeSet::new();
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.dev() != dev || !seen.insert(m.ino()) {
            continue;
        }
        bytes += m.blocks() * 512;
        inodes += 1;
        if m.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        }
    }
    Some((bytes, inodes))
}

/// Usage of a directory on its filesystem: used from the walk, capacity from statvfs.
fn dir_fs(path: &Path, time: &str) -> Option<FsStats> {
    let (used, inodes_used) = dir_usage(path)?;
    let mut fs = statvfs_fs(path, time).unwrap_or_default();
    fs.time = time.to_string();
    fs.used_bytes = Some(used);
    fs.inodes_used = Some(inodes_used);
    Some(fs)
}

fn memory(fs: &CgroupFs, cg: &str) -> Option<super::CgroupMemory> {
    let m = fs.memory(cg)?;
    let limit = m.limit.map(|l| l.to_string()).unwrap_or_default();
    cgroup_memory(fs.version(), &m.usage.to_string(), &m.stat, &limit)
}

/// The parent of a cgroup path (the pod's cgroup for a container's).
fn parent(cg: &str) -> &str {
    cg.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

impl StatsProvider {
    pub fn new(ctx: Arc<NodeContext>) -> StatsProvider {
        StatsProvider {
            ctx,
            rates: CpuRates::default(),
            start_time: Timestamp::now().to_string(),
            last: Mutex::new(None),
        }
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.ctx.node_name
    }

    /// Pods and containers by state right now (upstream's `container_state` values).
    pub async fn running(&self) -> crate::metrics::Running {
        let listed = self.ctx.runtime.list_containers().await.unwrap_or_default();
        crate::metrics::running_from(listed.iter().map(|l| {
            let state = match l.state {
                TaskState::Running { .. } => "running",
                TaskState::Exited { .. } => "exited",
                TaskState::Created => "created",
                _ => "unknown",
            };
            (l.meta.pod_uid.as_str(), state)
        }))
    }

    fn cpu(&self, key: &str, cg: &str, time: &str, at_ns: u64) -> Option<CpuStats> {
        let usage = self.ctx.cgroups.fs().cpu_usage_ns(cg)?;
        Some(CpuStats {
            time: time.to_string(),
            usage_nano_cores: self.rates.observe(key, at_ns, usage),
            usage_core_nano_seconds: Some(usage),
        })
    }

    async fn snapshot_usage(&self, id: &str, time: &str) -> Option<FsStats> {
        let u = self.ctx.runtime.snapshot_usage(id).await.ok()?;
        let mut fs = statvfs_fs(&self.ctx.root_dir, time).unwrap_or_default();
        fs.time = time.to_string();
        fs.used_bytes = Some(u.bytes);
        fs.inodes_used = Some(u.inodes);
        Some(fs)
    }

    /// The summary, at most a second old.
    pub async fn summary(&self) -> Arc<Summary> {
        if let Some((at, s)) = crate::lock::lock(&self.last).as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return s.clone();
        }
        let s = Arc::new(self.collect().await);
        *crate::lock::lock(&self.last) = Some((std::time::Instant::now(), s.clone()));
        s
    }

    async fn collect(&self) -> Summary {
        let now = Timestamp::now();
        let time = now.to_string();
        let at_ns = now.as_nanosecond().max(0) as u64;
        let fs = self.ctx.cgroups.fs().clone();
        let listed = self.ctx.runtime.list_containers().await.unwrap_or_default();
        let mut by_pod: BTreeMap<String, Vec<(ListedContainer, u32)>> = BTreeMap::new();
        for l in listed {
            if let TaskState::Running { pid } = l.state {
                by_pod.entry(l.meta.pod_uid.clone()).or_default().push((l, pid));
            }
        }
        let mut keys = BTreeSet::from(["node".to_string(), "pods".to_string()]);
        let mut pods = Vec::new();
        for (uid, containers) in by_pod {
            let Some((first, pid)) = containers.first() else {
                continue;
            };
            let pod_ref = PodReference::new(
                first.meta.pod_namespace.clone(),
                first.meta.pod_name.clone(),
                uid.clone(),
            );
            let mut pod_cg = String::new();
            let mut cstats = Vec::new();
            let mut ephemeral_used = 0u64;
            let mut ephemeral_inodes = 0u64;
            let mut pod_start: Option<String> = None;
            for (l, _) in &containers {
                let facts = self.ctx.facts(&l.id).unwrap_or_default();
                let cg = facts.cgroups_path.clone();
                if pod_cg.is_empty() && !cg.is_empty() {
                    pod_cg = parent(&cg).to_string();
                }
                let key = format!("c/{}", l.id);
                keys.insert(key.clone());
                let start = facts.started_at.or(facts.created_at).map(|t| t.to_string());
                if let Some(s) = &start
                    && pod_start.as_ref().is_none_or(|p| s < p)
                {
                    pod_start = Some(s.clone());
                }
                let rootfs = self.snapshot_usage(&l.id, &time).await;
                let logs = facts
                    .log_path
                    .as_ref()
                    .and_then(|p| p.parent())
                    .and_then(|d| dir_fs(d, &time));
                for f in [&rootfs, &logs].into_iter().flatten() {
                    ephemeral_used += f.used_bytes.unwrap_or(0);
                    ephemeral_inodes += f.inodes_used.unwrap_or(0);
                }
                cstats.push(ContainerStats {
                    name: l.meta.container_name.clone(),
                    start_time: start.unwrap_or_default(),
                    cpu: self.cpu(&key, &cg, &time, at_ns),
                    memory: memory(&fs, &cg).map(|m| memory_stats(&time, &m, None)),
                    rootfs,
                    logs,
                });
            }
            cstats.sort_by(|a, b| a.name.cmp(&b.name));
            let pkey = format!("p/{uid}");
            keys.insert(pkey.clone());
            let net = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .ok()
                .and_then(|t| network_stats(&time, parse_net_dev(&t)));
            let mut volume = Vec::new();
            let vdir = crate::volumes::pod_dir(&self.ctx.root_dir, &uid).join("volumes");
            for plugin in std::fs::read_dir(&vdir).into_iter().flatten().flatten() {
                let plugin_name = plugin.file_name().to_string_lossy().into_owned();
                for v in std::fs::read_dir(plugin.path()).into_iter().flatten().flatten() {
                    if let Some(f) = dir_fs(&v.path(), &time) {
                        if plugin_name == "kubernetes.io~empty-dir" {
                            ephemeral_used += f.used_bytes.unwrap_or(0);
                            ephemeral_inodes += f.inodes_used.unwrap_or(0);
                        }
                        volume.push(VolumeStats {
                            fs: f,
                            name: v.file_name().to_string_lossy().into_owned(),
                        });
                    }
                }
            }
            volume.sort_by(|a, b| a.name.cmp(&b.name));
            let mut ephemeral = statvfs_fs(&self.ctx.root_dir, &time).unwrap_or_default();
            ephemeral.used_bytes = Some(ephemeral_used);
            ephemeral.inodes_used = Some(ephemeral_inodes);
            let procs = fs.pids_current(&pod_cg);
            pods.push(PodStats {
                pod_ref,
                start_time: pod_start.unwrap_or_default(),
                containers: cstats,
                cpu: self.cpu(&pkey, &pod_cg, &time, at_ns),
                memory: memory(&fs, &pod_cg).map(|m| memory_stats(&time, &m, None)),
                network: net,
                volume,
                ephemeral_storage: Some(ephemeral),
                process_stats: procs.map(|n| ProcessStats {
                    process_count: Some(n),
                }),
            });
        }
        self.rates.retain(&keys);
        Summary {
            node: self.node(&time, at_ns),
            pods,
        }
    }

    fn node(&self, time: &str, at_ns: u64) -> NodeStats {
        let cpu = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| proc_stat_cpu_ns(&t))
            .map(|usage| CpuStats {
                time: time.to_string(),
                usage_nano_cores: self.rates.observe("node", at_ns, usage),
                usage_core_nano_seconds: Some(usage),
            });
        let node_mem = node_memory(
            &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            &std::fs::read_to_string("/proc/vmstat").unwrap_or_default(),
        )
        .map(|(m, total)| memory_stats(time, &m, Some(total)));
        let network = std::fs::read_to_string("/proc/self/net/dev")
            .ok()
            .and_then(|t| network_stats(time, parse_net_dev(&t)));
        let fs = statvfs_fs(&self.ctx.root_dir, time);
        let layout = self.ctx.cgroups.layout();
        let pods_cg = layout.path(&layout.node());
        let cgfs = self.ctx.cgroups.fs();
        let pods_container = ContainerStats {
            name: "pods".into(),
            start_time: self.start_time.clone(),
            cpu: self.cpu("pods", &pods_cg, time, at_ns),
            memory: memory(cgfs, &pods_cg).map(|m| memory_stats(time, &m, None)),
            rootfs: None,
            logs: None,
        };
        let curproc = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as i64
            })
            .ok();
        let maxpid = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|v| v.trim().parse().ok());
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<i64>().ok())
            })
            .and_then(|s| Timestamp::from_second(s).ok())
            .map(|t| t.to_string())
            .unwrap_or_else(|| self.start_time.clone());
        NodeStats {
            node_name: self.ctx.node_name.clone(),
            system_containers: vec![pods_container],
            start_time: boot,
            cpu,
            memory: node_mem,
            network,
            fs: fs.clone(),
            runtime: Some(RuntimeStats {
                image_fs: fs.clone(),
                container_fs: fs,
            }),
            rlimit: Some(RlimitStats {
                time: time.to_string(),
                maxpid,
                curproc,
            }),
        }
    }
}

/// Keeps the cpu rates fresh (and the summary warm for eviction) by collecting every `every`.
pub fn spawn_sampler(p: Arc<StatsProvider>, every: Duration) {
    tokio::spawn(async move {
        loop {
            let _ = p.summary().await;
            tokio::time::sleep(every).await;
        }
    });
}
