//! The pod worker's loop: one turn is observe → [`pods::step`] → [`execute`] each action → observe
//! again → report the status → [`pods::stop::turn_end`] → wait for the next wake-up, pod update,
//! container event or stop request. What happens next is decided by the pure core
//! ([`pods::plan`], [`pods::stop`]); this file only carries it out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;

use super::api::{delete_from_api, event, patch_status};
use super::containers::{pull_image, start_container};
use super::observe::observe;
use super::sandbox::create_sandbox;
use super::terminate::{kill_container, kill_pod, remove_container, remove_pod};
use super::{NodeContext, WorkerMsg, find_container, lock, uid_of};
use crate::pods::ContainerKind;
use crate::pods::stop::{StopRequest, Stops, TurnEnd, reports_status, turn_end};
use crate::pods::{self, Action, Observed, Plan, StartError, WorkerState, pod_ref};
use crate::volumes;

/// How long a worker waits after a failed action before trying again.
const FAILED_SYNC_BACKOFF: Duration = Duration::from_secs(3);

/// What one turn's actions found out.
pub(super) struct Turn {
    /// The runtime picture the actions work from (refreshed after a new sandbox).
    pub observed: Observed,
    /// Containers whose pull or start failed: their later actions are skipped.
    pub failed_containers: BTreeSet<String>,
    /// The sandbox could not be made: the rest of the plan is skipped.
    pub sandbox_failed: bool,
    /// `RemovePod` left something behind (containerd unreachable): the worker must not finish.
    pub removal_failed: bool,
}

impl Turn {
    fn failed(&self) -> bool {
        self.sandbox_failed || self.removal_failed || !self.failed_containers.is_empty()
    }
}

/// One pod worker's state between turns.
pub(super) struct Worker {
    pub ctx: Arc<NodeContext>,
    pub pod: Pod,
    pub uid: String,
    pub state: WorkerState,
    /// The reason cache: why each container is not running (upstream's `reasonCache`).
    pub start_errors: BTreeMap<String, StartError>,
    pub stops: Stops,
    pub start_sli: crate::metrics::PodStartTracker,
}

/// Runs one pod's worker until the pod is gone.
pub async fn run(ctx: Arc<NodeContext>, pod: Pod, state: WorkerState, rx: mpsc::Receiver<WorkerMsg>) {
    let mut w = Worker::new(ctx, pod, state);
    let mut inbox = Inbox { rx: Some(rx) };
    tracing::info!(pod = %pod_ref(&w.pod), uid = w.uid, "pod worker started");
    loop {
        // Without a picture of the pod (containerd not answering) nothing is planned or reported:
        // the status keeps what was last known, and the turn is retried after the backoff.
        let Some((plan, turn)) = w.sync().await else {
            inbox.wait(&mut w, FAILED_SYNC_BACKOFF, FAILED_SYNC_BACKOFF).await;
            w.stops.mark(&mut w.pod, Timestamp::now());
            continue;
        };
        let failed = turn.failed();
        let observed = if plan.actions.is_empty() {
            turn.observed
        } else {
            match observe(&w.ctx, &w.pod, &w.start_errors).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(pod = %pod_ref(&w.pod), error = %e, "listing the pod's containers failed");
                    inbox.wait(&mut w, FAILED_SYNC_BACKOFF, FAILED_SYNC_BACKOFF).await;
                    w.stops.mark(&mut w.pod, Timestamp::now());
                    continue;
                }
            }
        };
        w.report(&observed).await;
        match turn_end(w.state, &w.stops, &w.pod) {
            TurnEnd::EndForShutdown => {
                tracing::info!(pod = %pod_ref(&w.pod), uid = w.uid, "pod stopped for the node shutdown");
                return;
            }
            TurnEnd::Finish {
                delete_from_api: delete,
            } => {
                if delete {
                    delete_from_api(&w.ctx, &w.pod).await;
                }
                tracing::info!(pod = %pod_ref(&w.pod), uid = w.uid, "pod worker finished");
                return;
            }
            TurnEnd::Continue { free_volumes } => {
                if free_volumes {
                    // As upstream frees a terminated pod's volumes: an evicted pod gives its disk back.
                    w.ctx.volumes.teardown(&w.ctx.root_dir, &w.uid);
                    w.stops.volumes_freed();
                }
            }
        }
        volumes::resync(&w.ctx, &w.pod, &observed).await;
        // After a failed action, back off (as upstream's pod workers requeue a failed sync) and let
        // container events not wake us early; a pod update still does.
        let backoff = if failed {
            FAILED_SYNC_BACKOFF
        } else {
            Duration::ZERO
        };
        inbox.wait(&mut w, wake_after(&plan), backoff).await;
        w.stops.mark(&mut w.pod, Timestamp::now());
    }
}

