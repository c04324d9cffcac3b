//! Stops that come from outside the pod object — the pod left its source, the node shuts down, the
//! eviction manager evicts the pod — as inputs of the pod worker, and the worker's pure end-of-turn
//! policy ([`turn_end`]): whether to report status, free volumes, end, or delete the pod object.
//!
//! A stop is kept for good once received (a shutdown or an eviction outlives later pod updates). The
//! pod object carries the stop into [`super::step`]: [`Stops::mark`] sets the deletion mark of an
//! orphaned pod and the terminal phase and shortened grace period of a stopped one; the reported
//! status gets the stop's phase, reason and conditions from [`Stops::status`].

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::DEFAULT_GRACE_SECONDS;
use super::{Timestamp, WorkerState, is_static};
use crate::eviction::manager::Eviction;

/// Why a pod worker stops its pod, besides what the pod object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopRequest {
    /// The pod left its source without a graceful deletion (force-deleted in the API, its static
    /// manifest removed): kill and remove it, write nothing about it to the API.
    Orphaned,
    /// The node shuts down ([`crate::shutdown`]): stop every container with at most this grace
    /// period, report the pod terminated by the shutdown, keep its data, end the worker.
    NodeShutdown { grace_seconds: i64 },
    /// The eviction manager evicts the pod ([`crate::eviction`]): stop it as a shutdown does, report
    /// it `Failed`/`Evicted`, free its volumes, keep the worker until the pod is deleted.
    Evicted(Eviction),
}

/// The stops a worker received (at most one of each kind; a later one of a kind replaces it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stops {
    orphaned: bool,
    shutdown: Option<i64>,
    evicted: Option<Eviction>,
    /// The evicted pod's volumes were torn down.
    volumes_freed: bool,
}

/// What the worker does at the end of a turn, once the status is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnd {
    /// Sync again later; first tear the (evicted, stopped) pod's volumes down when `free_volumes`.
    Continue { free_volumes: bool },
    /// The pod stopped for the node shutdown: end the worker, keep the pod's containers and data.
    EndForShutdown,
    /// Everything of the pod is removed: end the worker, after deleting the pod object (grace 0)
    /// when `delete_from_api`.
    Finish { delete_from_api: bool },
}

impl Stops {
    /// Records a stop.
    pub fn add(&mut self, request: StopRequest) {
        match request {
            StopRequest::Orphaned => self.orphaned = true,
            StopRequest::NodeShutdown { grace_seconds } => self.shutdown = Some(grace_seconds),
            StopRequest::Evicted(e) => self.evicted = Some(e),
        }
    }

    /// Whether the pod left its source (nothing about it goes to the API any more).
    pub fn orphaned(&self) -> bool {
        self.orphaned
    }

    /// The stops as [`StopRequest`]s, in the order they apply.
    pub fn requests(&self) -> Vec<StopRequest> {
        let mut out = Vec::new();
        if self.orphaned {
            out.push(StopRequest::Orphaned);
        }
        if let Some(grace_seconds) = self.shutdown {
            out.push(StopRequest::NodeShutdown { grace_seconds });
        }
        if let Some(e) = &self.evicted {
            out.push(StopRequest::Evicted(e.clone()));
        }
        out
    }

    /// Carries the stops into the pod object the plan reads: an orphaned pod counts as deleted
    /// (with its spec's grace period), a shut-down or evicted one as terminal with at most the
    /// stop's grace period ([`crate::shutdown::mark_for_shutdown`]). Idempotent.
    pub fn mark(&self, pod: &mut Pod, now: Timestamp) {
        for request in self.requests() {
            match request {
                StopRequest::Orphaned => mark_orphaned(pod, now),
                StopRequest::NodeShutdown { grace_seconds } => {
                    crate::shutdown::mark_for_shutdown(pod, grace_seconds)
                }
                StopRequest::Evicted(e) => crate::shutdown::mark_for_shutdown(pod, e.grace_seconds),
            }
        }
    }

