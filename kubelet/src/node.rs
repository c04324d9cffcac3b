//! The Node object: registration, status and the heartbeat Lease.
//!
//! Pure part: [`MachineInfo`] (read from procfs and the OS) → [`node_object`] / [`node_status`], and
//! [`status_changed`] comparing it with the Node in the API and [`status_due`] deciding when a status
//! is posted (every `nodeStatusUpdateFrequency` when changed, at least every
//! `nodeStatusReportFrequency`). I/O part: [`NodeAgent`] registers (creates or adopts
//! the Node), posts status and renews the Lease in `kube-node-lease` with backoff on failure.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// What the node reports about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineInfo {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub max_pods: i64,
    pub kernel_version: String,
    pub os_image: String,
    pub container_runtime_version: String,
    pub kubelet_version: String,
    pub machine_id: String,
    pub boot_id: String,
    pub addresses: Vec<(String, String)>,
    pub hostname: String,
    /// The kubelet API port (`daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: i32,
    /// `status.allocatable` (resource → quantity); empty: the capacity.
    pub allocatable: BTreeMap<String, String>,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl MachineInfo {
    /// Reads the machine: CPUs and memory from procfs, storage from statvfs of the kubelet root dir,
    /// kernel and OS from /proc and /etc/os-release.
    pub fn read(
        root_dir: &std::path::Path,
        max_pods: i64,
        runtime_version: &str,
        node_ips: &[std::net::IpAddr],
        hostname: &str,
    ) -> Self {
        use procfs::Current;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let memory_bytes = procfs::Meminfo::current().map(|m| m.mem_total).unwrap_or(0);
        let ephemeral_storage_bytes = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        let os_image = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        let mut addresses: Vec<(String, String)> = node_ips
            .iter()
            .map(|ip| ("InternalIP".to_string(), ip.to_string()))
            .collect();
        addresses.push(("Hostname".into(), hostname.to_string()));
        MachineInfo {
            cpus,
            memory_bytes,
            ephemeral_storage_bytes,
            max_pods,
            kernel_version: read_trim("/proc/sys/kernel/osrelease"),
            os_image,
            container_runtime_version: runtime_version.to_string(),
            kubelet_version: knode_config::version::git_version(),
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            addresses,
            hostname: hostname.to_string(),
            kubelet_port: 10250,
            allocatable: BTreeMap::new(),
        }
    }
}

/// The Node object a kubelet registers (upstream's `initialNode`: labels, no status).
pub fn node_object(
    name: &str,
    labels: &BTreeMap<String, String>,
    taints: &[k8s_openapi::api::core::v1::Taint],
) -> Node {
    let mut l: BTreeMap<String, String> = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    l.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut node: Node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(l),
            annotations: Some(BTreeMap::from([(
                "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    if !taints.is_empty() {
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(taints.to_vec()),
            ..Default::default()
        });
    }
    node
}

/// Pressure and readiness as the kubelet judges them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub runtime_ready: bool,
    /// The pod network has a valid CNI config (always true when pod networking is off).
    pub network_ready: bool,
    pub memory_pressure: bool,
    pub disk_pressure: bool,
    pub pid_pressure: bool,
}

