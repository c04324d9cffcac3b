//! Garbage collection of images and of what dead pods leave behind, as upstream's image GC manager
//! (`pkg/kubelet/images/image_gc_manager.go`) and container GC (`kuberuntime_gc.go`).
//!
//! - Images: every 5 minutes (upstream's `ImageGCPeriod`, first run at start) the images no
//!   container of the kubelet's containerd namespace uses (running or not) are candidates, least
//!   recently used first; those unused for longer than `imageMaximumGCAge` go regardless of disk,
//!   and when the image filesystem (the snapshotter's, from containerd's introspection) is used at
//!   `imageGCHighThresholdPercent` or more, candidates older than `imageMinimumGCAge` go until usage
//!   is back at `imageGCLowThresholdPercent`. Failures are the Node events `FreeDiskSpaceFailed`,
//!   `InvalidDiskCapacity` and (repeated) `ImageGCFailed`.
//! - Dead pods: the pod manager's orphan cleanup (`crate::agent`) removes containers of unknown
//!   pods; after each run it reports the pods it knows ([`GarbageCollector::pods_reported`]) and
//!   this module removes the pod log directories and pod directories such pods left (never one
//!   with a mount below).
//! - Disk pressure: [`GarbageCollector::reclaim_disk`] for the eviction manager.
//!
//! The decisions are pure functions in [`images`] and [`containers`]; this file is the I/O.

pub mod containers;
pub mod images;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use self::containers::{KnownPods, SweptContainer};
use self::images::{Candidate, ImageGcPolicy, ImageRecords, StoredImage};
use crate::pods::executor::NodeContext;
use crate::runtime::RuntimeError;
use crate::runtime::container::TaskState;

/// Upstream's `ImageGCPeriod`.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// Why a garbage collection run failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Listing images or containers failed.
    #[error("image garbage collection: {0}")]
    Runtime(#[from] RuntimeError),
    /// statvfs of the image filesystem failed.
    #[error("reading usage of the image filesystem {path}: {message}")]
    ImageFs { path: PathBuf, message: String },
    /// The image filesystem reports no capacity (upstream's message).
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    /// Removing images failed; the run went on with the others.
    #[error("removing images failed: {}", .0.join("; "))]
    Remove(Vec<String>),
    /// Not enough unused images to get below the low threshold (upstream's message).
    #[error("{}", images::free_space_failed_message(*wanted, *freed))]
    NotEnough { wanted: u64, freed: u64 },
}

/// The node's image and dead-pod garbage collector.
pub struct GarbageCollector {
    ctx: Arc<NodeContext>,
    policy: ImageGcPolicy,
    records: tokio::sync::Mutex<ImageRecords>,
    known: Mutex<Option<KnownPods>>,
    image_fs: tokio::sync::OnceCell<PathBuf>,
    began: SystemTime,
}

impl std::fmt::Debug for GarbageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarbageCollector")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Creates the node's collector and starts the image GC loop (not when
/// `imageGCHighThresholdPercent` is 100: upstream's way to switch it off). The pod manager reports
/// its pods to it ([`GarbageCollector::pods_reported`]); the eviction manager reclaims through it
/// ([`DiskReclaimer`]).
pub fn start(ctx: Arc<NodeContext>, config: &crate::config::KubeletConfiguration) -> Arc<GarbageCollector> {
    let gc = Arc::new(GarbageCollector::new(ctx, ImageGcPolicy::from_config(config)));
    if gc.policy.high_threshold_percent >= 100 {
        tracing::info!("imageGCHighThresholdPercent is 100: image garbage collection disabled");
    } else {
        tokio::spawn(gc.clone().run_images(IMAGE_GC_PERIOD));
    }
    gc
}

impl GarbageCollector {
    /// Called by the pod manager after its orphan cleanup with the UIDs of every pod it has a
    /// worker for: records them (for [`GarbageCollector::reclaim_disk`]) and sweeps the log and
    /// pod directories of other pods in the background.
    pub fn pods_reported<'a>(self: &Arc<Self>, uids: impl IntoIterator<Item = &'a String>) {
        let known = KnownPods {
            uids: uids.into_iter().cloned().collect(),
            at: SystemTime::now(),
        };
        *lock(&self.known) = Some(known.clone());
        let gc = self.clone();
        tokio::spawn(async move { gc.sweep_orphan_dirs(&known).await });
    }
}

