//! The pod worker's decisions: [`plan`] computes, level-triggered, what to do next for one pod from its
//! spec, what the runtime shows and the backoff book (upstream's `computePodActions` plus the backoff
//! checks of `SyncPod`); [`step`] wraps it in the pod worker's lifecycle ([`WorkerState`]: syncing →
//! terminating → terminated → finished), which never goes back: a pod that started terminating never
//! restarts anything, and its grace period only shrinks.
//!
//! The I/O layer runs a plan's [`Action`]s in order (a failed action for a container skips that
//! container's later actions; a failed `CreateSandbox` skips the rest), applies
//! [`Plan::backoff`] to the [`BackoffBook`], records [`Plan::start_errors`] in its reason cache, then
//! re-observes and steps again — at the latest at [`Plan::wake_at`], or on the next runtime event or
//! pod update.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::jiff::SignedDuration;

use super::backoff::{BackoffBook, BackoffStep, go_duration};
use super::ephemeral;
use super::observed::{AttemptState, ContainerAttempt, Observed, StartError, spec_hash};
use super::sidecars::is_sidecar;
use super::{Timestamp, pod_display};
use crate::probes::{ProbeKind, probe_grace_period_seconds};
use crate::runtime::image::{PullDecision, PullPolicy, decide};

/// Upstream's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Something the I/O layer does for the pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the pod sandbox (namespaces, networking); the plan's later actions need it.
    CreateSandbox { attempt: u32 },
    /// Pull the container's image, as its pull policy requires. On failure: record
    /// [`BackoffBook::pull_failed`] and the error's reason (`PullError::reason`) as the container's
    /// start error, and skip the container's `StartContainer`.
    PullImage { container: String, image: String },
    /// Create and start a new attempt of a container, labelled with `attempt` as its restart count
    /// and `spec_hash`. On failure record the start error (e.g. `CreateContainerConfigError`); on
    /// success clear the container's start error.
    StartContainer {
        container: String,
        init: bool,
        attempt: u32,
        spec_hash: String,
    },
    /// Stop one container: SIGTERM, up to `grace_seconds`, then SIGKILL. `message` says why (the
    /// `Killing` event's message).
    KillContainer {
        id: String,
        container: String,
        grace_seconds: i64,
        message: String,
    },
    /// Delete a stopped container (record, task, snapshot).
    RemoveContainer { id: String, container: String },
    /// Stop every container of the pod concurrently, each with `grace_seconds`, then tear the
    /// sandbox down. Stopped containers stay for status and logs.
    KillPod {
        grace_seconds: i64,
        reason: TerminationReason,
    },
    /// Remove all the pod's containers and its sandbox; the pod is then ready to be deleted: delete
    /// the pod object with grace period 0 and end the worker.
    RemovePod,
}

/// Why a pod is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationReason {
    /// `metadata.deletionTimestamp` is set.
    Deleted,
    /// `activeDeadlineSeconds` passed (status reason `DeadlineExceeded`).
    DeadlineExceeded,
    /// Every container finished and none is to be restarted.
    Completed,
    /// An init container failed and the restart policy is `Never`.
    InitFailed,
    /// The pod status already has a terminal phase.
    Terminal,
    /// Admission refused the pod.
    Rejected,
    /// The sandbox is gone or not ready: everything is stopped before a new sandbox is made (the
    /// pod itself goes on).
    SandboxChanged,
}

/// Where the pod stands after a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Converging containers towards the spec.
    Syncing,
    /// Stopping containers.
    Terminating {
        reason: TerminationReason,
        grace_seconds: i64,
    },
    /// Nothing runs and nothing will be started again.
    Terminated { reason: TerminationReason },
    /// Deleted and cleaned up: `RemovePod` issued.
    ReadyToDelete,
}

/// What to do next for one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Run in order.
    pub actions: Vec<Action>,
    /// Sync again no later than this (a backoff or the active deadline ends), even without events.
    pub wake_at: Option<Timestamp>,
    /// Containers held back (CrashLoopBackOff, ImagePullBackOff, ErrImageNeverPull, …): insert into
    /// the reason cache ([`Observed::start_errors`]).
    pub start_errors: Vec<(String, StartError)>,
    /// Restarts that move a container's backoff on: apply with [`BackoffBook::apply`].
    pub backoff: Vec<BackoffStep>,
    pub stage: Stage,
}