/// The node status (conditions with upstream's reasons and messages). Transition times are kept from
/// `previous` while a condition's status does not change.
pub fn node_status(
    info: &MachineInfo,
    health: Health,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let t = Time(now);
    let prev = |ty: &str| {
        previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == ty))
            .cloned()
    };
    let cond =
        |ty: &str, status: bool, reason_true: &str, msg_true: &str, reason_false: &str, msg_false: &str| {
            let s = if status { "True" } else { "False" };
            let (reason, message) = if status {
                (reason_true, msg_true)
            } else {
                (reason_false, msg_false)
            };
            let transition = match prev(ty) {
                Some(p) if p.status == s => p.last_transition_time.unwrap_or(t.clone()),
                _ => t.clone(),
            };
            json!({"type": ty, "status": s, "reason": reason, "message": message,
            "lastHeartbeatTime": t, "lastTransitionTime": transition})
        };
    // Upstream aggregates the runtime and network errors into the Ready condition's message.
    let mut not_ready: Vec<&str> = Vec::new();
    if !health.runtime_ready {
        not_ready.push("container runtime is down");
    }
    if !health.network_ready {
        not_ready.push(crate::network::NETWORK_NOT_READY);
    }
    let not_ready_message = match not_ready.as_slice() {
        [one] => one.to_string(),
        many => format!("[{}]", many.join(", ")),
    };
    let conditions = vec![
        cond(
            "MemoryPressure",
            health.memory_pressure,
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond(
            "DiskPressure",
            health.disk_pressure,
            "KubeletHasDiskPressure",
            "kubelet has disk pressure",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        cond(
            "PIDPressure",
            health.pid_pressure,
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond(
            "Ready",
            not_ready.is_empty(),
            "KubeletReady",
            "kubelet is posting ready status",
            "KubeletNotReady",
            &not_ready_message,
        ),
    ];
    let capacity = json!({
        "cpu": info.cpus.to_string(),
        "memory": format!("{}Ki", info.memory_bytes / 1024),
        "ephemeral-storage": format!("{}Ki", info.ephemeral_storage_bytes / 1024),
        "pods": info.max_pods.to_string(),
    });
    let status = json!({
        "capacity": capacity,
        "allocatable": if info.allocatable.is_empty() { capacity.clone() } else { json!(info.allocatable) },
        "conditions": conditions,
        "addresses": info.addresses.iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>(),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": info.kubelet_port}},
        "nodeInfo": {
            "machineID": info.machine_id, "systemUUID": info.machine_id, "bootID": info.boot_id,
            "kernelVersion": info.kernel_version, "osImage": info.os_image,
            "containerRuntimeVersion": info.container_runtime_version,
            "kubeletVersion": info.kubelet_version, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    });
    serde_json::from_value(status).unwrap_or_default()
}

/// Whether the status the kubelet computed differs from the Node's status in the API in what the
/// kubelet owns (upstream's `nodeStatusHasChanged` against the Node it read): its conditions'
/// status, reason and message (heartbeats ignored; conditions others own, such as
/// NetworkUnavailable, are not compared), capacity and allocatable by value, addresses,
/// daemon endpoints and the node info fields it sets. Comparing with the API, not with what was
/// last posted, is what re-posts `Ready` after the node lifecycle controller marked it `Unknown`
/// during an outage.
pub fn status_changed(api: &NodeStatus, desired: &NodeStatus) -> bool {
    let api_conds = api.conditions.as_deref().unwrap_or_default();
    let conditions_changed = desired.conditions.iter().flatten().any(|d| {
        api_conds
            .iter()
            .find(|a| a.type_ == d.type_)
            .is_none_or(|a| a.status != d.status || a.reason != d.reason || a.message != d.message)
    });
    let quantities_changed = |a: &Option<BTreeMap<String, Quantity>>,
                              d: &Option<BTreeMap<String, Quantity>>| {
        d.iter().flatten().any(|(k, dq)| {
            let av = a.as_ref().and_then(|a| a.get(k));
            match (av, crate::pods::resources::parse_quantity(&dq.0)) {
                (Some(aq), Ok(dv)) => crate::pods::resources::parse_quantity(&aq.0) != Ok(dv),
                (Some(aq), Err(_)) => aq.0 != dq.0,
                (None, _) => true,
            }
        })
    };
    let info_changed = {
        let a = serde_json::to_value(&api.node_info).unwrap_or(Value::Null);
        let d = serde_json::to_value(&desired.node_info).unwrap_or(Value::Null);
        d.as_object()
            .is_some_and(|d| d.iter().any(|(k, v)| a.get(k) != Some(v)))
    };
    conditions_changed
        || quantities_changed(&api.capacity, &desired.capacity)
        || quantities_changed(&api.allocatable, &desired.allocatable)
        || api.addresses != desired.addresses
        || api.daemon_endpoints != desired.daemon_endpoints
        || info_changed
}

/// Whether to post now: on change after `update_every`, and unconditionally after `report_every`.
pub fn status_due(
    changed: bool,
    since_last_post: Duration,
    update_every: Duration,
    report_every: Duration,
) -> bool {
    (changed && since_last_post >= update_every) || since_last_post >= report_every
}

/// The node's heartbeat Lease (upstream's nodelease controller).
pub fn lease_object(node: &str, node_uid: Option<&str>, duration_seconds: i32, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some("kube-node-lease".into()),
            owner_references: node_uid.map(|uid| {
                vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    uid: uid.to_string(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Registers the node and keeps its status and lease fresh.
pub struct NodeAgent {
    pub nodes: Api<Node>,
    pub leases: Api<Lease>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
}

impl NodeAgent {
    /// Creates the Node, or adopts an existing one (merging our labels), as upstream's
    /// `registerWithAPIServer`. Returns the node's UID.
    pub async fn register(&self) -> Result<Option<String>, kube::Error> {
        let node = node_object(&self.name, &self.labels, &self.taints);
        match self.nodes.create(&PostParams::default(), &node).await {
            Ok(n) => {
                tracing::info!(node = self.name, "registered node");
                Ok(n.metadata.uid)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let patch = json!({"metadata": {"labels": node.metadata.labels}});
                let n = self
                    .nodes
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                tracing::info!(node = self.name, "node already registered; adopted it");
                Ok(n.metadata.uid)
            }
            Err(e) => Err(e),
        }
    }

    /// The Node's status as the API has it now (`None`: the Node is gone).
    pub async fn current_status(&self) -> Result<Option<NodeStatus>, kube::Error> {
        Ok(self
            .nodes
            .get_opt(&self.name)
            .await?
            .map(|n| n.status.unwrap_or_default()))
    }

    /// Posts the node status (merge patch of `status`).
    pub async fn post_status(&self, status: &NodeStatus) -> Result<Node, kube::Error> {
        let patch = json!({"status": status});
        // Strategic merge (conditions merge by type, as upstream's kubelet patches): conditions the
        // kubelet does not own, such as a network provider's NetworkUnavailable, are kept.
        self.nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
    }

    /// Renews (or creates) the lease.
    pub async fn renew_lease(
        &self,
        node_uid: Option<&str>,
        duration_seconds: i32,
    ) -> Result<(), kube::Error> {
        let lease = lease_object(&self.name, node_uid, duration_seconds, Timestamp::now());
        match self.leases.get_opt(&self.name).await? {
            None => {
                self.leases.create(&PostParams::default(), &lease).await?;
            }
            Some(_) => {
                let patch = json!({"spec": lease.spec});
                self.leases
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition<'a>(s: &'a NodeStatus, ty: &str) -> &'a k8s_openapi::api::core::v1::NodeCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == ty)
            .unwrap()
    }

    fn info() -> MachineInfo {
        MachineInfo {
            cpus: 2,
            memory_bytes: 4 << 30,
            ephemeral_storage_bytes: 100 << 30,
            max_pods: 110,
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            container_runtime_version: "containerd://1.6.20".into(),
            kubelet_version: "v1.33.0-knode".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            addresses: vec![
                ("InternalIP".into(), "10.0.0.1".into()),
                ("Hostname".into(), "n1".into()),
            ],
            hostname: "n1".into(),
            kubelet_port: 10250,
            allocatable: BTreeMap::new(),
        }
    }

    const HEALTHY: Health = Health {
        runtime_ready: true,
        network_ready: true,
        memory_pressure: false,
        disk_pressure: false,
        pid_pressure: false,
    };

    #[test]
    fn status_reports_capacity_info_and_upstream_conditions() {
        let t0 = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = node_status(&info(), HEALTHY, None, t0);
        let cap = s.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        let ready = condition(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        assert_eq!(
            s.node_info.as_ref().unwrap().container_runtime_version,
            "containerd://1.6.20"
        );
        // A later heartbeat keeps the transition time and differs only in heartbeat.
        let t1 = "2026-01-01T00:00:10Z".parse().unwrap();
        let s2 = node_status(&info(), HEALTHY, Some(&s), t1);
        let ready2 = condition(&s2, "Ready");
        assert_eq!(ready2.last_transition_time, ready.last_transition_time);
        assert!(!status_changed(&s, &s2));
        let down = node_status(
            &info(),
            Health {
                runtime_ready: false,
                ..HEALTHY
            },
            Some(&s),
            t1,
        );
        assert!(status_changed(&s, &down));
    }

    /// The node lifecycle controller marks Ready `Unknown` while the kubelet cannot reach the API;
    /// the kubelet compares with the Node it reads back, so it re-posts at once (the bug: it compared
    /// with what it last posted and waited for the 5-minute report).
    #[test]
    fn a_status_changed_by_the_node_lifecycle_controller_is_reposted() {
        let t0 = "2026-01-01T00:00:00Z".parse().unwrap();
        let posted = node_status(&info(), HEALTHY, None, t0);
        let mut in_api = posted.clone();
        for c in in_api.conditions.iter_mut().flatten() {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
        }
        // Conditions the kubelet does not own and fields it does not set are not compared, and
        // quantities compare by value (the API may canonicalise `1048576Ki` to `1Gi`).
        let network_unavailable = k8s_openapi::api::core::v1::NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            ..Default::default()
        };
        in_api
            .conditions
            .get_or_insert_with(Vec::new)
            .push(network_unavailable.clone());
        let t1 = "2026-01-01T00:01:00Z".parse().unwrap();
        let now = node_status(&info(), HEALTHY, Some(&in_api), t1);
        assert!(status_changed(&in_api, &now));
        let mut caught_up = in_api.clone();
        caught_up.conditions = now.conditions.clone();
        caught_up
            .conditions
            .get_or_insert_with(Vec::new)
            .push(network_unavailable);
        let mem = caught_up.capacity.as_mut().unwrap().get_mut("memory").unwrap();
        let kib: u64 = mem.0.trim_end_matches("Ki").parse().unwrap();
        mem.0 = format!("{}", kib * 1024);
        assert!(!status_changed(&caught_up, &now));
        // A changed address is a change.
        caught_up.addresses = Some(vec![]);
        assert!(status_changed(&caught_up, &now));
    }

    #[test]
    fn network_not_ready_makes_the_node_not_ready_with_upstreams_message() {
        let t0 = "2026-01-01T00:00:00Z".parse().unwrap();
        let ready = |h: Health| {
            node_status(&info(), h, None, t0)
                .conditions
                .unwrap()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
        };
        let c = ready(Health {
            network_ready: false,
            ..HEALTHY
        });
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert_eq!(
            c.message.as_deref(),
            Some(
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady \
                 message:Network plugin returns error: cni plugin not initialized"
            )
        );
        let both = ready(Health {
            network_ready: false,
            runtime_ready: false,
            ..HEALTHY
        });
        let m = both.message.unwrap();
        assert!(
            m.starts_with("[container runtime is down, container runtime network not ready"),
            "{m}"
        );
        // The kubelet leaves NetworkUnavailable to the network provider.
        let s = node_status(&info(), HEALTHY, None, t0);
        assert!(
            !s.conditions
                .unwrap()
                .iter()
                .any(|c| c.type_ == "NetworkUnavailable")
        );
    }

    #[test]
    fn status_is_posted_on_change_or_at_the_report_interval() {
        let ten = Duration::from_secs(10);
        let five_min = Duration::from_secs(300);
        assert!(!status_due(false, Duration::from_secs(60), ten, five_min));
        assert!(status_due(true, Duration::from_secs(10), ten, five_min));
        assert!(!status_due(true, Duration::from_secs(3), ten, five_min));
        assert!(status_due(false, five_min, ten, five_min));
    }

    #[test]
    fn registration_object_has_upstream_labels() {
        let n = node_object("n1", &BTreeMap::from([("role".into(), "x".into())]), &[]);
        let l = n.metadata.labels.unwrap();
        assert_eq!(l["kubernetes.io/hostname"], "n1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["role"], "x");
    }
}