    /// The status to report: the pod's computed status with the stops' phase, reason, message and
    /// conditions on top.
    pub fn status(&self, status: PodStatus, now: Timestamp) -> PodStatus {
        let status = match self.shutdown {
            Some(_) => crate::shutdown::terminated_status(status, now),
            None => status,
        };
        match &self.evicted {
            Some(e) => crate::eviction::evicted_status(status, &e.message, e.disruption, now),
            None => status,
        }
    }

    /// Records that the evicted pod's volumes were torn down.
    pub fn volumes_freed(&mut self) {
        self.volumes_freed = true;
    }
}

/// Marks a pod that left its source as deleted, when it is not already.
pub fn mark_orphaned(pod: &mut Pod, now: Timestamp) {
    if pod.metadata.deletion_timestamp.is_none() {
        pod.metadata.deletion_timestamp = Some(Time(now));
        pod.metadata.deletion_grace_period_seconds = Some(
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE_SECONDS),
        );
    }
}

/// Whether a changed status is written to the API: not for an orphaned pod, and not once the pod
/// is removed.
pub fn reports_status(state: WorkerState, stops: &Stops) -> bool {
    !stops.orphaned && !matches!(state, WorkerState::Finished)
}

/// The end-of-turn policy (upstream's pod workers: a pod stopped for the node shutdown ends its
/// worker; an evicted pod gives its disk back once stopped and waits for its deletion; a removed
/// pod that was deleted gracefully is deleted for good, unless it is static or orphaned).
pub fn turn_end(state: WorkerState, stops: &Stops, pod: &Pod) -> TurnEnd {
    let stopped = !matches!(state, WorkerState::Syncing);
    if stops.shutdown.is_some() && stopped {
        return TurnEnd::EndForShutdown;
    }
    if matches!(state, WorkerState::Finished) {
        let delete_from_api = pod.metadata.deletion_timestamp.is_some()
            && !is_static(pod)
            && !stops.orphaned
            && pod.metadata.name.is_some();
        return TurnEnd::Finish { delete_from_api };
    }
    TurnEnd::Continue {
        free_volumes: stops.evicted.is_some() && !stops.volumes_freed && stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::TerminationReason;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some("u1".into());
        p.spec = Some(Default::default());
        p
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn eviction() -> Eviction {
        Eviction {
            grace_seconds: 0,
            message: "The node was low on resource: memory. ".into(),
            disruption: true,
        }
    }

    const TERMINATING: WorkerState = WorkerState::Terminating {
        reason: TerminationReason::Terminal,
        grace_seconds: 5,
    };

    #[test]
    fn no_stop_syncs_and_reports() {
        let stops = Stops::default();
        assert!(reports_status(WorkerState::Syncing, &stops));
        assert_eq!(
            turn_end(WorkerState::Syncing, &stops, &pod()),
            TurnEnd::Continue { free_volumes: false }
        );
        let mut p = pod();
        stops.mark(&mut p, now());
        assert_eq!(p, pod());
    }

    #[test]
    fn orphaned_pod_is_deleted_with_its_grace_and_never_reported() {
        let mut stops = Stops::default();
        stops.add(StopRequest::Orphaned);
        let mut p = pod();
        if let Some(s) = p.spec.as_mut() {
            s.termination_grace_period_seconds = Some(7);
        }
        stops.mark(&mut p, now());
        assert_eq!(p.metadata.deletion_timestamp, Some(Time(now())));
        assert_eq!(p.metadata.deletion_grace_period_seconds, Some(7));
        assert!(!reports_status(WorkerState::Syncing, &stops));
        // Removed for good, but not deleted from the API: it is not there any more.
        assert_eq!(
            turn_end(WorkerState::Finished, &stops, &p),
            TurnEnd::Finish {
                delete_from_api: false
            }
        );
        // An existing deletion mark is kept.
        let before = p.clone();
        stops.mark(&mut p, Timestamp::UNIX_EPOCH);
        assert_eq!(p, before);
    }

    #[test]
    fn deleted_pod_is_deleted_from_the_api_when_finished_unless_static() {
        let stops = Stops::default();
        let mut p = pod();
        p.metadata.deletion_timestamp = Some(Time(now()));
        assert!(!reports_status(WorkerState::Finished, &stops));
        assert_eq!(
            turn_end(WorkerState::Finished, &stops, &p),
            TurnEnd::Finish {
                delete_from_api: true
            }
        );
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/config.source".into(), "file".into());
        assert_eq!(
            turn_end(WorkerState::Finished, &stops, &p),
            TurnEnd::Finish {
                delete_from_api: false
            }
        );
        // Finished without a deletion: nothing to delete.
        assert_eq!(
            turn_end(WorkerState::Finished, &stops, &pod()),
            TurnEnd::Finish {
                delete_from_api: false
            }
        );
    }

    #[test]
    fn shutdown_marks_reports_terminated_and_ends_once_stopped() {
        let mut stops = Stops::default();
        stops.add(StopRequest::NodeShutdown { grace_seconds: 3 });
        let mut p = pod();
        if let Some(s) = p.spec.as_mut() {
            s.termination_grace_period_seconds = Some(30);
        }
        stops.mark(&mut p, now());
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds),
            Some(3)
        );
        assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed"));
        let st = stops.status(PodStatus::default(), now());
        assert_eq!(st.reason.as_deref(), Some(crate::shutdown::SHUTDOWN_REASON));
        assert!(reports_status(TERMINATING, &stops));
        // Still syncing (the plan has not seen the stop yet): go on.
        assert_eq!(
            turn_end(WorkerState::Syncing, &stops, &p),
            TurnEnd::Continue { free_volumes: false }
        );
        assert_eq!(turn_end(TERMINATING, &stops, &p), TurnEnd::EndForShutdown);
        // Even when finished: the pod's data stays for the next kubelet.
        assert_eq!(
            turn_end(WorkerState::Finished, &stops, &p),
            TurnEnd::EndForShutdown
        );
    }

    #[test]
    fn eviction_reports_evicted_frees_volumes_once_and_waits_for_deletion() {
        let mut stops = Stops::default();
        stops.add(StopRequest::Evicted(eviction()));
        let mut p = pod();
        stops.mark(&mut p, now());
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds),
            Some(0)
        );
        let st = stops.status(PodStatus::default(), now());
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("Evicted"));
        assert_eq!(st.message.as_deref(), Some(eviction().message.as_str()));
        assert_eq!(
            turn_end(WorkerState::Syncing, &stops, &p),
            TurnEnd::Continue { free_volumes: false }
        );
        assert_eq!(
            turn_end(TERMINATING, &stops, &p),
            TurnEnd::Continue { free_volumes: true }
        );
        stops.volumes_freed();
        assert_eq!(
            turn_end(TERMINATING, &stops, &p),
            TurnEnd::Continue { free_volumes: false }
        );
    }

    #[test]
    fn requests_keep_one_of_each_kind_in_order() {
        let mut stops = Stops::default();
        stops.add(StopRequest::Evicted(eviction()));
        stops.add(StopRequest::NodeShutdown { grace_seconds: 9 });
        stops.add(StopRequest::NodeShutdown { grace_seconds: 4 });
        stops.add(StopRequest::Orphaned);
        assert_eq!(
            stops.requests(),
            vec![
                StopRequest::Orphaned,
                StopRequest::NodeShutdown { grace_seconds: 4 },
                StopRequest::Evicted(eviction()),
            ]
        );
        // Shutdown first, eviction on top: the eviction's reason wins.
        let st = stops.status(PodStatus::default(), now());
        assert_eq!(st.reason.as_deref(), Some("Evicted"));
    }
}
