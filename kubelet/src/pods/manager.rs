//! The pod manager, the kubelet's main loop: pods from the sources ([`super::sources`]) are admitted
//! and get one worker each ([`super::executor::run`], keyed by UID); container events and probe
//! results are routed to the pod's worker; mirror pods are tracked and deleted with their static
//! pods; containers no worker owns are removed periodically. It also feeds the systemd watchdog, so
//! a stuck manager stops the pings and systemd restarts the kubelet (containers keep running).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::mpsc;

use super::executor::{self, NodeContext, WorkerMsg};
use super::sources::mirror::{MirrorRef, delete_mirror};
use super::{NodeCapacity, WorkerState, is_static};

/// A message to the pod manager.
#[derive(Debug)]
pub enum ManagerMsg {
    /// A pod from a source (API or file), new or changed.
    Apply(Box<Pod>, Source),
    /// A pod left its source.
    Gone(String),
    /// Something happened to one of the pod's containers.
    Poke(String),
    /// Containerd events may have been missed: every worker observes again.
    PokeAll,
    /// A worker ended.
    Done(String),
    /// A probe run failed (an `Unhealthy` event about the pod).
    ProbeFailed(crate::probes::ProbeEvent),
    /// The node is shutting down: hand the running workers to [`crate::shutdown`] and admit no
    /// new pods from now on.
    Shutdown(crate::shutdown::WorkersRequest),
    /// The eviction manager asks for the pod workers (nothing else changes).
    Workers(crate::shutdown::WorkersRequest),
}

/// Where a pod comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    File,
}

struct WorkerHandle {
    tx: mpsc::Sender<WorkerMsg>,
    pod: Pod,
}

/// The pod manager's state.
pub struct PodManager {
    ctx: Arc<NodeContext>,
    /// For the workers' `Done`.
    tx: mpsc::Sender<ManagerMsg>,
    allocatable: NodeCapacity,
    pressure: Arc<crate::eviction::Pressure>,
    gc: Arc<crate::gc::GarbageCollector>,
    workers: HashMap<String, WorkerHandle>,
    /// Mirror pods seen in the API (by their API UID), to delete those whose static pod is gone.
    mirrors: HashMap<String, MirrorRef>,
    /// Static pods whose manifest is gone: their mirror pods go when their workers end (not those
    /// stopped by a node shutdown, which keep their terminal status).
    static_removed: HashSet<String>,
    shutting_down: bool,
}

impl std::fmt::Debug for PodManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodManager")
            .field("workers", &self.workers.len())
            .field("shutting_down", &self.shutting_down)
            .finish_non_exhaustive()
    }
}

impl PodManager {
    pub fn new(
        ctx: Arc<NodeContext>,
        tx: mpsc::Sender<ManagerMsg>,
        allocatable: NodeCapacity,
        pressure: Arc<crate::eviction::Pressure>,
        gc: Arc<crate::gc::GarbageCollector>,
    ) -> Self {
        PodManager {
            ctx,
            tx,
            allocatable,
            pressure,
            gc,
            workers: HashMap::new(),
            mirrors: HashMap::new(),
            static_removed: HashSet::new(),
            shutting_down: false,
        }
    }

