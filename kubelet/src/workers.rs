//! Pod workers: one task per pod UID running the pure core's plans against the runtime.
//!
//! Each loop turn: observe (containerd relist by the pod's UID label, the sandbox pins, recorded
//! container facts) → [`pods::step`] → run the plan's actions in order (sandbox + volumes + network,
//! image pulls, container create/start, kills, removals) → observe again → [`pods::status`] → patch
//! the pod status when it changed → sleep until the plan's wake-up, a pod update or a container exit.
//! Facts the runtime does not keep (start/finish times, OOM, termination message) are written to
//! `<root>/containers/<id>.json`, so a restarted kubelet adopts running containers without
//! restarting them and reports the same times.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Event, ObjectReference, Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::hooks;
use crate::inputs::{self, PodFacts};
use crate::pods::{
    self, Action, AttemptState, BackoffBook, ContainerAttempt, Observed, SandboxState, StartError,
    WorkerState,
};
use crate::runtime::container::{
    ContainerMeta, ContainerService, CreateContainer, CreatedContainer, LogRotation, TaskState,
};
use crate::runtime::image::{ImageService, PullPolicy, credentials_for};
use crate::sandbox::{self, SandboxConfig};
use crate::spec::{BindMount, ImageConfig, SpecInput, container_spec};
use crate::volumes;

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
    pub images: ImageService,
    pub containers: ContainerService,
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
    /// Log pumps of containers this process created (kept until the container is removed).
    handles: Mutex<HashMap<String, CreatedContainer>>,
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        node_name: String,
        node_ip: String,
        root_dir: PathBuf,
        log_dir: PathBuf,
        images: ImageService,
        containers: ContainerService,
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
            images,
            containers,
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
            handles: Mutex::new(HashMap::new()),
            facts: Mutex::new(HashMap::new()),
        }
    }

    fn facts_path(&self, id: &str) -> PathBuf {
        self.root_dir.join("containers").join(format!("{id}.json"))
    }

    fn sandbox_root(&self) -> PathBuf {
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

    fn save_facts(&self, id: &str, f: Facts) {
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

    fn forget_facts(&self, id: &str) {
        lock(&self.facts).remove(id);
        let _ = std::fs::remove_file(self.facts_path(id));
    }

    /// Adopted containers (created by an earlier kubelet process) get their log copy back.
    fn ensure_log_copy(&self, id: &str, f: &Facts) {
        if lock(&self.handles).contains_key(id) {
            return;
        }
        let Some(log_path) = &f.log_path else { return };
        match ContainerService::reattach_logs(
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

    fn pod_log_dir(&self, pod: &Pod) -> PathBuf {
        let m = &pod.metadata;
        self.log_dir.join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or(""),
            m.uid.as_deref().unwrap_or("")
        ))
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<(&'a Container, bool)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
        return Some((c, false));
    }
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .map(|c| (c, true))
}

/// The sandboxes of a pod on disk: `<root>/sandboxes/<uid>-<attempt>`.
fn sandboxes_of(root: &Path, uid: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let attempt = name.strip_prefix(&format!("{uid}-"))?.parse().ok()?;
            Some((attempt, name))
        })
        .collect();
    out.sort();
    out
}

/// The termination message: the file, else (FallbackToLogsOnError, failed) the log's last lines.
fn termination_message(f: &Facts, exit_code: u32) -> String {
    let from_file = f
        .termination_file
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
        .unwrap_or_default();
    if !from_file.is_empty() || f.termination_policy != "FallbackToLogsOnError" || exit_code == 0 {
        return from_file;
    }
    let log = f
        .log_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let lines: Vec<String> = log
        .lines()
        .filter_map(|l| {
            // CRI format: <time> <stream> <P|F> <content>
            let mut parts = l.splitn(4, ' ');
            let (_, _, _, content) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some(content.to_string())
        })
        .collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let bytes = tail.as_bytes();
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(2048)..]).into_owned()
}

/// The address probes dial: the pod's IP, or the node's for hostNetwork pods (and pods without
/// networking).
fn pod_ip_for(ctx: &NodeContext, pod: &Pod, uid: &str) -> String {
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    if !host_network
        && let Some((_, id)) = sandboxes_of(&ctx.sandbox_root(), uid).pop()
        && let Ok(ip) = std::fs::read_to_string(ctx.sandbox_root().join(id).join("ip"))
        && !ip.trim().is_empty()
    {
        return ip.trim().to_string();
    }
    ctx.node_ip.clone()
}