impl Plan {
    fn new() -> Self {
        Plan {
            actions: vec![],
            wake_at: None,
            start_errors: vec![],
            backoff: vec![],
            stage: Stage::Syncing,
        }
    }

    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn hold(&mut self, container: &str, reason: &str, message: String) {
        self.start_errors
            .push((container.to_string(), StartError::new(reason, message)));
    }
}

/// The pod worker's lifecycle state (upstream's pod worker: SyncPod → SyncTerminatingPod →
/// SyncTerminatedPod → finished). Transitions happen only in [`step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Admitted; containers converge towards the spec.
    /// → `Terminating` when the pod is deleted, its deadline passes, it completes or an init
    ///   container fails with restart policy Never; → `Terminated` when that happens with nothing
    ///   running; → `Finished` when it is deleted with nothing left.
    Syncing,
    /// Stopping all containers with `grace_seconds` (which a later deletion can only lower).
    /// → `Terminated` once nothing runs and the sandbox is gone; → `Finished` when also deleted.
    Terminating {
        reason: TerminationReason,
        grace_seconds: i64,
    },
    /// Nothing runs or will run again; stopped containers are kept for status and logs.
    /// → `Finished` once the pod is deleted (after `RemovePod`).
    Terminated { reason: TerminationReason },
    /// `RemovePod` was issued; the worker ends once the pod object is deleted. Terminal.
    Finished,
}

impl WorkerState {
    /// The first state of a worker, from the admission result: admitted pods sync, rejected ones
    /// are terminated from the start (their status: [`super::rejected_status`]).
    pub fn admitted(admission: &super::Admission) -> Self {
        match admission {
            Ok(()) => WorkerState::Syncing,
            Err(_) => WorkerState::Terminated {
                reason: TerminationReason::Rejected,
            },
        }
    }
}

/// The inputs of one step of a pod worker.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub pod: &'a Pod,
    pub observed: &'a Observed,
    pub backoff: &'a BackoffBook,
    pub now: Timestamp,
}

/// One step of the pod worker: what to do now and the state after it.
pub fn step(state: WorkerState, input: &Input<'_>) -> (Plan, WorkerState) {
    let Input {
        pod,
        observed,
        backoff,
        now,
    } = *input;
    let plan = match state {
        WorkerState::Syncing => plan(pod, observed, backoff, now),
        WorkerState::Terminating {
            reason,
            grace_seconds,
        } => {
            let (reason, grace) = match termination_requested(pod, now) {
                Some((TerminationReason::Deleted, g)) => (TerminationReason::Deleted, g.min(grace_seconds)),
                _ => (reason, grace_seconds),
            };
            terminate(pod, observed, reason, grace)
        }
        WorkerState::Terminated { reason } => {
            let reason = match termination_requested(pod, now) {
                Some((TerminationReason::Deleted, _)) => TerminationReason::Deleted,
                _ => reason,
            };
            terminate(pod, observed, reason, spec_grace(pod_spec(pod)))
        }
        WorkerState::Finished => Plan {
            stage: Stage::ReadyToDelete,
            ..Plan::new()
        },
    };
    let next = match plan.stage {
        Stage::Syncing => WorkerState::Syncing,
        Stage::Terminating {
            reason,
            grace_seconds,
        } => WorkerState::Terminating {
            reason,
            grace_seconds,
        },
        Stage::Terminated { reason } => WorkerState::Terminated { reason },
        Stage::ReadyToDelete => WorkerState::Finished,
    };
    (plan, next)
}

fn pod_spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

fn spec_grace(spec: &PodSpec) -> i64 {
    spec.termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(1)
}

/// When `activeDeadlineSeconds` ends for this pod (counted from `status.startTime`).
pub fn active_deadline(pod: &Pod) -> Option<Timestamp> {
    let secs = pod_spec(pod).active_deadline_seconds?;
    let start = pod.status.as_ref()?.start_time.as_ref()?.0;
    Some(
        start
            .checked_add(SignedDuration::from_secs(secs))
            .unwrap_or(Timestamp::MAX),
    )
}