    /// Runs until every sender of `rx` is gone.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<ManagerMsg>,
        mut watchdog: Option<knode_systemd::Watchdog>,
    ) {
        let mut orphan_check = tokio::time::interval(Duration::from_secs(20));
        orphan_check.tick().await;
        let started = Instant::now();
        let mut wd_tick = tokio::time::interval(
            watchdog
                .as_ref()
                .map(|w| w.period())
                .unwrap_or(Duration::from_secs(3600)),
        );
        loop {
            if let Some(w) = watchdog.as_mut()
                && let Err(e) = w.alive()
            {
                tracing::warn!(error = %e, "watchdog ping failed");
            }
            tokio::select! {
                _ = wd_tick.tick() => {}
                m = rx.recv() => match m {
                    Some(m) => self.handle(m).await,
                    None => return,
                },
                _ = orphan_check.tick() => {
                    // Pods stopped by a node shutdown keep their containers and logs.
                    if started.elapsed() > Duration::from_secs(15) && !self.shutting_down {
                        self.housekeeping().await;
                    }
                }
            }
        }
    }

    /// Containers of pods no worker owns, and mirror pods of static pods removed while the kubelet
    /// was down (upstream's HandlePodCleanups deletes orphaned mirror pods the same way).
    async fn housekeeping(&self) {
        cleanup_orphans(&self.ctx, &self.workers).await;
        for m in self
            .mirrors
            .values()
            .filter(|m| !self.workers.contains_key(&m.hash))
        {
            tokio::spawn(delete_mirror(self.ctx.client.clone(), m.clone()));
        }
        self.gc.pods_reported(self.workers.keys());
    }

    async fn handle(&mut self, msg: ManagerMsg) {
        match msg {
            ManagerMsg::Apply(..) if self.shutting_down => {
                // Upstream rejects pods while the node shuts down; here they simply wait for the
                // next kubelet, and workers being stopped keep their marked copy of the pod.
            }
            ManagerMsg::Shutdown(reply) => {
                self.shutting_down = true;
                let _ = reply.send(self.worker_refs());
            }
            ManagerMsg::Workers(reply) => {
                let _ = reply.send(self.worker_refs());
            }
            ManagerMsg::Apply(pod, source) => self.apply(pod, source).await,
            ManagerMsg::Gone(uid) => {
                self.mirrors.remove(&uid);
                if let Some(w) = self.workers.get(&uid) {
                    if is_static(&w.pod) {
                        self.static_removed.insert(uid.clone());
                    }
                    let _ = w.tx.send(WorkerMsg::Removed).await;
                }
            }
            ManagerMsg::Poke(uid) => {
                if let Some(w) = self.workers.get(&uid) {
                    let _ = w.tx.try_send(WorkerMsg::Poke);
                }
            }
            ManagerMsg::PokeAll => {
                for w in self.workers.values() {
                    let _ = w.tx.try_send(WorkerMsg::Poke);
                }
            }
            ManagerMsg::Done(uid) => self.done(&uid),
            ManagerMsg::ProbeFailed(ev) => {
                if let Some(w) = self.workers.get(&ev.pod_uid) {
                    executor::event(
                        &self.ctx,
                        &w.pod,
                        Some(&ev.container),
                        "Warning",
                        crate::probes::ProbeEvent::REASON,
                        ev.event_message(),
                    );
                }
            }
        }
    }

    fn worker_refs(&self) -> Vec<crate::shutdown::WorkerRef> {
        self.workers
            .values()
            .map(|w| crate::shutdown::WorkerRef {
                pod: w.pod.clone(),
                tx: w.tx.clone(),
            })
            .collect()
    }

    /// A new or changed pod: to its worker, or admitted and given a worker.
    async fn apply(&mut self, pod: Box<Pod>, source: Source) {
        let is_mirror = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
        if source == Source::Api && is_mirror {
            if let Some(m) = MirrorRef::of(&pod) {
                self.mirrors.insert(m.api_uid.clone(), m);
            }
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(w) = self.workers.get_mut(&uid) {
            w.pod = (*pod).clone();
            let _ = w.tx.send(WorkerMsg::Update(pod)).await;
            return;
        }
        let (pod, state) = self.admit(pod).await;
        let (wtx, wrx) = mpsc::channel(64);
        self.workers.insert(
            uid.clone(),
            WorkerHandle {
                tx: wtx,
                pod: (*pod).clone(),
            },
        );
        let ctx = self.ctx.clone();
        let done = self.tx.clone();
        tokio::spawn(async move {
            executor::run(ctx, *pod, state, wrx).await;
            let _ = done.send(ManagerMsg::Done(uid)).await;
        });
    }

    /// Admission (resources, node security settings, node pressure): a refused pod gets its
    /// terminal status and event here, and its worker starts from that status.
    async fn admit(&self, mut pod: Box<Pod>) -> (Box<Pod>, WorkerState) {
        let active: Vec<Pod> = self.workers.values().map(|w| w.pod.clone()).collect();
        let admission = super::admit(&pod, &active, &self.allocatable)
            .and_then(|()| self.ctx.security.admit(&pod))
            .and_then(|()| self.pressure.admit(&pod));
        let state = WorkerState::admitted(&admission);
        if let Err(r) = &admission {
            let status = super::rejected_status(&pod, r);
            let api: Api<Pod> = Api::namespaced(
                self.ctx.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let patch = crate::pods::status::status_patch(&status);
            if let Some(name) = &pod.metadata.name {
                let _ = api
                    .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await;
            }
            executor::event(
                &self.ctx,
                &pod,
                None,
                "Warning",
                &status.reason.clone().unwrap_or_default(),
                status.message.clone().unwrap_or_default(),
            );
            // The worker starts from the rejected status, so its first status update keeps the
            // terminal phase instead of overwriting it with Pending.
            pod.status = Some(status);
        }
        (pod, state)
    }

    /// A worker ended. A static pod that finished terminating (its manifest removed or changed)
    /// takes its mirror pod with it, as upstream; the mirror of a changed manifest's new version
    /// carries another hash and stays.
    fn done(&mut self, uid: &str) {
        if let Some(w) = self.workers.remove(uid)
            && self.static_removed.remove(uid)
            && let Some(m) = MirrorRef::of(&w.pod)
        {
            // Off the main loop: it also feeds the watchdog.
            tokio::spawn(delete_mirror(self.ctx.client.clone(), m));
        }
    }
}

/// Removes containers (and sandboxes) of pods no worker owns: pods deleted while the kubelet was
/// down, or left over from a crash.
async fn cleanup_orphans(ctx: &Arc<NodeContext>, workers: &HashMap<String, WorkerHandle>) {
    let Ok(listed) = ctx.runtime.list_containers().await else {
        return;
    };
    let mut orphan_pods: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Sandboxes without containers (a pod deleted before its containers were made): network too.
    for uid in crate::network::sandbox_uids(&ctx.root_dir.join("sandboxes")) {
        if !workers.contains_key(&uid) {
            orphan_pods.entry(uid).or_default();
        }
    }
    for l in listed {
        if !workers.contains_key(&l.meta.pod_uid) {
            orphan_pods.insert(
                l.meta.pod_uid.clone(),
                (l.meta.pod_namespace.clone(), l.meta.pod_name.clone()),
            );
        }
    }
    for (uid, (ns, name)) in orphan_pods {
        tracing::info!(
            pod = format!("{ns}/{name}"),
            uid,
            "removing containers of a pod that is no longer assigned to this node"
        );
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                uid: Some(uid),
                namespace: Some(ns),
                name: Some(name),
                ..Default::default()
            },
            ..Default::default()
        };
        // A failure is retried at the next sweep.
        let _ = executor::remove_pod(ctx, &pod).await;
    }
}
