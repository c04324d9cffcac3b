//! Where the upstream binaries are: `KNODE_UPSTREAM_BIN` if set, otherwise what
//! `scripts/build-upstream.sh` prints (it builds them once into a cache outside the clone and is a
//! no-op afterwards).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::{HarnessError, Result};

/// The control plane set `scripts/build-upstream.sh` always builds.
pub const CONTROL_PLANE: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "coredns",
];
/// Built only with `--with-node` (the baselines of knode's own daemons).
pub const NODE: &[&str] = &["kubelet", "kube-proxy"];

/// The directory holding the upstream binaries of one pinned release.
#[derive(Debug, Clone)]
pub struct UpstreamBinaries {
    pub dir: PathBuf,
}

/// Bin dirs already located in this process: (with_node, dir).
static LOCATED: Mutex<Vec<(bool, PathBuf)>> = Mutex::new(Vec::new());

impl UpstreamBinaries {
    /// Finds (building if needed) the control plane binaries, and with `with_node` also the
    /// upstream kubelet and kube-proxy.
    pub fn locate(with_node: bool) -> Result<Self> {
        if let Some(dir) = std::env::var_os("KNODE_UPSTREAM_BIN") {
            let me = UpstreamBinaries { dir: dir.into() };
            me.check(with_node, "KNODE_UPSTREAM_BIN")?;
            return Ok(me);
        }
        let mut located = LOCATED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, dir)) = located.iter().find(|(n, _)| *n || !with_node) {
            return Ok(UpstreamBinaries { dir: dir.clone() });
        }
        let script = crate::workspace_root().join("scripts/build-upstream.sh");
        let shown = if with_node {
            format!("{} --with-node", script.display())
        } else {
            script.display().to_string()
        };
        let mut cmd = Command::new(&script);
        if with_node {
            cmd.arg("--with-node");
        }
        // The build log goes straight to the test's stderr: a cold build takes many minutes.
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(HarnessError::io(format!("running {shown}")))?;
        if !out.status.success() {
            return Err(HarnessError::Missing(format!(
                "the upstream Kubernetes binaries are not built: `{shown}` failed ({}); run it by hand \
                 to see why (it needs Go, see scripts/setup-host.sh), or point KNODE_UPSTREAM_BIN at a \
                 directory holding {}",
                out.status,
                CONTROL_PLANE.join(", ")
            )));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(dir) = stdout.lines().rev().find(|l| !l.trim().is_empty()) else {
            return Err(HarnessError::Missing(format!("`{shown}` printed no bin dir")));
        };
        let me = UpstreamBinaries {
            dir: PathBuf::from(dir.trim()),
        };
        me.check(with_node, &shown)?;
        located.push((with_node, me.dir.clone()));
        Ok(me)
    }

    fn check(&self, with_node: bool, source: &str) -> Result<()> {
        let wanted = CONTROL_PLANE.iter().chain(if with_node { NODE } else { &[] });
        let missing: Vec<&str> = wanted.filter(|b| !self.dir.join(b).is_file()).copied().collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(HarnessError::Missing(format!(
                "{} (from {source}) lacks {}: run scripts/build-upstream.sh{}",
                self.dir.display(),
                missing.join(", "),
                if with_node { " --with-node" } else { "" }
            )))
        }
    }

    /// The path of binary `name` (e.g. `kube-apiserver`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The bin dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
