//! The pod executor: one task per pod UID carrying out the pure core's plans against the runtime.
//!
//! Each loop turn (`worker`): observe (`observe`: the runtime's containers by the pod's UID label,
//! the sandbox pins, recorded container facts) → [`crate::pods::step`] → execute the plan's actions in
//! order (`sandbox`: sandbox + network; `containers`: image pulls, container create/start, hooks;
//! `terminate`: kills, removals) → observe again → [`crate::pods::status()`] with the stop requests'
//! status on top ([`crate::pods::stop`]) → patch the pod status when it changed (`api`) → the
//! end-of-turn policy → sleep until the plan's wake-up, a pod update, a stop request or a container
//! exit. Facts the runtime does not keep (start/finish times, OOM, termination message) are written
//! to `<root>/containers/<id>.json`, so a restarted kubelet adopts running containers without
//! restarting them and reports the same times. The runtime is reached only through
//! [`crate::runtime::PodRuntime`] (a recording fake in the unit tests, `tests.rs`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub(crate) use crate::lock::lock;
use crate::pods::{BackoffBook, ContainerKind};
use crate::runtime::PodRuntime;
use crate::runtime::container::{CreatedContainer, LogRotation};

mod api;
mod containers;
mod observe;
mod sandbox;
mod terminate;
mod worker;

#[cfg(test)]
mod tests;

pub use api::event;
pub use observe::observe;
pub use terminate::remove_pod;
pub use worker::run;

/// A message to a pod worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// The pod object changed.
    Update(Box<Pod>),
    /// Something about the pod's containers changed (an exit): observe again.
    Poke,
    /// The pod vanished from its source without a graceful deletion: kill and remove.
    Removed,
    /// The node is shutting down: stop every container with at most this grace period, report
    /// the pod as terminated by the shutdown ([`crate::shutdown`]), keep its data, and end.
    Shutdown { grace_seconds: i64 },
    /// The eviction manager evicts the pod ([`crate::eviction`]): stop it as a shutdown does,
    /// report it `Failed`/`Evicted`, free its volumes, and keep the worker until the pod is deleted.
    Evict(crate::eviction::manager::Eviction),
}

/// Pod networking through CNI (`None`: networking off, pods get loopback only).
pub type CniSetup = Arc<crate::network::PodNetwork>;

