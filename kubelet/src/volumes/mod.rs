//! Pod volumes on the node: emptyDir (on disk, or `medium: Memory` as a tmpfs with its
//! sizeLimit), configMap, secret, downwardAPI, projected (ServiceAccount token, configMap, secret,
//! downwardAPI — what the ServiceAccount admission plugin injects into every pod) and hostPath
//! (with upstream's type checks), set up under `<root>/pods/<uid>/volumes/<plugin>/<name>` before a
//! container of the pod starts and bind-mounted per `volumeMounts` (readOnly, subPath,
//! subPathExpr with escape checks, mountPropagation).
//!
//! Secrets, downward API and projected volumes live on a tmpfs of their own (never on disk), as
//! upstream's memory-backed wrappers. configMap, secret, downwardAPI and projected files go through
//! the [`atomic`] writer, and [`resync`] rewrites them for running pods every sync period
//! (`syncFrequency`), so updates to the ConfigMap/Secret (and to the pod's labels and annotations,
//! and service-account tokens nearing expiry) reach running containers; immutable objects are not
//! fetched again. fsGroup gives the volumes to the pod's group (setgid directories) per
//! `fsGroupChangePolicy`. A failure is upstream's `FailedMount` event and a container waiting in
//! `ContainerCreating`; other pods are unaffected. Teardown unmounts everything of the pod.

pub mod atomic;
pub mod host;
pub mod token;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::Api;

use crate::inputs::{PodFacts, PodRefs};
use crate::pods::executor::NodeContext;
use crate::pods::{Observed, StartError};
use crate::spec::BindMount;
use atomic::{FileProjection, Payload};
use host::Access;

/// Volume failures (upstream reports them as FailedMount events; the container waits).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Upstream's FailedMount message.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    Setup { volume: String, message: String },
    #[error("MountVolume.SetUp failed for volume {volume:?} : {path}: {source}")]
    Io {
        volume: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl VolumeError {
    /// The volume the error is about.
    pub fn volume(&self) -> &str {
        match self {
            VolumeError::Setup { volume, .. } | VolumeError::Io { volume, .. } => volume,
        }
    }

    /// What a container waiting for this volume shows: upstream keeps it in `ContainerCreating`
    /// (the details are in the FailedMount event).
    pub fn start_error(&self) -> StartError {
        StartError::new(WAITING_REASON, "")
    }
}

/// The waiting reason of a container whose volumes are not set up.
pub const WAITING_REASON: &str = "ContainerCreating";

/// `<root>/pods/<uid>`.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// `<root>/pods/<uid>/volumes`.
pub fn volumes_dir(root: &Path, uid: &str) -> PathBuf {
    pod_dir(root, uid).join("volumes")
}

fn io(volume: &str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let volume = volume.to_string();
    let path = path.to_path_buf();
    move |source| VolumeError::Io { volume, path, source }
}

fn setup_err(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::Setup {
        volume: volume.into(),
        message: message.into(),
    }
}

/// Adds a file to a payload, refusing paths that would escape the volume.
fn put(volume: &str, payload: &mut Payload, rel: &str, data: Vec<u8>, mode: i32) -> Result<(), VolumeError> {
    atomic::validate_path(rel).map_err(|e| setup_err(volume, e.to_string()))?;
    payload.insert(
        rel.to_string(),
        FileProjection {
            data,
            mode: (mode & 0o777) as u32,
        },
    );
    Ok(())
}

/// A configMap or secret a volume (or a projection) draws keys from.
struct KeySource<'a> {
    /// `ConfigMap` or `Secret` (upstream's wording in messages).
    kind: &'static str,
    name: &'a str,
    /// The object's keys; `None` when it does not exist.
    data: Option<Vec<(String, Vec<u8>)>>,
    items: Option<&'a Vec<KeyToPath>>,
    optional: bool,
}

