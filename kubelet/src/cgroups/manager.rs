//! Keeps the QoS hierarchy in line with the pods: `kubepods` with the node's enforced allocatable,
//! `burstable` with shares for its pods' cpu requests, `besteffort` with the minimum shares, and a
//! `pod<uid>` cgroup with the pod's limits before each of its containers starts; everything of a pod
//! removed when it goes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{
    CgroupError, CgroupFs, Layout, Qos, ResourceConfig, burstable_and_besteffort, container_config,
    oci_resources, oom_score_adj, pod_config, pod_requests, to_milli,
};

/// The kubelet's cgroup manager (one per node).
#[derive(Debug)]
pub struct CgroupManager {
    layout: Layout,
    fs: CgroupFs,
    node: ResourceConfig,
    pids_limit: i64,
    memory_capacity: i64,
    /// The lowest `oom_score_adj` this host lets the kubelet give (see [`oom_score_adj_floor`]).
    oom_floor: i32,
    /// Pods with a cgroup: UID → (QoS class, cpu request in millicores).
    pods: Mutex<BTreeMap<String, (Qos, i64)>>,
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

impl CgroupManager {
    /// `node` is the `kubepods` configuration ([`super::node_config`] of the enforced allocatable),
    /// `pids_limit` the `podPidsLimit` (≤ 0: none), `memory_capacity` the node's memory in bytes
    /// (for Burstable `oom_score_adj`).
    pub fn new(
        layout: Layout,
        fs: CgroupFs,
        node: ResourceConfig,
        pids_limit: i64,
        memory_capacity: i64,
    ) -> CgroupManager {
        CgroupManager {
            layout,
            fs,
            node,
            pids_limit,
            memory_capacity,
            oom_floor: -1000,
            pods: Mutex::new(BTreeMap::new()),
        }
    }

    /// Never asks for an `oom_score_adj` below `floor` (a host that refuses lower values would
    /// make runc fail every Guaranteed container).
    pub fn with_oom_floor(mut self, floor: i32) -> CgroupManager {
        self.oom_floor = floor;
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn fs(&self) -> &CgroupFs {
        &self.fs
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Qos, i64)>> {
        crate::lock::lock(&self.pods)
    }

    /// Creates `kubepods` and the QoS cgroups with their settings (upstream's container manager
    /// start-up). Without `cgroupsPerQOS` there is nothing to create.
    pub fn start(&self) -> Result<(), CgroupError> {
        if !self.layout.per_qos {
            return Ok(());
        }
        let reg = self.registry();
        self.sync_parents(&reg)
    }

    fn sync_parents(&self, reg: &BTreeMap<String, (Qos, i64)>) -> Result<(), CgroupError> {
        self.fs
            .ensure(&self.layout.path(&self.layout.node()), &self.node)?;
        let milli: i64 = reg
            .values()
            .filter(|(q, _)| *q == Qos::Burstable)
            .map(|(_, m)| *m)
            .sum();
        let (burstable, besteffort) = burstable_and_besteffort(milli);
        self.fs
            .ensure(&self.layout.path(&self.layout.qos(Qos::Burstable)), &burstable)?;
        self.fs
            .ensure(&self.layout.path(&self.layout.qos(Qos::BestEffort)), &besteffort)
    }

    /// The pod's cgroup path.
    pub fn pod_path(&self, pod: &Pod) -> String {
        self.layout.path(&self.layout.pod(Qos::of(pod), uid_of(pod)))
    }

    /// The container's cgroup path (the OCI spec's `cgroupsPath`).
    pub fn container_path(&self, pod: &Pod, id: &str) -> String {
        self.layout.container_path(Qos::of(pod), uid_of(pod), id)
    }

    /// Makes sure the pod's cgroup exists with the pod's limits, and the parents are in line
    /// (upstream's `EnsureExists` after `UpdateCgroups` in syncPod). Returns the pod's path.
    pub fn ensure_pod(&self, pod: &Pod) -> Result<String, CgroupError> {
        let path = self.pod_path(pod);
        if !self.layout.per_qos {
            return Ok(path);
        }
        let cpu = to_milli(pod_requests(pod).get("cpu").copied().unwrap_or(0));
        let mut reg = self.registry();
        reg.insert(uid_of(pod).to_string(), (Qos::of(pod), cpu));
        self.sync_parents(&reg)?;
        self.fs.ensure(&path, &pod_config(pod, self.pids_limit))?;
        Ok(path)
    }

    /// Removes the pod's cgroup (whatever QoS class it was created under) with all container
    /// cgroups below it in every hierarchy, and updates the parents.
    pub fn remove_pod(&self, uid: &str) -> Result<(), CgroupError> {
        if !self.layout.per_qos || uid.is_empty() {
            return Ok(());
        }
        let mut reg = self.registry();
        let mut result = Ok(());
        for q in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
            if let Err(e) = self.fs.remove(&self.layout.path(&self.layout.pod(q, uid))) {
                result = Err(e);
            }
        }
        if reg.remove(uid).is_some() {
            self.sync_parents(&reg)?;
        }
        result
    }

