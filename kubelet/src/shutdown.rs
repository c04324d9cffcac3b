//! Graceful node shutdown (upstream's node shutdown manager, kubernetes#107043 semantics).
//!
//! With `shutdownGracePeriod` > 0 the kubelet, on SIGTERM, terminates the node's active pods in
//! priority order before it exits: regular pods first, given `shutdownGracePeriod -
//! shutdownGracePeriodCriticalPods`, then critical pods (priority ≥ `system-cluster-critical`'s
//! 2000000000) with `shutdownGracePeriodCriticalPods`. Each pod's grace period is its own
//! `terminationGracePeriodSeconds` when that is shorter than its group's period. Terminated pods are
//! reported as upstream does: phase `Failed`, reason `Terminated`, message "Pod was terminated in
//! response to imminent node shutdown.", and a `DisruptionTarget` condition.
//!
//! With the default `shutdownGracePeriod: 0` the kubelet exits and leaves the containers running, so
//! a restarted kubelet adopts them. Note that systemd stops *and restarts* a unit with SIGTERM: with a
//! grace period set, `systemctl restart kubelet` also terminates the pods. That is why knode's shipped
//! configuration leaves it at 0 (see `systemd/README.md`).
//!
//! The pure part ([`ShutdownPlan`], [`ShutdownPlan::stages`], [`mark_for_shutdown`],
//! [`terminated_status`]) decides; [`run`] drives the pod workers: each worker of a stage gets
//! [`WorkerMsg::Shutdown`], kills its containers with the given grace period, reports the status
//! and ends; the next stage starts when every worker of this one has ended, or at the latest
//! [`REPORT_ALLOWANCE`] after the stage's period (containers get SIGKILL at the period's end; the
//! allowance is for seeing them exit and reporting the pods).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::pods::executor::WorkerMsg;

/// The reason of a pod terminated by a node shutdown (upstream's `nodeShutdownReason`).
pub const SHUTDOWN_REASON: &str = "Terminated";
/// The message of a pod terminated by a node shutdown (upstream's `nodeShutdownMessage`).
pub const SHUTDOWN_MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";
/// The pod condition set on pods the kubelet terminates (upstream's `DisruptionTarget`).
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// The condition's reason (upstream's `PodReasonTerminationByKubelet`).
pub const TERMINATION_BY_KUBELET: &str = "TerminationByKubelet";
/// Upstream's `scheduling.SystemCriticalPriority`: pods at or above it are critical.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// How long a stage waits beyond its period for its pods' last SIGKILLs and status reports.
pub const REPORT_ALLOWANCE: Duration = Duration::from_secs(2);

/// One priority group of the shutdown: pods with at least `min_priority` (and below the next
/// group's) get `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityGroup {
    pub min_priority: i32,
    pub period: Duration,
}

/// The shutdown's priority groups, lowest priority first (terminated first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownPlan {
    pub groups: Vec<PriorityGroup>,
}

/// One pod to terminate and the grace period it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodShutdown {
    pub uid: String,
    pub grace_seconds: i64,
}

/// The pods terminated together, and how long the shutdown waits for them at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub period: Duration,
    pub pods: Vec<PodShutdown>,
}

impl ShutdownPlan {
    /// Upstream's `migrateConfig`: two groups (priority 0 with `grace - critical`, priority
    /// 2000000000 with `critical`), or none — graceful shutdown off — when `grace` is zero or
    /// `critical` exceeds it (the config validation refuses the latter).
    pub fn from_config(grace: Duration, critical: Duration) -> Self {
        if grace.is_zero() || critical > grace {
            return Self::default();
        }
        ShutdownPlan {
            groups: vec![
                PriorityGroup {
                    min_priority: 0,
                    period: grace - critical,
                },
                PriorityGroup {
                    min_priority: SYSTEM_CRITICAL_PRIORITY,
                    period: critical,
                },
            ],
        }
    }

    /// Whether SIGTERM terminates the pods (else the kubelet exits and leaves them running).
    pub fn enabled(&self) -> bool {
        !self.groups.is_empty()
    }

    /// The configured `shutdownGracePeriod`: every container is stopped within it.
    pub fn total(&self) -> Duration {
        self.groups.iter().map(|g| g.period).sum()
    }