/// Upstream's active deadline check: the pod ran at least `activeDeadlineSeconds`.
pub fn deadline_exceeded(pod: &Pod, now: Timestamp) -> bool {
    active_deadline(pod).is_some_and(|d| now >= d)
}

/// Whether the pod must stop regardless of its containers, and with which grace period. For a
/// deletion that is upstream's `calculateEffectiveGracePeriod`: the deletion's grace period when set,
/// else the spec's, at least 1 s.
fn termination_requested(pod: &Pod, now: Timestamp) -> Option<(TerminationReason, i64)> {
    let spec = pod_spec(pod);
    if pod.metadata.deletion_timestamp.is_some() {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| spec_grace(spec))
            .max(1);
        return Some((TerminationReason::Deleted, grace));
    }
    if deadline_exceeded(pod, now) {
        return Some((TerminationReason::DeadlineExceeded, spec_grace(spec)));
    }
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Some((TerminationReason::Terminal, spec_grace(spec)));
    }
    None
}

/// Decides the next actions for a pod (see the module doc). Pure: the same inputs give the same plan.
pub fn plan(pod: &Pod, observed: &Observed, backoff: &BackoffBook, now: Timestamp) -> Plan {
    if let Some((reason, grace)) = termination_requested(pod, now) {
        return terminate(pod, observed, reason, grace);
    }
    let mut p = Plan::new();
    let mut sync = Sync {
        pod,
        spec: pod_spec(pod),
        observed,
        book: backoff,
        now,
        plan: &mut p,
    };
    sync.run();
    if let Some(deadline) = active_deadline(pod) {
        p.wake(deadline);
    }
    dedup_removals(&mut p.actions);
    p
}

/// Stops everything, then (when deleted) removes everything. Containers created but never started
/// hold nothing worth keeping: they are removed rather than killed (a kill would leave them as they
/// are, and the pod would never count as stopped).
fn terminate(pod: &Pod, observed: &Observed, reason: TerminationReason, grace: i64) -> Plan {
    let mut p = Plan::new();
    let busy = observed.sandbox.is_some()
        || observed
            .containers
            .iter()
            .any(|c| matches!(c.state, AttemptState::Running { .. } | AttemptState::Unknown));
    if busy {
        p.actions.push(Action::KillPod {
            grace_seconds: grace,
            reason,
        });
        p.stage = Stage::Terminating {
            reason,
            grace_seconds: grace,
        };
    } else if pod.metadata.deletion_timestamp.is_some() {
        p.actions.push(Action::RemovePod);
        p.stage = Stage::ReadyToDelete;
        return p;
    } else {
        p.stage = Stage::Terminated { reason };
    }
    for c in observed
        .containers
        .iter()
        .filter(|c| c.state == AttemptState::Created)
    {
        p.actions.push(Action::RemoveContainer {
            id: c.id.clone(),
            container: c.name.clone(),
        });
    }
    p
}

fn dedup_removals(actions: &mut Vec<Action>) {
    let mut seen = BTreeSet::new();
    actions.retain(|a| match a {
        Action::RemoveContainer { id, .. } => seen.insert(id.clone()),
        _ => true,
    });
}

fn init_failed(a: &ContainerAttempt) -> bool {
    match &a.state {
        AttemptState::Exited {
            exit_code, reason, ..
        } => *exit_code != 0 || reason == "OOMKilled",
        AttemptState::Unknown => true,
        _ => false,
    }
}

/// Why a running (or unknown) init container is stopped and started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitRestart {
    StartupProbe,
    Changed,
    Liveness,
    Unknown,
}

/// What the init containers need (upstream's `computeInitContainerActions`).
#[derive(Default)]
struct InitActions<'a> {
    /// Initialization is complete: every regular init container succeeded and every sidecar
    /// started (or an app container runs already).
    initialized: bool,
    /// Init containers to (re)start, by index, in spec order: the next one, and sidecars that
    /// exited (they restart whatever the pod's restart policy).
    start: Vec<usize>,
    /// Running (or unknown) init containers to stop before they are started again.
    kill: Vec<(&'a ContainerAttempt, InitRestart)>,
    /// A regular init container failed: its newest attempt (it is in `start`).
    failed: Option<&'a ContainerAttempt>,
}

