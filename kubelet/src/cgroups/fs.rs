//! The cgroup adapter over the `cgroups-rs` crate: creates a cgroup with its settings, removes a
//! whole subtree in every hierarchy (including the directories runc leaves in controllers the
//! kubelet never configures), and reads the counters the stats need. Works on v1 (a hierarchy per
//! controller under the mount) and v2 (one unified hierarchy, controllers enabled on the way down).
//!
//! Why cgroups-rs 0.3 (see kubelet/Cargo.toml): it handles v1 and v2 alike and adds 5 crates to
//! the kubelet's build (itself, nix 0.25, bitflags 1, thiserror 1); 0.4 and 0.5 add a systemd
//! D-Bus client (zbus with its async stack: 40 new crates in all) even with default features
//! off, which the cgroupfs driver never uses.
//!
//! The hierarchy is our own [`cgroups_rs::Hierarchy`] ([`Mounted`]) rather than the crate's
//! `hierarchies::auto()`, so the adapter can be pointed at any mount: the host's `/sys/fs/cgroup`,
//! the unified part of a hybrid host, or a directory laid out like one in unit tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cgroups_rs::cgroup::Cgroup;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuacct::CpuAcctController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{Controller, Hierarchy, MaxValue, Subsystem};

use super::{CgroupError, QUOTA_PERIOD_US, ResourceConfig, Version, shares_to_weight};

/// The v1 controllers the kubelet creates cgroups in (runc creates the others for containers).
const V1_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

/// A mounted cgroup filesystem.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    mount: PathBuf,
    version: Version,
}

/// Memory counters of a cgroup, as cgroups-rs reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryReading {
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    pub usage: u64,
    /// `memory.stat` as `key value` lines.
    pub stat: String,
    /// The limit in bytes; `None` when unlimited.
    pub limit: Option<u64>,
}

fn cg_err(path: &str, action: &str, source: cgroups_rs::error::Error) -> CgroupError {
    CgroupError::Cgroup {
        path: path.to_string(),
        action: action.to_string(),
        source,
    }
}

/// A cgroups-rs hierarchy rooted at `mount`.
#[derive(Debug, Clone)]
struct Mounted {
    mount: PathBuf,
    version: Version,
}

/// The cgroups-rs controller for a v1 hierarchy directory. A hierarchy the crate has no type for
/// (e.g. `misc`) gets the one for named hierarchies (`name=systemd`), which has no settings: all
/// the kubelet does there is remove what runc created.
fn v1_subsystem(name: &str, dir: PathBuf) -> Subsystem {
    use cgroups_rs::*;
    match name {
        "cpu" => Subsystem::Cpu(CpuController::new(dir, false)),
        "cpuacct" => Subsystem::CpuAcct(CpuAcctController::new(dir)),
        "memory" => Subsystem::Mem(MemController::new(dir, false)),
        "pids" => Subsystem::Pid(PidController::new(dir, false)),
        "cpuset" => Subsystem::CpuSet(cpuset::CpuSetController::new(dir, false)),
        "blkio" => Subsystem::BlkIo(blkio::BlkIoController::new(dir, false)),
        "devices" => Subsystem::Devices(devices::DevicesController::new(dir)),
        "freezer" => Subsystem::Freezer(freezer::FreezerController::new(dir, false)),
        "net_cls" => Subsystem::NetCls(net_cls::NetClsController::new(dir)),
        "net_prio" => Subsystem::NetPrio(net_prio::NetPrioController::new(dir)),
        "perf_event" => Subsystem::PerfEvent(perf_event::PerfEventController::new(dir)),
        "hugetlb" => Subsystem::HugeTlb(hugetlb::HugeTlbController::new(dir, false)),
        "rdma" => Subsystem::Rdma(rdma::RdmaController::new(dir)),
        _ => Subsystem::Systemd(systemd::SystemdController::new(dir, false)),
    }
}

impl Hierarchy for Mounted {
    fn subsystems(&self) -> Vec<Subsystem> {
        match self.version {
            // Every hierarchy mounted below the root, by directory name (co-mounted controllers
            // such as `cpu,cpuacct` appear through their per-controller symlinks). The hybrid
            // layout's `unified` directory is a v2 hierarchy: see [`CgroupFs::hierarchies`].
            Version::V1 => std::fs::read_dir(&self.mount)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir() && e.file_name() != "unified")
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    Some(v1_subsystem(&name, e.path()))
                })
                .collect(),
            Version::V2 => vec![
                Subsystem::Cpu(CpuController::new(self.mount.clone(), true)),
                Subsystem::Mem(MemController::new(self.mount.clone(), true)),
                Subsystem::Pid(PidController::new(self.mount.clone(), true)),
            ],
        }
    }

    fn root(&self) -> PathBuf {
        self.mount.clone()
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().unwrap_or(Path::new(""));
        Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        self.version == Version::V2
    }
}