    /// UIDs of the pod cgroups present under the QoS hierarchy (to clean up after a restart).
    pub fn pod_uids_present(&self) -> Vec<String> {
        let mut out = Vec::new();
        for q in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
            let dir = self.fs.dir("memory", &self.layout.path(&self.layout.qos(q)));
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let uid = match self.layout.driver {
                    super::Driver::Cgroupfs => name.strip_prefix("pod").map(String::from),
                    super::Driver::Systemd => name
                        .strip_suffix(".slice")
                        .and_then(|n| n.rsplit('-').next())
                        .and_then(|n| n.strip_prefix("pod"))
                        .map(|u| u.replace('_', "-")),
                };
                if let Some(u) = uid.filter(|u| !u.is_empty()) {
                    out.push(u);
                }
            }
        }
        out
    }

    /// The container's OCI resources and `oom_score_adj`.
    pub fn container_resources(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> (Option<oci_spec::runtime::LinuxResources>, i32) {
        (
            oci_resources(&container_config(c)),
            oom_score_adj(pod, c, self.memory_capacity).max(self.oom_floor),
        )
    }
}

/// The node's allocatable and its cgroup manager from the configuration (`cgroupDriver`,
/// `cgroupRoot`, `cgroupsPerQOS`, `podPidsLimit`, `systemReserved`, `kubeReserved`,
/// `evictionHard`, `enforceNodeAllocatable`) and the machine; creates the QoS hierarchy.
pub fn for_node(
    config: &crate::config::KubeletConfiguration,
    info: &crate::node::MachineInfo,
) -> Result<(super::Allocatable, CgroupManager), CgroupError> {
    const NANO: i128 = 1_000_000_000;
    let capacity: BTreeMap<String, i128> = [
        ("cpu", info.cpus as i128),
        ("memory", info.memory_bytes as i128),
        ("ephemeral-storage", info.ephemeral_storage_bytes as i128),
        ("pods", info.max_pods as i128),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v * NANO))
    .collect();
    let alloc = super::allocatable(
        &capacity,
        &config.system_reserved,
        &config.kube_reserved,
        &config.eviction_hard,
    )?;
    // Upstream sizes kubepods to the allocatable only when "pods" enforcement is on.
    let enforced = if config.enforce_node_allocatable.iter().any(|e| e == "pods") {
        alloc.enforced.clone()
    } else {
        capacity
    };
    let mut node = super::node_config(&enforced);
    node.pids_limit = None;
    let layout = Layout::new(
        super::Driver::parse(&config.cgroup_driver)?,
        &config.cgroup_root,
        config.cgroups_per_qos,
    );
    let m = CgroupManager::new(
        layout,
        CgroupFs::detect(),
        node,
        config.pod_pids_limit,
        info.memory_bytes as i64,
    );
    let floor = oom_score_adj_floor();
    if floor > -997 {
        tracing::warn!(
            floor,
            "this host refuses negative oom_score_adj (no CAP_SYS_RESOURCE): Guaranteed and \
             node-critical containers get {floor} instead of -997"
        );
    }
    let m = m.with_oom_floor(floor);
    m.start()?;
    Ok((alloc, m))
}

/// The lowest `oom_score_adj` this process may hand to its children: lowering a score needs
/// CAP_SYS_RESOURCE, which some sandboxed hosts withhold. Probes by lowering its own score by one
/// and restoring it (raising is always allowed).
pub fn oom_score_adj_floor() -> i32 {
    let path = "/proc/self/oom_score_adj";
    let Some(cur) = std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
    else {
        return -1000;
    };
    if cur <= -1000 || std::fs::write(path, (cur - 1).to_string()).is_ok() {
        let _ = std::fs::write(path, cur.to_string());
        return -1000;
    }
    cur
}