use crate::lock::lock;

/// What one listing of the namespace's containers gives the collector.
struct ContainerView {
    /// Image names of every container (kubelet's or not).
    images: BTreeSet<String>,
    /// The kubelet's containers (those with pod labels).
    pods: Vec<SweptContainer>,
}

impl GarbageCollector {
    /// A collector for the node's containerd namespace with `policy`.
    pub fn new(ctx: Arc<NodeContext>, policy: ImageGcPolicy) -> Self {
        GarbageCollector {
            ctx,
            policy,
            records: tokio::sync::Mutex::new(BTreeMap::new()),
            known: Mutex::new(None),
            image_fs: tokio::sync::OnceCell::new(),
            began: SystemTime::now(),
        }
    }

    /// Runs image GC now and then every `period`; a failure twice in a row is an `ImageGCFailed`
    /// event (the first may be start-up noise, as upstream says).
    async fn run_images(self: Arc<Self>, period: Duration) {
        let mut prev_failed = false;
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            match self.garbage_collect_images().await {
                Ok(freed) => {
                    if freed > 0 {
                        tracing::info!(bytes = freed, "image garbage collection done");
                    }
                    prev_failed = false;
                }
                Err(e) => {
                    if prev_failed {
                        tracing::error!(error = %e, "image garbage collection failed multiple times in a row");
                        self.node_event("ImageGCFailed", e.to_string()).await;
                    } else {
                        tracing::warn!(error = %e, "image garbage collection failed once");
                    }
                    prev_failed = true;
                }
            }
        }
    }

    /// One image GC run (upstream's `GarbageCollect`): images past `imageMaximumGCAge`, then the
    /// disk thresholds. Returns the bytes freed.
    pub async fn garbage_collect_images(&self) -> Result<u64, GcError> {
        let now = SystemTime::now();
        let candidates = self.observe(now).await?;
        let (too_old, rest) = images::split_too_old(&self.policy, candidates, now, self.began);
        let mut errors = Vec::new();
        let mut freed = self
            .remove_all(&too_old, "unused for longer than imageMaximumGCAge", &mut errors)
            .await;
        let path = self.image_fs_path().await;
        let fs = crate::stats::collect::statvfs_fs(&path, "").ok_or_else(|| GcError::ImageFs {
            path: path.clone(),
            message: std::io::Error::last_os_error().to_string(),
        })?;
        let capacity = fs.capacity_bytes.unwrap_or(0);
        if capacity == 0 {
            self.node_event("InvalidDiskCapacity", GcError::InvalidCapacity.to_string())
                .await;
            return Err(GcError::InvalidCapacity);
        }
        let available = fs.available_bytes.unwrap_or(0);
        if let Some(wanted) = images::bytes_to_free(&self.policy, capacity, available) {
            tracing::info!(
                image_fs = %path.display(),
                usage_percent = 100 - (u128::from(available.min(capacity)) * 100 / u128::from(capacity)) as i64,
                high_threshold = self.policy.high_threshold_percent,
                low_threshold = self.policy.low_threshold_percent,
                bytes_to_free = wanted,
                "disk usage on the image filesystem is over the high threshold, freeing down to the low threshold"
            );
            let (chosen, _) = images::select_for_space(&self.policy, &rest, wanted, now);
            let got = self
                .remove_all(&chosen, "image filesystem over the high threshold", &mut errors)
                .await;
            freed += got;
            if errors.is_empty() && got < wanted {
                let e = GcError::NotEnough { wanted, freed: got };
                self.node_event("FreeDiskSpaceFailed", e.to_string()).await;
                return Err(e);
            }
        }
        if !errors.is_empty() {
            return Err(GcError::Remove(errors));
        }
        Ok(freed)
    }

    /// For the eviction manager under disk pressure (upstream's `DeleteAllUnusedContainers` then
    /// `DeleteUnusedImages`): removes the dead containers of pods the kubelet no longer knows (with
    /// their sandboxes, volumes and logs), then every unused image older than `imageMinimumGCAge`,
    /// whatever the thresholds. Returns the bytes the removed images held (containers' writable
    /// layers are not counted: measure the filesystem again).
    pub async fn reclaim_disk(&self) -> Result<u64, GcError> {
        self.remove_dead_orphans().await?;
        let now = SystemTime::now();
        let candidates = self.observe(now).await?;
        let (chosen, _) = images::select_for_space(&self.policy, &candidates, u64::MAX, now);
        let mut errors = Vec::new();
        let freed = self.remove_all(&chosen, "disk pressure", &mut errors).await;
        if !errors.is_empty() {
            return Err(GcError::Remove(errors));
        }
        Ok(freed)
    }

    /// Lists images and containers, updates the records, and returns the unused images in
    /// eviction order.
    async fn observe(&self, now: SystemTime) -> Result<Vec<Candidate>, GcError> {
        let listed = self.ctx.runtime.list_images().await?;
        let view = self.containers().await?;
        let mut by_id: BTreeMap<String, StoredImage> = BTreeMap::new();
        for i in listed {
            let e = by_id
                .entry(i.config_digest.clone())
                .or_insert_with(|| StoredImage {
                    id: i.config_digest.clone(),
                    names: Vec::new(),
                    size: i.size,
                });
            e.names.push(i.name);
        }
        let in_use: BTreeSet<String> = by_id
            .values()
            .filter(|i| i.names.iter().any(|n| view.images.contains(n)))
            .map(|i| i.id.clone())
            .collect();
        let stored: Vec<StoredImage> = by_id.into_values().collect();
        let mut records = self.records.lock().await;
        images::detect(&mut records, &stored, &in_use, now);
        Ok(images::eviction_order(&records, &in_use))
    }

    /// Removes images (every name of each); returns the bytes freed, pushing failures to `errors`.
    async fn remove_all(&self, chosen: &[Candidate], why: &str, errors: &mut Vec<String>) -> u64 {
        let mut freed = 0;
        for c in chosen {
            let mut ok = true;
            for name in &c.names {
                if let Err(e) = self.ctx.runtime.remove_image(name).await {
                    errors.push(format!("image {name}: {e}"));
                    ok = false;
                }
            }
            if ok {
                tracing::info!(image = %c.names.join(","), id = %c.id, size = c.size, reason = why, "removed unused image");
                self.records.lock().await.remove(&c.id);
                freed += c.size;
            }
        }
        freed
    }

    /// The image filesystem: the snapshotter's root as containerd reports it, else the kubelet's
    /// root directory.
    async fn image_fs_path(&self) -> PathBuf {
        self.image_fs
            .get_or_init(|| async {
                let root = self.ctx.runtime.snapshotter_root().await;
                match root {
                    Some(r) => r,
                    None => {
                        tracing::warn!(
                            "containerd did not report the snapshotter root; image filesystem = root dir"
                        );
                        self.ctx.root_dir.clone()
                    }
                }
            })
            .await
            .clone()
    }

    /// Every container of the namespace with its image, and the kubelet's with their pods.
    async fn containers(&self) -> Result<ContainerView, RuntimeError> {
        let mut view = ContainerView {
            images: BTreeSet::new(),
            pods: Vec::new(),
        };
        for ct in self.ctx.runtime.list_all_containers().await? {
            if !ct.image.is_empty() {
                view.images.insert(ct.image.clone());
            }
            if let Some(meta) = ct.meta {
                view.pods.push(SweptContainer {
                    pod_uid: meta.pod_uid,
                    pod_namespace: meta.pod_namespace,
                    pod_name: meta.pod_name,
                    // Running, paused, created or unknown: only stopped tasks (or none) are dead.
                    running: !matches!(ct.state, TaskState::NoTask | TaskState::Exited { .. }),
                    created: ct.created,
                });
            }
        }
        Ok(view)
    }

    /// Removes the pods (containers, sandboxes, volumes, logs) whose containers are all dead and
    /// that the pod manager did not know at its last report. Nothing before the first report (the
    /// pod sources may not have spoken yet).
    async fn remove_dead_orphans(&self) -> Result<(), GcError> {
        let Some(known) = lock(&self.known).clone() else {
            return Ok(());
        };
        let view = self.containers().await?;
        for (uid, (ns, name)) in containers::dead_orphan_pods(&view.pods, &known) {
            tracing::info!(
                pod = format!("{ns}/{name}"),
                uid,
                "removing dead containers of a pod that is no longer known"
            );
            let pod = Pod {
                metadata: ObjectMeta {
                    uid: Some(uid),
                    namespace: Some(ns),
                    name: Some(name),
                    ..Default::default()
                },
                ..Default::default()
            };
            let _ = crate::pods::executor::remove_pod(&self.ctx, &pod).await;
        }
        Ok(())
    }

    /// Removes pod log directories and pod directories of pods that are neither known nor own a
    /// container, and that existed before the report (a pod admitted since may be creating them).
    async fn sweep_orphan_dirs(&self, known: &KnownPods) {
        let with_containers: BTreeSet<String> = match self.containers().await {
            Ok(v) => v.pods.into_iter().map(|c| c.pod_uid).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "orphaned pod directories: listing containers failed");
                return;
            }
        };
        let old = |p: &Path| {
            std::fs::symlink_metadata(p).is_ok_and(|m| {
                UNIX_EPOCH
                    + Duration::from_secs(m.ctime().max(0) as u64)
                    + Duration::from_nanos(m.ctime_nsec().max(0) as u64)
                    < known.at
            })
        };
        let log_dir = &self.ctx.log_dir;
        let names = dir_names(log_dir);
        for name in containers::orphan_dirs(&names, containers::log_dir_uid, &known.uids, &with_containers) {
            let path = log_dir.join(name);
            if !old(&path) {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed the log directory of a pod that is gone")
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "removing an orphaned pod log directory failed")
                }
            }
        }
        let pods_dir = self.ctx.root_dir.join("pods");
        let names = dir_names(&pods_dir);
        let orphans = containers::orphan_dirs(&names, containers::pod_dir_uid, &known.uids, &with_containers);
        if orphans.is_empty() {
            return;
        }
        let mounts = crate::volumes::host::mount_points();
        for uid in orphans {
            let path = pods_dir.join(uid);
            if !old(&path) {
                continue;
            }
            if containers::has_mount_under(&mounts, &path) {
                tracing::warn!(pod_uid = %uid, dir = %path.display(), "orphaned pod found, but volumes are still mounted; keeping its directory");
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(pod_uid = %uid, "removed the directory of an orphaned pod"),
                Err(e) => {
                    tracing::warn!(pod_uid = %uid, error = %e, "removing an orphaned pod directory failed")
                }
            }
        }
    }

    /// A Warning event about the Node, as upstream's `nodeRef` (UID = node name).
    async fn node_event(&self, reason: &str, message: String) {
        let node = self.ctx.node_name.clone();
        let now = Time(Timestamp::now());
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!("{node}.{:x}", Timestamp::now().as_nanosecond())),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.clone()),
                uid: Some(node.clone()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some("Warning".into()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("kubelet".into()),
                host: Some(node.clone()),
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.ctx.client.clone(), "default");
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::warn!(reason, error = %e, "recording a node event failed");
        }
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Frees node-level disk for the eviction manager before it evicts a pod for a disk signal
/// (upstream's `DeleteAllUnusedContainers` + `DeleteUnusedImages`); memory and PID signals have
/// nothing to reclaim at node level.
#[derive(Debug, Clone)]
pub struct DiskReclaimer(pub Arc<GarbageCollector>);

impl crate::eviction::NodeReclaimer for DiskReclaimer {
    fn reclaim(&self, signal: crate::eviction::Signal) -> futures::future::BoxFuture<'_, u64> {
        Box::pin(async move {
            if signal.condition() != crate::eviction::NodeCondition::DiskPressure {
                return 0;
            }
            match self.0.reclaim_disk().await {
                Ok(freed) => freed,
                Err(e) => {
                    tracing::warn!(signal = ?signal, error = %e, "reclaiming disk before eviction failed");
                    0
                }
            }
        })
    }
}
