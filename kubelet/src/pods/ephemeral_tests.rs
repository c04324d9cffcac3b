//! Tests of ephemeral containers: the plan starts each once, whatever the pod's state, never
//! restarts or orphan-kills it, and it shows in `ephemeralContainerStatuses` only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{EphemeralContainer, Pod};

use super::backoff::BackoffBook;
use super::fixtures::*;
use super::observed::{ContainerAttempt, Observed};
use super::plan::{Action, Stage, TerminationReason, plan};
use super::status::status;

fn obs(containers: Vec<ContainerAttempt>) -> Observed {
    Observed {
        sandbox: sandbox_ready(),
        containers,
        images_present: ["img:1".to_string(), "debug:1".to_string()].into_iter().collect(),
        pod_ips: vec!["10.88.0.7".into()],
        ..Default::default()
    }
}

/// A running pod's spec with the ephemeral container `debugger` added, as `kubectl debug` does.
fn with_debugger(mut p: Pod) -> Pod {
    let spec = p.spec.as_mut().unwrap();
    spec.ephemeral_containers = Some(vec![EphemeralContainer {
        name: "debugger".into(),
        image: Some("debug:1".into()),
        command: Some(vec!["sh".into()]),
        stdin: Some(true),
        tty: Some(true),
        ..Default::default()
    }]);
    p
}

fn touches(p: &super::Plan, name: &str) -> bool {
    p.actions.iter().any(|a| match a {
        Action::KillContainer { container, .. } | Action::RemoveContainer { container, .. } => {
            container == name
        }
        _ => false,
    })
}

#[test]
fn an_added_ephemeral_container_starts_once_and_is_never_restarted_nor_removed() {
    let p = with_debugger(pod_with(vec![container("app", "img:1")], "Always"));
    let app = running(&p, "app", 0, t(1));
    let first = plan(&p, &obs(vec![app.clone()]), &BackoffBook::default(), t(2));
    assert_eq!(starts(&first), vec![("debugger".into(), false, 0)]);

    let o = obs(vec![app.clone(), running(&p, "debugger", 0, t(3))]);
    let plan_running = plan(&p, &o, &BackoffBook::default(), t(4));
    assert!(plan_running.actions.is_empty(), "{:?}", plan_running.actions);

    // It exited (even failing, with restartPolicy Always): it stays as it is.
    let o = obs(vec![app, exited(&p, "debugger", 0, 1, t(3), t(5))]);
    let after = plan(&p, &o, &BackoffBook::default(), t(6));
    assert!(starts(&after).is_empty());
    assert!(!touches(&after, "debugger"), "{:?}", after.actions);
    assert_eq!(after.stage, Stage::Syncing);
}

#[test]
fn an_ephemeral_container_starts_while_the_pod_is_still_initializing() {
    let mut p = pod_with(vec![container("app", "img:1")], "Always");
    set_init(&mut p, vec![container("setup", "img:1")]);
    let p = with_debugger(p);
    let o = obs(vec![running(&p, "setup", 0, t(1))]);
    assert_eq!(
        starts(&plan(&p, &o, &BackoffBook::default(), t(2))),
        vec![("debugger".into(), false, 0)]
    );
}

#[test]
fn no_ephemeral_container_is_started_with_a_new_sandbox_nor_keeps_a_finished_pod_alive() {
    let p = with_debugger(pod_with(vec![container("app", "img:1")], "Never"));
    let mut o = obs(vec![]);
    o.sandbox = None;
    let fresh = plan(&p, &o, &BackoffBook::default(), t(0));
    assert!(matches!(fresh.actions[0], Action::CreateSandbox { .. }));
    assert_eq!(starts(&fresh), vec![("app".into(), false, 0)]);

    // The app is done: the pod stops, the running debugger with it.
    let o = obs(vec![
        exited(&p, "app", 0, 0, t(1), t(5)),
        running(&p, "debugger", 0, t(2)),
    ]);
    let done = plan(&p, &o, &BackoffBook::default(), t(6));
    assert!(
        matches!(
            done.stage,
            Stage::Terminating {
                reason: TerminationReason::Completed,
                ..
            }
        ),
        "{:?}",
        done.stage
    );
}

#[test]
fn ephemeral_statuses_are_their_own_never_ready_and_leave_the_pod_alone() {
    let p = with_debugger(pod_with(vec![container("app", "img:1")], "Always"));
    let o = obs(vec![
        running(&p, "app", 0, t(1)),
        running(&p, "debugger", 0, t(2)),
    ]);
    let s = status(&p, &o, t(3), "10.0.0.5");
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let apps = s.container_statuses.unwrap();
    assert_eq!(apps.len(), 1, "only the app container: {apps:?}");
    assert!(apps[0].ready);
    let eph = s.ephemeral_container_statuses.unwrap();
    assert_eq!(eph.len(), 1);
    assert_eq!(eph[0].name, "debugger");
    assert_eq!(eph[0].image, "debug:1");
    assert!(eph[0].state.as_ref().unwrap().running.is_some());
    assert!(!eph[0].ready);
    assert_eq!(eph[0].started, None);
    let ready = s
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        ready.status, "True",
        "an ephemeral container does not gate readiness"
    );

    // Not started yet: waiting like any new container.
    let s = status(&p, &obs(vec![running(&p, "app", 0, t(1))]), t(3), "10.0.0.5");
    let eph = s.ephemeral_container_statuses.unwrap();
    assert_eq!(
        eph[0]
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("ContainerCreating")
    );
    // A pod without any has none.
    let plain = pod_with(vec![container("app", "img:1")], "Always");
    let s = status(
        &plain,
        &obs(vec![running(&plain, "app", 0, t(1))]),
        t(3),
        "10.0.0.5",
    );
    assert!(s.ephemeral_container_statuses.is_none());
}
