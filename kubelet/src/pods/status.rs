//! The pod status as upstream's kubelet reports it (`generateAPIPodStatus`, `getPhase`,
//! `convertToAPIContainerStatuses`, the prober's ready/started, `status/generate.go` conditions, the
//! status manager's transition times and condition merge), and [`status_changed`], upstream's
//! `isPodStatusByKubeletEqual`, so the I/O layer patches only real changes.
//!
//! The previous status is the pod's own `status` (what the API server has): it supplies condition
//! transition times, `startTime`, a terminal phase that must stick, and container statuses for
//! containers the runtime no longer knows.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::observed::{AttemptState, ContainerAttempt, Observed, container_id_uri};
use super::plan::deadline_exceeded;
use super::resources::pod_qos;
use super::sidecars::is_sidecar;
use super::{ContainerKind, Timestamp};

/// Condition types the kubelet owns (upstream's `PodConditionsByKubelet` plus
/// `PodReadyToStartContainers`); others in the old status are kept untouched.
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

const UNKNOWN_STATUS_REASON: &str = "ContainerStatusUnknown";

fn none_if_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: none_if_empty(reason),
            message: none_if_empty(message),
        }),
        ..Default::default()
    }
}

fn terminated_unknown(message: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: 137,
        reason: Some(UNKNOWN_STATUS_REASON.into()),
        message: Some(message.into()),
        ..Default::default()
    }
}

/// The status of one container attempt (upstream's `convertContainerStatus`).
fn convert_attempt(a: &ContainerAttempt, spec_image: &str, old: Option<&ContainerStatus>) -> ContainerStatus {
    let id = container_id_uri(&a.id);
    let mut s = ContainerStatus {
        name: a.name.clone(),
        restart_count: i32::try_from(a.attempt).unwrap_or(i32::MAX),
        image: if a.image.is_empty() {
            spec_image.to_string()
        } else {
            a.image.clone()
        },
        image_id: a.image_id.clone(),
        container_id: Some(id.clone()),
        ..Default::default()
    };
    s.state = Some(match &a.state {
        AttemptState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        AttemptState::Exited {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                reason: none_if_empty(reason),
                message: none_if_empty(message),
                started_at: started_at.map(Time),
                finished_at: Some(Time(*finished_at)),
                container_id: Some(id),
                signal: None,
            }),
            ..Default::default()
        },
        AttemptState::Unknown
            if old.is_some_and(|o| o.state.as_ref().is_some_and(|s| s.running.is_some())) =>
        {
            // It ran and is gone: report it as failed rather than waiting, so a run-once pod does
            // not look as if it never ran.
            s.restart_count = old.map_or(0, |o| o.restart_count).saturating_add(1);
            ContainerState {
                terminated: Some(terminated_unknown(
                    "The container could not be located when the pod was terminated",
                )),
                ..Default::default()
            }
        }
        AttemptState::Created | AttemptState::Unknown => waiting("", ""),
    });
    s
}

/// Upstream's `ShouldContainerBeRestarted`, including "never once the pod is deleted".
fn should_restart(pod: &Pod, policy: &str, latest: Option<&ContainerAttempt>) -> bool {
    pod.metadata.deletion_timestamp.is_none() && super::plan::should_start(policy, latest)
}