/// Builds the runtime picture of one pod.
pub async fn observe(ctx: &NodeContext, pod: &Pod, start_errors: &BTreeMap<String, StartError>) -> Observed {
    let _relist = crate::metrics::RelistTimer::start();
    let uid = uid_of(pod);
    let now = Timestamp::now();
    let listed = ctx.containers.list_pod(&uid).await.unwrap_or_default();
    let mut containers = Vec::new();
    for l in listed.iter().filter(|l| l.meta.pod_uid == uid) {
        let mut f = ctx.facts(&l.id).unwrap_or_else(|| Facts {
            pod_uid: uid.clone(),
            ..Default::default()
        });
        if let TaskState::Exited { code } = l.state
            && f.finished_at.is_none()
        {
            f.finished_at = Some(now);
            f.exit_code = Some(code);
            f.oom = f.oom || crate::runtime::container::oom_killed(&f.cgroups_path);
            f.message = termination_message(&f, code);
            ctx.save_facts(&l.id, f.clone());
        }
        let running = matches!(l.state, TaskState::Running { .. });
        if running {
            ctx.ensure_log_copy(&l.id, &f);
            if let Some((spec, _)) = find_container(pod, &l.meta.container_name) {
                let ip = pod_ip_for(ctx, pod, &uid);
                ctx.probes
                    .add_container(pod, spec, &l.id, ip, f.started_at.unwrap_or(now));
            }
        } else {
            ctx.probes.remove_container(&l.id);
        }
        let state = AttemptState::from_task(l.state, f.started_at, f.finished_at, f.oom, &f.message, now);
        let mut attempt = ContainerAttempt::from_listed(l, state, f.created_at.unwrap_or(now), &f.image_id);
        if running {
            let r = ctx.probes.results(&l.id);
            attempt.ready = r.ready;
            attempt.started = r.started;
            attempt.live = r.live;
        }
        containers.push(attempt);
    }
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let sandbox = sandboxes_of(&ctx.sandbox_root(), &uid)
        .pop()
        .map(|(attempt, id)| {
            let dir = ctx.sandbox_root().join(&id);
            // The `ip` record is written once networking is set up (empty without CNI): a sandbox
            // whose ADD never finished (kubelet killed mid-ADD) is not ready and gets replaced.
            let ready = host_network || (dir.join("net").exists() && dir.join("ip").exists());
            SandboxState { id, attempt, ready }
        });
    let pod_ips = sandbox
        .as_ref()
        .and_then(|s| std::fs::read_to_string(ctx.sandbox_root().join(&s.id).join("ip")).ok())
        .map(|ip| vec![ip.trim().to_string()])
        .filter(|v| !v[0].is_empty())
        .unwrap_or_default();
    let mut images_present = BTreeSet::new();
    let images: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .filter_map(|c| c.image.clone())
        .collect();
    for image in images {
        if let Ok(name) = ImageService::normalize(&image)
            && matches!(ctx.images.inspect(&name).await, Ok(Some(_)))
        {
            images_present.insert(image);
        }
    }
    Observed {
        sandbox,
        containers,
        start_errors: start_errors.clone(),
        images_present,
        pod_ips,
    }
}

/// Records a core/v1 Event about the pod (fire and forget, as upstream's recorder).
pub fn event(ctx: &NodeContext, pod: &Pod, container: Option<&str>, ty: &str, reason: &str, message: String) {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let now = Time(Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                pod.metadata.name.as_deref().unwrap_or("pod"),
                Timestamp::now().as_nanosecond()
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(ns.clone()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            api_version: Some("v1".into()),
            field_path: container.map(|c| {
                let init = find_container(pod, c).is_some_and(|(_, i)| i);
                format!(
                    "spec.{}{{{c}}}",
                    if init { "initContainers" } else { "containers" }
                )
            }),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(ty.into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("kubelet".into()),
            host: Some(ctx.node_name.clone()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(ctx.node_name.clone()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::debug!(error = %e, "recording an event failed");
        }
    });
}

fn pod_facts(ctx: &NodeContext, pod_ip: &str) -> PodFacts {
    PodFacts {
        node_name: ctx.node_name.clone(),
        host_ip: ctx.node_ip.clone(),
        pod_ip: if pod_ip.is_empty() {
            ctx.node_ip.clone()
        } else {
            pod_ip.to_string()
        },
        node_cpu_millis: ctx.node_cpu_millis,
        node_memory: ctx.node_memory,
    }
}

async fn create_sandbox(ctx: &NodeContext, pod: &Pod, attempt: u32) -> Result<(), StartError> {
    let uid = uid_of(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    // Upstream's SyncPod gate: only hostNetwork pods start while the network is not ready.
    if !host_network && ctx.cni.as_ref().is_some_and(|n| !n.is_ready()) {
        return Err(StartError::new(
            crate::network::NETWORK_NOT_READY_REASON,
            format!(
                "{}: {}",
                crate::network::NETWORK_NOT_READY_POD,
                crate::network::NETWORK_NOT_READY
            ),
        ));
    }
    let hostname = crate::pods::dns::kernel_hostname(pod, &ctx.dns.cluster_domain)
        .map_err(|e| StartError::new("CreatePodSandboxError", e))?;
    write_resolv_conf(ctx, pod)?;
    let cfg = SandboxConfig {
        id: format!("{uid}-{attempt}"),
        hostname,
        host_network,
        host_ipc: spec.host_ipc.unwrap_or(false),
        host_pid: spec.host_pid.unwrap_or(false),
    };
    let root = ctx.sandbox_root();
    std::fs::create_dir_all(&root).map_err(|e| StartError::new("CreatePodSandboxError", e.to_string()))?;
    // Older sandboxes of this pod are gone for good (a replaced sandbox restarts the pod).
    for (_, old) in sandboxes_of(&root, &uid) {
        teardown_sandbox(ctx, pod, &old).await;
    }
    let created = {
        let root = root.clone();
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || sandbox::create(&root, &cfg))
            .await
            .map_err(|e| StartError::new("CreatePodSandboxError", e.to_string()))?
            .map_err(|e| {
                StartError::new(
                    "CreatePodSandboxError",
                    format!("Failed to create pod sandbox: {e}"),
                )
            })?
    };
    let mut ip = String::new();
    if !host_network && let (Some(cni), Some(net)) = (&ctx.cni, &created.net) {
        let (cni, dir, id, net) = (cni.clone(), root.join(&cfg.id), cfg.id.clone(), net.clone());
        let pod_ref = crate::network::PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
        };
        let added = tokio::task::spawn_blocking(move || cni.add(&dir, &id, &net, &pod_ref))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match added {
            Ok(a) => ip = a,
            Err(e) => {
                // As containerd does for a failed RunPodSandbox: undo (DEL, unpin), report, retry later.
                teardown_sandbox(ctx, pod, &cfg.id).await;
                return Err(StartError::new(
                    "CreatePodSandboxError",
                    format!(
                        "Failed to create pod sandbox: failed to setup network for sandbox {:?}: {e}",
                        cfg.id
                    ),
                ));
            }
        }
    }
    if !host_network {
        // The record that networking is done (empty without CNI); see `observe`.
        std::fs::write(root.join(&cfg.id).join("ip"), &ip)
            .map_err(|e| StartError::new("CreatePodSandboxError", format!("recording the pod IP: {e}")))?;
    }
    tracing::info!(pod = %pod_name(pod), uid, attempt, ip, "pod sandbox created");
    Ok(())
}

async fn teardown_sandbox(ctx: &NodeContext, pod: &Pod, id: &str) {
    let root = ctx.sandbox_root();
    let dir = root.join(id);
    if let Some(cni) = &ctx.cni
        && (dir.join("net").exists() || crate::network::PodNetwork::has_cache(&dir))
    {
        let (cni, d, sid) = (cni.clone(), dir.clone(), id.to_string());
        let r = tokio::task::spawn_blocking(move || cni.del(&d, &sid, &d.join("net"))).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(pod = %pod_name(pod), sandbox = id, error = %e, "CNI DEL failed");
        }
    }
    // Our own record of the sandbox's IP lives in its directory; the pins are the sandbox's.
    let _ = std::fs::remove_file(dir.join("ip"));
    let sid = id.to_string();
    let r = tokio::task::spawn_blocking(move || sandbox::teardown(&root, &sid)).await;
    if let Ok(Err(e)) = r {
        tracing::warn!(pod = %pod_name(pod), sandbox = id, error = %e, "sandbox teardown failed");
    }
}