/// How long until the plan wants another turn (at most 10 s).
fn wake_after(plan: &Plan) -> Duration {
    plan.wake_at
        .map(
            |w| Duration::from_millis(w.duration_since(Timestamp::now()).as_millis().clamp(0, 10_000) as u64),
        )
        .unwrap_or(Duration::from_secs(10))
}

impl Worker {
    pub fn new(ctx: Arc<NodeContext>, pod: Pod, state: WorkerState) -> Self {
        Worker {
            uid: uid_of(&pod),
            start_sli: crate::metrics::PodStartTracker::new(&pod),
            ctx,
            pod,
            state,
            start_errors: BTreeMap::new(),
            stops: Stops::default(),
        }
    }

    /// Observes, steps the state machine and runs the plan's actions in order; `None` when the
    /// pod's containers cannot be listed (nothing is planned then).
    pub async fn sync(&mut self) -> Option<(Plan, Turn)> {
        let now = Timestamp::now();
        let observed = match observe(&self.ctx, &self.pod, &self.start_errors).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %pod_ref(&self.pod), error = %e, "listing the pod's containers failed");
                return None;
            }
        };
        let (plan, next) = {
            let book = lock(&self.ctx.book);
            pods::step(
                self.state,
                &pods::Input {
                    pod: &self.pod,
                    observed: &observed,
                    backoff: &book,
                    now,
                },
            )
        };
        let before = self.state;
        self.state = next;
        lock(&self.ctx.book).apply(&plan.backoff, now);
        self.hold(&plan.start_errors);
        let mut turn = Turn {
            observed,
            failed_containers: BTreeSet::new(),
            sandbox_failed: false,
            removal_failed: false,
        };
        for action in &plan.actions {
            if turn.sandbox_failed {
                break;
            }
            self.execute(action, &mut turn).await;
        }
        if turn.removal_failed {
            // Not finished after all: the next turn (after the failed-sync backoff) plans the
            // removal again.
            self.state = before;
        }
        Some((plan, turn))
    }

    /// Records the containers the plan holds back; a new CrashLoopBackOff gets a `BackOff` event.
    fn hold(&mut self, held: &[(String, StartError)]) {
        for (c, e) in held.iter().cloned() {
            if e.reason == "CrashLoopBackOff"
                && self
                    .start_errors
                    .get(&c)
                    .is_none_or(|x| x.reason != "CrashLoopBackOff")
            {
                event(
                    &self.ctx,
                    &self.pod,
                    Some(&c),
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container".into(),
                );
            }
            self.start_errors.insert(c, e);
        }
    }

    /// Carries out one action of the plan.
    pub async fn execute(&mut self, action: &Action, turn: &mut Turn) {
        let (ctx, pod) = (&self.ctx, &self.pod);
        match action {
            Action::CreateSandbox { attempt } => self.sandbox(*attempt, turn).await,
            Action::PullImage { container, image } => {
                if turn.failed_containers.contains(container) {
                    return;
                }
                if let Err(e) = pull_image(ctx, pod, container, image, &mut self.start_sli).await {
                    self.start_errors.insert(container.clone(), e);
                    turn.failed_containers.insert(container.clone());
                }
            }
            Action::StartContainer {
                container,
                attempt,
                spec_hash,
                ..
            } => {
                if turn.failed_containers.contains(container) {
                    return;
                }
                let started = start_container(ctx, pod, container, *attempt, spec_hash, &turn.observed).await;
                self.started(container, started, turn);
            }
            Action::KillContainer {
                id,
                container,
                grace_seconds,
                message,
            } => kill_container(ctx, pod, id, container, *grace_seconds, message).await,
            Action::RemoveContainer { id, .. } => {
                remove_container(ctx, id).await;
            }
            Action::KillPod { grace_seconds, .. } => kill_pod(ctx, pod, &turn.observed, *grace_seconds).await,
            Action::RemovePod => turn.removal_failed = !remove_pod(ctx, pod).await,
        }
    }

    async fn sandbox(&mut self, attempt: u32, turn: &mut Turn) {
        let (ctx, pod) = (&self.ctx, &self.pod);
        match create_sandbox(ctx, pod, attempt).await {
            Err(e) => {
                tracing::warn!(pod = %pod_ref(pod), error = %e.message, "sandbox creation failed");
                let reason = if e.reason == crate::network::NETWORK_NOT_READY_REASON {
                    crate::network::NETWORK_NOT_READY_REASON
                } else {
                    "FailedCreatePodSandBox"
                };
                event(ctx, pod, None, "Warning", reason, e.message.clone());
                turn.sandbox_failed = true;
                crate::metrics::registry().pod_start_failed();
            }
            Ok(()) => {
                crate::metrics::registry().pod_started();
                // Containers started next join the new sandbox and see its IP.
                match observe(ctx, pod, &self.start_errors).await {
                    Ok(o) => turn.observed = o,
                    // The containers wait for the next turn.
                    Err(_) => turn.sandbox_failed = true,
                }
            }
        }
    }

    /// Books a container start's outcome: the reason cache, metrics, the failure event.
    fn started(&mut self, container: &str, result: Result<(), StartError>, turn: &mut Turn) {
        let init = find_container(&self.pod, container).is_some_and(|(_, k)| k == ContainerKind::Init);
        let e = match result {
            Ok(()) => {
                self.start_errors.remove(container);
                crate::metrics::registry().container_started(init);
                return;
            }
            Err(e) => e,
        };
        if e.reason == volumes::WAITING_REASON {
            // Volumes not set up: the FailedMount event was recorded.
            turn.failed_containers.insert(container.to_string());
        } else if e.reason == "PostStartHookError" {
            // Already reported (FailedPostStartHook, Killing); restarts per policy.
        } else {
            tracing::warn!(pod = %pod_ref(&self.pod), container, reason = e.reason, error = %e.message, "container start failed");
            crate::metrics::registry().container_start_failed(&e.reason, init);
            event(
                &self.ctx,
                &self.pod,
                Some(container),
                "Warning",
                "Failed",
                format!("Error: {}", e.message),
            );
            turn.failed_containers.insert(container.to_string());
        }
        self.start_errors.insert(container.to_string(), e);
    }

    /// Computes the status (with the stops' on top) and patches it when it changed.
    pub async fn report(&mut self, observed: &Observed) {
        let status = pods::status(&self.pod, observed, Timestamp::now(), &self.ctx.node_ip);
        self.start_sli.observe(&self.pod, &status);
        let status = self.stops.status(status, Timestamp::now());
        let old = self.pod.status.clone().unwrap_or_default();
        if !pods::status_changed(&old, &status) || !reports_status(self.state, &self.stops) {
            return;
        }
        match patch_status(&self.ctx, &self.pod, &status).await {
            Ok(()) => {
                tracing::info!(pod = %pod_ref(&self.pod), phase = status.phase.as_deref().unwrap_or(""), "status updated");
                self.pod.status = Some(status);
            }
            Err(e) => tracing::warn!(pod = %pod_ref(&self.pod), error = %e, "status update failed"),
        }
    }

    /// A new version of the pod object (its status kept when the update has none).
    fn update(&mut self, pod: Pod) {
        let keep = self.pod.status.take();
        self.pod = pod;
        if self.pod.status.is_none() {
            self.pod.status = keep;
        }
    }

    /// A stop request: recorded for good; an orphaned pod is marked deleted at once.
    pub fn stop(&mut self, request: StopRequest) {
        if request == StopRequest::Orphaned {
            crate::pods::stop::mark_orphaned(&mut self.pod, Timestamp::now());
        }
        self.stops.add(request);
    }
}