/// Adds the source's keys, or only `items` when given (upstream's key-to-path projection). A
/// missing object or key is an error unless the source is optional.
fn project_keys(
    volume: &str,
    payload: &mut Payload,
    src: &KeySource<'_>,
    default_mode: i32,
) -> Result<(), VolumeError> {
    let Some(data) = &src.data else {
        if src.optional {
            return Ok(());
        }
        return Err(setup_err(
            volume,
            format!("{} \"{}\" not found", src.kind.to_lowercase(), src.name),
        ));
    };
    match src.items {
        None => {
            for (k, v) in data {
                put(volume, payload, k, v.clone(), default_mode)?;
            }
        }
        Some(items) => {
            for it in items {
                match data.iter().find(|(k, _)| *k == it.key) {
                    Some((_, v)) => put(
                        volume,
                        payload,
                        &it.path,
                        v.clone(),
                        it.mode.unwrap_or(default_mode),
                    )?,
                    None if src.optional => {}
                    None => {
                        return Err(setup_err(
                            volume,
                            format!(
                                "configuration key {:?} not found in {} {:?}",
                                it.key, src.kind, src.name
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn configmap_data(refs: &PodRefs, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let cm = refs.configmaps.get(name).cloned().flatten()?;
    let mut out: Vec<(String, Vec<u8>)> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    out.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    Some(out)
}

fn secret_data(refs: &PodRefs, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let s = refs.secrets.get(name).cloned().flatten()?;
    Some(
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    )
}

fn downward_items(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    facts: &PodFacts,
) -> Vec<(String, Vec<u8>, Option<i32>)> {
    let env_like: Vec<k8s_openapi::api::core::v1::EnvVar> = items
        .iter()
        .map(|i| k8s_openapi::api::core::v1::EnvVar {
            name: i.path.clone(),
            value: None,
            value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                field_ref: i.field_ref.clone(),
                resource_field_ref: i.resource_field_ref.clone(),
                ..Default::default()
            }),
        })
        .collect();
    let container = Container {
        name: "downward-api".into(),
        env: Some(env_like),
        ..pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first().cloned())
            .unwrap_or_default()
    };
    let resolved = crate::inputs::container_env(
        pod,
        &Container {
            env_from: None,
            ..container
        },
        &PodRefs::default(),
        facts,
    )
    .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| {
            resolved
                .iter()
                .find(|(k, _)| *k == i.path)
                .map(|(_, v)| (i.path.clone(), v.clone().into_bytes(), i.mode))
        })
        .collect()
}

/// The pod's effective fsGroup and its change policy (`Always` unless `OnRootMismatch`).
fn fs_group(pod: &Pod) -> Option<(u32, bool)> {
    let psc = pod.spec.as_ref()?.security_context.as_ref()?;
    let gid = u32::try_from(psc.fs_group?).ok()?;
    let on_root_mismatch = psc.fs_group_change_policy.as_deref() == Some("OnRootMismatch");
    Some((gid, on_root_mismatch))
}

/// What kind of volume, for setup and resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    EmptyDir,
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
    HostPath,
}

fn kind_of(v: &Volume) -> Option<Kind> {
    Some(if v.empty_dir.is_some() {
        Kind::EmptyDir
    } else if v.config_map.is_some() {
        Kind::ConfigMap
    } else if v.secret.is_some() {
        Kind::Secret
    } else if v.downward_api.is_some() {
        Kind::DownwardApi
    } else if v.projected.is_some() {
        Kind::Projected
    } else if v.host_path.is_some() {
        Kind::HostPath
    } else {
        return None;
    })
}

fn plugin_dir(kind: Kind) -> &'static str {
    match kind {
        Kind::EmptyDir => "kubernetes.io~empty-dir",
        Kind::ConfigMap => "kubernetes.io~configmap",
        Kind::Secret => "kubernetes.io~secret",
        Kind::DownwardApi => "kubernetes.io~downward-api",
        Kind::Projected => "kubernetes.io~projected",
        Kind::HostPath => "kubernetes.io~host-path",
    }
}

/// The files a configMap, secret, downwardAPI or projected volume holds right now.
async fn payload_of(
    v: &Volume,
    pod: &Pod,
    refs: &PodRefs,
    facts: &PodFacts,
    client: &kube::Client,
    tokens: &token::TokenCache,
) -> Result<Payload, VolumeError> {
    let name = v.name.as_str();
    let mut payload = Payload::new();
    if let Some(c) = &v.config_map {
        let src = KeySource {
            kind: "ConfigMap",
            name: &c.name,
            data: configmap_data(refs, &c.name),
            items: c.items.as_ref(),
            optional: c.optional == Some(true),
        };
        project_keys(name, &mut payload, &src, c.default_mode.unwrap_or(0o644))?;
    } else if let Some(s) = &v.secret {
        let sname = s.secret_name.clone().unwrap_or_default();
        let src = KeySource {
            kind: "Secret",
            name: &sname,
            data: secret_data(refs, &sname),
            items: s.items.as_ref(),
            optional: s.optional == Some(true),
        };
        project_keys(name, &mut payload, &src, s.default_mode.unwrap_or(0o644))?;
    } else if let Some(dw) = &v.downward_api {
        let mode = dw.default_mode.unwrap_or(0o644);
        for (p, data, m) in downward_items(pod, dw.items.as_deref().unwrap_or_default(), facts) {
            put(name, &mut payload, &p, data, m.unwrap_or(mode))?;
        }
    } else if let Some(pr) = &v.projected {
        let mode = pr.default_mode.unwrap_or(0o644);
        for src in pr.sources.iter().flatten() {
            if let Some(t) = &src.service_account_token {
                let tok = tokens
                    .get(
                        client,
                        pod,
                        t.audience.as_deref(),
                        t.expiration_seconds.unwrap_or(3600),
                    )
                    .await
                    .map_err(|m| setup_err(name, m))?;
                // With fsGroup the token is for the owner only, then readable by the group.
                let tmode = if fs_group(pod).is_some() { 0o600 } else { mode };
                put(name, &mut payload, &t.path, tok.into_bytes(), tmode)?;
            }
            if let Some(c) = &src.config_map {
                let keys = KeySource {
                    kind: "ConfigMap",
                    name: &c.name,
                    data: configmap_data(refs, &c.name),
                    items: c.items.as_ref(),
                    optional: c.optional == Some(true),
                };
                project_keys(name, &mut payload, &keys, mode)?;
            }
            if let Some(s) = &src.secret {
                let keys = KeySource {
                    kind: "Secret",
                    name: &s.name,
                    data: secret_data(refs, &s.name),
                    items: s.items.as_ref(),
                    optional: s.optional == Some(true),
                };
                project_keys(name, &mut payload, &keys, mode)?;
            }
            if let Some(dw) = &src.downward_api {
                for (p, data, m) in downward_items(pod, dw.items.as_deref().unwrap_or_default(), facts) {
                    put(name, &mut payload, &p, data, m.unwrap_or(mode))?;
                }
            }
        }
    }
    Ok(payload)
}

/// Publishes a payload volume's files (atomic writer) with the pod's fsGroup applied.
fn publish(volume: &str, dir: &Path, payload: &Payload, pod: &Pod) -> Result<bool, VolumeError> {
    let group = fs_group(pod);
    let hook = |ts: &Path| -> std::io::Result<()> {
        match group {
            Some((gid, _)) => host::set_ownership(ts, gid, Access::ReadOnly),
            None => Ok(()),
        }
    };
    let changed = atomic::write(dir, payload, &hook).map_err(|e| setup_err(volume, e.to_string()))?;
    if let Some((gid, _)) = group {
        own_root(dir, gid, Access::ReadOnly).map_err(io(volume, dir))?;
    }
    Ok(changed)
}

/// fsGroup on a volume's root directory alone (its contents were handled when written).
fn own_root(dir: &Path, gid: u32, access: Access) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(dir)?;
    let mask = match access {
        Access::ReadOnly => 0o440,
        Access::ReadWrite => 0o660,
    };
    if m.gid() != gid {
        std::os::unix::fs::chown(dir, None, Some(gid))?;
    }
    let mode = (m.permissions().mode() & 0o7777) | mask | 0o2000 | 0o110;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Upstream's `medium: Memory` size: the sizeLimit when given.
fn memory_size(v: &Volume) -> Result<Option<u64>, VolumeError> {
    let Some(q) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) else {
        return Ok(None);
    };
    crate::pods::resources::parse_quantity(&q.0)
        // Nano-units → bytes, rounded up.
        .map(|nano| Some((nano.max(0) + 999_999_999) as u64 / 1_000_000_000))
        .map_err(|e| setup_err(&v.name, format!("invalid sizeLimit {:?}: {e}", q.0)))
}

/// Checks (and for the *OrCreate types, creates) a hostPath per its `type`, with upstream's
/// messages.
fn host_path(name: &str, path: &str, typ: &str) -> Result<PathBuf, VolumeError> {
    use std::os::unix::fs::FileTypeExt;
    let p = PathBuf::from(path);
    let ft = std::fs::metadata(&p).map(|m| m.file_type());
    let fail = |what: &str| {
        Err(setup_err(
            name,
            format!("hostPath type check failed: {path} is not {what}"),
        ))
    };
    match typ {
        "" => {}
        "DirectoryOrCreate" => {
            if ft.is_err() {
                std::fs::create_dir_all(&p).map_err(io(name, &p))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).map_err(io(name, &p))?;
            } else if !ft.as_ref().is_ok_and(|f| f.is_dir()) {
                return fail("a directory");
            }
        }
        "FileOrCreate" => {
            if ft.is_err() {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(io(name, parent))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(io(name, &p))?;
            } else if !ft.as_ref().is_ok_and(|f| f.is_file()) {
                return fail("a file");
            }
        }
        "Directory" if !ft.as_ref().is_ok_and(|f| f.is_dir()) => return fail("a directory"),
        "File" if !ft.as_ref().is_ok_and(|f| f.is_file()) => return fail("a file"),
        "Socket" if !ft.as_ref().is_ok_and(|f| f.is_socket()) => return fail("a socket file"),
        "CharDevice" if !ft.as_ref().is_ok_and(|f| f.is_char_device()) => return fail("a character device"),
        "BlockDevice" if !ft.as_ref().is_ok_and(|f| f.is_block_device()) => return fail("a block device"),
        "Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice" => {}
        other => {
            return Err(setup_err(
                name,
                format!("hostPath type {other:?} is not supported"),
            ));
        }
    }
    Ok(p)
}

/// The node's volume bookkeeping (one per kubelet, in the [`NodeContext`]).
#[derive(Debug)]
pub struct VolumeManager {
    tokens: token::TokenCache,
    sync_period: Mutex<Duration>,
    /// Per pod UID: when its volumes were last written, and the immutable objects it references
    /// (never fetched again).
    pods: Mutex<HashMap<String, PodVolumes>>,
}

#[derive(Debug, Default)]
struct PodVolumes {
    synced: Option<Instant>,
    immutable_cms: HashMap<String, ConfigMap>,
    immutable_secrets: HashMap<String, Secret>,
    /// emptyDirs whose fsGroup ownership was applied by this process.
    owned: HashSet<String>,
}

impl Default for VolumeManager {
    fn default() -> Self {
        VolumeManager {
            tokens: token::TokenCache::default(),
            sync_period: Mutex::new(Duration::from_secs(60)),
            pods: Mutex::new(HashMap::new()),
        }
    }
}

use crate::lock::lock;

impl VolumeManager {
    /// Sets how often running pods' configMap/secret/downwardAPI/projected volumes are rewritten
    /// (upstream: the pod sync period, `syncFrequency`).
    pub fn configure(&self, sync_period: Duration) {
        *lock(&self.sync_period) = sync_period.max(Duration::from_secs(1));
    }

    /// Sets up every volume of the pod; returns each volume's host directory (or file, for
    /// hostPath).
    pub async fn setup(
        &self,
        root: &Path,
        pod: &Pod,
        refs: &PodRefs,
        facts: &PodFacts,
        client: &kube::Client,
    ) -> Result<HashMap<String, PathBuf>, VolumeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let base = volumes_dir(root, &uid);
        let mut out = HashMap::new();
        let vols: Vec<Volume> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .cloned()
            .collect();
        for v in &vols {
            let name = v.name.as_str();
            let Some(kind) = kind_of(v) else {
                return Err(setup_err(
                    name,
                    "volume type is not supported by this kubelet (supported: emptyDir, configMap, secret, downwardAPI, projected, hostPath)",
                ));
            };
            let dir = base.join(plugin_dir(kind)).join(name);
            let path = match kind {
                Kind::HostPath => {
                    let h = v
                        .host_path
                        .as_ref()
                        .map(|h| (h.path.as_str(), h.type_.as_deref().unwrap_or("")));
                    let (p, t) = h.unwrap_or_default();
                    host_path(name, p, t)?
                }
                Kind::EmptyDir => {
                    let memory = v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()) == Some("Memory");
                    let fresh = !dir.exists();
                    if memory {
                        host::mount_tmpfs(&dir, memory_size(v)?).map_err(io(name, &dir))?;
                    } else {
                        std::fs::create_dir_all(&dir).map_err(io(name, &dir))?;
                    }
                    if fresh {
                        use std::os::unix::fs::PermissionsExt;
                        // Upstream's emptyDir is world-writable (any container user may write).
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                            .map_err(io(name, &dir))?;
                    }
                    if let Some((gid, on_root_mismatch)) = fs_group(pod) {
                        let done = lock(&self.pods).get(&uid).is_some_and(|p| p.owned.contains(name));
                        let skip =
                            done || (on_root_mismatch && host::root_matches(&dir, gid, Access::ReadWrite));
                        if !skip {
                            host::set_ownership(&dir, gid, Access::ReadWrite).map_err(io(name, &dir))?;
                        }
                        lock(&self.pods)
                            .entry(uid.clone())
                            .or_default()
                            .owned
                            .insert(name.to_string());
                    }
                    dir
                }
                Kind::ConfigMap => {
                    std::fs::create_dir_all(&dir).map_err(io(name, &dir))?;
                    let payload = payload_of(v, pod, refs, facts, client, &self.tokens).await?;
                    publish(name, &dir, &payload, pod)?;
                    dir
                }
                Kind::Secret | Kind::DownwardApi | Kind::Projected => {
                    // Memory-backed: secrets and tokens never reach the disk.
                    host::mount_tmpfs(&dir, None).map_err(io(name, &dir))?;
                    let payload = payload_of(v, pod, refs, facts, client, &self.tokens).await?;
                    publish(name, &dir, &payload, pod)?;
                    dir
                }
            };
            out.insert(name.to_string(), path);
        }
        lock(&self.pods).entry(uid).or_default().synced = Some(Instant::now());
        Ok(out)
    }

    /// Whether the pod's volumes are due for a rewrite.
    fn due(&self, uid: &str) -> bool {
        let period = *lock(&self.sync_period);
        lock(&self.pods)
            .get(uid)
            .and_then(|p| p.synced)
            .is_some_and(|t| t.elapsed() >= period)
    }

    /// The objects the pod's volumes reference: immutable ones from the cache, the rest from the
    /// API server.
    async fn volume_refs(&self, client: &kube::Client, pod: &Pod) -> Result<PodRefs, kube::Error> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut cms: Vec<String> = Vec::new();
        let mut secrets: Vec<String> = Vec::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(c) = &v.config_map {
                cms.push(c.name.clone());
            }
            if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                secrets.push(n);
            }
            for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(c) = &src.config_map {
                    cms.push(c.name.clone());
                }
                if let Some(s) = &src.secret {
                    secrets.push(s.name.clone());
                }
            }
        }
        let mut refs = PodRefs::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let sec_api: Api<Secret> = Api::namespaced(client.clone(), ns);
        for name in cms {
            let cached = lock(&self.pods)
                .get(&uid)
                .and_then(|p| p.immutable_cms.get(&name).cloned());
            let obj = match cached {
                Some(o) => Some(o),
                None => cm_api.get_opt(&name).await?,
            };
            if let Some(o) = obj.as_ref().filter(|o| o.immutable == Some(true)) {
                lock(&self.pods)
                    .entry(uid.clone())
                    .or_default()
                    .immutable_cms
                    .insert(name.clone(), o.clone());
            }
            refs.configmaps.insert(name, obj);
        }
        for name in secrets {
            let cached = lock(&self.pods)
                .get(&uid)
                .and_then(|p| p.immutable_secrets.get(&name).cloned());
            let obj = match cached {
                Some(o) => Some(o),
                None => sec_api.get_opt(&name).await?,
            };
            if let Some(o) = obj.as_ref().filter(|o| o.immutable == Some(true)) {
                lock(&self.pods)
                    .entry(uid.clone())
                    .or_default()
                    .immutable_secrets
                    .insert(name.clone(), o.clone());
            }
            refs.secrets.insert(name, obj);
        }
        Ok(refs)
    }

    /// Rewrites the configMap, secret, downwardAPI and projected volumes of a running pod when
    /// its sync period has passed. Returns the names of the volumes whose files changed.
    pub async fn resync(
        &self,
        root: &Path,
        pod: &Pod,
        facts: &PodFacts,
        client: &kube::Client,
    ) -> Result<Vec<String>, VolumeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if !self.due(&uid) {
            return Ok(Vec::new());
        }
        if let Some(p) = lock(&self.pods).get_mut(&uid) {
            p.synced = Some(Instant::now());
        }
        let refs = self
            .volume_refs(client, pod)
            .await
            .map_err(|e| setup_err("*", format!("fetching referenced objects: {e}")))?;
        let base = volumes_dir(root, &uid);
        let mut changed = Vec::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(kind) = kind_of(v).filter(|k| {
                matches!(
                    k,
                    Kind::ConfigMap | Kind::Secret | Kind::DownwardApi | Kind::Projected
                )
            }) else {
                continue;
            };
            let dir = base.join(plugin_dir(kind)).join(&v.name);
            if !dir.exists() {
                continue;
            }
            // One volume failing (e.g. a key its items name was removed) keeps its old files and
            // does not hold back the others.
            let result = match payload_of(v, pod, &refs, facts, client, &self.tokens).await {
                Ok(payload) => publish(&v.name, &dir, &payload, pod),
                Err(e) => Err(e),
            };
            match result {
                Ok(true) => changed.push(v.name.clone()),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(pod = crate::pods::pod_display(pod), volume = v.name, error = %e, "volume resync failed");
                }
            }
        }
        Ok(changed)
    }

    /// Unmounts and removes the pod's volume directories (hostPath volumes are the host's and
    /// stay) and forgets its tokens.
    pub fn teardown(&self, root: &Path, uid: &str) {
        teardown(root, uid);
        self.tokens.forget_pod(uid);
        lock(&self.pods).remove(uid);
    }
}