async fn pull_auth(ctx: &NodeContext, pod: &Pod, image: &str) -> oci_client::secrets::RegistryAuth {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut configs = Vec::new();
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .collect();
    for name in names {
        if let Ok(Some(s)) = api.get_opt(&name).await
            && let Some(d) = s.data.as_ref().and_then(|d| d.get(".dockerconfigjson"))
        {
            configs.push(d.0.clone());
        }
    }
    let registry = image.split('/').next().unwrap_or("");
    credentials_for(&configs, registry)
}

async fn start_container(
    ctx: &NodeContext,
    pod: &Pod,
    name: &str,
    attempt: u32,
    spec_hash: &str,
    observed: &Observed,
) -> Result<(), StartError> {
    let (c, _init) = find_container(pod, name).ok_or_else(|| {
        StartError::new(
            "CreateContainerError",
            format!("container {name} is not in the pod spec"),
        )
    })?;
    let uid = uid_of(pod);
    let image_ref = c.image.clone().unwrap_or_default();
    let image_name = ImageService::normalize(&image_ref)
        .map_err(|e| StartError::new("InvalidImageName", e.to_string()))?;
    let info = ctx
        .images
        .inspect(&image_name)
        .await
        .map_err(|e| StartError::new("CreateContainerError", e.to_string()))?
        .ok_or_else(|| StartError::new("ErrImagePull", format!("image {image_ref:?} is not present")))?;
    let refs = inputs::fetch_refs(&ctx.client, pod).await.map_err(|e| {
        StartError::new(
            "CreateContainerConfigError",
            format!("fetching referenced objects: {e}"),
        )
    })?;
    let pod_ip = observed.pod_ips.first().cloned().unwrap_or_default();
    let facts = pod_facts(ctx, &pod_ip);
    let env = inputs::container_env(pod, c, &refs, &facts)?;
    let expanded = Container {
        command: inputs::expand_args(c.command.as_ref(), &env),
        args: inputs::expand_args(c.args.as_ref(), &env),
        ..c.clone()
    };
    let vols = volumes::setup_pod(ctx, pod, &refs, &facts).await?;
    let mut mounts = volumes::mounts_for(c, &vols, &env)?;
    let pdir = volumes::pod_dir(&ctx.root_dir, &uid);
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    // /etc/hosts managed by the kubelet (the node's own for hostNetwork pods), /etc/resolv.conf.
    let hosts_path = pdir.join("etc-hosts");
    let (hostname, domain) = crate::pods::dns::hostname_and_domain(pod, &ctx.dns.cluster_domain)
        .map_err(|e| StartError::new("CreateContainerConfigError", e))?;
    let host_hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").ok()
    } else {
        None
    };
    let _ = std::fs::create_dir_all(&pdir);
    std::fs::write(
        &hosts_path,
        inputs::hosts_file(pod, &pod_ip, host_hosts.as_deref(), &hostname, domain.as_deref()),
    )
    .map_err(|e| StartError::new("CreateContainerError", format!("writing /etc/hosts: {e}")))?;
    if !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
        mounts.push(BindMount {
            host_path: hosts_path,
            container_path: "/etc/hosts".into(),
            read_only: false,
            host_to_container: false,
        });
    }
    let resolv = pdir.join("resolv.conf");
    if resolv.exists() && !mounts.iter().any(|m| m.container_path == "/etc/resolv.conf") {
        // containerd's CRI mounts it writable unless the root filesystem is read-only.
        let read_only_rootfs = c
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false);
        mounts.push(BindMount {
            host_path: resolv,
            container_path: "/etc/resolv.conf".into(),
            read_only: read_only_rootfs,
            host_to_container: false,
        });
    }
    let id = format!(
        "{}-{}-{}",
        &uid.chars().take(8).collect::<String>(),
        name,
        attempt
    );
    let id = format!("{id}-{:x}", Timestamp::now().as_nanosecond() & 0xffffff);
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let term_host = pdir.join("containers").join(name).join(&id);
    create_termination_file(&term_host).map_err(|e| {
        StartError::new(
            "CreateContainerConfigError",
            format!("create termination message file {}: {e}", term_host.display()),
        )
    })?;
    mounts.push(BindMount {
        host_path: term_host.clone(),
        container_path: term_path,
        read_only: false,
        host_to_container: false,
    });
    let sandbox_dir = observed.sandbox.as_ref().map(|s| ctx.sandbox_root().join(&s.id));
    let sb = sandbox::Sandbox {
        id: observed
            .sandbox
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default(),
        dir: sandbox_dir.clone().unwrap_or_default(),
        net: sandbox_dir.as_ref().map(|d| d.join("net")).filter(|p| p.exists()),
        ipc: sandbox_dir.as_ref().map(|d| d.join("ipc")).filter(|p| p.exists()),
        uts: sandbox_dir.as_ref().map(|d| d.join("uts")).filter(|p| p.exists()),
        host_pid: pod.spec.as_ref().and_then(|s| s.host_pid).unwrap_or(false),
    };
    let img = ImageConfig::from_json(&info.config);
    // The pod's cgroup (and its QoS parents) exist with the pod's limits before a container joins.
    ctx.cgroups.ensure_pod(pod).map_err(|e| {
        StartError::new(
            "CreateContainerError",
            format!("failed to ensure that the pod: {uid} cgroups exist and are correctly applied: {e}"),
        )
    })?;
    let cgroups_path = ctx.cgroups.container_path(pod, &id);
    let (resources, oom_score_adj) = ctx.cgroups.container_resources(pod, c);
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    // The image's /etc/passwd and /etc/group, for a named USER and the user's groups.
    let users = crate::runtime::passwd::image_user_db(ctx.containers.containerd(), &info.top_chain_id)
        .await
        .map_err(|e| StartError::new("CreateContainerError", e.to_string()))?;
    let input = SpecInput {
        pod,
        container: &expanded,
        image: &img,
        env: env.clone(),
        namespaces: sb.namespaces(),
        hostname,
        mounts,
        passwd: users.passwd.clone(),
        group: users.group.clone(),
        cgroups_path: cgroups_path.clone(),
        oom_score_adj,
        resources,
        rootfs: "rootfs".into(),
    };
    let mut spec = container_spec(&input).map_err(|e| StartError::new(e.reason(), e.to_string()))?;
    crate::spec::security::finish(&mut spec, pod, c, &ctx.root_dir)?;
    let created = ctx
        .containers
        .create(CreateContainer {
            id: id.clone(),
            meta: ContainerMeta {
                pod_uid: uid.clone(),
                pod_namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                container_name: name.to_string(),
                restart_count: attempt,
                spec_hash: spec_hash.to_string(),
            },
            image: info.name.clone(),
            parent_snapshot: info.top_chain_id.clone(),
            spec,
            log_dir: ctx.pod_log_dir(pod),
            fifo_dir: ctx.root_dir.join("fifo"),
            log_rotation: ctx.log_rotation,
            stdin: crate::runtime::stdin::StdinConfig {
                open: c.stdin.unwrap_or(false),
                once: c.stdin_once.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
            },
        })
        .await
        .map_err(|e| StartError::new("CreateContainerError", e.to_string()))?;
    let repo = info.name.rsplit_once(':').map(|(r, _)| r).unwrap_or(&info.name);
    let repo = repo.split('@').next().unwrap_or(repo);
    let mut f = Facts {
        pod_uid: uid.clone(),
        created_at: Some(Timestamp::now()),
        image_id: format!("{repo}@{}", info.manifest_digest),
        cgroups_path: created.cgroups_path.clone(),
        termination_file: Some(term_host),
        termination_policy: c
            .termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
        log_path: Some(created.log_path.clone()),
        ..Default::default()
    };
    ctx.save_facts(&id, f.clone());
    event(
        ctx,
        pod,
        Some(name),
        "Normal",
        "Created",
        format!("Created container {name}"),
    );
    lock(&ctx.handles).insert(id.clone(), created);
    ctx.containers
        .start(&id)
        .await
        .map_err(|e| StartError::new("RunContainerError", e.to_string()))?;
    f.started_at = Some(Timestamp::now());
    ctx.save_facts(&id, f);
    event(
        ctx,
        pod,
        Some(name),
        "Normal",
        "Started",
        format!("Started container {name}"),
    );
    tracing::info!(pod = %pod_name(pod), container = name, id, attempt, "container started");
    if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        post_start(ctx, pod, c, &id, handler).await?;
    }
    Ok(())
}