/// The worker's messages; closed once the pod left its source.
struct Inbox {
    rx: Option<mpsc::Receiver<WorkerMsg>>,
}

impl Inbox {
    /// Waits for the next turn: `wake` (at least `backoff`), a pod update or stop request, or a
    /// container event once `backoff` passed; then takes what else is queued.
    async fn wait(&mut self, w: &mut Worker, wake: Duration, backoff: Duration) {
        let started = std::time::Instant::now();
        let Some(rx) = self.rx.as_mut() else {
            tokio::time::sleep(wake.max(backoff)).await;
            return;
        };
        let mut close = false;
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = tokio::time::sleep(wake.max(backoff).saturating_sub(started.elapsed())) => break,
            };
            match msg {
                Some(WorkerMsg::Poke) if started.elapsed() < backoff => continue,
                // The API echoing the worker's own status patch is no reason to retry a failed
                // sync early (that made a hot loop of CreateContainerError); a change of what the
                // pod wants is.
                Some(WorkerMsg::Update(p)) if started.elapsed() < backoff && !wants_changed(&w.pod, &p) => {
                    w.update(*p);
                    continue;
                }
                Some(WorkerMsg::Poke) => break,
                // The pod left its source: nothing more to wait for but the plan's wake-ups.
                Some(WorkerMsg::Removed) | None => {
                    receive(w, WorkerMsg::Removed);
                    close = true;
                    break;
                }
                Some(msg) => {
                    receive(w, msg);
                    break;
                }
            }
        }
        // Coalesce a burst of messages.
        while let Ok(msg) = rx.try_recv() {
            receive(w, msg);
        }
        if close {
            self.rx = None;
        }
    }
}

