//! The eviction manager's loop and its adapters: every [`MONITORING_INTERVAL`] it takes a stats
//! summary (node memory as the root cgroup shows it, the image filesystem from containerd's
//! snapshotter root), updates the pressure conditions the node status and admission read, evicts
//! pods over their local-storage limits, and — when a threshold is past its grace period — first
//! asks the [`NodeReclaimer`] to free node-level resources, then evicts the first pod of the
//! ranking through its worker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, oneshot};

use super::decide::{self, Conditions, State};
use super::{EvictionConfig, Signal};
use crate::pods::Rejection;
use crate::pods::executor::{NodeContext, WorkerMsg};
use crate::shutdown::WorkerRef;
use crate::stats::{PodStats, Summary};

/// How often the manager looks (upstream's `monitoringInterval`).
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);

/// Frees node-level resources before pods are evicted for disk pressure (upstream: delete dead
/// containers, then unused images). The kubelet wires its garbage collectors in here.
pub trait NodeReclaimer: Send + Sync {
    /// Reclaims what it can for `signal`; returns the bytes freed (best effort).
    fn reclaim(&self, signal: Signal) -> BoxFuture<'_, u64>;
}

/// A reclaimer that frees nothing (the default until garbage collection is wired in).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReclaim;

impl NodeReclaimer for NoReclaim {
    fn reclaim(&self, _signal: Signal) -> BoxFuture<'_, u64> {
        Box::pin(async { 0 })
    }
}

/// The pressure conditions, shared with the node status loop and pod admission.
#[derive(Debug, Default)]
pub struct Pressure {
    memory: AtomicBool,
    disk: AtomicBool,
    pid: AtomicBool,
}

impl Pressure {
    /// The conditions as last decided.
    pub fn conditions(&self) -> Conditions {
        Conditions {
            memory: self.memory.load(Ordering::Relaxed),
            disk: self.disk.load(Ordering::Relaxed),
            pid: self.pid.load(Ordering::Relaxed),
        }
    }

    fn set(&self, c: Conditions) {
        self.memory.store(c.memory, Ordering::Relaxed);
        self.disk.store(c.disk, Ordering::Relaxed);
        self.pid.store(c.pid, Ordering::Relaxed);
    }

    /// Admission under the current pressure ([`decide::admit`]).
    pub fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        decide::admit(self.conditions(), pod)
    }
}

/// How a pod is evicted: its worker kills it with `grace_seconds` and reports it `Failed`/`Evicted`
/// with `message` (and the `DisruptionTarget` condition when `disruption`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub grace_seconds: i64,
    pub message: String,
    pub disruption: bool,
}

/// What the manager needs from the node.
pub trait EvictionHost: Send + Sync {
    /// A fresh stats summary with the node's memory and image filesystem filled in.
    fn summary(&self) -> BoxFuture<'_, Option<Summary>>;
    /// Whether images live on another filesystem than the kubelet's root dir.
    fn dedicated_image_fs(&self) -> bool;
    /// The pods with a worker.
    fn active_pods(&self) -> BoxFuture<'_, Vec<WorkerRef>>;
    /// Records the `Evicted` event and hands the eviction to the pod's worker.
    fn evict<'a>(&'a self, pod: &'a WorkerRef, eviction: Eviction) -> BoxFuture<'a, bool>;
}

/// The eviction manager.
pub struct EvictionManager {
    config: EvictionConfig,
    state: State,
    pressure: Arc<Pressure>,
    reclaimer: Arc<dyn NodeReclaimer>,
    /// Pods already handed to their worker for eviction (not candidates again).
    evicted: BTreeSet<String>,
}

impl std::fmt::Debug for EvictionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvictionManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

impl EvictionManager {
    pub fn new(config: EvictionConfig, reclaimer: Arc<dyn NodeReclaimer>) -> EvictionManager {
        EvictionManager {
            config,
            state: State::default(),
            pressure: Arc::new(Pressure::default()),
            reclaimer,
            evicted: BTreeSet::new(),
        }
    }