/// Upstream's `format.Pod`: `name_namespace(uid)`.
fn pod_format(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        uid_of(pod)
    )
}

/// Runs a lifecycle hook of container `id`; the error is the message for the pod's status.
async fn run_hook(
    ctx: &NodeContext,
    pod: &Pod,
    c: &Container,
    id: &str,
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    kind: hooks::HookKind,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let action = hooks::action(handler, c, &pod_ip_for(ctx, pod, &uid_of(pod)))?;
    let exec_id = match kind {
        hooks::HookKind::PostStart => "poststart-hook",
        hooks::HookKind::PreStop => "prestop-hook",
    };
    let fifo_dir = ctx.root_dir.join("hook-fifo");
    hooks::run(
        ctx.containers.containerd(),
        &fifo_dir,
        id,
        exec_id,
        &action,
        timeout,
    )
    .await
    .map_err(|f| hooks::failure_message(&action, &c.name, &pod_format(pod), &f.error, &f.output))
}

/// postStart: blocks this pod's worker until done, as upstream; a failure kills the container
/// (which then restarts per policy) and is reported as `PostStartHookError`.
async fn post_start(
    ctx: &NodeContext,
    pod: &Pod,
    c: &Container,
    id: &str,
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
) -> Result<(), StartError> {
    let Err(message) = run_hook(ctx, pod, c, id, handler, hooks::HookKind::PostStart, None).await else {
        return Ok(());
    };
    tracing::warn!(pod = %pod_name(pod), container = %c.name, id, error = %message, "postStart hook failed");
    // Upstream leaves the message out of the event so that secrets cannot leak through it.
    event(
        ctx,
        pod,
        Some(&c.name),
        "Warning",
        "FailedPostStartHook",
        "PostStartHook failed".into(),
    );
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    kill_container(ctx, pod, id, &c.name, grace, "FailedPostStartHook").await;
    Err(StartError::new("PostStartHookError", message))
}