/// Whether `new` asks for something `old` did not: its spec, labels, annotations or deletion
/// (upstream's pod config likewise ignores status-only updates).
fn wants_changed(old: &Pod, new: &Pod) -> bool {
    let (a, b) = (&old.metadata, &new.metadata);
    old.spec != new.spec
        || a.labels != b.labels
        || a.annotations != b.annotations
        || a.deletion_timestamp != b.deletion_timestamp
        || a.deletion_grace_period_seconds != b.deletion_grace_period_seconds
}

/// Applies one message to the worker.
fn receive(w: &mut Worker, msg: WorkerMsg) {
    match msg {
        WorkerMsg::Update(p) => w.update(*p),
        WorkerMsg::Poke => {}
        WorkerMsg::Removed => w.stop(StopRequest::Orphaned),
        WorkerMsg::Shutdown { grace_seconds } => w.stop(StopRequest::NodeShutdown { grace_seconds }),
        WorkerMsg::Evict(e) => w.stop(StopRequest::Evicted(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_pod_wants_counts_as_a_change() {
        let old: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "resourceVersion": "1", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        let mut echo = old.clone();
        echo.metadata.resource_version = Some("2".into());
        echo.status = None;
        assert!(!wants_changed(&old, &echo), "a status-only update");
        let mut relabelled = echo.clone();
        relabelled.metadata.labels = None;
        assert!(wants_changed(&old, &relabelled));
        let mut deleted = echo.clone();
        deleted.metadata.deletion_grace_period_seconds = Some(30);
        assert!(wants_changed(&old, &deleted));
    }
}