/// Statuses of one container list, in spec order (upstream's `convertToAPIContainerStatuses`
/// plus the prober's `UpdatePodStatus`).
fn container_statuses(
    pod: &Pod,
    spec: &PodSpec,
    observed: &Observed,
    containers: &[Container],
    previous: &[ContainerStatus],
    kind: ContainerKind,
) -> Vec<ContainerStatus> {
    let is_init = kind == ContainerKind::Init;
    let has_inits = spec.init_containers.as_ref().is_some_and(|v| !v.is_empty());
    let default_reason = if has_inits {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let old: BTreeMap<&str, &ContainerStatus> = previous.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out = vec![];
    for c in containers {
        let sidecar = is_init && is_sidecar(c);
        // A sidecar restarts whatever the pod's restart policy; an ephemeral container never does.
        let policy = match kind {
            _ if sidecar => "Always",
            ContainerKind::Ephemeral => "Never",
            _ => policy,
        };
        let spec_image = c.image.clone().unwrap_or_default();
        let attempts = observed.attempts(&c.name);
        let old_status = old.get(c.name.as_str()).copied();
        let mut s = match attempts.first() {
            Some(latest) => {
                let mut s = convert_attempt(latest, &spec_image, old_status);
                if let Some(prev) = attempts.get(1) {
                    s.last_state = convert_attempt(prev, &spec_image, None).state;
                }
                s
            }
            None => {
                let mut s = ContainerStatus {
                    name: c.name.clone(),
                    image: spec_image.clone(),
                    state: Some(waiting(default_reason, "")),
                    ..Default::default()
                };
                match old_status {
                    Some(o) if o.state.as_ref().is_some_and(|st| st.terminated.is_some()) => s = o.clone(),
                    Some(o) => {
                        s.restart_count = o.restart_count;
                        s.last_state = o.last_state.clone();
                        // It used to run and vanished: show it stopped, not waiting, so the pod does
                        // not fall back to Pending.
                        let was_running = o.state.as_ref().is_some_and(|st| st.running.is_some());
                        let has_last = s.last_state.as_ref().is_some_and(|l| l.terminated.is_some());
                        if was_running && !has_last {
                            s.last_state = Some(ContainerState {
                                terminated: Some(terminated_unknown(
                                    "The container could not be located when the pod was deleted.  The container used to be Running",
                                )),
                                ..Default::default()
                            });
                            if pod.metadata.deletion_timestamp.is_none() {
                                s.restart_count = s.restart_count.saturating_add(1);
                            }
                        }
                    }
                    None => {}
                }
                s
            }
        };

        // A container that will be (re)started shows why it is not running yet (reason cache).
        let latest = attempts.first().copied();
        let init_succeeded = is_init
            && !sidecar
            && latest.is_some_and(|a| matches!(a.state, AttemptState::Exited { exit_code: 0, .. }));
        if !init_succeeded
            && should_restart(pod, policy, latest)
            && let Some(err) = observed.start_errors.get(&c.name)
        {
            if s.state.as_ref().is_some_and(|st| st.terminated.is_some()) {
                s.last_state = s.state.take();
            }
            s.state = Some(waiting(&err.reason, &err.message));
        }

        // Probe results (upstream's prober manager).
        let running = s.state.as_ref().is_some_and(|st| st.running.is_some());
        let probe = latest.filter(|a| a.state.is_running());
        if kind == ContainerKind::Ephemeral {
            // Never probed (upstream's prober skips them): not ready, no `started`.
            s.ready = false;
            s.started = None;
        } else if is_init && !sidecar {
            s.ready = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            s.started = Some(running);
        } else {
            let started = running && probe.and_then(|a| a.started).unwrap_or(c.startup_probe.is_none());
            s.started = Some(started);
            s.ready = started && probe.and_then(|a| a.ready).unwrap_or(c.readiness_probe.is_none());
        }
        out.push(s);
    }
    out
}

fn state_of(s: &ContainerStatus) -> (bool, Option<&ContainerStateTerminated>, bool) {
    let st = s.state.as_ref();
    (
        st.is_some_and(|x| x.running.is_some()),
        st.and_then(|x| x.terminated.as_ref()),
        st.is_some_and(|x| x.waiting.is_some()),
    )
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn has_app_started(spec: &PodSpec, statuses: &[ContainerStatus]) -> bool {
    spec.containers.iter().any(|c| {
        find(statuses, &c.name).is_some_and(|s| {
            let (running, terminated, _) = state_of(s);
            running || terminated.is_some()
        })
    })
}

/// Upstream's `getPhase` over all container statuses. Sidecars count as running while they run;
/// a stopped sidecar does not count, so it neither fails the pod nor keeps it from completing.
pub fn phase(spec: &PodSpec, statuses: &[ContainerStatus], pod_is_terminal: bool) -> &'static str {
    let (mut pending_init, mut failed_init, mut pending_sidecars) = (0, 0, 0);
    let (mut unknown, mut running_n, mut waiting_n, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let sidecar = is_sidecar(c);
        let Some(s) = find(statuses, &c.name) else {
            if sidecar {
                unknown += 1;
            } else {
                pending_init += 1;
            }
            continue;
        };
        let (running, terminated, waiting) = state_of(s);
        let last_terminated = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
        if sidecar {
            if running {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running_n += 1;
            } else if terminated.is_some() {
                // A stopped sidecar counts for nothing: it neither fails nor completes the pod.
            } else if waiting {
                if last_terminated.is_none() {
                    pending_sidecars += 1;
                    waiting_n += 1;
                }
            } else {
                pending_sidecars += 1;
                unknown += 1;
            }
            continue;
        }
        if running {
            pending_init += 1;
        } else if let Some(t) = terminated {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if waiting {
            match last_terminated {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    for c in &spec.containers {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        let (running, terminated, waiting) = state_of(s);
        if running {
            running_n += 1;
        } else if let Some(t) = terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if waiting {
            if s.last_state.as_ref().is_some_and(|l| l.terminated.is_some()) {
                stopped += 1;
            } else {
                waiting_n += 1;
            }
        } else {
            unknown += 1;
        }
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    // Once an app container ran, init containers that restart (sidecars) or lost their status do
    // not put the pod back to Pending.
    let pending = pending_init > 0 || pending_sidecars > 0;
    if (pending && !has_app_started(spec, statuses)) || waiting_n > 0 {
        return "Pending";
    }
    if running_n > 0 && unknown == 0 {
        return "Running";
    }
    if running_n == 0 && stopped > 0 && unknown == 0 {
        if pod_is_terminal {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: none_if_empty(reason),
        message: none_if_empty(message),
        ..Default::default()
    }
}

/// Go's `%s` of a `[]string`: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// The names of `containers` without a status in `statuses`, and of those not ready.
fn unknown_and_unready<'a>(
    containers: impl IntoIterator<Item = &'a Container>,
    statuses: &[ContainerStatus],
) -> (Vec<&'a str>, Vec<&'a str>) {
    let (mut unknown, mut unready) = (vec![], vec![]);
    for c in containers {
        match find(statuses, &c.name) {
            None => unknown.push(c.name.as_str()),
            Some(s) if !s.ready => unready.push(c.name.as_str()),
            Some(_) => {}
        }
    }
    (unknown, unready)
}

/// Upstream's `isInitContainerInitialized`: a sidecar once started, a regular one once it succeeded.
fn init_done(c: &Container, s: &ContainerStatus) -> bool {
    if is_sidecar(c) {
        s.started == Some(true)
    } else {
        s.ready
    }
}

fn initialized_condition(spec: &PodSpec, all: &[ContainerStatus], phase: &str) -> PodCondition {
    let (mut unknown, mut incomplete) = (vec![], vec![]);
    for c in spec.init_containers.iter().flatten() {
        match find(all, &c.name) {
            None => unknown.push(c.name.as_str()),
            Some(s) if !init_done(c, s) => incomplete.push(c.name.as_str()),
            Some(_) => {}
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("Initialized", true, "PodCompleted", "");
    }
    if has_app_started(spec, all) {
        return condition("Initialized", true, "", "");
    }
    let mut msgs = vec![];
    if !unknown.is_empty() {
        msgs.push(format!("containers with unknown status: {}", go_list(&unknown)));
    }
    if !incomplete.is_empty() {
        msgs.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if msgs.is_empty() {
        condition("Initialized", true, "", "")
    } else {
        condition("Initialized", false, "ContainersNotInitialized", &msgs.join(", "))
    }
}

/// Upstream's `GenerateContainersReadyCondition`: the sidecars and the app containers must be ready.
fn containers_ready_condition(spec: &PodSpec, all: &[ContainerStatus], phase: &str) -> PodCondition {
    let sidecars = spec.init_containers.iter().flatten().filter(|c| is_sidecar(c));
    let (unknown, unready) = unknown_and_unready(sidecars.chain(&spec.containers), all);
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("ContainersReady", false, "PodCompleted", "");
    }
    if phase == "Failed" {
        return condition("ContainersReady", false, "PodFailed", "");
    }
    let mut msgs = vec![];
    if !unknown.is_empty() {
        msgs.push(format!("containers with unknown status: {}", go_list(&unknown)));
    }
    if !unready.is_empty() {
        msgs.push(format!("containers with unready status: {}", go_list(&unready)));
    }
    if msgs.is_empty() {
        condition("ContainersReady", true, "", "")
    } else {
        condition("ContainersReady", false, "ContainersNotReady", &msgs.join(", "))
    }
}

fn ready_condition(
    spec: &PodSpec,
    old_conditions: &[PodCondition],
    containers_ready: &PodCondition,
) -> PodCondition {
    if containers_ready.status != "True" {
        return PodCondition {
            type_: "Ready".into(),
            ..containers_ready.clone()
        };
    }
    let mut msgs = vec![];
    for gate in spec.readiness_gates.iter().flatten() {
        match old_conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => msgs.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => msgs.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if msgs.is_empty() {
        condition("Ready", true, "", "")
    } else {
        condition("Ready", false, "ReadinessGatesNotReady", &msgs.join(", "))
    }
}

/// The pod's status as upstream's kubelet would report it now. `node_ip` is the node's primary IP
/// (`hostIP`, and the pod IP of hostNetwork pods).
pub fn status(pod: &Pod, observed: &Observed, now: Timestamp, node_ip: &str) -> PodStatus {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let old = pod.status.clone().unwrap_or_default();
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let init_statuses = container_statuses(
        pod,
        spec,
        observed,
        inits,
        old.init_container_statuses.as_deref().unwrap_or_default(),
        ContainerKind::Init,
    );
    let mut app_statuses = container_statuses(
        pod,
        spec,
        observed,
        &spec.containers,
        old.container_statuses.as_deref().unwrap_or_default(),
        ContainerKind::App,
    );
    app_statuses.sort_by(|a, b| a.name.cmp(&b.name));
    let ephemerals = super::ephemeral::containers(spec);
    let mut ephemeral_statuses = container_statuses(
        pod,
        spec,
        observed,
        &ephemerals,
        old.ephemeral_container_statuses.as_deref().unwrap_or_default(),
        ContainerKind::Ephemeral,
    );
    ephemeral_statuses.sort_by(|a, b| a.name.cmp(&b.name));

    // The worker has stopped everything for a deletion or the deadline: the phase is final.
    let stopping = pod.metadata.deletion_timestamp.is_some() || deadline_exceeded(pod, now);
    let pod_is_terminal = stopping
        && !observed
            .containers
            .iter()
            .any(|c| !matches!(c.state, AttemptState::Exited { .. }));
    let all: Vec<ContainerStatus> = init_statuses.iter().chain(app_statuses.iter()).cloned().collect();
    let mut ph = phase(spec, &all, pod_is_terminal).to_string();
    let old_phase = old.phase.clone().unwrap_or_default();
    if ph != "Failed" && ph != "Succeeded" && (old_phase == "Failed" || old_phase == "Succeeded") {
        ph = old_phase.clone();
    }
    let (mut reason, mut message) = (None, None);
    if ph == old_phase {
        reason = old.reason.clone();
        message = old.message.clone();
    }
    if deadline_exceeded(pod, now) {
        ph = "Failed".into();
        reason = Some("DeadlineExceeded".into());
        message = Some("Pod was active on the node longer than the specified deadline".into());
    }

    let old_conditions = old.conditions.clone().unwrap_or_default();
    let containers_ready = containers_ready_condition(spec, &all, &ph);
    let fresh = [
        condition("PodReadyToStartContainers", observed.sandbox_ready(), "", ""),
        initialized_condition(spec, &all, &ph),
        ready_condition(spec, &old_conditions, &containers_ready),
        containers_ready,
        condition("PodScheduled", true, "", ""),
    ];
    let mut conditions: Vec<PodCondition> = old_conditions
        .iter()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    // PodObservedGenerationTracking (on by default since 1.35): which spec generation the kubelet
    // acted on, for the pod and each condition it owns.
    let generation = pod.metadata.generation;
    for mut c in fresh {
        c.observed_generation = generation;
        // The status manager keeps the transition time while the status stays the same.
        c.last_transition_time = match old_conditions.iter().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status && o.last_transition_time.is_some() => {
                o.last_transition_time.clone()
            }
            _ => Some(Time(now)),
        };
        conditions.push(c);
    }

    let host_network = spec.host_network.unwrap_or(false);
    let pod_ips: Vec<String> = if host_network {
        vec![node_ip.to_string()]
    } else if !observed.pod_ips.is_empty() {
        observed.pod_ips.clone()
    } else {
        // A stopped sandbox has no IP any more; keep reporting the one the pod had.
        old.pod_ips.iter().flatten().map(|p| p.ip.clone()).collect()
    };

    PodStatus {
        phase: Some(ph),
        reason,
        message,
        conditions: Some(conditions),
        host_ip: none_if_empty(node_ip),
        host_ips: (!node_ip.is_empty()).then(|| {
            vec![HostIP {
                ip: node_ip.to_string(),
            }]
        }),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty()).then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: old.start_time.clone().or(Some(Time(now))),
        qos_class: Some(pod_qos(pod).as_str().into()),
        init_container_statuses: (!inits.is_empty()).then_some(init_statuses),
        container_statuses: Some(app_statuses),
        ephemeral_container_statuses: (!ephemerals.is_empty()).then_some(ephemeral_statuses),
        nominated_node_name: old.nominated_node_name.clone(),
        observed_generation: generation,
        ..Default::default()
    }
}

/// Drops nulls, empty arrays and empty objects so `None` and `Some(vec![])` compare equal.
fn normalize(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalize(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        other => other,
    }
}

/// Whether `new` differs from `old` in anything but heartbeat data (upstream's
/// `isPodStatusByKubeletEqual`): kubelet-owned conditions compare by type, status, reason and message
/// only (not their times); everything else compares as the API stores it (times to the second).
pub fn status_changed(old: &PodStatus, new: &PodStatus) -> bool {
    type Compared = (String, Option<String>, Option<String>, Option<i64>);
    let kubelet_conditions = |s: &PodStatus| -> BTreeMap<String, Compared> {
        s.conditions
            .iter()
            .flatten()
            .filter(|c| KUBELET_CONDITIONS.contains(&c.type_.as_str()))
            .map(|c| {
                (
                    c.type_.clone(),
                    (
                        c.status.clone(),
                        c.reason.clone(),
                        c.message.clone(),
                        c.observed_generation,
                    ),
                )
            })
            .collect()
    };
    if kubelet_conditions(old) != kubelet_conditions(new) {
        return true;
    }
    let strip = |s: &PodStatus| {
        let mut s = s.clone();
        s.conditions = None;
        normalize(serde_json::to_value(&s).unwrap_or_default())
    };
    strip(old) != strip(new)
}

/// The strategic merge patch that sets `status`. `podIPs` and `hostIPs` are lists merged by `ip`
/// in a strategic patch, so a plain patch would add a new sandbox's address beside the old one
/// (the API then rejects two IPs of one family and every later update fails); they are replaced
/// instead, as the deletions in upstream's two-way patch from the old status do.
pub fn status_patch(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    for list in ["podIPs", "hostIPs"] {
        if let Some(serde_json::Value::Array(items)) = value.get_mut(list) {
            items.insert(0, serde_json::json!({"$patch": "replace"}));
        }
    }
    serde_json::json!({ "status": value })
}
