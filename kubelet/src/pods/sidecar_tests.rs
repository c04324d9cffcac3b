//! Tests of sidecar containers (init containers with `restartPolicy: Always`): the plan, the worker
//! state machine and the pod status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodStatus, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backoff::BackoffBook;
use super::fixtures::*;
use super::observed::{AttemptState, ContainerAttempt, Observed};
use super::plan::{Action, Input, Stage, TerminationReason, WorkerState, plan, step};
use super::status::status;

const NODE_IP: &str = "10.0.0.5";

fn obs(containers: Vec<ContainerAttempt>) -> Observed {
    Observed {
        sandbox: sandbox_ready(),
        containers,
        images_present: ["img:1".to_string()].into_iter().collect(),
        pod_ips: vec!["10.88.0.7".into()],
        ..Default::default()
    }
}

fn sidecar(name: &str) -> Container {
    Container {
        restart_policy: Some("Always".into()),
        ..container(name, "img:1")
    }
}

fn probed(mut c: Container) -> Container {
    c.startup_probe = Some(Probe::default());
    c
}

/// A pod with the sidecar `proxy` (with a startup probe when `startup_probe`), then the regular
/// init container `setup`, then the app container `app`.
fn pod(policy: &str, startup_probe: bool) -> Pod {
    let mut p = pod_with(vec![container("app", "img:1")], policy);
    let proxy = if startup_probe {
        probed(sidecar("proxy"))
    } else {
        sidecar("proxy")
    };
    set_init(&mut p, vec![proxy, container("setup", "img:1")]);
    p
}

fn plan_at(p: &Pod, o: &Observed, now: super::Timestamp) -> super::Plan {
    plan(p, o, &BackoffBook::default(), now)
}