impl CgroupFs {
    /// The host's `/sys/fs/cgroup`: v2 when it is the unified hierarchy, else v1 (hybrid hosts
    /// included, as upstream's kubelet and runc decide).
    pub fn detect() -> CgroupFs {
        let version = if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
            Version::V2
        } else {
            Version::V1
        };
        CgroupFs::at(cgroups_rs::hierarchies::UNIFIED_MOUNTPOINT, version)
    }

    /// A cgroup filesystem mounted (or laid out, in tests) at `mount`.
    pub fn at(mount: impl Into<PathBuf>, version: Version) -> CgroupFs {
        CgroupFs {
            mount: mount.into(),
            version,
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    fn hierarchy(&self) -> Box<dyn Hierarchy> {
        Box::new(Mounted {
            mount: self.mount.clone(),
            version: self.version,
        })
    }

    /// The cgroup path relative to a hierarchy root (cgroups-rs joins it onto every controller's
    /// root, so it must not be absolute); refuses paths that climb out.
    fn rel(path: &str) -> Option<&str> {
        let rel = path.trim_matches('/');
        (!rel.split('/').any(|c| c == "..")).then_some(rel)
    }

    /// A handle on an existing (or to be created) cgroup in every hierarchy.
    fn load(&self, path: &str) -> Option<Cgroup> {
        Some(Cgroup::load(self.hierarchy(), Self::rel(path)?))
    }

    /// The directory of `path` in `controller`'s hierarchy (v1) or the unified one (v2).
    pub fn dir(&self, controller: &str, path: &str) -> PathBuf {
        let rel = Self::rel(path).unwrap_or("");
        match self.version {
            Version::V1 => self.mount.join(controller).join(rel),
            Version::V2 => self.mount.join(rel),
        }
    }

    /// Whether the cgroup exists (in any hierarchy).
    pub fn exists(&self, path: &str) -> bool {
        self.load(path).is_some_and(|cg| cg.exists())
    }

    /// Creates the cgroup (and its parents) and writes `cfg` into it: on v1 in the kubelet's
    /// controllers only, on v2 with cgroups-rs enabling the host's controllers on the way down
    /// (as runc does).
    pub fn ensure(&self, path: &str, cfg: &ResourceConfig) -> Result<(), CgroupError> {
        let Some(rel) = Self::rel(path) else {
            return Err(CgroupError::Io {
                path: path.to_string(),
                action: "resolving the cgroup path".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path climbs out of the hierarchy",
                ),
            });
        };
        let cg = match self.version {
            Version::V1 => Cgroup::load_with_specified_controllers(
                self.hierarchy(),
                rel,
                V1_CONTROLLERS.iter().map(|c| c.to_string()).collect(),
            ),
            Version::V2 => Cgroup::load(self.hierarchy(), rel),
        };
        cg.create().map_err(|e| cg_err(path, "creating", e))?;
        // cgroups-rs only logs a v1 directory it could not create: check.
        for sub in cg.subsystems() {
            if !sub.to_controller().exists() {
                return Err(CgroupError::Io {
                    path: path.to_string(),
                    action: format!("creating it in the {} hierarchy", sub.controller_name()),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
        }
        self.apply(path, &cg, cfg)
    }

    /// Writes the settings through the controllers (the files [`super::files`] lists).
    fn apply(&self, path: &str, cg: &Cgroup, cfg: &ResourceConfig) -> Result<(), CgroupError> {
        let v2 = self.version == Version::V2;
        if let Some(cpu) = cg.controller_of::<CpuController>() {
            if let Some(s) = cfg.cpu_shares {
                // cgroups-rs writes the number as given; v2's cpu.weight has its own scale.
                let s = if v2 { shares_to_weight(s) } else { s };
                cpu.set_shares(s)
                    .map_err(|e| cg_err(path, &format!("setting cpu shares {s}"), e))?;
            }
            // 0 means "no quota" to the kubelet: -1 on v1, "max" on v2.
            let quota = cfg.cpu_quota.map(|q| if q > 0 { q } else { -1 });
            if v2 {
                if quota.is_some() || cfg.cpu_period.is_some() {
                    let period = cfg.cpu_period.unwrap_or(QUOTA_PERIOD_US);
                    cpu.set_cfs_quota_and_period(Some(quota.unwrap_or(-1)), Some(period))
                        .map_err(|e| cg_err(path, "setting cpu.max", e))?;
                }
            } else {
                // The period first: a quota is checked against the period in force.
                if let Some(p) = cfg.cpu_period {
                    cpu.set_cfs_period(p)
                        .map_err(|e| cg_err(path, &format!("setting the CFS period {p}"), e))?;
                }
                if let Some(q) = quota {
                    cpu.set_cfs_quota(q)
                        .map_err(|e| cg_err(path, &format!("setting the CFS quota {q}"), e))?;
                }
            }
        }
        if let (Some(m), Some(mem)) = (cfg.memory_limit, cg.controller_of::<MemController>()) {
            let m = if m > 0 { m } else { -1 };
            mem.set_limit(m)
                .map_err(|e| cg_err(path, &format!("setting the memory limit {m}"), e))?;
        }
        if let (Some(p), Some(pids)) = (
            cfg.pids_limit.filter(|p| *p > 0),
            cg.controller_of::<PidController>(),
        ) {
            pids.set_pid_max(MaxValue::Value(p))
                .map_err(|e| cg_err(path, &format!("setting the pids limit {p}"), e))?;
        }
        Ok(())
    }

    /// The hierarchies a cgroup may exist in: every controller mount on v1 (runc creates the
    /// container's cgroup in all of them) plus a hybrid host's `unified` v2 hierarchy; the
    /// unified root on v2.
    fn hierarchies(&self) -> Vec<Mounted> {
        let mut out = vec![Mounted {
            mount: self.mount.clone(),
            version: self.version,
        }];
        let unified = self.mount.join("unified");
        if self.version == Version::V1 && unified.is_dir() {
            out.push(Mounted {
                mount: unified,
                version: Version::V2,
            });
        }
        out
    }

    /// Removes the cgroup and everything below it in every hierarchy, deepest first. Processes
    /// still inside (none, normally: the containers are gone) are killed first, as upstream's
    /// pod cgroup destruction does. A cgroup that is already gone is fine.
    pub fn remove(&self, path: &str) -> Result<(), CgroupError> {
        let Some(rel) = Self::rel(path).filter(|r| !r.is_empty()) else {
            return Ok(());
        };
        let mut last_err = None;
        for h in self.hierarchies() {
            // The subtree in any of the hierarchy's controllers (they differ on v1: runc creates
            // containers in controllers the kubelet does not manage). cgroups-rs 0.3 lists no
            // child cgroups, so walk the directories.
            let mut rels = Vec::new();
            for sub in h.subsystems() {
                let root = sub.to_controller().path().to_path_buf();
                post_order(&root, &root.join(rel), &mut rels);
            }
            // Deepest first; a path in several controllers is removed from all of them at once.
            rels.sort_by(|a, b| (b.components().count(), b).cmp(&(a.components().count(), a)));
            rels.dedup();
            for r in rels {
                let cg = Cgroup::load(Box::new(h.clone()), &r);
                if let Err(e) = delete(&cg) {
                    last_err = Some(cg_err(&format!("/{}", r.display()), "removing", e));
                }
            }
        }
        last_err.map_or(Ok(()), Err)
    }

    /// Cumulative cpu time in ns: v1 `cpuacct.usage`, v2 `cpu.stat`'s `usage_usec`.
    pub fn cpu_usage_ns(&self, path: &str) -> Option<u64> {
        let cg = self.load(path)?;
        match self.version {
            Version::V1 => {
                let c = cg.controller_of::<CpuAcctController>()?;
                // cgroups-rs reads a missing file as 0: tell "gone" from "idle".
                c.exists().then(|| c.cpuacct().usage)
            }
            Version::V2 => {
                let c = cg.controller_of::<CpuController>()?;
                crate::stats::cgroup_cpu_ns(Version::V2, &c.cpu().stat)
            }
        }
    }

    /// Memory usage, `memory.stat` and limit.
    pub fn memory(&self, path: &str) -> Option<MemoryReading> {
        let cg = self.load(path)?;
        let mem = cg.controller_of::<MemController>()?;
        // cgroups-rs 0.3's v2 `memory_stat` unwraps its reads of memory.{high,low,max,min}: read
        // them through the fallible `get_mem` first (a cgroup gone meanwhile is `None`, not a
        // panic), and contain a panic should it vanish between both calls.
        if !mem.exists() || (self.version == Version::V2 && mem.get_mem().is_err()) {
            return None;
        }
        let m = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mem.memory_stat())).ok()?;
        let mut stat = String::new();
        for (k, v) in &m.stat.raw {
            stat.push_str(&format!("{k} {v}\n"));
        }
        Some(MemoryReading {
            usage: m.usage_in_bytes,
            stat,
            // v2's "max" reads as -1; v1's "unlimited" is a huge number (the stats cut it off).
            limit: u64::try_from(m.limit_in_bytes).ok(),
        })
    }

    /// The number of processes (`pids.current`).
    pub fn pids_current(&self, path: &str) -> Option<u64> {
        let cg = self.load(path)?;
        cg.controller_of::<PidController>()?.get_pid_current().ok()
    }
}

/// Paths (relative to `root`) of `dir` and the cgroups below it, children first.
fn post_order(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            post_order(root, &e.path(), out);
        }
    }
    // cgroups-rs takes cgroup paths as UTF-8 (runc's names are).
    if let Ok(r) = dir.strip_prefix(root)
        && r.to_str().is_some()
    {
        out.push(r.to_path_buf());
    }
}