    /// The shared pressure conditions.
    pub fn pressure(&self) -> Arc<Pressure> {
        self.pressure.clone()
    }

    /// Runs a cycle every [`MONITORING_INTERVAL`] for ever.
    pub async fn run(mut self, host: Arc<dyn EvictionHost>) {
        loop {
            let evicted = self.sync(host.as_ref(), Instant::now()).await;
            if !evicted.is_empty() {
                tracing::info!(pods = ?evicted, "eviction manager: pods evicted");
            }
            tokio::time::sleep(MONITORING_INTERVAL).await;
        }
    }

    /// One cycle (upstream's `synchronize`); returns the UIDs of the pods evicted.
    pub async fn sync(&mut self, host: &dyn EvictionHost, now: Instant) -> Vec<String> {
        let Some(summary) = host.summary().await else {
            tracing::warn!("eviction manager: no stats summary");
            return Vec::new();
        };
        let obs = decide::observations(&summary);
        let decision = decide::synchronize(&mut self.state, &self.config, &obs, now);
        if decision.conditions != self.pressure.conditions() {
            tracing::info!(conditions = ?decision.conditions.names(), "eviction manager: node pressure changed");
        }
        self.pressure.set(decision.conditions);
        let stats: BTreeMap<String, PodStats> = summary
            .pods
            .iter()
            .map(|p| (p.pod_ref.uid.clone(), p.clone()))
            .collect();
        let workers: Vec<WorkerRef> = host
            .active_pods()
            .await
            .into_iter()
            .filter(|w| !is_terminal(&w.pod) && !self.evicted.contains(uid(&w.pod)))
            .collect();
        // Forget pods that left, so the set does not grow for ever.
        let present: BTreeSet<&str> = workers.iter().map(|w| uid(&w.pod)).collect();
        let dedicated = host.dedicated_image_fs();
        // Pods over their local-storage limits go first, all of them, without a condition.
        let mut evicted = Vec::new();
        for w in &workers {
            let Some(s) = stats.get(uid(&w.pod)) else {
                continue;
            };
            if let Some(v) = decide::local_storage_violation(&w.pod, s, dedicated)
                && self
                    .evict(
                        host,
                        w,
                        decide::IMMEDIATE_GRACE_SECONDS,
                        v.message,
                        false,
                        v.signal,
                    )
                    .await
            {
                evicted.push(uid(&w.pod).to_string());
            }
        }
        self.evicted
            .retain(|u| present.contains(u.as_str()) || evicted.contains(u));
        if !evicted.is_empty() {
            return evicted;
        }
        let Some(threshold) = decision.to_reclaim().copied() else {
            return evicted;
        };
        let resource = threshold.signal.resource();
        tracing::info!(
            resource,
            signal = threshold.signal.name(),
            "eviction manager: attempting to reclaim"
        );
        if resource != "memory" && resource != "pids" && self.reclaim_node(host, threshold.signal).await {
            tracing::info!(
                resource,
                "eviction manager: able to reduce resource pressure without evicting pods"
            );
            return evicted;
        }
        let mut pods: Vec<Pod> = workers.iter().map(|w| w.pod.clone()).collect();
        if pods.is_empty() {
            tracing::warn!("eviction manager: thresholds met, but no pods are active to evict");
            return evicted;
        }
        decide::rank(threshold.signal, &mut pods, &stats, dedicated);
        for pod in &pods {
            if decide::is_critical(pod) {
                tracing::warn!(
                    pod = crate::pods::pod_display(pod),
                    "eviction manager: cannot evict a critical pod"
                );
                continue;
            }
            let Some(w) = workers.iter().find(|w| uid(&w.pod) == uid(pod)) else {
                continue;
            };
            let message =
                decide::eviction_message(resource, pod, stats.get(uid(pod)), &decision.thresholds, &obs);
            let grace = decide::grace_seconds(pod, &threshold, self.config.max_pod_grace_period_seconds);
            if self
                .evict(host, w, grace, message, true, threshold.signal.name())
                .await
            {
                evicted.push(uid(pod).to_string());
                break;
            }
        }
        evicted
    }