fn kills(p: &super::Plan) -> Vec<(String, String)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::KillContainer {
                container, message, ..
            } => Some((container.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

fn start(name: &str, init: bool, attempt: u32) -> (String, bool, u32) {
    (name.into(), init, attempt)
}

fn with_started(mut a: ContainerAttempt, started: Option<bool>) -> ContainerAttempt {
    a.started = started;
    a
}

#[test]
fn a_running_sidecar_lets_the_next_init_container_start_and_keeps_running() {
    let p = pod("Never", false);
    assert_eq!(
        starts(&plan_at(&p, &obs(vec![]), t(0))),
        vec![start("proxy", true, 0)]
    );
    let proxy = running(&p, "proxy", 0, t(1));
    let plan = plan_at(&p, &obs(vec![proxy.clone()]), t(2));
    assert_eq!(starts(&plan), vec![start("setup", true, 0)]);
    assert!(kills(&plan).is_empty());
    // The regular init container runs: wait for it.
    let o = obs(vec![proxy.clone(), running(&p, "setup", 0, t(2))]);
    assert!(plan_at(&p, &o, t(3)).actions.is_empty());
    // It succeeded: the app starts, the sidecar stays.
    let o = obs(vec![proxy.clone(), exited(&p, "setup", 0, 0, t(2), t(3))]);
    let plan = plan_at(&p, &o, t(4));
    assert_eq!(starts(&plan), vec![start("app", false, 0)]);
    assert!(kills(&plan).is_empty());
    // Everything runs: nothing to do.
    let o = obs(vec![
        proxy,
        exited(&p, "setup", 0, 0, t(2), t(3)),
        running(&p, "app", 0, t(4)),
    ]);
    assert!(plan_at(&p, &o, t(5)).actions.is_empty());
}

#[test]
fn a_sidecar_with_a_startup_probe_gates_the_next_container_until_started() {
    let p = pod("Always", true);
    // No startup result yet: wait.
    let o = obs(vec![running(&p, "proxy", 0, t(1))]);
    assert!(plan_at(&p, &o, t(2)).actions.is_empty());
    // Started: the next init container starts.
    let o = obs(vec![with_started(running(&p, "proxy", 0, t(1)), Some(true))]);
    assert_eq!(starts(&plan_at(&p, &o, t(2))), vec![start("setup", true, 0)]);
    // The startup probe failed for good: stopped and started again.
    let o = obs(vec![with_started(running(&p, "proxy", 0, t(1)), Some(false))]);
    let plan = plan_at(&p, &o, t(2));
    assert_eq!(
        kills(&plan),
        vec![(
            "proxy".into(),
            "Init container proxy failed startup probe, will be restarted".into()
        )]
    );
    assert_eq!(starts(&plan), vec![start("proxy", true, 1)]);

    // The last init container being a sidecar: started completes initialization.
    let mut p = pod_with(vec![container("app", "img:1")], "Never");
    set_init(&mut p, vec![probed(sidecar("proxy"))]);
    let o = obs(vec![running(&p, "proxy", 0, t(1))]);
    assert!(plan_at(&p, &o, t(2)).actions.is_empty());
    let o = obs(vec![with_started(running(&p, "proxy", 0, t(1)), Some(true))]);
    assert_eq!(starts(&plan_at(&p, &o, t(2))), vec![start("app", false, 0)]);
}

#[test]
fn an_exited_sidecar_restarts_whatever_the_restart_policy() {
    for policy in ["Never", "OnFailure", "Always"] {
        for code in [0, 1] {
            let p = pod(policy, false);
            // During initialization: restarted, the pod does not fail.
            let o = obs(vec![exited(&p, "proxy", 0, code, t(0), t(1))]);
            let plan = plan_at(&p, &o, t(2));
            assert_eq!(plan.stage, Stage::Syncing, "{policy} {code}");
            assert_eq!(starts(&plan), vec![start("proxy", true, 1)], "{policy} {code}");
            assert_eq!(plan.backoff.len(), 1, "the restart counts for the crash backoff");

            // After initialization, next to a running app container.
            let o = obs(vec![
                exited(&p, "proxy", 0, code, t(1), t(5)),
                exited(&p, "setup", 0, 0, t(2), t(3)),
                running(&p, "app", 0, t(4)),
            ]);
            let plan = plan_at(&p, &o, t(6));
            assert_eq!(starts(&plan), vec![start("proxy", true, 1)], "{policy} {code}");
            assert!(kills(&plan).is_empty());
        }
    }
    // Its init containers removed since, the app running: only the sidecar comes back.
    let p = pod("Never", false);
    let plan = plan_at(&p, &obs(vec![running(&p, "app", 0, t(4))]), t(5));
    assert_eq!(starts(&plan), vec![start("proxy", true, 0)]);
}

#[test]
fn a_sidecar_failing_liveness_or_changed_is_restarted() {
    let p = pod("Never", false);
    let mut proxy = running(&p, "proxy", 0, t(1));
    proxy.live = Some(false);
    let o = obs(vec![
        proxy,
        exited(&p, "setup", 0, 0, t(2), t(3)),
        running(&p, "app", 0, t(4)),
    ]);
    let plan = plan_at(&p, &o, t(5));
    assert_eq!(
        kills(&plan),
        vec![(
            "proxy".into(),
            "Init container proxy failed liveness probe, will be restarted".into()
        )]
    );
    assert_eq!(starts(&plan), vec![start("proxy", true, 1)]);

    let mut proxy = running(&p, "proxy", 0, t(1));
    proxy.spec_hash = "old".into();
    let o = obs(vec![
        proxy,
        exited(&p, "setup", 0, 0, t(2), t(3)),
        running(&p, "app", 0, t(4)),
    ]);
    let plan = plan_at(&p, &o, t(5));
    assert_eq!(kills(&plan).len(), 1);
    assert_eq!(starts(&plan), vec![start("proxy", true, 1)]);
}

#[test]
fn a_failing_regular_init_container_still_fails_a_never_pod() {
    let p = pod("Never", false);
    let o = obs(vec![
        running(&p, "proxy", 0, t(1)),
        exited(&p, "setup", 0, 1, t(2), t(3)),
    ]);
    let plan = plan_at(&p, &o, t(4));
    assert_eq!(
        plan.actions,
        vec![Action::KillPod {
            grace_seconds: 30,
            reason: TerminationReason::InitFailed
        }]
    );
}

#[test]
fn sidecars_do_not_keep_a_finished_pod_alive() {
    for policy in ["Never", "OnFailure"] {
        let p = pod(policy, false);
        let o = obs(vec![
            running(&p, "proxy", 0, t(1)),
            exited(&p, "setup", 0, 0, t(2), t(3)),
            exited(&p, "app", 0, 0, t(4), t(5)),
        ]);
        let book = BackoffBook::default();
        let input = Input {
            pod: &p,
            observed: &o,
            backoff: &book,
            now: t(6),
        };
        let (plan, state) = step(WorkerState::Syncing, &input);
        assert_eq!(
            plan.actions,
            vec![Action::KillPod {
                grace_seconds: 30,
                reason: TerminationReason::Completed
            }],
            "{policy}"
        );
        assert!(matches!(
            state,
            WorkerState::Terminating {
                reason: TerminationReason::Completed,
                ..
            }
        ));
        // While the sidecar runs the pod is Running, as upstream reports it.
        assert_eq!(status(&p, &o, t(6), NODE_IP).phase.as_deref(), Some("Running"));

        // Stopped: the app containers decide the phase; the sidecar is not restarted.
        let mut o = obs(vec![
            exited(&p, "proxy", 0, 143, t(1), t(7)),
            exited(&p, "setup", 0, 0, t(2), t(3)),
            exited(&p, "app", 0, 0, t(4), t(5)),
        ]);
        o.sandbox = None;
        let input = Input {
            observed: &o,
            now: t(8),
            ..input
        };
        let (plan, state) = step(state, &input);
        assert!(plan.actions.is_empty(), "{policy}: {:?}", plan.actions);
        assert_eq!(
            state,
            WorkerState::Terminated {
                reason: TerminationReason::Completed
            }
        );
        let s = status(&p, &o, t(8), NODE_IP);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"), "{policy}");
    }
    // A failed app container fails a Never pod, whatever the sidecar did.
    let p = pod("Never", false);
    let o = obs(vec![
        exited(&p, "proxy", 0, 0, t(1), t(7)),
        exited(&p, "setup", 0, 0, t(2), t(3)),
        exited(&p, "app", 0, 2, t(4), t(5)),
    ]);
    assert_eq!(status(&p, &o, t(8), NODE_IP).phase.as_deref(), Some("Failed"));
    // And a sidecar that failed does not fail the pod.
    let o = obs(vec![
        exited(&p, "proxy", 0, 1, t(1), t(7)),
        exited(&p, "setup", 0, 0, t(2), t(3)),
        exited(&p, "app", 0, 0, t(4), t(5)),
    ]);
    assert_eq!(status(&p, &o, t(8), NODE_IP).phase.as_deref(), Some("Succeeded"));
}

#[test]
fn deletion_stops_the_sidecars_too() {
    let mut p = pod("Always", false);
    p.metadata.deletion_timestamp = Some(Time(t(10)));
    p.metadata.deletion_grace_period_seconds = Some(5);
    let o = obs(vec![
        running(&p, "proxy", 0, t(1)),
        exited(&p, "setup", 0, 0, t(2), t(3)),
        running(&p, "app", 0, t(4)),
    ]);
    let plan = plan_at(&p, &o, t(11));
    assert_eq!(
        plan.actions,
        vec![Action::KillPod {
            grace_seconds: 5,
            reason: TerminationReason::Deleted
        }]
    );
    // Nothing is restarted once the pod is deleted, even an exited sidecar.
    let o = obs(vec![
        exited(&p, "proxy", 0, 0, t(1), t(9)),
        running(&p, "app", 0, t(4)),
    ]);
    assert!(starts(&plan_at(&p, &o, t(11))).is_empty());
}

fn init_status<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    s.init_container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .unwrap()
}

fn cond(s: &PodStatus, kind: &str) -> (String, Option<String>, Option<String>) {
    let c = s.conditions.iter().flatten().find(|c| c.type_ == kind).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn status_of_a_sidecar_and_the_initialized_condition() {
    let mut p = pod("Always", true);
    p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].readiness_probe = Some(Probe::default());

    // Running, not started yet: the pod is Pending and not initialized.
    let s = status(&p, &obs(vec![running(&p, "proxy", 0, t(1))]), t(2), NODE_IP);
    let proxy = init_status(&s, "proxy");
    assert_eq!((proxy.started, proxy.ready), (Some(false), false));
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(
        cond(&s, "Initialized"),
        (
            "False".into(),
            Some("ContainersNotInitialized".into()),
            Some("containers with incomplete status: [proxy setup]".into())
        )
    );

    // Started (not ready yet), the regular one done: initialized; not ready because of the sidecar.
    let mut proxy = with_started(running(&p, "proxy", 1, t(1)), Some(true));
    let o = obs(vec![
        proxy.clone(),
        exited(&p, "setup", 0, 0, t(2), t(3)),
        running(&p, "app", 0, t(4)),
    ]);
    let s = status(&p, &o, t(5), NODE_IP);
    let st = init_status(&s, "proxy");
    assert_eq!((st.started, st.ready, st.restart_count), (Some(true), false, 1));
    assert!(init_status(&s, "setup").ready);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Initialized"), ("True".into(), None, None));
    let not_ready = (
        "False".to_string(),
        Some("ContainersNotReady".to_string()),
        Some("containers with unready status: [proxy]".to_string()),
    );
    assert_eq!(cond(&s, "ContainersReady"), not_ready);
    assert_eq!(cond(&s, "Ready"), not_ready);

    // Ready: the pod is ready.
    proxy.ready = Some(true);
    let o = obs(vec![
        proxy,
        exited(&p, "setup", 0, 0, t(2), t(3)),
        running(&p, "app", 0, t(4)),
    ]);
    let s = status(&p, &o, t(5), NODE_IP);
    assert!(init_status(&s, "proxy").ready);
    assert_eq!(cond(&s, "ContainersReady"), ("True".into(), None, None));
    assert_eq!(cond(&s, "Ready"), ("True".into(), None, None));
}

#[test]
fn a_restarting_sidecar_keeps_an_initialized_pod_running() {
    let p = pod("Never", false);
    let mut o = obs(vec![
        exited(&p, "proxy", 0, 1, t(1), t(5)),
        exited(&p, "setup", 0, 0, t(2), t(3)),
        running(&p, "app", 0, t(4)),
    ]);
    o.start_errors.insert(
        "proxy".into(),
        super::StartError::new("CrashLoopBackOff", "back-off 10s"),
    );
    let s = status(&p, &o, t(6), NODE_IP);
    let proxy = init_status(&s, "proxy");
    // A sidecar restarts even with policy Never: its back-off shows.
    let waiting = proxy.state.as_ref().and_then(|st| st.waiting.as_ref()).unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(proxy.started, Some(false));
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Initialized"), ("True".into(), None, None));
    assert_eq!(cond(&s, "Ready").0, "False");
    // An unknown state is not Running either way.
    let mut o = o.clone();
    o.containers[0].state = AttemptState::Unknown;
    assert_ne!(status(&p, &o, t(6), NODE_IP).phase.as_deref(), Some("Succeeded"));
}
