//! Tests of the pod status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodCondition, PodReadinessGate, PodSpec, PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::fixtures::*;
use super::observed::{AttemptState, Observed, StartError};
use super::status::{phase, status, status_changed, status_patch};

const NODE_IP: &str = "10.0.0.5";

fn obs(containers: Vec<super::ContainerAttempt>) -> Observed {
    Observed {
        sandbox: sandbox_ready(),
        containers,
        pod_ips: vec!["10.88.0.7".into()],
        ..Default::default()
    }
}

fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a PodCondition {
    s.conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap()
}

fn cond_summary(s: &PodStatus, kind: &str) -> (String, Option<String>, Option<String>) {
    let c = cond(s, kind);
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn cs<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap()
}

fn waiting_of(c: &ContainerStatus) -> (Option<String>, Option<String>) {
    let w = c.state.as_ref().unwrap().waiting.as_ref().expect("waiting");
    (w.reason.clone(), w.message.clone())
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

// --- phase table (upstream getPhase) ---

fn st(name: &str, state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state: Some(state),
        last_state: last,
        ..Default::default()
    }
}
fn run_s() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}
fn term_s(code: i32) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            ..Default::default()
        }),
        ..Default::default()
    }
}
fn wait_s() -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting::default()),
        ..Default::default()
    }
}
fn spec2(policy: &str, inits: &[&str]) -> PodSpec {
    let mut p = pod_with(vec![container("a", "i"), container("b", "i")], policy);
    if !inits.is_empty() {
        set_init(&mut p, inits.iter().map(|n| container(n, "i")).collect());
    }
    p.spec.unwrap()
}

#[test]
fn phase_table_as_upstream_get_phase() {
    // (policy, init statuses, app statuses a & b, pod terminal?, expected)
    type Case = (
        &'static str,
        Vec<ContainerStatus>,
        Vec<ContainerStatus>,
        bool,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("Always", vec![], vec![], false, "Pending"),
        (
            "Always",
            vec![],
            vec![st("a", run_s(), None), st("b", wait_s(), None)],
            false,
            "Pending",
        ),
        ("Always", vec![], vec![st("a", run_s(), None)], false, "Pending"), // b unknown
        (
            "Always",
            vec![],
            vec![st("a", run_s(), None), st("b", run_s(), None)],
            false,
            "Running",
        ),
        (
            "Always",
            vec![],
            vec![st("a", run_s(), None), st("b", term_s(0), None)],
            false,
            "Running",
        ),
        (
            "Always",
            vec![],
            vec![st("a", term_s(0), None), st("b", term_s(0), None)],
            false,
            "Running",
        ),
        (
            "Always",
            vec![],
            vec![st("a", term_s(0), None), st("b", term_s(1), None)],
            false,
            "Running",
        ),
        (
            "Always",
            vec![],
            vec![st("a", term_s(0), None), st("b", term_s(0), None)],
            true,
            "Succeeded",
        ),
        (
            "Always",
            vec![],
            vec![st("a", term_s(0), None), st("b", term_s(137), None)],
            true,
            "Failed",
        ),
        (
            "OnFailure",
            vec![],
            vec![st("a", term_s(0), None), st("b", term_s(0), None)],
            false,
            "Succeeded",
        ),
        (
            "OnFailure",
            vec![],
            vec![st("a", term_s(0), None), st("b", term_s(1), None)],
            false,
            "Running",
        ),
        (
            "Never",
            vec![],
            vec![st("a", term_s(0), None), st("b", term_s(0), None)],
            false,
            "Succeeded",
        ),
        (
            "Never",
            vec![],
            vec![st("a", term_s(0), None), st("b", term_s(2), None)],
            false,
            "Failed",
        ),
        // CrashLoopBackOff: waiting with a last termination counts as stopped.
        (
            "Always",
            vec![],
            vec![st("a", wait_s(), Some(term_s(1))), st("b", run_s(), None)],
            false,
            "Running",
        ),
        (
            "Always",
            vec![],
            vec![
                st("a", wait_s(), Some(term_s(1))),
                st("b", wait_s(), Some(term_s(1))),
            ],
            false,
            "Running",
        ),
    ];
    for (i, (policy, inits, apps, terminal, want)) in cases.into_iter().enumerate() {
        let all: Vec<_> = inits.into_iter().chain(apps).collect();
        assert_eq!(
            phase(&spec2(policy, &[]), &all, terminal),
            want,
            "case {i} ({policy})"
        );
    }

    // Init containers.
    let waiting_apps = || vec![st("a", wait_s(), None), st("b", wait_s(), None)];
    let init_cases: Vec<(&str, Vec<ContainerStatus>, &str)> = vec![
        ("Always", vec![st("i1", run_s(), None)], "Pending"),
        ("Never", vec![st("i1", term_s(1), None)], "Failed"),
        ("OnFailure", vec![st("i1", term_s(1), None)], "Pending"),
        ("Always", vec![st("i1", wait_s(), Some(term_s(1)))], "Pending"),
        ("Never", vec![st("i1", wait_s(), Some(term_s(1)))], "Failed"),
    ];
    for (policy, inits, want) in init_cases {
        let all: Vec<_> = inits.into_iter().chain(waiting_apps()).collect();
        assert_eq!(
            phase(&spec2(policy, &["i1"]), &all, false),
            want,
            "{policy} {all:?}"
        );
    }
    let done: Vec<_> = vec![
        st("i1", term_s(0), None),
        st("a", run_s(), None),
        st("b", run_s(), None),
    ];
    assert_eq!(phase(&spec2("Always", &["i1"]), &done, false), "Running");
}