    async fn evict(
        &mut self,
        host: &dyn EvictionHost,
        w: &WorkerRef,
        grace_seconds: i64,
        message: String,
        disruption: bool,
        signal: &str,
    ) -> bool {
        if decide::is_critical(&w.pod) {
            return false;
        }
        tracing::info!(
            pod = crate::pods::pod_display(&w.pod),
            message,
            "eviction manager: evicting pod"
        );
        let ok = host
            .evict(
                w,
                Eviction {
                    grace_seconds,
                    message,
                    disruption,
                },
            )
            .await;
        if ok {
            crate::metrics::registry().eviction(signal);
            self.evicted.insert(uid(&w.pod).to_string());
        }
        ok
    }

    /// Upstream's `reclaimNodeLevelResources`: true when, after reclaiming, no threshold is met.
    async fn reclaim_node(&self, host: &dyn EvictionHost, signal: Signal) -> bool {
        let freed = self.reclaimer.reclaim(signal).await;
        if freed == 0 {
            return false;
        }
        tracing::info!(
            freed,
            signal = signal.name(),
            "eviction manager: node-level resources reclaimed"
        );
        match host.summary().await {
            Some(s) => decide::thresholds_met(&self.config.thresholds, &decide::observations(&s)).is_empty(),
            None => false,
        }
    }
}

/// The kubelet's [`EvictionHost`]: stats from the [`StatsProvider`](crate::stats::collect::StatsProvider),
/// pods from the pod manager, evictions through the pod workers.
pub struct NodeHost {
    pub ctx: Arc<NodeContext>,
    pub stats: Arc<crate::stats::collect::StatsProvider>,
    /// The pod manager, asked for its workers.
    pub manager: mpsc::Sender<crate::pods::manager::ManagerMsg>,
    /// The filesystem holding images (containerd's snapshotter root), if known.
    pub image_fs: Option<PathBuf>,
    /// The node's memory capacity in bytes.
    pub memory_capacity: u64,
}

impl std::fmt::Debug for NodeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHost")
            .field("image_fs", &self.image_fs)
            .finish_non_exhaustive()
    }
}

fn same_fs(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => true,
    }
}

impl EvictionHost for NodeHost {
    fn summary(&self) -> BoxFuture<'_, Option<Summary>> {
        Box::pin(async move {
            let mut s = (*self.stats.summary().await).clone();
            if let Some(ws) = crate::cgroups::fs::root_working_set()
                && let Some(m) = s.node.memory.as_mut()
            {
                m.working_set_bytes = Some(ws);
                m.available_bytes = Some(self.memory_capacity.saturating_sub(ws));
            }
            if let (Some(path), Some(rt)) = (&self.image_fs, s.node.runtime.as_mut()) {
                let time = s.node.fs.as_ref().map(|f| f.time.clone()).unwrap_or_default();
                rt.image_fs = crate::stats::collect::statvfs_fs(path, &time).or(rt.image_fs.take());
            }
            Some(s)
        })
    }

    fn dedicated_image_fs(&self) -> bool {
        self.image_fs
            .as_ref()
            .is_some_and(|p| !same_fs(p, &self.ctx.root_dir))
    }

    fn active_pods(&self) -> BoxFuture<'_, Vec<WorkerRef>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if self
                .manager
                .send(crate::pods::manager::ManagerMsg::Workers(tx))
                .await
                .is_err()
            {
                return Vec::new();
            }
            rx.await.unwrap_or_default()
        })
    }

    fn evict<'a>(&'a self, w: &'a WorkerRef, eviction: Eviction) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            crate::pods::executor::event(
                &self.ctx,
                &w.pod,
                None,
                "Warning",
                super::REASON,
                eviction.message.clone(),
            );
            w.tx.send(WorkerMsg::Evict(eviction)).await.is_ok()
        })
    }
}