    /// The stages in order: active pods grouped by priority as upstream's `groupByPriority` (below
    /// the lowest group → the lowest; above the highest → the highest; otherwise the highest
    /// group whose priority the pod reaches). Terminal pods (Succeeded/Failed) are left alone, as
    /// are groups without pods.
    pub fn stages(&self, pods: &[Pod]) -> Vec<Stage> {
        let mut stages: Vec<Stage> = self
            .groups
            .iter()
            .map(|g| Stage {
                period: g.period,
                pods: Vec::new(),
            })
            .collect();
        if stages.is_empty() {
            return stages;
        }
        for pod in pods.iter().filter(|p| !is_terminal(p)) {
            let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            let index = self
                .groups
                .iter()
                .rposition(|g| g.min_priority <= priority)
                .unwrap_or(0);
            let period_secs = self.groups[index].period.as_secs() as i64;
            let own = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            stages[index].pods.push(PodShutdown {
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                grace_seconds: own.clamp(0, period_secs),
            });
        }
        stages.retain(|s| !s.pods.is_empty());
        stages
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Makes a worker's copy of the pod stop for good with `grace_seconds`: a terminal phase (so the
/// worker's plan kills every container and restarts none) and the grace period as the spec's.
pub fn mark_for_shutdown(pod: &mut Pod, grace_seconds: i64) {
    let status = pod.status.get_or_insert_with(Default::default);
    status.phase = Some("Failed".into());
    if let Some(spec) = pod.spec.as_mut() {
        let own = spec.termination_grace_period_seconds.unwrap_or(30);
        spec.termination_grace_period_seconds = Some(own.min(grace_seconds).max(0));
    }
}

/// The status of a pod terminated by the shutdown: `status` with upstream's phase, reason, message
/// and `DisruptionTarget` condition (kept as it was when already set).
pub fn terminated_status(mut status: PodStatus, now: Timestamp) -> PodStatus {
    status.phase = Some("Failed".into());
    status.reason = Some(SHUTDOWN_REASON.into());
    status.message = Some(SHUTDOWN_MESSAGE.into());
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let wanted = PodCondition {
        type_: DISRUPTION_TARGET.into(),
        status: "True".into(),
        reason: Some(TERMINATION_BY_KUBELET.into()),
        message: Some(SHUTDOWN_MESSAGE.into()),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    };
    match conditions.iter_mut().find(|c| c.type_ == DISRUPTION_TARGET) {
        Some(c) if c.status == "True" && c.reason == wanted.reason => {}
        Some(c) => *c = wanted,
        None => conditions.push(wanted),
    }
    status
}

/// A running pod worker as the pod manager hands it to the shutdown.
#[derive(Debug)]
pub struct WorkerRef {
    pub pod: Pod,
    pub tx: mpsc::Sender<WorkerMsg>,
}

/// The request the pod manager answers with its workers (it admits no new pods from then on).
pub type WorkersRequest = oneshot::Sender<Vec<WorkerRef>>;

/// Terminates the pods of `workers` stage by stage (see the module doc). Returns how many pods were
/// asked to stop and how many of them had not finished when their stage's period ran out.
pub async fn run(plan: &ShutdownPlan, workers: Vec<WorkerRef>) -> (usize, usize) {
    let pods: Vec<Pod> = workers.iter().map(|w| w.pod.clone()).collect();
    let stages = plan.stages(&pods);
    let (mut asked, mut late) = (0, 0);
    for (i, stage) in stages.iter().enumerate() {
        tracing::info!(
            stage = i,
            pods = stage.pods.len(),
            period = ?stage.period,
            "node shutdown: terminating pods"
        );
        let mut waiting = Vec::new();
        for p in &stage.pods {
            let Some(w) = workers
                .iter()
                .find(|w| w.pod.metadata.uid.as_deref() == Some(p.uid.as_str()))
            else {
                continue;
            };
            let msg = WorkerMsg::Shutdown {
                grace_seconds: p.grace_seconds,
            };
            if w.tx.send(msg).await.is_ok() {
                asked += 1;
                waiting.push(w.tx.clone());
            }
        }
        // A worker ends (dropping its receiver) once its pod is stopped and reported.
        let all_done = futures::future::join_all(waiting.iter().map(|tx| tx.closed()));
        // Containers still running at the period's end get SIGKILL then; the allowance lets the
        // workers see them exit and report the pods before the next stage (or the exit).
        let wait = stage.period + REPORT_ALLOWANCE;
        if tokio::time::timeout(wait, all_done).await.is_err() {
            let n = waiting.iter().filter(|tx| !tx.is_closed()).count();
            late += n;
            tracing::warn!(
                stage = i,
                pods = n,
                "node shutdown: pods still terminating when the period ran out"
            );
        }
    }
    (asked, late)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(uid: &str, priority: Option<i32>, grace: Option<i64>, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                priority,
                termination_grace_period_seconds: grace,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn uids(stage: &Stage) -> Vec<(&str, i64)> {
        stage
            .pods
            .iter()
            .map(|p| (p.uid.as_str(), p.grace_seconds))
            .collect()
    }

    #[test]
    fn zero_grace_period_disables_graceful_shutdown() {
        let plan = ShutdownPlan::from_config(Duration::ZERO, Duration::ZERO);
        assert!(!plan.enabled());
        assert!(plan.stages(&[pod("a", None, None, "Running")]).is_empty());
        assert!(
            !ShutdownPlan::from_config(s(10), s(20)).enabled(),
            "critical > total"
        );
    }

    #[test]
    fn config_migrates_to_two_priority_groups() {
        let plan = ShutdownPlan::from_config(s(30), s(10));
        assert_eq!(
            plan.groups,
            vec![
                PriorityGroup {
                    min_priority: 0,
                    period: s(20)
                },
                PriorityGroup {
                    min_priority: SYSTEM_CRITICAL_PRIORITY,
                    period: s(10)
                },
            ]
        );
        assert_eq!(plan.total(), s(30));
    }

    #[test]
    fn regular_pods_go_first_and_critical_pods_last() {
        let plan = ShutdownPlan::from_config(s(30), s(10));
        let pods = [
            pod("critical", Some(2_000_001_000), Some(30), "Running"),
            pod("regular", None, Some(30), "Running"),
            pod("cluster-critical", Some(2_000_000_000), Some(5), "Pending"),
            pod("high-but-not-critical", Some(1_000_000), Some(2), "Running"),
            pod("negative", Some(-5), None, "Running"),
        ];
        let stages = plan.stages(&pods);
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].period, s(20));
        assert_eq!(
            uids(&stages[0]),
            vec![("regular", 20), ("high-but-not-critical", 2), ("negative", 20)],
            "a pod's own shorter grace period wins; below the lowest group counts as lowest"
        );
        assert_eq!(stages[1].period, s(10));
        assert_eq!(uids(&stages[1]), vec![("critical", 10), ("cluster-critical", 5)]);
    }

    #[test]
    fn terminal_pods_and_empty_groups_are_skipped() {
        let plan = ShutdownPlan::from_config(s(30), s(10));
        let stages = plan.stages(&[
            pod("done", None, None, "Succeeded"),
            pod("failed", Some(SYSTEM_CRITICAL_PRIORITY), None, "Failed"),
            pod("running", None, Some(0), "Running"),
        ]);
        assert_eq!(stages.len(), 1, "{stages:?}");
        assert_eq!(uids(&stages[0]), vec![("running", 0)]);
    }

    #[test]
    fn zero_critical_period_kills_critical_pods_at_once() {
        let plan = ShutdownPlan::from_config(s(8), Duration::ZERO);
        let stages = plan.stages(&[
            pod("c", Some(SYSTEM_CRITICAL_PRIORITY), Some(30), "Running"),
            pod("r", None, Some(30), "Running"),
        ]);
        assert_eq!(uids(&stages[0]), vec![("r", 8)]);
        assert_eq!(uids(&stages[1]), vec![("c", 0)]);
    }

    #[test]
    fn marking_makes_the_pod_terminal_with_the_shorter_grace() {
        let mut p = pod("a", None, Some(30), "Running");
        mark_for_shutdown(&mut p, 7);
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Failed"));
        assert_eq!(p.spec.as_ref().unwrap().termination_grace_period_seconds, Some(7));
        let mut p = pod("b", None, Some(3), "Running");
        mark_for_shutdown(&mut p, 7);
        assert_eq!(p.spec.as_ref().unwrap().termination_grace_period_seconds, Some(3));
    }

    #[test]
    fn terminated_status_is_upstreams() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let st = terminated_status(
            PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            now,
        );
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("Terminated"));
        assert_eq!(
            st.message.as_deref(),
            Some("Pod was terminated in response to imminent node shutdown.")
        );
        let conds = st.conditions.as_ref().unwrap();
        let dt = conds.iter().find(|c| c.type_ == "DisruptionTarget").unwrap();
        assert_eq!(dt.status, "True");
        assert_eq!(dt.reason.as_deref(), Some("TerminationByKubelet"));
        assert_eq!(conds.len(), 2, "other conditions are kept");
        // Applying it again keeps the first transition time.
        let later = Timestamp::from_second(1_700_000_100).unwrap();
        let again = terminated_status(st.clone(), later);
        assert_eq!(again, st);
    }
}