/// Unmounts everything below the pod's directory (tmpfs volumes, anything a container propagated
/// back), then removes the directory.
pub fn teardown(root: &Path, uid: &str) {
    let dir = pod_dir(root, uid);
    for (m, e) in host::unmount_under(&dir) {
        tracing::warn!(pod_uid = uid, mount = %m.display(), error = %e, "unmounting a volume failed");
    }
    // Only remove the directory once nothing is mounted below it: a recursive removal must never
    // reach into a mount it could not detach.
    if host::mount_points().iter().any(|m| m.starts_with(&dir)) {
        tracing::warn!(pod_uid = uid, "pod directory kept: a volume is still mounted");
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Sets up the pod's volumes before a container starts; a failure is a `FailedMount` event and a
/// container waiting in `ContainerCreating`.
pub async fn setup_pod(
    ctx: &NodeContext,
    pod: &Pod,
    refs: &PodRefs,
    facts: &PodFacts,
) -> Result<HashMap<String, PathBuf>, StartError> {
    match ctx
        .volumes
        .setup(&ctx.root_dir, pod, refs, facts, &ctx.client)
        .await
    {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::warn!(
                pod = crate::pods::pod_display(pod),
                volume = e.volume(),
                error = %e,
                "volume setup failed"
            );
            crate::pods::executor::event(ctx, pod, None, "Warning", "FailedMount", e.to_string());
            Err(e.start_error())
        }
    }
}

/// The periodic resync of a running pod's volumes (called from its worker's loop).
pub async fn resync(ctx: &NodeContext, pod: &Pod, observed: &Observed) {
    if pod.metadata.deletion_timestamp.is_some() || !observed.containers.iter().any(|c| c.state.is_running())
    {
        return;
    }
    let ip = observed.pod_ips.first().cloned().unwrap_or_default();
    let facts = PodFacts {
        node_name: ctx.node_name.clone(),
        host_ip: ctx.node_ip.clone(),
        pod_ip: if ip.is_empty() { ctx.node_ip.clone() } else { ip },
        node_cpu_millis: ctx.node_cpu_millis,
        node_memory: ctx.node_memory,
    };
    match ctx.volumes.resync(&ctx.root_dir, pod, &facts, &ctx.client).await {
        Ok(changed) if !changed.is_empty() => {
            tracing::info!(pod = crate::pods::pod_display(pod), volumes = ?changed, "volume contents updated");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(pod = crate::pods::pod_display(pod), error = %e, "volume resync failed"),
    }
}

/// Expands `subPathExpr` against the container's environment (upstream: every referenced
/// variable must have a value).
fn expand_sub_path(expr: &str, env: &[(String, String)]) -> Result<String, String> {
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let mut missing = std::collections::BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("$(") {
        let after = &rest[i + 2..];
        let Some(close) = after.find(')') else { break };
        let var = &after[..close];
        if !(i > 0 && rest.as_bytes()[i - 1] == b'$') && vars.get(var).is_none_or(|v| v.is_empty()) {
            missing.insert(var.to_string());
        }
        rest = &after[close + 1..];
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(crate::inputs::expand(expr, &vars))
}

/// Resolves a subPath inside a volume: relative, no `..`, created when missing, and — after every
/// symlink is followed — still inside the volume (upstream's safe subpath).
fn resolve_sub_path(volume_root: &Path, sub: &str) -> Result<PathBuf, String> {
    let root = volume_root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", volume_root.display()))?;
    let p = root.join(sub);
    if p.symlink_metadata().is_err() {
        // Create the missing directories one by one, refusing to follow a symlink that leads out.
        let mut cur = root.clone();
        for comp in Path::new(sub).components() {
            cur.push(comp);
            match cur.symlink_metadata() {
                Ok(_) => {
                    let real = cur.canonicalize().map_err(|e| e.to_string())?;
                    if !real.starts_with(&root) {
                        return Err(format!("{} is outside the volume", cur.display()));
                    }
                    cur = real;
                }
                Err(_) => {
                    std::fs::create_dir(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
                }
            }
        }
    }
    let real = p.canonicalize().map_err(|e| format!("{}: {e}", p.display()))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{} resolves to {} outside the volume",
            p.display(),
            real.display()
        ));
    }
    Ok(real)
}

fn config_error(msg: String) -> StartError {
    StartError::new("CreateContainerConfigError", msg)
}

/// The container's bind mounts for its `volumeMounts` (upstream's `makeMounts`): readOnly,
/// subPath / subPathExpr (expanded with the container's `env`) and mountPropagation.
pub fn mounts_for(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
    env: &[(String, String)],
) -> Result<Vec<BindMount>, StartError> {
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(host) = volumes.get(&m.name) else {
            return Err(config_error(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, c.name
            )));
        };
        let sub = match m.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
            Some(expr) => Some(expand_sub_path(expr, env).map_err(config_error)?),
            None => m.sub_path.clone().filter(|s| !s.is_empty()),
        };
        let host_path = match sub {
            Some(sub) if sub.starts_with('/') => {
                return Err(config_error(format!(
                    "error SubPath `{sub}` must not be an absolute path"
                )));
            }
            Some(sub) if sub.split('/').any(|c| c == "..") => {
                return Err(config_error(format!(
                    "unable to provision SubPath `{sub}`: must not contain '..'"
                )));
            }
            Some(sub) => resolve_sub_path(host, &sub).map_err(|e| {
                // Upstream keeps host details out of the status; they go to the log.
                tracing::warn!(container = c.name, volume = m.name, error = e, "subPath refused");
                config_error(format!(
                    "failed to prepare subPath for volumeMount {:?} of container {:?}",
                    m.name, c.name
                ))
            })?,
            None => host.clone(),
        };
        let host_to_container = match m.mount_propagation.as_deref() {
            None | Some("None") => false,
            Some("HostToContainer") => true,
            Some("Bidirectional") if !privileged => {
                return Err(config_error(
                    "Bidirectional mount propagation is available only to privileged containers".into(),
                ));
            }
            Some(other) => {
                return Err(config_error(format!(
                    "mountPropagation {other:?} of volumeMount {:?} is not supported by this kubelet (None, HostToContainer)",
                    m.name
                )));
            }
        };
        out.push(BindMount {
            host_path,
            container_path: m.mount_path.clone(),
            read_only: m.read_only == Some(true),
            host_to_container,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn configmap_items_paths_and_missing_keys() {
        let data = vec![("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())];
        let items: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "b", "path": "sub/bee", "mode": 0o400}])).unwrap();
        let src = |items, optional| KeySource {
            kind: "ConfigMap",
            name: "cm",
            data: Some(data.clone()),
            items,
            optional,
        };
        let mut p = Payload::new();
        project_keys("v", &mut p, &src(Some(&items), false), 0o644).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p["sub/bee"].data.as_slice(), p["sub/bee"].mode),
            (&b"2"[..], 0o400)
        );
        let bad: Vec<KeyToPath> = serde_json::from_value(json!([{"key": "zz", "path": "z"}])).unwrap();
        let e = project_keys("v", &mut Payload::new(), &src(Some(&bad), false), 0o644).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"v\" : configuration key \"zz\" not found in ConfigMap \"cm\""
        );
        // Optional: a missing key is skipped.
        project_keys("v", &mut Payload::new(), &src(Some(&bad), true), 0o644).unwrap();
        let missing = KeySource {
            kind: "Secret",
            name: "s",
            data: None,
            items: None,
            optional: false,
        };
        let e = project_keys("v", &mut Payload::new(), &missing, 0o644).unwrap_err();
        assert!(e.to_string().ends_with(": secret \"s\" not found"), "{e}");
        let escape: Vec<KeyToPath> = serde_json::from_value(json!([{"key": "a", "path": "../x"}])).unwrap();
        assert!(project_keys("v", &mut Payload::new(), &src(Some(&escape), false), 0o644).is_err());
    }

    #[test]
    fn sub_paths_resolve_inside_the_volume_and_escapes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let vol = d.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::os::unix::fs::symlink("/", vol.join("escape")).unwrap();
        std::os::unix::fs::symlink("inner", vol.join("ok-link")).unwrap();
        std::fs::create_dir(vol.join("inner")).unwrap();
        let vols = HashMap::from([("data".to_string(), vol.clone())]);
        let env = vec![("POD".to_string(), "p1".to_string())];
        let c = container(json!({"name": "c", "volumeMounts": [
            {"name": "data", "mountPath": "/data", "readOnly": true},
            {"name": "data", "mountPath": "/sub", "subPath": "a/b"},
            {"name": "data", "mountPath": "/expr", "subPathExpr": "logs/$(POD)", "mountPropagation": "HostToContainer"},
            {"name": "data", "mountPath": "/link", "subPath": "ok-link"}]}));
        let m = mounts_for(&c, &vols, &env).unwrap();
        let root = vol.canonicalize().unwrap();
        assert_eq!((m[0].container_path.as_str(), m[0].read_only), ("/data", true));
        assert_eq!(m[1].host_path, root.join("a/b"));
        assert!(
            root.join("a/b").is_dir(),
            "missing subPath directories are created"
        );
        assert_eq!(m[2].host_path, root.join("logs/p1"));
        assert!(m[2].host_to_container && !m[1].host_to_container);
        assert_eq!(m[3].host_path, root.join("inner"));
        let refused = |mounts: serde_json::Value| {
            mounts_for(
                &container(json!({"name": "c", "volumeMounts": mounts})),
                &vols,
                &env,
            )
            .unwrap_err()
        };
        let e = refused(json!([{"name": "data", "mountPath": "/d", "subPath": "escape"}]));
        assert_eq!(
            (e.reason.as_str(), e.message.as_str()),
            (
                "CreateContainerConfigError",
                "failed to prepare subPath for volumeMount \"data\" of container \"c\""
            )
        );
        let e = refused(json!([{"name": "data", "mountPath": "/d", "subPath": "escape/etc"}]));
        assert_eq!(e.reason, "CreateContainerConfigError");
        let e = refused(json!([{"name": "data", "mountPath": "/d", "subPathExpr": "$(POD)/../../x"}]));
        assert_eq!(
            e.message,
            "unable to provision SubPath `p1/../../x`: must not contain '..'"
        );
        let e = refused(json!([{"name": "data", "mountPath": "/d", "subPathExpr": "$(NOPE)"}]));
        assert_eq!(e.message, "missing value for NOPE");
        let e = refused(json!([{"name": "data", "mountPath": "/d", "subPath": "/etc"}]));
        assert_eq!(e.message, "error SubPath `/etc` must not be an absolute path");
        let e = refused(json!([{"name": "nope", "mountPath": "/d"}]));
        assert_eq!(
            e.message,
            "cannot find volume \"nope\" to mount into container \"c\""
        );
        let e = refused(json!([{"name": "data", "mountPath": "/d", "mountPropagation": "Bidirectional"}]));
        assert!(
            e.message.contains("only to privileged containers"),
            "{}",
            e.message
        );
        assert!(!Path::new("/etc/a").exists() || Path::new("/etc/a").is_dir());
    }

    #[test]
    fn host_path_types_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dir");
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        host_path("h", &s(&dir), "DirectoryOrCreate").unwrap();
        assert!(dir.is_dir());
        host_path("h", &s(&dir), "Directory").unwrap();
        let created = d.path().join("new/file");
        host_path("h", &s(&created), "FileOrCreate").unwrap();
        assert!(created.is_file());
        let e = host_path("h", &s(&file), "Directory").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
        assert!(host_path("h", &s(&dir), "File").is_err());
        assert!(host_path("h", &s(&file), "Socket").is_err());
        assert!(host_path("h", "/dev/null", "CharDevice").is_ok());
        assert!(host_path("h", "/dev/null", "BlockDevice").is_err());
        assert!(host_path("h", &s(&file), "DirectoryOrCreate").is_err());
        assert!(host_path("h", &s(&dir), "Bogus").is_err());
        host_path("h", "/nonexistent/anything", "").unwrap();
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "uid-1",
            "labels": {"app": "web"}}, "spec": v}),
        )
        .unwrap()
    }

    fn client() -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
    }

    #[tokio::test]
    async fn configmap_and_empty_dir_with_fs_group_then_resync_and_teardown() {
        let d = tempfile::tempdir().unwrap();
        let p = pod(json!({
        "securityContext": {"fsGroup": 3456},
        "containers": [{"name": "c", "image": "i"}],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 0o400}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
        ]}));
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"k": "v1"}})).unwrap();
        let refs = PodRefs {
            configmaps: HashMap::from([("cm".to_string(), Some(cm))]),
            ..Default::default()
        };
        let mgr = VolumeManager::default();
        let vols = mgr
            .setup(d.path(), &p, &refs, &PodFacts::default(), &client())
            .await
            .unwrap();
        let cfg = &vols["cfg"];
        assert_eq!(std::fs::read_to_string(cfg.join("k")).unwrap(), "v1");
        let meta = std::fs::metadata(cfg.join("k")).unwrap();
        assert_eq!((meta.gid(), meta.permissions().mode() & 0o7777), (3456, 0o440));
        let root = std::fs::metadata(cfg).unwrap();
        assert_eq!(root.permissions().mode() & 0o2000, 0o2000);
        let scratch = std::fs::metadata(&vols["scratch"]).unwrap();
        assert_eq!(
            (scratch.gid(), scratch.permissions().mode() & 0o7777),
            (3456, 0o2777)
        );
        let info = &vols["info"];
        assert!(host::is_mount_point(info), "downward API volumes are on tmpfs");
        assert_eq!(
            std::fs::read_to_string(info.join("labels")).unwrap(),
            "app=\"web\""
        );
        // Setting up again (the next container) changes nothing.
        let first = std::fs::read_link(cfg.join("..data")).unwrap();
        mgr.setup(d.path(), &p, &refs, &PodFacts::default(), &client())
            .await
            .unwrap();
        assert_eq!(std::fs::read_link(cfg.join("..data")).unwrap(), first);
        mgr.teardown(d.path(), "uid-1");
        assert!(!host::mount_points().iter().any(|m| m.starts_with(d.path())));
        assert!(!pod_dir(d.path(), "uid-1").exists());
    }

    #[test]
    fn resync_is_due_after_the_sync_period() {
        let mgr = VolumeManager::default();
        mgr.configure(Duration::from_secs(1));
        assert!(!mgr.due("u"), "never set up: nothing to resync");
        lock(&mgr.pods).entry("u".into()).or_default().synced = Some(Instant::now() - Duration::from_secs(2));
        assert!(mgr.due("u"));
        lock(&mgr.pods).entry("u".into()).or_default().synced = Some(Instant::now());
        assert!(!mgr.due("u"));
    }
}