/// Whether a cgroups-rs error is the kernel's EBUSY (processes or children still in the cgroup).
fn busy(e: &cgroups_rs::error::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|c| c.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.raw_os_error() == Some(libc::EBUSY))
}

/// Deletes a cgroup (cgroups-rs retries a busy one for ~150 ms); when it stays busy, kills the
/// processes left inside and tries again.
fn delete(cg: &Cgroup) -> cgroups_rs::error::Result<()> {
    let mut attempt = 0;
    loop {
        match cg.delete() {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 5 || !busy(&e) => return Err(e),
            Err(_) => {
                for p in cg.procs() {
                    let pid = i32::try_from(p.pid).unwrap_or(0);
                    if pid > 1 {
                        tracing::warn!(cgroup = cg.path(), pid, "killing a process left in a pod cgroup");
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
                attempt += 1;
            }
        }
    }
}

/// The root memory cgroup's working set on cgroup v1 (usage − total_inactive_file), as upstream's
/// `memory.available` sees it; `None` elsewhere.
pub fn root_working_set() -> Option<u64> {
    let base = Path::new("/sys/fs/cgroup/memory");
    let usage = std::fs::read_to_string(base.join("memory.usage_in_bytes")).ok()?;
    let stat = std::fs::read_to_string(base.join("memory.stat")).unwrap_or_default();
    crate::stats::cgroup_memory(Version::V1, &usage, &stat, "").map(|m| m.working_set)
}

/// Whether the OOM killer killed a process in the container cgroup `cgroups_path` (host's
/// hierarchy, v1 or v2). False if the cgroup is gone or unreadable.
pub fn oom_killed(cgroups_path: &str) -> bool {
    CgroupFs::detect().oom_killed(cgroups_path)
}

/// The `oom_kill` counter of a v1 `memory.oom_control` or a v2 `memory.events` file.
pub fn oom_kill_count(oom_control: &str) -> u64 {
    oom_control
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Removes a container's cgroup directory in the host's hierarchies (see [`CgroupFs::remove_dirs`]).
pub fn remove_cgroup_dirs(cgroups_path: &str) {
    CgroupFs::detect().remove_dirs(cgroups_path)
}

impl CgroupFs {
    /// Whether the OOM killer killed a process in the cgroup: the `oom_kill` counter of v1's
    /// `memory.oom_control` (Linux ≥ 4.13) or v2's `memory.events`.
    pub fn oom_killed(&self, cgroups_path: &str) -> bool {
        let rel = cgroups_path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return false;
        }
        let file = match self.version {
            Version::V1 => self.dir("memory", rel).join("memory.oom_control"),
            Version::V2 => self.dir("", rel).join("memory.events"),
        };
        std::fs::read_to_string(file)
            .map(|s| oom_kill_count(&s) > 0)
            .unwrap_or(false)
    }

    /// Removes the cgroup's directory in every hierarchy (runc removes only the leaf and leaves
    /// parents behind — PLATFORM.md), deepest first; directories still in use stay. `cgroups_path`
    /// is a cgroupfs path like `/kubepods/pod<uid>/<id>`: the leaf and its parents are removed only
    /// when empty.
    pub fn remove_dirs(&self, cgroups_path: &str) {
        let rel = cgroups_path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return;
        }
        let roots: Vec<PathBuf> = match self.version {
            Version::V1 => match std::fs::read_dir(&self.mount) {
                Ok(controllers) => controllers.flatten().map(|c| c.path()).collect(),
                Err(_) => return,
            },
            Version::V2 => vec![self.mount.clone()],
        };
        for root in roots {
            let mut dir = root.join(rel);
            // Stop at the hierarchy root; rmdir fails on non-empty (in use) directories, as wanted.
            while dir != root {
                if dir.is_dir() && std::fs::remove_dir(&dir).is_err() {
                    break;
                }
                match dir.parent() {
                    Some(p) => dir = p.to_path_buf(),
                    None => break,
                }
            }
        }
    }
}