/// The shortest grace period a container gets (upstream's `minimumGracePeriodInSeconds`).
const MIN_GRACE_SECONDS: i64 = 2;

async fn kill_container(ctx: &NodeContext, pod: &Pod, id: &str, name: &str, grace: i64, message: &str) {
    if !message.is_empty() {
        event(ctx, pod, Some(name), "Normal", "Killing", message.to_string());
    }
    let mut grace = grace.max(0);
    // preStop runs first, within the grace period (upstream: only when there is one).
    if let Some((c, handler)) =
        find_container(pod, name).and_then(|(c, _)| Some((c, c.lifecycle.as_ref()?.pre_stop.as_ref()?)))
        && grace > 0
    {
        let started = std::time::Instant::now();
        let limit = Duration::from_secs(grace as u64);
        if let Err(message) = run_hook(ctx, pod, c, id, handler, hooks::HookKind::PreStop, Some(limit)).await
        {
            tracing::warn!(pod = %pod_name(pod), container = name, id, error = %message, "preStop hook failed");
            event(
                ctx,
                pod,
                Some(name),
                "Warning",
                "FailedPreStopHook",
                "PreStopHook failed".into(),
            );
        }
        grace -= started.elapsed().as_secs() as i64;
    }
    // Upstream always leaves a minimal shutdown window to avoid needless SIGKILLs.
    let grace = Duration::from_secs(grace.max(MIN_GRACE_SECONDS) as u64);
    match ctx.containers.stop(id, libc::SIGTERM as u32, grace).await {
        Ok((status, _)) => {
            let mut f = ctx.facts(id).unwrap_or_else(|| Facts {
                pod_uid: uid_of(pod),
                ..Default::default()
            });
            if f.finished_at.is_none() {
                f.finished_at = Some(Timestamp::now());
                f.exit_code = Some(status.code);
                f.oom = f.oom || crate::runtime::container::oom_killed(&f.cgroups_path);
                f.message = termination_message(&f, status.code);
                ctx.save_facts(id, f);
            }
        }
        Err(e) => {
            tracing::warn!(pod = %pod_name(pod), container = name, id, error = %e, "stopping container failed")
        }
    }
}

async fn remove_container(ctx: &NodeContext, id: &str) {
    ctx.probes.remove_container(id);
    let handle = lock(&ctx.handles).remove(id);
    let r = match handle {
        Some(mut h) => {
            let h = tokio::task::spawn_blocking(move || {
                h.flush_logs();
                h
            })
            .await;
            match h {
                Ok(h) => ctx.containers.remove(&h).await,
                Err(_) => ctx.containers.delete(id).await,
            }
        }
        None => {
            let r = ctx.containers.delete(id).await;
            let _ = std::fs::remove_dir_all(ctx.root_dir.join("fifo").join(id));
            if let Some(f) = ctx.facts(id) {
                crate::runtime::container::remove_cgroup_dirs(&f.cgroups_path);
            }
            r
        }
    };
    if let Err(e) = r {
        tracing::warn!(container = id, error = %e, "removing container failed");
    }
    ctx.forget_facts(id);
}