/// What every worker shares.
pub struct NodeContext {
    pub client: kube::Client,
    pub node_name: String,
    pub node_ip: String,
    pub root_dir: PathBuf,
    pub log_dir: PathBuf,
    /// Containers, tasks and images.
    pub runtime: Arc<dyn PodRuntime>,
    /// The QoS cgroup hierarchy (pod cgroups, container cgroup paths and resources).
    pub cgroups: Arc<crate::cgroups::CgroupManager>,
    pub log_rotation: LogRotation,
    pub book: Mutex<BackoffBook>,
    pub cni: Option<CniSetup>,
    pub node_cpu_millis: i64,
    pub node_memory: i64,
    /// Liveness, readiness and startup probes of running containers.
    pub probes: crate::probes::ProbeManager,
    /// Pod volumes: setup, periodic resync, tokens, teardown.
    pub volumes: crate::volumes::VolumeManager,
    /// Node-wide security settings (allowed unsafe sysctls).
    pub security: crate::spec::security::NodeSecurity,
    /// Cluster DNS and the host's resolv.conf, for pods' resolv.conf and hostnames.
    pub dns: crate::pods::dns::DnsSettings,
    /// Whether a sandbox directory's namespace pins still hold their namespaces
    /// ([`crate::sandbox::pins_alive`]; unit tests with fake sandboxes replace it).
    pub sandbox_alive: fn(&std::path::Path) -> bool,
    /// Log pumps of containers this process created (kept until the container is removed).
    pub(crate) handles: Mutex<HashMap<String, CreatedContainer>>,
    facts: Mutex<HashMap<String, Facts>>,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("node", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// What the kubelet records about a container attempt.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    pub pod_uid: String,
    pub created_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub oom: bool,
    pub message: String,
    pub image_id: String,
    pub cgroups_path: String,
    pub termination_file: Option<PathBuf>,
    pub termination_policy: String,
    pub log_path: Option<PathBuf>,
    pub exit_code: Option<u32>,
    /// The task vanished before its exit was seen (containerd lost its state): exit code and end
    /// time are unknown.
    #[serde(default)]
    pub lost: bool,
}

impl NodeContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        node_name: String,
        node_ip: String,
        root_dir: PathBuf,
        log_dir: PathBuf,
        runtime: Arc<dyn PodRuntime>,
        cgroups: Arc<crate::cgroups::CgroupManager>,
        log_rotation: LogRotation,
        book: BackoffBook,
        cni: Option<CniSetup>,
        node_cpu_millis: i64,
        node_memory: i64,
        probes: crate::probes::ProbeManager,
    ) -> Self {
        NodeContext {
            client,
            node_name,
            node_ip,
            root_dir,
            log_dir,
            runtime,
            cgroups,
            log_rotation,
            book: Mutex::new(book),
            cni,
            node_cpu_millis,
            node_memory,
            probes,
            volumes: Default::default(),
            security: Default::default(),
            dns: Default::default(),
            sandbox_alive: crate::sandbox::pins_alive,
            handles: Mutex::new(HashMap::new()),
            facts: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn facts_path(&self, id: &str) -> PathBuf {
        self.root_dir.join("containers").join(format!("{id}.json"))
    }

    pub(crate) fn sandbox_root(&self) -> PathBuf {
        self.root_dir.join("sandboxes")
    }

    /// The recorded facts of a container (memory first, then disk: adoption after a restart).
    pub fn facts(&self, id: &str) -> Option<Facts> {
        if let Some(f) = lock(&self.facts).get(id) {
            return Some(f.clone());
        }
        let f: Facts = std::fs::read(self.facts_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        lock(&self.facts).insert(id.to_string(), f.clone());
        Some(f)
    }

    pub(crate) fn save_facts(&self, id: &str, f: Facts) {
        let path = self.facts_path(id);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(b) = serde_json::to_vec(&f) {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, b).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        lock(&self.facts).insert(id.to_string(), f);
    }

    pub(crate) fn forget_facts(&self, id: &str) {
        lock(&self.facts).remove(id);
        let _ = std::fs::remove_file(self.facts_path(id));
    }

    /// Adopted containers (created by an earlier kubelet process) get their log copy back.
    pub(crate) fn ensure_log_copy(&self, id: &str, f: &Facts) {
        if lock(&self.handles).contains_key(id) {
            return;
        }
        let Some(log_path) = &f.log_path else { return };
        match crate::runtime::container::ContainerService::reattach_logs(
            id,
            &self.root_dir.join("fifo"),
            log_path,
            self.log_rotation,
            &f.cgroups_path,
        ) {
            Ok(h) => {
                lock(&self.handles).insert(id.to_string(), h);
            }
            Err(e) => tracing::warn!(container = id, error = %e, "re-attaching the log copy failed"),
        }
    }

    /// The pod UID a container belongs to, from the recorded facts.
    pub fn pod_of(&self, container_id: &str) -> Option<String> {
        self.facts(container_id).map(|f| f.pod_uid)
    }

    pub(crate) fn pod_log_dir(&self, pod: &Pod) -> PathBuf {
        let m = &pod.metadata;
        self.log_dir.join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or(""),
            m.uid.as_deref().unwrap_or("")
        ))
    }
}

pub(crate) fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// The spec of the pod's container `name` — app, init or ephemeral (converted) — and its kind.
pub(crate) fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<(Cow<'a, Container>, ContainerKind)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
        return Some((Cow::Borrowed(c), ContainerKind::App));
    }
    if let Some(c) = spec.init_containers.iter().flatten().find(|c| c.name == name) {
        return Some((Cow::Borrowed(c), ContainerKind::Init));
    }
    crate::pods::ephemeral::find(spec, name).map(|c| (Cow::Owned(c), ContainerKind::Ephemeral))
}