// --- whole statuses ---

#[test]
fn new_pod_is_pending_with_container_creating_and_conditions() {
    let pod = pod_with(vec![container("b", "img:1"), container("a", "img:1")], "Always");
    let s = status(&pod, &Observed::default(), t(0), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(waiting_of(cs(&s, "a")), (some("ContainerCreating"), None));
    // App container statuses are sorted by name.
    let names: Vec<_> = s
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(cs(&s, "a").image, "img:1");
    assert_eq!(cs(&s, "a").started, Some(false));
    assert!(!cs(&s, "a").ready);
    let types: Vec<_> = s.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    assert_eq!(
        cond_summary(&s, "PodReadyToStartContainers"),
        ("False".into(), None, None)
    );
    assert_eq!(cond_summary(&s, "Initialized"), ("True".into(), None, None));
    let unready = (
        "False".into(),
        some("ContainersNotReady"),
        some("containers with unready status: [b a]"),
    );
    assert_eq!(cond_summary(&s, "Ready"), unready);
    assert_eq!(cond_summary(&s, "ContainersReady"), unready);
    assert_eq!(cond_summary(&s, "PodScheduled"), ("True".into(), None, None));
    assert!(
        s.conditions
            .iter()
            .flatten()
            .all(|c| c.last_transition_time == Some(Time(t(0))))
    );
    assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(s.host_ip.as_deref(), Some(NODE_IP));
    assert_eq!(s.host_ips.as_ref().unwrap()[0].ip, NODE_IP);
    assert_eq!(s.pod_ip, None);
    assert_eq!(s.start_time, Some(Time(t(0))));
    assert_eq!(s.init_container_statuses, None);
}

#[test]
fn running_pod_reports_running_ready_ids_and_ips() {
    let pod = pod_with(vec![container("app", "img:1")], "Always");
    let s = status(&pod, &obs(vec![running(&pod, "app", 0, t(3))]), t(5), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let c = cs(&s, "app");
    assert_eq!(
        c.state.as_ref().unwrap().running.as_ref().unwrap().started_at,
        Some(Time(t(3)))
    );
    assert!(c.ready);
    assert_eq!(c.started, Some(true));
    assert_eq!(c.restart_count, 0);
    assert_eq!(c.container_id.as_deref(), Some("containerd://app-0"));
    assert_eq!(c.image_id, "img:1@sha256:abc");
    for kind in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert_eq!(cond_summary(&s, kind), ("True".into(), None, None), "{kind}");
    }
    assert_eq!(s.pod_ip.as_deref(), Some("10.88.0.7"));
    assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.88.0.7");

    // hostNetwork pods report the node's IP.
    let mut hn = pod.clone();
    hn.spec.as_mut().unwrap().host_network = Some(true);
    let s = status(&hn, &obs(vec![running(&hn, "app", 0, t(3))]), t(5), NODE_IP);
    assert_eq!(s.pod_ip.as_deref(), Some(NODE_IP));
}

#[test]
fn readiness_and_startup_probes_gate_ready_and_started() {
    let mut pod = pod_with(vec![container("app", "img:1")], "Always");
    pod.spec.as_mut().unwrap().containers[0].readiness_probe = Some(Probe::default());
    let mut a = running(&pod, "app", 0, t(0));
    let s = status(&pod, &obs(vec![a.clone()]), t(1), NODE_IP);
    assert!(!cs(&s, "app").ready, "no probe result yet");
    assert_eq!(
        cond_summary(&s, "Ready"),
        (
            "False".into(),
            some("ContainersNotReady"),
            some("containers with unready status: [app]")
        )
    );
    a.ready = Some(true);
    let s = status(&pod, &obs(vec![a.clone()]), t(2), NODE_IP);
    assert!(cs(&s, "app").ready);

    pod.spec.as_mut().unwrap().containers[0].startup_probe = Some(Probe::default());
    let s = status(&pod, &obs(vec![a.clone()]), t(3), NODE_IP);
    assert_eq!(cs(&s, "app").started, Some(false));
    assert!(!cs(&s, "app").ready, "not ready before started");
    a.started = Some(true);
    let s = status(&pod, &obs(vec![a]), t(4), NODE_IP);
    assert_eq!(cs(&s, "app").started, Some(true));
    assert!(cs(&s, "app").ready);
}

#[test]
fn crash_loop_back_off_shows_waiting_last_state_and_restart_count() {
    let pod = pod_with(vec![container("app", "img:1")], "Always");
    let mut o = obs(vec![
        exited(&pod, "app", 2, 1, t(0), t(4)),
        exited(&pod, "app", 1, 1, t(-10), t(-5)),
    ]);
    let msg = "back-off 20s restarting failed container=app pod=web_default(uid-1)";
    o.start_errors
        .insert("app".into(), StartError::new("CrashLoopBackOff", msg));
    let s = status(&pod, &o, t(5), NODE_IP);
    let c = cs(&s, "app");
    assert_eq!(waiting_of(c), (some("CrashLoopBackOff"), some(msg)));
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(last.started_at, Some(Time(t(0))));
    assert_eq!(last.finished_at, Some(Time(t(4))));
    assert_eq!(last.container_id.as_deref(), Some("containerd://app-2"));
    assert_eq!(c.restart_count, 2);
    assert!(!c.ready);
    assert_eq!(s.phase.as_deref(), Some("Running"));

    // Restarted: running with the previous attempt as lastState.
    let o = obs(vec![
        running(&pod, "app", 3, t(30)),
        exited(&pod, "app", 2, 1, t(0), t(4)),
    ]);
    let s = status(&pod, &o, t(31), NODE_IP);
    let c = cs(&s, "app");
    assert!(c.state.as_ref().unwrap().running.is_some());
    assert_eq!(terminated_state(&c.last_state).exit_code, 1);
    assert_eq!(c.restart_count, 3);
}

#[test]
fn every_waiting_reason_from_the_reason_cache_is_reported() {
    let pod = pod_with(vec![container("app", "img:1")], "Always");
    for (reason, message) in [
        ("ErrImagePull", "pulling \"img:1\": not found"),
        ("ImagePullBackOff", "Back-off pulling image \"img:1\": not found"),
        ("InvalidImageName", "invalid reference"),
        (
            "ErrImageNeverPull",
            "Container image \"img:1\" is not present with pull policy of Never",
        ),
        ("CreateContainerConfigError", "configmap \"cfg\" not found"),
        ("CreateContainerError", "runc failed"),
    ] {
        let mut o = obs(vec![]);
        o.start_errors
            .insert("app".into(), StartError::new(reason, message));
        let s = status(&pod, &o, t(0), NODE_IP);
        assert_eq!(waiting_of(cs(&s, "app")), (some(reason), some(message)));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
    }
    // A running container ignores a stale entry.
    let mut o = obs(vec![running(&pod, "app", 0, t(0))]);
    o.start_errors
        .insert("app".into(), StartError::new("ErrImagePull", "x"));
    let s = status(&pod, &o, t(1), NODE_IP);
    assert!(cs(&s, "app").state.as_ref().unwrap().running.is_some());
    // A created, not started container waits without a reason.
    let s = status(&pod, &obs(vec![created(&pod, "app", 0, t(0))]), t(1), NODE_IP);
    assert_eq!(waiting_of(cs(&s, "app")), (None, None));
}

#[test]
fn init_containers_statuses_and_initialized_condition() {
    let mut pod = pod_with(vec![container("app", "img:1")], "Always");
    set_init(&mut pod, vec![container("i1", "img:1"), container("i2", "img:1")]);

    let s = status(&pod, &obs(vec![running(&pod, "i1", 0, t(0))]), t(1), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let inits: Vec<_> = s
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["i1", "i2"], "spec order");
    assert!(cs(&s, "i1").state.as_ref().unwrap().running.is_some());
    assert_eq!(cs(&s, "i1").started, Some(true));
    assert_eq!(waiting_of(cs(&s, "i2")), (some("PodInitializing"), None));
    assert_eq!(waiting_of(cs(&s, "app")), (some("PodInitializing"), None));
    assert_eq!(
        cond_summary(&s, "Initialized"),
        (
            "False".into(),
            some("ContainersNotInitialized"),
            some("containers with incomplete status: [i1 i2]")
        )
    );

    let o = obs(vec![
        exited(&pod, "i1", 0, 0, t(0), t(1)),
        exited(&pod, "i2", 0, 0, t(1), t(2)),
        running(&pod, "app", 0, t(3)),
    ]);
    let s = status(&pod, &o, t(4), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert!(cs(&s, "i1").ready && cs(&s, "i2").ready);
    assert_eq!(terminated_reason_of(cs(&s, "i1")), Some("Completed"));
    assert_eq!(cond_summary(&s, "Initialized"), ("True".into(), None, None));

    // A failed init container with Never fails the pod; the app never ran.
    let mut never = pod.clone();
    never.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let s = status(
        &never,
        &obs(vec![exited(&never, "i1", 0, 1, t(0), t(1))]),
        t(2),
        NODE_IP,
    );
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(
        cond_summary(&s, "ContainersReady"),
        ("False".into(), some("PodFailed"), None)
    );
    assert_eq!(
        cond_summary(&s, "Ready"),
        ("False".into(), some("PodFailed"), None)
    );
    assert_eq!(waiting_of(cs(&s, "app")), (some("PodInitializing"), None));

    // A failed init container with OnFailure waits in CrashLoopBackOff; pod stays Pending.
    let mut onf = pod.clone();
    onf.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    let mut o = obs(vec![exited(&onf, "i1", 0, 1, t(0), t(1))]);
    o.start_errors
        .insert("i1".into(), StartError::new("CrashLoopBackOff", "back-off 10s"));
    let s = status(&onf, &o, t(2), NODE_IP);
    assert_eq!(waiting_of(cs(&s, "i1")).0, some("CrashLoopBackOff"));
    assert_eq!(s.phase.as_deref(), Some("Pending"));
}

#[test]
fn completed_pods_report_succeeded_and_failed_with_terminal_conditions() {
    let pod = pod_with(vec![container("app", "img:1")], "OnFailure");
    let mut o = obs(vec![exited(&pod, "app", 0, 0, t(0), t(1))]);
    o.sandbox = None;
    let s = status(&pod, &o, t(2), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
    assert_eq!(
        cond_summary(&s, "ContainersReady"),
        ("False".into(), some("PodCompleted"), None)
    );
    assert_eq!(
        cond_summary(&s, "Ready"),
        ("False".into(), some("PodCompleted"), None)
    );
    assert_eq!(
        cond_summary(&s, "Initialized"),
        ("True".into(), some("PodCompleted"), None)
    );
    assert_eq!(
        cond_summary(&s, "PodReadyToStartContainers"),
        ("False".into(), None, None)
    );
    let term = cs(&s, "app").state.as_ref().unwrap().terminated.clone().unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));

    let never = pod_with(vec![container("app", "img:1")], "Never");
    let mut a = exited(&never, "app", 0, 137, t(0), t(1));
    if let AttemptState::Exited { reason, message, .. } = &mut a.state {
        *reason = "OOMKilled".into();
        *message = "out of memory".into();
    }
    let s = status(&never, &obs(vec![a]), t(2), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    let term = cs(&s, "app").state.as_ref().unwrap().terminated.clone().unwrap();
    assert_eq!(term.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(term.message.as_deref(), Some("out of memory"));
}

#[test]
fn deleted_always_pod_ends_terminal_once_stopped() {
    let mut pod = pod_with(vec![container("app", "img:1")], "Always");
    pod.metadata.deletion_timestamp = Some(Time(t(5)));
    let s = status(&pod, &obs(vec![running(&pod, "app", 0, t(0))]), t(6), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Running"), "still stopping");
    let mut o = obs(vec![exited(&pod, "app", 0, 143, t(0), t(7))]);
    o.sandbox = None;
    let s = status(&pod, &o, t(8), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    // No CrashLoopBackOff for a deleted pod: the terminated state stays.
    o.start_errors
        .insert("app".into(), StartError::new("CrashLoopBackOff", "x"));
    let s = status(&pod, &o, t(8), NODE_IP);
    assert!(cs(&s, "app").state.as_ref().unwrap().terminated.is_some());
}

#[test]
fn active_deadline_exceeded_fails_the_pod() {
    let mut pod = pod_with(vec![container("app", "img:1")], "Always");
    pod.spec.as_mut().unwrap().active_deadline_seconds = Some(10);
    set_start_time(&mut pod, t(0));
    let o = obs(vec![running(&pod, "app", 0, t(1))]);
    let s = status(&pod, &o, t(5), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let s = status(&pod, &o, t(10), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        s.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    assert_eq!(s.start_time, Some(Time(t(0))), "start time kept");
}

#[test]
fn terminal_phase_and_its_reason_stick() {
    let mut pod = pod_with(vec![container("app", "img:1")], "Always");
    pod.status = Some(PodStatus {
        phase: Some("Failed".into()),
        reason: Some("OutOfcpu".into()),
        message: Some("Pod was rejected: x".into()),
        ..Default::default()
    });
    let s = status(&pod, &Observed::default(), t(0), NODE_IP);
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(s.reason.as_deref(), Some("OutOfcpu"));
    assert_eq!(s.message.as_deref(), Some("Pod was rejected: x"));
}

#[test]
fn transition_times_are_kept_while_a_condition_holds_and_foreign_conditions_survive() {
    let mut pod = pod_with(vec![container("app", "img:1")], "Always");
    pod.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
        condition_type: "example.com/lb".into(),
    }]);
    let o = obs(vec![running(&pod, "app", 0, t(0))]);
    let first = status(&pod, &o, t(1), NODE_IP);
    assert_eq!(
        cond_summary(&first, "Ready"),
        (
            "False".into(),
            some("ReadinessGatesNotReady"),
            some("corresponding condition of pod readiness gate \"example.com/lb\" does not exist.")
        )
    );
    let mut with_gate = first.clone();
    with_gate.conditions.as_mut().unwrap().insert(
        0,
        PodCondition {
            type_: "example.com/lb".into(),
            status: "True".into(),
            ..Default::default()
        },
    );
    pod.status = Some(with_gate);
    let second = status(&pod, &o, t(50), NODE_IP);
    assert_eq!(
        second.conditions.as_ref().unwrap()[0].type_,
        "example.com/lb",
        "foreign conditions first"
    );
    assert_eq!(cond_summary(&second, "Ready"), ("True".into(), None, None));
    assert_eq!(
        cond(&second, "Ready").last_transition_time,
        Some(Time(t(50))),
        "changed"
    );
    assert_eq!(
        cond(&second, "ContainersReady").last_transition_time,
        Some(Time(t(1))),
        "unchanged"
    );
    assert_eq!(
        cond(&second, "PodScheduled").last_transition_time,
        Some(Time(t(1)))
    );
    assert_eq!(second.start_time, Some(Time(t(1))));
}

#[test]
fn qos_class_in_status() {
    let g = pod_with(
        vec![with_resources(
            container("a", "img:1"),
            &[],
            &[("cpu", "1"), ("memory", "1Gi")],
        )],
        "Always",
    );
    assert_eq!(
        status(&g, &Observed::default(), t(0), NODE_IP)
            .qos_class
            .as_deref(),
        Some("Guaranteed")
    );
    let b = pod_with(
        vec![with_resources(container("a", "img:1"), &[("memory", "1Gi")], &[])],
        "Always",
    );
    assert_eq!(
        status(&b, &Observed::default(), t(0), NODE_IP)
            .qos_class
            .as_deref(),
        Some("Burstable")
    );
}

#[test]
fn vanished_containers_keep_their_last_known_state() {
    let mut pod = pod_with(vec![container("a", "img:1"), container("b", "img:1")], "Always");
    let running_before = ContainerStatus {
        name: "a".into(),
        restart_count: 2,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let terminated_before = ContainerStatus {
        name: "b".into(),
        restart_count: 1,
        state: Some(term_s(3)),
        ..Default::default()
    };
    pod.status = Some(PodStatus {
        container_statuses: Some(vec![running_before, terminated_before.clone()]),
        ..Default::default()
    });
    let s = status(&pod, &obs(vec![]), t(0), NODE_IP);
    let a = cs(&s, "a");
    let last = a.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("ContainerStatusUnknown"))
    );
    assert_eq!(a.restart_count, 3);
    assert_eq!(
        cs(&s, "b"),
        &ContainerStatus {
            ready: false,
            started: Some(false),
            ..terminated_before
        }
    );
}

#[test]
fn status_changed_ignores_heartbeat_only_differences() {
    let pod = pod_with(vec![container("app", "img:1")], "Always");
    let o = obs(vec![running(&pod, "app", 0, t(0))]);
    let a = status(&pod, &o, t(1), NODE_IP);
    // Same picture later, without the previous status as base: only condition times differ.
    let b = status(&pod, &o, t(100), NODE_IP);
    assert_ne!(a, b);
    let mut b2 = b.clone();
    b2.start_time = a.start_time.clone();
    assert!(!status_changed(&a, &b2));
    // Sub-second differences vanish in the API's representation.
    let mut c = a.clone();
    c.start_time = Some(Time(
        t(1).checked_add(k8s_openapi::jiff::SignedDuration::from_millis(300))
            .unwrap(),
    ));
    assert!(!status_changed(&a, &c));
    // None vs empty list.
    let mut d = a.clone();
    d.pod_ips = Some(vec![]);
    d.pod_ip = a.pod_ip.clone();
    let mut e = a.clone();
    e.pod_ips = None;
    assert!(!status_changed(&d, &e));
    // Real changes.
    let stopped = status(
        &pod,
        &obs(vec![exited(&pod, "app", 0, 1, t(0), t(5))]),
        t(6),
        NODE_IP,
    );
    assert!(status_changed(&a, &stopped));
    let mut unready = a.clone();
    unready.conditions.as_mut().unwrap()[2].status = "False".into();
    assert!(status_changed(&a, &unready));
    let mut msg = a.clone();
    msg.message = Some("x".into());
    assert!(status_changed(&a, &msg));
    // The status round-tripped through JSON (as read back from the API) is unchanged.
    let back: PodStatus = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
    assert!(!status_changed(&back, &a));
    let mut reread = pod.clone();
    reread.status = Some(back);
    let again = status(&reread, &o, t(500), NODE_IP);
    assert!(!status_changed(reread.status.as_ref().unwrap(), &again));
}

#[test]
fn pod_without_spec_does_not_panic() {
    let pod = Pod::default();
    let s = status(&pod, &Observed::default(), t(0), "");
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(s.host_ip, None);
}

#[test]
fn the_status_patch_replaces_ip_lists_instead_of_merging_them() {
    let pod = pod_with(vec![container("app", "img:1")], "Always");
    let s = status(&pod, &obs(vec![running(&pod, "app", 0, t(3))]), t(5), NODE_IP);
    let patch = status_patch(&s);
    let ips = patch["status"]["podIPs"].as_array().unwrap();
    assert_eq!(ips[0], serde_json::json!({"$patch": "replace"}));
    assert_eq!(ips[1]["ip"], "10.88.0.7");
    assert_eq!(
        patch["status"]["hostIPs"][0],
        serde_json::json!({"$patch": "replace"})
    );
    assert_eq!(patch["status"]["hostIPs"][1]["ip"], NODE_IP);
    // Other lists merge as before (containerStatuses by name, conditions by type).
    assert!(
        patch["status"]["conditions"].as_array().unwrap()[0]
            .get("$patch")
            .is_none()
    );
}

#[test]
fn observed_generation_follows_the_spec_generation() {
    let mut pod = pod_with(vec![container("a", "img:1")], "Always");
    pod.metadata.generation = Some(1);
    let first = status(&pod, &Observed::default(), t(0), NODE_IP);
    assert_eq!(first.observed_generation, Some(1));
    for kind in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert_eq!(cond(&first, kind).observed_generation, Some(1), "{kind}");
    }
    // An update of the spec (say activeDeadlineSeconds) bumps the generation: a status change.
    pod.status = Some(first.clone());
    pod.metadata.generation = Some(2);
    let second = status(&pod, &Observed::default(), t(1), NODE_IP);
    assert_eq!(second.observed_generation, Some(2));
    assert_eq!(cond(&second, "Ready").observed_generation, Some(2));
    assert!(status_changed(&first, &second));
}