fn init_actions<'a>(spec: &PodSpec, observed: &'a Observed) -> InitActions<'a> {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let mut out = InitActions::default();
    // A running app container means initialization completed earlier (its init containers may
    // have been removed since): never run regular init containers again; sidecars keep running.
    let app_running = spec
        .containers
        .iter()
        .any(|c| observed.latest(&c.name).is_some_and(|a| a.state.is_running()));
    out.initialized = inits.is_empty() || app_running;
    // Walk backwards: the newest init container with a status tells how far initialization got
    // (older ones may have been removed).
    let mut previously_initialized = out.initialized;
    for (i, c) in inits.iter().enumerate().rev() {
        let sidecar = is_sidecar(c);
        let Some(a) = observed.latest(&c.name) else {
            if previously_initialized && sidecar {
                out.start.push(i);
            }
            continue;
        };
        if previously_initialized && !sidecar {
            continue;
        }
        match &a.state {
            AttemptState::Created => out.start.push(i),
            AttemptState::Running { .. } if sidecar => {
                if c.startup_probe.is_some() && a.started != Some(true) {
                    if a.started == Some(false) {
                        out.kill.push((a, InitRestart::StartupProbe));
                        out.start.push(i);
                    }
                } else {
                    if i + 1 == inits.len() {
                        out.initialized = true;
                    } else if !previously_initialized {
                        out.start.push(i + 1);
                    }
                    let restart = if a.spec_hash != spec_hash(c) {
                        Some(InitRestart::Changed)
                    } else if a.live == Some(false) {
                        Some(InitRestart::Liveness)
                    } else {
                        None
                    };
                    if let Some(why) = restart {
                        out.kill.push((a, why));
                        out.start.push(i);
                    }
                }
            }
            // A regular init container runs: wait for it to finish.
            AttemptState::Running { .. } => {}
            AttemptState::Exited { .. } if sidecar => out.start.push(i),
            AttemptState::Exited { .. } if init_failed(a) => {
                out.start.push(i);
                out.failed = Some(a);
            }
            AttemptState::Exited { .. } => {
                if i + 1 == inits.len() {
                    out.initialized = true;
                } else {
                    out.start.push(i + 1);
                }
            }
            AttemptState::Unknown => {
                out.kill.push((a, InitRestart::Unknown));
                out.start.push(i);
                if !sidecar {
                    out.failed = Some(a);
                }
            }
        }
        previously_initialized = true;
    }
    if !previously_initialized {
        out.start.push(0);
    }
    out.start.reverse();
    out.start.dedup();
    out
}

/// Upstream's `ShouldContainerBeRestarted` for a container whose newest attempt is `latest`.
pub(super) fn should_start(policy: &str, latest: Option<&ContainerAttempt>) -> bool {
    let Some(a) = latest else { return true };
    match &a.state {
        AttemptState::Running { .. } => false,
        AttemptState::Created | AttemptState::Unknown => true,
        AttemptState::Exited { exit_code, .. } => match policy {
            "Never" => false,
            "OnFailure" => *exit_code != 0,
            _ => true,
        },
    }
}

struct Sync<'a, 'p> {
    pod: &'a Pod,
    spec: &'a PodSpec,
    observed: &'a Observed,
    book: &'a BackoffBook,
    now: Timestamp,
    plan: &'p mut Plan,
}