/// Removes everything of a pod from the node: containers, sandboxes, volumes, logs.
pub async fn remove_pod(ctx: &NodeContext, pod: &Pod) {
    let uid = uid_of(pod);
    let mine: Vec<_> = ctx.containers.list_pod(&uid).await.unwrap_or_default();
    for l in mine {
        if matches!(l.state, TaskState::Running { .. }) {
            let _ = ctx
                .containers
                .stop(&l.id, libc::SIGKILL as u32, Duration::from_secs(1))
                .await;
        }
        remove_container(ctx, &l.id).await;
    }
    for (_, id) in sandboxes_of(&ctx.sandbox_root(), &uid) {
        teardown_sandbox(ctx, pod, &id).await;
    }
    ctx.volumes.teardown(&ctx.root_dir, &uid);
    let _ = std::fs::remove_dir_all(ctx.pod_log_dir(pod));
    if let Err(e) = ctx.cgroups.remove_pod(&uid) {
        tracing::warn!(pod = %pod_name(pod), error = %e, "removing the pod's cgroups failed");
    }
    lock(&ctx.book).forget_pod(&uid);
}

/// Where status goes: the pod itself, or a static pod's mirror.
fn status_target(pod: &Pod) -> Option<(String, String)> {
    Some((
        pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone()?,
    ))
}

async fn patch_status(ctx: &NodeContext, pod: &Pod, status: &PodStatus) -> Result<(), kube::Error> {
    let Some((ns, name)) = status_target(pod) else {
        return Ok(());
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut patch = crate::pods::status::status_patch(status);
    if let Some(uid) = &pod.metadata.uid
        && !is_static(pod)
    {
        // Guard against patching a newer pod with the same name.
        patch["metadata"] = serde_json::json!({"uid": uid});
    }
    api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(())
}

/// Whether the pod comes from the static manifest directory.
pub fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.get("kubernetes.io/config.source").is_some_and(|s| s == "file"))
}

/// How long a worker waits after a failed action before trying again.
const FAILED_SYNC_BACKOFF: Duration = Duration::from_secs(3);

