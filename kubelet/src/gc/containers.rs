//! Dead-container garbage collection decisions, the node-level part of upstream's container GC
//! (`kuberuntime_gc.go`) that pod workers cannot do: what is left of pods the kubelet no longer
//! knows. Per-pod trimming of old attempts is the worker's (`crate::pods::worker`); removing the
//! containers of unknown pods is the manager's periodic orphan cleanup (`crate::agent`), which this
//! module extends with the pod log directories and pod directories such pods leave behind, and
//! with an immediate sweep of dead containers under disk pressure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The pods the kubelet knew at one moment (the pod manager's workers), as the manager last
/// reported them. A container created after `at` may belong to a pod admitted since, so only older
/// ones count as orphans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPods {
    pub uids: BTreeSet<String>,
    pub at: SystemTime,
}

/// A container of the kubelet's namespace as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptContainer {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// The task is running (or paused): not dead.
    pub running: bool,
    /// When containerd created the record (`None`: unknown, treated as new).
    pub created: Option<SystemTime>,
}

/// The UID of a pod log directory `<namespace>_<name>_<uid>` (neither namespaces nor pod names
/// contain `_`); `None` for anything else.
pub fn log_dir_uid(name: &str) -> Option<&str> {
    let mut parts = name.splitn(3, '_');
    let (ns, _name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    (!ns.is_empty() && !uid.is_empty() && !uid.contains('_')).then_some(uid)
}

/// The UID of a pod directory `<root>/pods/<uid>`: its name.
pub fn pod_dir_uid(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}

/// Directory names (log dirs `<ns>_<name>_<uid>` or pod dirs `<uid>`) of pods that are neither
/// known nor still own a container: left behind by a removal that did not finish, or by a pod
/// whose containers were removed by an earlier kubelet.
pub fn orphan_dirs<'a>(
    names: &'a [String],
    uid_of: impl Fn(&str) -> Option<&str>,
    known: &BTreeSet<String>,
    with_containers: &BTreeSet<String>,
) -> Vec<&'a String> {
    names
        .iter()
        .filter(|n| uid_of(n).is_some_and(|uid| !known.contains(uid) && !with_containers.contains(uid)))
        .collect()
}

/// Whether anything is mounted at or below `dir` (upstream never removes an orphaned pod
/// directory whose volumes are still mounted).
pub fn has_mount_under(mount_points: &[PathBuf], dir: &Path) -> bool {
    mount_points.iter().any(|m| m.starts_with(dir))
}

/// Pods to remove under disk pressure (upstream's `DeleteAllUnusedContainers` for deleted pods):
/// pods unknown to the kubelet at the last report whose containers are all dead and were all
/// created before that report. Values are (namespace, name) for the removal's log messages.
pub fn dead_orphan_pods(
    containers: &[SweptContainer],
    known: &KnownPods,
) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    for c in containers {
        let old = c.created.is_some_and(|t| t < known.at);
        if known.uids.contains(&c.pod_uid) || c.running || !old {
            keep.insert(&c.pod_uid);
            continue;
        }
        out.insert(c.pod_uid.clone(), (c.pod_namespace.clone(), c.pod_name.clone()));
    }
    out.retain(|uid, _| !keep.contains(uid.as_str()));
    out
}