impl<'a> Sync<'a, '_> {
    fn policy(&self) -> &str {
        self.spec.restart_policy.as_deref().unwrap_or("Always")
    }

    fn grace(&self) -> i64 {
        spec_grace(self.spec)
    }

    fn inits(&self) -> &'a [Container] {
        self.spec.init_containers.as_deref().unwrap_or_default()
    }

    fn run(&mut self) {
        self.orphans();
        if self.observed.sandbox_ready() {
            self.sync_containers();
        } else {
            self.sandbox_changed();
        }
        self.prune();
    }

    /// Containers of this pod whose name is not in the spec: stop, then remove.
    fn orphans(&mut self) {
        let names: BTreeSet<&str> = self
            .spec
            .containers
            .iter()
            .chain(self.inits())
            .map(|c| c.name.as_str())
            .chain(
                self.spec
                    .ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|e| e.name.as_str()),
            )
            .collect();
        for a in &self.observed.containers {
            if names.contains(a.name.as_str()) {
                continue;
            }
            let action = match a.state {
                AttemptState::Running { .. } | AttemptState::Unknown => Action::KillContainer {
                    id: a.id.clone(),
                    container: a.name.clone(),
                    grace_seconds: self.grace(),
                    message: format!("Container {} is not in the pod's spec", a.name),
                },
                _ => Action::RemoveContainer {
                    id: a.id.clone(),
                    container: a.name.clone(),
                },
            };
            self.plan.actions.push(action);
        }
    }

    /// Keeps the newest two attempts per container (the current one and the one `lastState`
    /// shows); older stopped ones are removed.
    fn prune(&mut self) {
        for c in self.spec.containers.iter().chain(self.inits()) {
            for a in self.observed.attempts(&c.name).into_iter().skip(2) {
                if matches!(a.state, AttemptState::Exited { .. } | AttemptState::Created) {
                    self.plan.actions.push(Action::RemoveContainer {
                        id: a.id.clone(),
                        container: a.name.clone(),
                    });
                }
            }
        }
    }

    /// No ready sandbox: stop what is left, then start over with a new sandbox unless the pod is done
    /// (upstream's `createPodSandbox` branch of `computePodActions`).
    fn sandbox_changed(&mut self) {
        let obs = self.observed;
        let kill_needed = obs.sandbox.is_some() || obs.any_running();
        let ran_before = obs.sandbox.is_some() || !obs.containers.is_empty();
        let attempt = obs.sandbox.as_ref().map_or(0, |s| s.attempt.saturating_add(1));
        if self.policy() == "Never" && ran_before {
            self.finish(kill_needed);
            return;
        }
        let to_start: Vec<&Container> = self
            .spec
            .containers
            .iter()
            .filter(|c| {
                !(self.policy() == "OnFailure"
                    && obs
                        .latest(&c.name)
                        .is_some_and(|a| matches!(a.state, AttemptState::Exited { exit_code: 0, .. })))
            })
            .collect();
        if to_start.is_empty() && init_actions(self.spec, obs).initialized {
            self.finish(kill_needed);
            return;
        }
        if kill_needed {
            self.plan.actions.push(Action::KillPod {
                grace_seconds: self.grace(),
                reason: TerminationReason::SandboxChanged,
            });
        }
        self.plan.actions.push(Action::CreateSandbox { attempt });
        if let Some(first) = self.inits().first() {
            self.try_start(first, true);
        } else {
            for c in to_start {
                self.try_start(c, false);
            }
        }
    }

    /// Stops the whole pod (containers, sidecars, sandbox) within its grace period.
    fn stop_pod(&mut self, reason: TerminationReason) {
        self.plan.actions.push(Action::KillPod {
            grace_seconds: self.grace(),
            reason,
        });
        self.plan.stage = Stage::Terminating {
            reason,
            grace_seconds: self.grace(),
        };
    }

    /// The pod is done without a usable sandbox: stop what is left, if anything.
    fn finish(&mut self, kill_needed: bool) {
        let reason = if init_actions(self.spec, self.observed).failed.is_some() {
            TerminationReason::InitFailed
        } else {
            TerminationReason::Completed
        };
        if kill_needed {
            self.stop_pod(reason);
        } else {
            self.plan.stage = Stage::Terminated { reason };
        }
    }

    fn sync_containers(&mut self) {
        let obs = self.observed;
        let init = init_actions(self.spec, obs);
        if init.failed.is_some() && self.policy() == "Never" {
            self.stop_pod(TerminationReason::InitFailed);
            return;
        }
        if !init.initialized {
            self.start_ephemerals();
            self.restart_inits(&init);
            return;
        }

        let mut keep = 0;
        let mut to_start: Vec<&Container> = vec![];
        let policy = self.policy().to_string();
        for c in &self.spec.containers {
            let latest = obs.latest(&c.name);
            let Some(a) = latest.filter(|a| a.state.is_running()) else {
                if should_start(&policy, latest) {
                    if let Some(a) = latest.filter(|a| a.state == AttemptState::Unknown) {
                        self.kill_unknown(a);
                    }
                    to_start.push(c);
                }
                continue;
            };
            let pod_grace = Some(self.grace());
            let (message, restart, grace) = if a.spec_hash != spec_hash(c) {
                (
                    format!("Container {} definition changed", c.name),
                    true,
                    self.grace(),
                )
            } else if a.live == Some(false) {
                (
                    format!("Container {} failed liveness probe", c.name),
                    policy != "Never",
                    probe_grace_period_seconds(ProbeKind::Liveness, c, pod_grace).unwrap_or(self.grace()),
                )
            } else if a.started == Some(false) {
                (
                    format!("Container {} failed startup probe", c.name),
                    policy != "Never",
                    probe_grace_period_seconds(ProbeKind::Startup, c, pod_grace).unwrap_or(self.grace()),
                )
            } else {
                keep += 1;
                continue;
            };
            let message = if restart {
                to_start.push(c);
                format!("{message}, will be restarted")
            } else {
                message
            };
            self.plan.actions.push(Action::KillContainer {
                id: a.id.clone(),
                container: c.name.clone(),
                grace_seconds: grace,
                message,
            });
        }
        if keep == 0 && to_start.is_empty() {
            // Nothing runs and nothing will: the pod is done; stop the sandbox and the sidecars,
            // which must not keep it alive (nor be restarted).
            tracing::debug!(pod = %pod_display(self.pod), "app containers done, stopping the pod");
            self.stop_pod(TerminationReason::Completed);
            return;
        }
        self.start_ephemerals();
        self.restart_inits(&init);
        for c in to_start {
            self.try_start(c, false);
        }
    }

    /// Starts the ephemeral containers the runtime has never seen, in spec order, before the init
    /// and app containers (upstream's `SyncPod` order) — also while the pod is still initializing,
    /// which is when one most needs to debug it. Never restarted.
    fn start_ephemerals(&mut self) {
        for c in ephemeral::containers(self.spec) {
            if self.observed.latest(&c.name).is_none() {
                self.try_start(&c, false);
            }
        }
    }

    /// Stops the init containers that must restart, then starts the ones due, in spec order.
    fn restart_inits(&mut self, init: &InitActions<'_>) {
        let pod_grace = Some(self.grace());
        let inits = self.inits();
        for (a, why) in &init.kill {
            let Some(c) = inits.iter().find(|c| c.name == a.name) else {
                continue;
            };
            let (message, grace) = match why {
                InitRestart::Unknown => {
                    self.kill_unknown(a);
                    continue;
                }
                InitRestart::StartupProbe => (
                    format!("Init container {} failed startup probe", c.name),
                    probe_grace_period_seconds(ProbeKind::Startup, c, pod_grace).unwrap_or(self.grace()),
                ),
                InitRestart::Liveness => (
                    format!("Init container {} failed liveness probe", c.name),
                    probe_grace_period_seconds(ProbeKind::Liveness, c, pod_grace).unwrap_or(self.grace()),
                ),
                InitRestart::Changed => (
                    format!("Init container {} definition changed", c.name),
                    self.grace(),
                ),
            };
            self.plan.actions.push(Action::KillContainer {
                id: a.id.clone(),
                container: c.name.clone(),
                grace_seconds: grace,
                message: format!("{message}, will be restarted"),
            });
        }
        for &i in &init.start {
            if let Some(c) = inits.get(i) {
                self.try_start(c, true);
            }
        }
    }

    fn kill_unknown(&mut self, a: &ContainerAttempt) {
        self.plan.actions.push(Action::KillContainer {
            id: a.id.clone(),
            container: a.name.clone(),
            grace_seconds: self.grace(),
            message: "Container is in \"unknown\" state, try killing it before restart".into(),
        });
    }

    /// The restart count a new attempt gets: one more than the newest known attempt; with no
    /// attempt left in the runtime (removed, or a runtime that lost its state), one more than the
    /// status reports if the container ran, so counts never go back.
    fn next_attempt(&self, c: &Container, latest: Option<&ContainerAttempt>) -> u32 {
        if let Some(a) = latest {
            return a.attempt.saturating_add(1);
        }
        let st = self.pod.status.as_ref();
        let statuses = st
            .and_then(|s| s.container_statuses.iter().flatten().find(|s| s.name == c.name))
            .or_else(|| {
                st.and_then(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .find(|s| s.name == c.name)
                })
            });
        match statuses {
            Some(s) => {
                let ran = s
                    .state
                    .as_ref()
                    .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
                    || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some());
                if ran {
                    (s.restart_count.max(0) as u32).saturating_add(1)
                } else {
                    s.restart_count.max(0) as u32
                }
            }
            None => 0,
        }
    }

    /// Starts a container unless its crash backoff or image pull backoff holds it back (upstream's
    /// `doBackOff` then `EnsureImageExists`).
    fn try_start(&mut self, c: &Container, init: bool) {
        let obs = self.observed;
        let attempts = obs.attempts(&c.name);
        let latest = attempts.first().copied();
        let hash = spec_hash(c);
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        if let Some(a) = latest.filter(|a| a.state == AttemptState::Created) {
            self.plan.actions.push(Action::RemoveContainer {
                id: a.id.clone(),
                container: a.name.clone(),
            });
        }
        let last_exit = attempts.iter().find_map(|a| match a.state {
            AttemptState::Exited { finished_at, .. } => Some(finished_at),
            _ => None,
        });
        if let Some(finished_at) = last_exit {
            let key = BackoffBook::crash_key(self.pod, &c.name, &hash);
            if let Some((delay, until)) = self.book.crash_backoff(&uid, &key, finished_at, self.now) {
                self.plan.hold(
                    &c.name,
                    "CrashLoopBackOff",
                    format!(
                        "back-off {} restarting failed container={} pod={}",
                        go_duration(delay),
                        c.name,
                        pod_display(self.pod)
                    ),
                );
                self.plan.wake(until);
                return;
            }
            self.plan.backoff.push(BackoffStep {
                pod_uid: uid.clone(),
                key,
                event_time: finished_at,
            });
        }

        let image = c.image.clone().unwrap_or_default();
        if image.is_empty() {
            self.plan.hold(
                &c.name,
                "InvalidImageName",
                format!(
                    "container {:?} of pod {} has no image",
                    c.name,
                    pod_display(self.pod)
                ),
            );
            return;
        }
        let policy = match PullPolicy::from_spec(c.image_pull_policy.as_deref(), &image) {
            Ok(p) => p,
            Err(e) => {
                self.plan.hold(
                    &c.name,
                    "CreateContainerConfigError",
                    format!("container {:?}: {e}", c.name),
                );
                return;
            }
        };
        match decide(policy, obs.images_present.contains(&image)) {
            PullDecision::Pull => {
                if let Some((until, last)) = self.book.pull_backoff(&uid, &image, self.now) {
                    let mut message = format!("Back-off pulling image {image:?}");
                    if !last.is_empty() {
                        message = format!("{message}: {last}");
                    }
                    self.plan.hold(&c.name, "ImagePullBackOff", message);
                    self.plan.wake(until);
                    return;
                }
                self.plan.actions.push(Action::PullImage {
                    container: c.name.clone(),
                    image: image.clone(),
                });
            }
            PullDecision::UsePresent => {}
            PullDecision::NeverPullError => {
                self.plan.hold(
                    &c.name,
                    "ErrImageNeverPull",
                    format!("Container image {image:?} is not present with pull policy of Never"),
                );
                return;
            }
        }
        self.plan.actions.push(Action::StartContainer {
            container: c.name.clone(),
            init,
            attempt: self.next_attempt(c, latest),
            spec_hash: hash,
        });
    }
}
