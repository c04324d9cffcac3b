//! The cgroup filesystem adapter: creates a cgroup with its settings ([`super::files`]), removes a
//! whole subtree in every hierarchy (including the directories runc leaves in controllers the
//! kubelet never configures), and reads control files for stats. Works on v1 (a hierarchy per
//! controller under the mount) and v2 (one unified hierarchy, controllers enabled on the way down).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CgroupError, ResourceConfig, Version, files};

/// The v1 controllers the kubelet creates cgroups in (runc creates the others for containers).
const V1_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];
/// The v2 controllers the kubelet enables for its subtree.
const V2_CONTROLLERS: &str = "+cpu +memory +pids";

/// A mounted cgroup filesystem.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    mount: PathBuf,
    version: Version,
}

fn io_err(path: &Path, action: &str, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.display().to_string(),
        action: action.to_string(),
        source,
    }
}

impl CgroupFs {
    /// The host's `/sys/fs/cgroup`: v2 when it is the unified hierarchy, else v1 (hybrid hosts
    /// included, as upstream's kubelet and runc decide).
    pub fn detect() -> CgroupFs {
        let mount = PathBuf::from("/sys/fs/cgroup");
        let version = if mount.join("cgroup.controllers").exists() {
            Version::V2
        } else {
            Version::V1
        };
        CgroupFs { mount, version }
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

    /// The cgroup path relative to a hierarchy root; refuses paths that climb out.
    fn rel(path: &str) -> Option<&str> {
        let rel = path.trim_matches('/');
        (!rel.split('/').any(|c| c == "..")).then_some(rel)
    }

    /// The directory of `path` in `controller`'s hierarchy (v1) or the unified one (v2).
    pub fn dir(&self, controller: &str, path: &str) -> PathBuf {
        let rel = Self::rel(path).unwrap_or("");
        match self.version {
            Version::V1 => self.mount.join(controller).join(rel),
            Version::V2 => self.mount.join(rel),
        }
    }

    /// Reads a control file of `path` (`controller` is ignored on v2).
    pub fn read(&self, controller: &str, path: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller, path).join(file)).ok()
    }

    /// Whether the cgroup exists (in the memory hierarchy on v1).
    pub fn exists(&self, path: &str) -> bool {
        self.dir("memory", path).is_dir()
    }

    /// Creates the cgroup (and its parents) and writes `cfg` into it.
    pub fn ensure(&self, path: &str, cfg: &ResourceConfig) -> Result<(), CgroupError> {
        let Some(rel) = Self::rel(path) else {
            return Err(io_err(
                Path::new(path),
                "resolving the cgroup path",
                std::io::Error::new(ErrorKind::InvalidInput, "the path climbs out of the hierarchy"),
            ));
        };
        match self.version {
            Version::V1 => {
                for ctl in V1_CONTROLLERS {
                    let root = self.mount.join(ctl);
                    if root.is_dir() {
                        let d = root.join(rel);
                        std::fs::create_dir_all(&d).map_err(|e| io_err(&d, "creating", e))?;
                    }
                }
            }
            Version::V2 => {
                // Each parent must delegate the controllers to its children before they can be used.
                let mut dir = self.mount.clone();
                for comp in rel.split('/').filter(|c| !c.is_empty()) {
                    let _ = std::fs::write(dir.join("cgroup.subtree_control"), V2_CONTROLLERS);
                    dir = dir.join(comp);
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_err(&dir, "creating", e)),
                    }
                }
            }
        }
        for f in files(cfg, self.version) {
            let d = self.dir(f.controller, rel);
            if !d.is_dir() {
                // A controller this host does not have (e.g. no pids hierarchy): nothing to set.
                continue;
            }
            let file = d.join(f.file);
            std::fs::write(&file, &f.value)
                .map_err(|e| io_err(&file, &format!("writing {:?}", f.value), e))?;
        }
        Ok(())
    }

    /// The hierarchy roots a cgroup exists in: every controller mount on v1 (runc creates the
    /// container's cgroup in all of them), the unified root on v2.
    fn hierarchies(&self) -> Vec<PathBuf> {
        match self.version {
            Version::V2 => vec![self.mount.clone()],
            Version::V1 => std::fs::read_dir(&self.mount)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect(),
        }
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
            let base = h.join(rel);
            if !base.is_dir() {
                continue;
            }
            let mut dirs = Vec::new();
            post_order(&base, &mut dirs);
            for d in dirs {
                if let Err(e) = remove_cgroup_dir(&d) {
                    last_err = Some(e);
                }
            }
        }
        last_err.map_or(Ok(()), Err)
    }

    /// Removes `path` in every hierarchy if it is empty (no child cgroups, no processes).
    pub fn remove_if_empty(&self, path: &str) {
        let Some(rel) = Self::rel(path).filter(|r| !r.is_empty()) else {
            return;
        };
        for h in self.hierarchies() {
            let _ = std::fs::remove_dir(h.join(rel));
        }
    }
}

/// Sub-directories of `dir` (cgroups), children before parents, `dir` last.
fn post_order(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            post_order(&p, out);
        }
    }
    out.push(dir.to_path_buf());
}

fn remove_cgroup_dir(d: &Path) -> Result<(), CgroupError> {
    for attempt in 0..20 {
        match std::fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt < 19 && e.raw_os_error() == Some(libc::EBUSY) => {
                kill_procs(d);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(io_err(d, "removing", e)),
        }
    }
    Ok(())
}

/// SIGKILLs the processes listed in a cgroup (leftovers of a pod being removed).
fn kill_procs(d: &Path) {
    let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if pid > 1 {
            tracing::warn!(cgroup = %d.display(), pid, "killing a process left in a pod cgroup");
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