/// Runs one pod's worker until the pod is gone.
pub async fn run(
    ctx: Arc<NodeContext>,
    mut pod: Pod,
    mut state: WorkerState,
    mut rx: mpsc::Receiver<WorkerMsg>,
) {
    let uid = uid_of(&pod);
    let mut start_errors: BTreeMap<String, StartError> = BTreeMap::new();
    let mut removed = false;
    // The pod left its source (force-deleted, or a static manifest removed): no API writes for it.
    let mut orphaned = false;
    let mut closed = false;
    let mut start_sli = crate::metrics::PodStartTracker::new(&pod);
    let mut shutdown: Option<i64> = None;
    let mut evicted: Option<crate::eviction::manager::Eviction> = None;
    let mut volumes_freed = false;
    tracing::info!(pod = %pod_name(&pod), uid, "pod worker started");
    loop {
        let now = Timestamp::now();
        let mut observed = observe(&ctx, &pod, &start_errors).await;
        let (plan, next) = {
            let book = lock(&ctx.book);
            pods::step(
                state,
                &pods::Input {
                    pod: &pod,
                    observed: &observed,
                    backoff: &book,
                    now,
                },
            )
        };
        state = next;
        lock(&ctx.book).apply(&plan.backoff, now);
        for (c, e) in plan.start_errors.iter().cloned() {
            if e.reason == "CrashLoopBackOff"
                && start_errors
                    .get(&c)
                    .is_none_or(|x| x.reason != "CrashLoopBackOff")
            {
                event(
                    &ctx,
                    &pod,
                    Some(&c),
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container".into(),
                );
            }
            start_errors.insert(c, e);
        }
        let ran = !plan.actions.is_empty();
        let mut failed_containers: BTreeSet<String> = BTreeSet::new();
        let mut sandbox_failed = false;
        for action in plan.actions {
            if sandbox_failed {
                break;
            }
            match action {
                Action::CreateSandbox { attempt } => {
                    if let Err(e) = create_sandbox(&ctx, &pod, attempt).await {
                        tracing::warn!(pod = %pod_name(&pod), error = %e.message, "sandbox creation failed");
                        event(
                            &ctx,
                            &pod,
                            None,
                            "Warning",
                            if e.reason == crate::network::NETWORK_NOT_READY_REASON {
                                crate::network::NETWORK_NOT_READY_REASON
                            } else {
                                "FailedCreatePodSandBox"
                            },
                            e.message.clone(),
                        );
                        sandbox_failed = true;
                        crate::metrics::registry().pod_start_failed();
                    } else {
                        crate::metrics::registry().pod_started();
                        // Containers started next join the new sandbox and see its IP.
                        observed = observe(&ctx, &pod, &start_errors).await;
                    }
                }
                Action::PullImage { container, image } => {
                    if failed_containers.contains(&container) {
                        continue;
                    }
                    event(
                        &ctx,
                        &pod,
                        Some(&container),
                        "Normal",
                        "Pulling",
                        format!("Pulling image \"{image}\""),
                    );
                    let started = std::time::Instant::now();
                    let policy = find_container(&pod, &container)
                        .and_then(|(c, _)| PullPolicy::from_spec(c.image_pull_policy.as_deref(), &image).ok())
                        .unwrap_or(PullPolicy::IfNotPresent);
                    let auth = pull_auth(&ctx, &pod, &image).await;
                    match ctx.images.ensure(&image, policy, &auth, &|_| {}).await {
                        Ok(info) => {
                            let secs = started.elapsed().as_secs_f64();
                            start_sli.pulled(secs);
                            event(
                                &ctx,
                                &pod,
                                Some(&container),
                                "Normal",
                                "Pulled",
                                format!(
                                    "Successfully pulled image \"{image}\" in {secs:.3}s ({secs:.3}s including waiting). Image size: {} bytes.",
                                    info.size
                                ),
                            );
                        }
                        Err(e) => {
                            let reason = e.reason();
                            event(
                                &ctx,
                                &pod,
                                Some(&container),
                                "Warning",
                                "Failed",
                                format!("Failed to pull image \"{image}\": {e}"),
                            );
                            event(
                                &ctx,
                                &pod,
                                Some(&container),
                                "Warning",
                                "Failed",
                                format!("Error: {reason}"),
                            );
                            lock(&ctx.book).pull_failed(
                                &uid,
                                &image,
                                reason,
                                &e.to_string(),
                                Timestamp::now(),
                            );
                            start_errors.insert(container.clone(), StartError::new(reason, e.to_string()));
                            failed_containers.insert(container);
                        }
                    }
                }
                Action::StartContainer {
                    container,
                    attempt,
                    spec_hash,
                    ..
                } => {
                    if failed_containers.contains(&container) {
                        continue;
                    }
                    match start_container(&ctx, &pod, &container, attempt, &spec_hash, &observed).await {
                        Ok(()) => {
                            start_errors.remove(&container);
                            crate::metrics::registry()
                                .container_started(find_container(&pod, &container).is_some_and(|(_, i)| i));
                        }
                        Err(e) if e.reason == volumes::WAITING_REASON => {
                            // Volumes not set up: the FailedMount event was recorded.
                            start_errors.insert(container.clone(), e);
                            failed_containers.insert(container);
                        }
                        Err(e) if e.reason == "PostStartHookError" => {
                            // Already reported (FailedPostStartHook, Killing); restarts per policy.
                            start_errors.insert(container.clone(), e);
                        }
                        Err(e) => {
                            tracing::warn!(pod = %pod_name(&pod), container, reason = e.reason, error = %e.message, "container start failed");
                            crate::metrics::registry().container_start_failed(
                                &e.reason,
                                find_container(&pod, &container).is_some_and(|(_, i)| i),
                            );
                            event(
                                &ctx,
                                &pod,
                                Some(&container),
                                "Warning",
                                "Failed",
                                format!("Error: {}", e.message),
                            );
                            start_errors.insert(container.clone(), e);
                            failed_containers.insert(container);
                        }
                    }
                }
                Action::KillContainer {
                    id,
                    container,
                    grace_seconds,
                    message,
                } => {
                    kill_container(&ctx, &pod, &id, &container, grace_seconds, &message).await;
                }
                Action::RemoveContainer { id, .. } => remove_container(&ctx, &id).await,
                Action::KillPod { grace_seconds, .. } => {
                    let running: Vec<ContainerAttempt> = observed
                        .containers
                        .iter()
                        .filter(|c| c.state.is_running())
                        .cloned()
                        .collect();
                    let messages: Vec<String> = running
                        .iter()
                        .map(|c| format!("Stopping container {}", c.name))
                        .collect();
                    let mut kills: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> =
                        Vec::new();
                    for (c, m) in running.iter().zip(&messages) {
                        kills.push(Box::pin(kill_container(
                            &ctx,
                            &pod,
                            &c.id,
                            &c.name,
                            grace_seconds,
                            m,
                        )));
                    }
                    futures::future::join_all(kills).await;
                    for (_, id) in sandboxes_of(&ctx.sandbox_root(), &uid) {
                        teardown_sandbox(&ctx, &pod, &id).await;
                    }
                }
                Action::RemovePod => {
                    remove_pod(&ctx, &pod).await;
                    removed = true;
                }
            }
        }
        let observed = if ran {
            observe(&ctx, &pod, &start_errors).await
        } else {
            observed
        };
        let status = pods::status(&pod, &observed, Timestamp::now(), &ctx.node_ip);
        start_sli.observe(&pod, &status);
        let status = match shutdown {
            Some(_) => crate::shutdown::terminated_status(status, Timestamp::now()),
            None => status,
        };
        let status = match &evicted {
            Some(e) => crate::eviction::evicted_status(status, &e.message, e.disruption, Timestamp::now()),
            None => status,
        };
        let old = pod.status.clone().unwrap_or_default();
        if pods::status_changed(&old, &status)
            && !orphaned
            && !(removed && matches!(state, WorkerState::Finished))
        {
            match patch_status(&ctx, &pod, &status).await {
                Ok(()) => {
                    tracing::info!(pod = %pod_name(&pod), phase = status.phase.as_deref().unwrap_or(""), "status updated");
                    pod.status = Some(status);
                }
                Err(e) => tracing::warn!(pod = %pod_name(&pod), error = %e, "status update failed"),
            }
        }
        if shutdown.is_some() && !matches!(state, WorkerState::Syncing) {
            tracing::info!(pod = %pod_name(&pod), uid, "pod stopped for the node shutdown");
            return;
        }
        if evicted.is_some() && !volumes_freed && !matches!(state, WorkerState::Syncing) {
            // As upstream frees a terminated pod's volumes: an evicted pod gives its disk back.
            ctx.volumes.teardown(&ctx.root_dir, &uid);
            volumes_freed = true;
        }
        if matches!(state, WorkerState::Finished) {
            if removed
                && pod.metadata.deletion_timestamp.is_some()
                && !is_static(&pod)
                && !orphaned
                && let Some((ns, name)) = status_target(&pod)
            {
                {
                    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(kube::api::Preconditions {
                            uid: pod.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => tracing::info!(pod = %pod_name(&pod), "pod deleted from the API server"),
                        Err(e) => {
                            tracing::warn!(pod = %pod_name(&pod), error = %e, "final pod deletion failed")
                        }
                    }
                }
            }
            tracing::info!(pod = %pod_name(&pod), uid, "pod worker finished");
            return;
        }
        volumes::resync(&ctx, &pod, &observed).await;
        let wake = plan
            .wake_at
            .map(|w| {
                Duration::from_millis(w.duration_since(Timestamp::now()).as_millis().clamp(0, 10_000) as u64)
            })
            .unwrap_or(Duration::from_secs(10));
        // After a failed action, back off (as upstream's pod workers requeue a failed sync) and let
        // container events not wake us early; a pod update still does.
        let backoff = if failed_containers.is_empty() && !sandbox_failed {
            Duration::ZERO
        } else {
            FAILED_SYNC_BACKOFF
        };
        let turn_started = std::time::Instant::now();
        loop {
            if closed {
                tokio::time::sleep(wake.max(backoff)).await;
                break;
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(WorkerMsg::Update(p)) => {
                        let keep = pod.status.clone();
                        pod = *p;
                        if pod.status.is_none() { pod.status = keep; }
                        break;
                    }
                    Some(WorkerMsg::Poke) => {
                        if turn_started.elapsed() >= backoff {
                            break;
                        }
                    }
                    Some(WorkerMsg::Shutdown { grace_seconds }) => {
                        shutdown = Some(grace_seconds);
                        break;
                    }
                    Some(WorkerMsg::Evict(e)) => {
                        evicted = Some(e);
                        break;
                    }
                    Some(WorkerMsg::Removed) | None => {
                        closed = true;
                        orphaned = true;
                        if pod.metadata.deletion_timestamp.is_none() {
                            pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
                            pod.metadata.deletion_grace_period_seconds = Some(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30));
                        }
                        break;
                    }
                },
                _ = tokio::time::sleep(wake.max(backoff).saturating_sub(turn_started.elapsed())) => break,
            }
        }
        // Coalesce a burst of messages.
        while let Ok(msg) = rx.try_recv() {
            if matches!(msg, WorkerMsg::Removed) {
                orphaned = true;
                if pod.metadata.deletion_timestamp.is_none() {
                    pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
                }
            }
            if let WorkerMsg::Shutdown { grace_seconds } = msg {
                shutdown = Some(grace_seconds);
            }
            let msg = match msg {
                WorkerMsg::Evict(e) => {
                    evicted = Some(e);
                    continue;
                }
                other => other,
            };
            if let WorkerMsg::Update(p) = msg {
                let keep = pod.status.clone();
                pod = *p;
                if pod.status.is_none() {
                    pod.status = keep;
                }
            }
        }
        // Kept across pod updates: a shutdown stops the pod for good.
        if let Some(grace) = shutdown {
            crate::shutdown::mark_for_shutdown(&mut pod, grace);
        }
        if let Some(e) = &evicted {
            crate::shutdown::mark_for_shutdown(&mut pod, e.grace_seconds);
        }
    }
}

/// The host file bind-mounted at the container's `terminationMessagePath`. Mode 0666 whatever the
/// umask, as upstream: a container running as any user must be able to write its last words.
fn create_termination_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, b"")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
}

/// Writes the pod's resolv.conf (upstream's `GetPodDNS` for its `dnsPolicy` and `dnsConfig`) into the
/// pod directory, where each container mounts it; forming warnings become events on the pod.
fn write_resolv_conf(ctx: &NodeContext, pod: &Pod) -> Result<(), StartError> {
    let node_dns = ctx
        .dns
        .load()
        .map_err(|e| StartError::new("CreatePodSandboxError", e))?;
    let (conf, warnings) = crate::pods::dns::pod_resolv_conf(pod, &node_dns);
    for w in warnings {
        event(ctx, pod, None, "Warning", w.reason, w.message);
    }
    let pdir = volumes::pod_dir(&ctx.root_dir, &uid_of(pod));
    std::fs::create_dir_all(&pdir)
        .and_then(|()| std::fs::write(pdir.join("resolv.conf"), conf.render()))
        .map_err(|e| StartError::new("CreatePodSandboxError", format!("writing resolv.conf: {e}")))
}
