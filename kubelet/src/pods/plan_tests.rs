//! Tests of the plan and the worker state machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backoff::{BackoffBook, BackoffConfig};
use super::fixtures::*;
use super::observed::{AttemptState, Observed, SandboxState, StartError, spec_hash};
use super::plan::{Action, Input, Stage, TerminationReason, WorkerState, plan, step};
use super::{Admission, Rejection};

fn obs(containers: Vec<super::ContainerAttempt>) -> Observed {
    Observed {
        sandbox: sandbox_ready(),
        containers,
        images_present: ["img:1".to_string(), "img:2".to_string()].into_iter().collect(),
        ..Default::default()
    }
}

fn one(policy: &str) -> k8s_openapi::api::core::v1::Pod {
    pod_with(vec![container("app", "img:1")], policy)
}

/// The plan with a fresh backoff book.
fn plan_at(pod: &k8s_openapi::api::core::v1::Pod, o: &Observed, now: super::Timestamp) -> super::Plan {
    plan(pod, o, &BackoffBook::default(), now)
}

/// One worker step with a fresh backoff book.
fn step_at(
    state: WorkerState,
    pod: &k8s_openapi::api::core::v1::Pod,
    o: &Observed,
    now: super::Timestamp,
) -> (super::Plan, WorkerState) {
    let book = BackoffBook::default();
    step(
        state,
        &Input {
            pod,
            observed: o,
            backoff: &book,
            now,
        },
    )
}

/// The one action of killing the pod.
fn kill_pod(grace_seconds: i64, reason: TerminationReason) -> Vec<Action> {
    vec![Action::KillPod {
        grace_seconds,
        reason,
    }]
}

/// Nothing is left to do and the worker is terminated for `reason` (`what` names the case).
fn assert_terminated(p: &super::Plan, reason: TerminationReason, what: &str) {
    assert!(p.actions.is_empty(), "{what}: {:?}", p.actions);
    assert_eq!(p.stage, Stage::Terminated { reason }, "{what}");
}

fn held(p: &super::Plan, name: &str) -> Option<StartError> {
    p.start_errors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, e)| e.clone())
}

#[test]
fn new_pod_creates_sandbox_pulls_missing_image_and_starts_all_app_containers() {
    let pod = pod_with(
        vec![container("a", "img:1"), container("b", "img:missing")],
        "Always",
    );
    let observed = Observed {
        images_present: ["img:1".to_string()].into_iter().collect(),
        ..Default::default()
    };
    let p = plan_at(&pod, &observed, t(0));
    let hash_b = spec_hash(spec_of(&pod, "b"));
    assert_eq!(
        p.actions,
        vec![
            Action::CreateSandbox { attempt: 0 },
            Action::StartContainer {
                container: "a".into(),
                init: false,
                attempt: 0,
                spec_hash: spec_hash(spec_of(&pod, "a")),
            },
            Action::PullImage {
                container: "b".into(),
                image: "img:missing".into(),
            },
            Action::StartContainer {
                container: "b".into(),
                init: false,
                attempt: 0,
                spec_hash: hash_b,
            },
        ]
    );
    assert_eq!(p.stage, Stage::Syncing);
    assert!(p.backoff.is_empty() && p.start_errors.is_empty() && p.wake_at.is_none());
}

#[test]
fn running_pod_needs_nothing() {
    let pod = one("Always");
    let p = plan_at(&pod, &obs(vec![running(&pod, "app", 0, t(0))]), t(100));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.stage, Stage::Syncing);
}

#[test]
fn restart_policy_by_exit_code_table() {
    // (policy, exit code, restarted?)
    let table = [
        ("Always", 0, true),
        ("Always", 1, true),
        ("Always", 137, true),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("OnFailure", 137, true),
        ("Never", 0, false),
        ("Never", 1, false),
    ];
    for (policy, code, restarted) in table {
        let pod = one(policy);
        let p = plan_at(&pod, &obs(vec![exited(&pod, "app", 0, code, t(0), t(5))]), t(6));
        if restarted {
            assert_eq!(starts(&p), vec![("app".into(), false, 1)], "{policy} {code}");
            assert_eq!(
                p.backoff.len(),
                1,
                "{policy} {code}: the restart moves the backoff on"
            );
            assert_eq!(p.stage, Stage::Syncing);
        } else {
            assert_eq!(
                p.actions,
                kill_pod(30, TerminationReason::Completed),
                "{policy} {code}"
            );
            assert!(matches!(
                p.stage,
                Stage::Terminating {
                    reason: TerminationReason::Completed,
                    ..
                }
            ));
        }
    }
}

#[test]
fn on_failure_restarts_only_the_failed_container() {
    let pod = pod_with(
        vec![container("ok", "img:1"), container("bad", "img:1")],
        "OnFailure",
    );
    let o = obs(vec![
        exited(&pod, "ok", 0, 0, t(0), t(1)),
        exited(&pod, "bad", 0, 2, t(0), t(1)),
    ]);
    let p = plan_at(&pod, &o, t(2));
    assert_eq!(starts(&p), vec![("bad".into(), false, 1)]);
}

#[test]
fn crash_loop_backoff_grows_10_20_40_to_300_and_resets_after_10_minutes_of_running() {
    let pod = one("Always");
    let mut book = BackoffBook::default();
    let mut now = t(0);
    let mut attempt = 0;
    let mut waits = vec![];
    let mut messages = vec![];
    // The container fails 1 s after every start.
    let mut o = obs(vec![exited(&pod, "app", 0, 1, now, t(1))]);
    now = t(1);
    for _ in 0..9 {
        let mut p = plan(&pod, &o, &book, now);
        if starts(&p).is_empty() {
            let err = held(&p, "app").expect("held back");
            assert_eq!(err.reason, "CrashLoopBackOff");
            messages.push(err.message);
            let wake = p.wake_at.expect("wake-up at the end of the backoff");
            waits.push(wake.duration_since(now).as_secs());
            now = wake;
            p = plan(&pod, &o, &book, now);
        }
        assert_eq!(starts(&p), vec![("app".into(), false, attempt + 1)]);
        book.apply(&p.backoff, now);
        attempt += 1;
        let started = now;
        now = now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
            .unwrap();
        o = obs(vec![exited(&pod, "app", attempt, 1, started, now)]);
    }
    assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(
        messages[0],
        "back-off 10s restarting failed container=app pod=web_default(uid-1)"
    );
    assert_eq!(
        messages[3],
        "back-off 1m20s restarting failed container=app pod=web_default(uid-1)"
    );
    assert_eq!(
        messages[5],
        "back-off 5m0s restarting failed container=app pod=web_default(uid-1)"
    );

    // It now runs 11 minutes before failing: restarted at once, and the next wait is 10 s again.
    let started = now;
    let finished = now
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(660))
        .unwrap();
    let o = obs(vec![exited(&pod, "app", attempt, 1, started, finished)]);
    let p = plan(&pod, &o, &book, finished);
    assert_eq!(starts(&p).len(), 1, "{:?}", p.start_errors);
    book.apply(&p.backoff, finished);
    let again = finished
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(2))
        .unwrap();
    let o = obs(vec![exited(&pod, "app", attempt + 1, 1, finished, again)]);
    let p = plan(&pod, &o, &book, again);
    assert_eq!(
        held(&p, "app").unwrap().message,
        "back-off 10s restarting failed container=app pod=web_default(uid-1)"
    );
}

#[test]
fn configurable_backoff_bounds_apply_to_restarts() {
    let pod = one("Always");
    let cfg = BackoffConfig {
        initial: std::time::Duration::from_secs(2),
        max: std::time::Duration::from_secs(3),
        reset_after: std::time::Duration::from_secs(60),
    };
    let mut book = BackoffBook::new(cfg, cfg);
    let o = obs(vec![exited(&pod, "app", 0, 1, t(0), t(1))]);
    let p = plan(&pod, &o, &book, t(1));
    book.apply(&p.backoff, t(1));
    let o = obs(vec![exited(&pod, "app", 1, 1, t(1), t(2))]);
    let p = plan(&pod, &o, &book, t(2));
    assert_eq!(p.wake_at, Some(t(4)));
    assert!(held(&p, "app").unwrap().message.starts_with("back-off 2s "));
}

#[test]
fn init_containers_run_one_by_one_before_app_containers() {
    let mut pod = pod_with(vec![container("app", "img:1")], "Always");
    set_init(&mut pod, vec![container("i1", "img:1"), container("i2", "img:1")]);
    let book = BackoffBook::default();

    let p = plan(&pod, &obs(vec![]), &book, t(0));
    assert_eq!(starts(&p), vec![("i1".into(), true, 0)]);

    let p = plan(&pod, &obs(vec![running(&pod, "i1", 0, t(0))]), &book, t(1));
    assert!(p.actions.is_empty(), "{:?}", p.actions);

    let p = plan(
        &pod,
        &obs(vec![exited(&pod, "i1", 0, 0, t(0), t(2))]),
        &book,
        t(3),
    );
    assert_eq!(starts(&p), vec![("i2".into(), true, 0)]);

    let done = vec![
        exited(&pod, "i1", 0, 0, t(0), t(2)),
        exited(&pod, "i2", 0, 0, t(3), t(4)),
    ];
    let p = plan(&pod, &obs(done), &book, t(5));
    assert_eq!(starts(&p), vec![("app".into(), false, 0)]);

    // A new pod without sandbox starts with the first init container only.
    let p = plan(&pod, &Observed::default(), &book, t(0));
    assert_eq!(p.actions[0], Action::CreateSandbox { attempt: 0 });
    assert_eq!(starts(&p), vec![("i1".into(), true, 0)]);

    // App container running and init containers gone: they never run again.
    let p = plan(&pod, &obs(vec![running(&pod, "app", 0, t(5))]), &book, t(6));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn failed_init_container_fails_the_pod_with_never_and_is_restarted_otherwise() {
    for policy in ["Never", "OnFailure", "Always"] {
        let mut pod = pod_with(vec![container("app", "img:1")], policy);
        set_init(&mut pod, vec![container("i1", "img:1"), container("i2", "img:1")]);
        let o = obs(vec![
            exited(&pod, "i1", 0, 0, t(0), t(1)),
            exited(&pod, "i2", 0, 3, t(2), t(3)),
        ]);
        let p = plan_at(&pod, &o, t(4));
        if policy == "Never" {
            assert_eq!(p.actions, kill_pod(30, TerminationReason::InitFailed));
            // Once the sandbox is down nothing is ever started again.
            let mut o2 = o.clone();
            o2.sandbox = None;
            let p = plan_at(&pod, &o2, t(5));
            assert_terminated(&p, TerminationReason::InitFailed, "");
        } else {
            assert_eq!(starts(&p), vec![("i2".into(), true, 1)], "{policy}");
        }
    }
    // OOMKilled counts as failed even with exit code 0.
    let mut pod = pod_with(vec![container("app", "img:1")], "Never");
    set_init(&mut pod, vec![container("i1", "img:1")]);
    let mut a = exited(&pod, "i1", 0, 0, t(0), t(1));
    if let AttemptState::Exited { reason, .. } = &mut a.state {
        *reason = "OOMKilled".into();
    }
    let p = plan_at(&pod, &obs(vec![a]), t(2));
    assert!(matches!(
        p.stage,
        Stage::Terminating {
            reason: TerminationReason::InitFailed,
            ..
        }
    ));
}

#[test]
fn deletion_kills_with_the_deletion_grace_period_then_removes() {
    let mut pod = one("Always");
    pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(45);
    pod.metadata.deletion_timestamp = Some(Time(t(10)));
    let o = obs(vec![running(&pod, "app", 0, t(0))]);
    let book = BackoffBook::default();

    pod.metadata.deletion_grace_period_seconds = Some(5);
    let p = plan(&pod, &o, &book, t(11));
    assert_eq!(p.actions, kill_pod(5, TerminationReason::Deleted));
    // Without a deletion grace period the spec's applies; never less than 1 s.
    pod.metadata.deletion_grace_period_seconds = None;
    assert!(matches!(
        plan(&pod, &o, &book, t(11)).actions[0],
        Action::KillPod {
            grace_seconds: 45,
            ..
        }
    ));
    pod.metadata.deletion_grace_period_seconds = Some(0);
    assert!(matches!(
        plan(&pod, &o, &book, t(11)).actions[0],
        Action::KillPod { grace_seconds: 1, .. }
    ));

    // Everything stopped and the sandbox gone: remove, ready to delete.
    let mut stopped = obs(vec![exited(&pod, "app", 0, 137, t(0), t(12))]);
    stopped.sandbox = None;
    let p = plan(&pod, &stopped, &book, t(13));
    assert_eq!(p.actions, vec![Action::RemovePod]);
    assert_eq!(p.stage, Stage::ReadyToDelete);

    // A deleted pod is never restarted, even with restartPolicy Always and a ready sandbox.
    let p = plan(
        &pod,
        &obs(vec![exited(&pod, "app", 0, 1, t(0), t(12))]),
        &book,
        t(13),
    );
    assert!(
        matches!(p.actions[..], [Action::KillPod { .. }]),
        "{:?}",
        p.actions
    );
}

#[test]
fn worker_grace_period_only_shrinks_and_states_never_go_back() {
    let mut pod = one("Always");
    let o = obs(vec![running(&pod, "app", 0, t(0))]);
    let input = |pod: &k8s_openapi::api::core::v1::Pod, o: &Observed, now| (pod.clone(), o.clone(), now);
    let run =
        |state, (pod, o, now): (k8s_openapi::api::core::v1::Pod, Observed, _)| step_at(state, &pod, &o, now);

    let (p, s) = run(WorkerState::Syncing, input(&pod, &o, t(1)));
    assert!(p.actions.is_empty());
    assert_eq!(s, WorkerState::Syncing);

    pod.metadata.deletion_timestamp = Some(Time(t(2)));
    pod.metadata.deletion_grace_period_seconds = Some(20);
    let (_, s) = run(s, input(&pod, &o, t(2)));
    assert_eq!(
        s,
        WorkerState::Terminating {
            reason: TerminationReason::Deleted,
            grace_seconds: 20
        }
    );
    pod.metadata.deletion_grace_period_seconds = Some(60);
    let (p, s) = run(s, input(&pod, &o, t(3)));
    assert_eq!(p.actions, kill_pod(20, TerminationReason::Deleted));
    pod.metadata.deletion_grace_period_seconds = Some(4);
    let (p, s) = run(s, input(&pod, &o, t(4)));
    assert_eq!(p.actions, kill_pod(4, TerminationReason::Deleted));

    let gone = Observed {
        containers: vec![exited(&pod, "app", 0, 143, t(0), t(5))],
        ..Default::default()
    };
    let (p, s) = run(s, input(&pod, &gone, t(6)));
    assert_eq!(p.actions, vec![Action::RemovePod]);
    assert_eq!(s, WorkerState::Finished);
    let (p, s) = run(s, input(&pod, &gone, t(7)));
    assert!(p.actions.is_empty());
    assert_eq!(s, WorkerState::Finished);
}

#[test]
fn terminated_worker_never_restarts_even_if_the_pod_looks_runnable() {
    let pod = one("Always");
    let mut o = obs(vec![exited(&pod, "app", 0, 1, t(0), t(1))]);
    o.sandbox = None;
    let state = WorkerState::Terminated {
        reason: TerminationReason::DeadlineExceeded,
    };
    let (p, s) = step_at(state, &pod, &o, t(2));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(s, state);
}

#[test]
fn rejected_pod_runs_nothing_and_is_removed_once_deleted() {
    let admission: Admission = Err(Rejection {
        reason: "OutOfcpu".into(),
        message: "x".into(),
    });
    let state = WorkerState::admitted(&admission);
    assert_eq!(
        state,
        WorkerState::Terminated {
            reason: TerminationReason::Rejected
        }
    );
    assert_eq!(WorkerState::admitted(&Ok(())), WorkerState::Syncing);
    let mut pod = one("Always");
    let o = Observed::default();
    let (p, s) = step_at(state, &pod, &o, t(0));
    assert!(p.actions.is_empty());
    assert_eq!(s, state);
    pod.metadata.deletion_timestamp = Some(Time(t(1)));
    let (p, s) = step_at(s, &pod, &o, t(1));
    assert_eq!(p.actions, vec![Action::RemovePod]);
    assert_eq!(s, WorkerState::Finished);
}

#[test]
fn active_deadline_wakes_up_then_kills_everything() {
    let mut pod = one("Always");
    pod.spec.as_mut().unwrap().active_deadline_seconds = Some(60);
    set_start_time(&mut pod, t(0));
    let o = obs(vec![running(&pod, "app", 0, t(1))]);
    let p = plan_at(&pod, &o, t(30));
    assert!(p.actions.is_empty());
    assert_eq!(p.wake_at, Some(t(60)));
    let p = plan_at(&pod, &o, t(60));
    assert_eq!(p.actions, kill_pod(30, TerminationReason::DeadlineExceeded));
}

#[test]
fn image_change_kills_and_restarts_the_container_with_the_new_hash() {
    let old = one("Always");
    let o = obs(vec![running(&old, "app", 3, t(0))]);
    let mut new = old.clone();
    new.spec.as_mut().unwrap().containers[0].image = Some("img:new".into());
    let p = plan_at(&new, &o, t(10));
    let new_hash = spec_hash(&new.spec.as_ref().unwrap().containers[0]);
    assert_ne!(new_hash, spec_hash(&old.spec.as_ref().unwrap().containers[0]));
    assert_eq!(
        p.actions,
        vec![
            Action::KillContainer {
                id: "app-3".into(),
                container: "app".into(),
                grace_seconds: 30,
                message: "Container app definition changed, will be restarted".into(),
            },
            Action::PullImage {
                container: "app".into(),
                image: "img:new".into()
            },
            Action::StartContainer {
                container: "app".into(),
                init: false,
                attempt: 4,
                spec_hash: new_hash,
            },
        ]
    );
}

#[test]
fn spec_hash_is_deterministic_and_covers_the_image() {
    let a = container("app", "img:1");
    assert_eq!(spec_hash(&a), spec_hash(&a.clone()));
    assert_eq!(spec_hash(&a).len(), 16);
    assert_ne!(spec_hash(&a), spec_hash(&container("app", "img:2")));
}

#[test]
fn liveness_failure_kills_and_restarts_unless_never() {
    for (policy, restarted) in [("Always", true), ("OnFailure", true), ("Never", false)] {
        let pod = one(policy);
        let mut a = running(&pod, "app", 0, t(0));
        a.live = Some(false);
        let p = plan_at(&pod, &obs(vec![a]), t(5));
        let Action::KillContainer { message, .. } = &p.actions[0] else {
            panic!("{policy}: {:?}", p.actions)
        };
        if restarted {
            assert_eq!(message, "Container app failed liveness probe, will be restarted");
            assert_eq!(starts(&p), vec![("app".into(), false, 1)]);
        } else {
            assert_eq!(message, "Container app failed liveness probe");
            assert!(starts(&p).is_empty());
        }
    }
}

#[test]
fn startup_failure_kills_and_probe_grace_overrides_the_pods() {
    let mut pod = one("Always");
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers[0].startup_probe = Some(k8s_openapi::api::core::v1::Probe {
            termination_grace_period_seconds: Some(3),
            ..Default::default()
        });
        spec.containers[0].liveness_probe = Some(k8s_openapi::api::core::v1::Probe::default());
    }
    // Startup not yet decided: nothing happens.
    let a = running(&pod, "app", 0, t(0));
    let p = plan_at(&pod, &obs(vec![a.clone()]), t(5));
    assert!(
        !p.actions
            .iter()
            .any(|x| matches!(x, Action::KillContainer { .. })),
        "{:?}",
        p.actions
    );
    // Startup failed for good: killed with the probe's own grace period, then restarted.
    let mut failed = a.clone();
    failed.started = Some(false);
    let p = plan_at(&pod, &obs(vec![failed]), t(5));
    let Action::KillContainer {
        message,
        grace_seconds,
        ..
    } = &p.actions[0]
    else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(message, "Container app failed startup probe, will be restarted");
    assert_eq!(*grace_seconds, 3);
    assert_eq!(starts(&p), vec![("app".into(), false, 1)]);
    // A liveness probe without its own grace period uses the pod's.
    let mut dead = a;
    dead.live = Some(false);
    let p = plan_at(&pod, &obs(vec![dead]), t(5));
    let Action::KillContainer { grace_seconds, .. } = &p.actions[0] else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(*grace_seconds, 30);
}

#[test]
fn containers_not_in_the_spec_are_killed_then_removed() {
    let pod = one("Always");
    let mut stray_running = running(&pod, "app", 0, t(0));
    stray_running.name = "old".into();
    stray_running.id = "old-0".into();
    let mut stray_exited = exited(&pod, "app", 0, 0, t(0), t(1));
    stray_exited.name = "older".into();
    stray_exited.id = "older-0".into();
    let o = obs(vec![running(&pod, "app", 0, t(0)), stray_running, stray_exited]);
    let p = plan_at(&pod, &o, t(2));
    assert_eq!(
        p.actions,
        vec![
            Action::KillContainer {
                id: "old-0".into(),
                container: "old".into(),
                grace_seconds: 30,
                message: "Container old is not in the pod's spec".into(),
            },
            Action::RemoveContainer {
                id: "older-0".into(),
                container: "older".into()
            },
        ]
    );
}

#[test]
fn keeps_the_newest_two_attempts_and_removes_older_ones() {
    let pod = one("Always");
    let o = obs(vec![
        exited(&pod, "app", 0, 1, t(0), t(1)),
        exited(&pod, "app", 1, 1, t(2), t(3)),
        exited(&pod, "app", 2, 1, t(4), t(5)),
        running(&pod, "app", 3, t(6)),
    ]);
    let p = plan_at(&pod, &o, t(7));
    assert_eq!(
        p.actions,
        vec![
            Action::RemoveContainer {
                id: "app-1".into(),
                container: "app".into()
            },
            Action::RemoveContainer {
                id: "app-0".into(),
                container: "app".into()
            },
        ]
    );
}

#[test]
fn terminal_pods_never_restart_anything() {
    for phase in ["Succeeded", "Failed"] {
        let mut pod = one("Always");
        set_phase(&mut pod, phase);
        let mut o = obs(vec![exited(&pod, "app", 0, 1, t(0), t(1))]);
        let p = plan_at(&pod, &o, t(2));
        assert_eq!(
            p.actions,
            kill_pod(30, TerminationReason::Terminal),
            "sandbox still there: stop it"
        );
        o.sandbox = None;
        let p = plan_at(&pod, &o, t(3));
        assert_terminated(&p, TerminationReason::Terminal, phase);
    }
}

#[test]
fn sandbox_loss_restarts_the_pod_unless_it_is_done() {
    let pod = one("Always");
    let mut o = obs(vec![running(&pod, "app", 2, t(0))]);
    o.sandbox = sandbox(false);
    let p = plan_at(&pod, &o, t(5));
    assert_eq!(
        p.actions[..2],
        [
            Action::KillPod {
                grace_seconds: 30,
                reason: TerminationReason::SandboxChanged
            },
            Action::CreateSandbox { attempt: 1 },
        ]
    );
    assert_eq!(starts(&p), vec![("app".into(), false, 3)]);

    // Never: a pod whose containers ran does not get a new sandbox.
    let pod = one("Never");
    let mut o = obs(vec![exited(&pod, "app", 0, 0, t(0), t(1))]);
    o.sandbox = None;
    let p = plan_at(&pod, &o, t(5));
    assert!(p.actions.is_empty());
    // OnFailure with everything succeeded: done too.
    let pod = one("OnFailure");
    let p = plan_at(&pod, &o, t(5));
    assert_terminated(&p, TerminationReason::Completed, "");
}

#[test]
fn image_pull_backoff_never_pull_and_bad_policy_hold_the_container() {
    let pod = pod_with(vec![container("app", "img:gone")], "Always");
    let mut book = BackoffBook::default();
    book.pull_failed("uid-1", "img:gone", "ErrImagePull", "manifest unknown", t(0));
    let p = plan(&pod, &obs(vec![]), &book, t(3));
    assert_eq!(
        held(&p, "app"),
        Some(StartError::new(
            "ImagePullBackOff",
            "Back-off pulling image \"img:gone\": ErrImagePull: manifest unknown"
        ))
    );
    assert_eq!(p.wake_at, Some(t(10)));
    assert!(starts(&p).is_empty());
    // The backoff over: pull again.
    let p = plan(&pod, &obs(vec![]), &book, t(10));
    assert_eq!(
        p.actions[0],
        Action::PullImage {
            container: "app".into(),
            image: "img:gone".into()
        }
    );

    let mut never = container("app", "img:gone");
    never.image_pull_policy = Some("Never".into());
    let pod = pod_with(vec![never], "Always");
    let p = plan_at(&pod, &obs(vec![]), t(0));
    assert_eq!(
        held(&p, "app"),
        Some(StartError::new(
            "ErrImageNeverPull",
            "Container image \"img:gone\" is not present with pull policy of Never"
        ))
    );
    assert!(p.actions.is_empty());

    // Always pulls even when present.
    let mut always = container("app", "img:1");
    always.image_pull_policy = Some("Always".into());
    let pod = pod_with(vec![always], "Always");
    let p = plan_at(&pod, &obs(vec![]), t(0));
    assert!(matches!(p.actions[0], Action::PullImage { .. }));

    let mut bad = container("app", "img:1");
    bad.image_pull_policy = Some("Sometimes".into());
    let pod = pod_with(vec![bad], "Always");
    let p = plan_at(&pod, &obs(vec![]), t(0));
    assert_eq!(held(&p, "app").unwrap().reason, "CreateContainerConfigError");
}

#[test]
fn created_and_unknown_attempts_are_cleared_before_a_new_start() {
    let pod = one("Always");
    let p = plan_at(&pod, &obs(vec![created(&pod, "app", 0, t(0))]), t(1));
    assert_eq!(
        p.actions,
        vec![
            Action::RemoveContainer {
                id: "app-0".into(),
                container: "app".into()
            },
            Action::StartContainer {
                container: "app".into(),
                init: false,
                attempt: 1,
                spec_hash: spec_hash(spec_of(&pod, "app")),
            },
        ]
    );
    let mut unknown = running(&pod, "app", 0, t(0));
    unknown.state = AttemptState::Unknown;
    let p = plan_at(&pod, &obs(vec![unknown]), t(1));
    assert!(matches!(&p.actions[0], Action::KillContainer { message, .. } if message.contains("unknown")));
    assert_eq!(starts(&p), vec![("app".into(), false, 1)]);
}

#[test]
fn restart_count_continues_from_the_status_when_the_runtime_lost_the_containers() {
    let mut pod = one("Always");
    pod.status = Some(PodStatus {
        container_statuses: Some(vec![ContainerStatus {
            name: "app".into(),
            restart_count: 4,
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let p = plan_at(&pod, &obs(vec![]), t(0));
    assert_eq!(starts(&p), vec![("app".into(), false, 5)]);
}

#[test]
fn readiness_probe_does_not_affect_plans() {
    let mut pod = one("Always");
    pod.spec.as_mut().unwrap().containers[0].readiness_probe = Some(Probe::default());
    let mut a = running(&pod, "app", 0, t(0));
    a.ready = Some(false);
    assert!(plan_at(&pod, &obs(vec![a]), t(1)).actions.is_empty());
}

#[test]
fn done_pod_with_a_broken_sandbox_is_stopped_not_restarted() {
    let pod = one("Never");
    let mut o = obs(vec![exited(&pod, "app", 0, 0, t(0), t(1))]);
    o.sandbox = sandbox(false);
    let p = plan_at(&pod, &o, t(2));
    assert_eq!(p.actions, kill_pod(30, TerminationReason::Completed));
    assert!(matches!(
        p.stage,
        Stage::Terminating {
            reason: TerminationReason::Completed,
            ..
        }
    ));
}

#[test]
fn relisted_containers_map_to_attempts() {
    use crate::runtime::container::{ContainerMeta, ListedContainer, TaskState};
    let listed = ListedContainer {
        id: "c1".into(),
        meta: ContainerMeta {
            pod_uid: "uid-1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            container_name: "app".into(),
            restart_count: 3,
            spec_hash: "abcd".into(),
        },
        image: "img:1".into(),
        state: TaskState::Exited { code: 137 },
    };
    let state = AttemptState::from_task(listed.state, Some(t(1)), Some(t(2)), true, "killed", t(9));
    assert_eq!(
        state,
        AttemptState::Exited {
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: "killed".into(),
            started_at: Some(t(1)),
            finished_at: t(2),
        }
    );
    let a = super::ContainerAttempt::from_listed(&listed, state, t(0), "img@sha256:1");
    assert_eq!(
        (a.name.as_str(), a.attempt, a.spec_hash.as_str()),
        ("app", 3, "abcd")
    );
    let exit1 = AttemptState::from_task(TaskState::Exited { code: 1 }, None, None, false, "", t(9));
    assert!(
        matches!(exit1, AttemptState::Exited { ref reason, finished_at, .. } if reason == "Error" && finished_at == t(9))
    );
    assert_eq!(
        AttemptState::from_task(TaskState::Running { pid: 7 }, None, None, false, "", t(9)),
        AttemptState::Running { started_at: t(9) }
    );
    assert_eq!(
        AttemptState::from_task(TaskState::NoTask, None, None, false, "", t(9)),
        AttemptState::Created
    );
    assert_eq!(
        AttemptState::from_task(TaskState::Paused, None, None, false, "", t(9)),
        AttemptState::Unknown
    );
}

#[test]
fn termination_removes_never_started_containers_instead_of_killing_them() {
    let mut pod = one("Always");
    set_phase(&mut pod, "Failed");
    let mut o = obs(vec![
        created(&pod, "app", 1, t(3)),
        exited(&pod, "app", 0, 1, t(0), t(1)),
    ]);
    let p = plan_at(&pod, &o, t(4));
    assert_eq!(
        p.actions,
        vec![
            Action::KillPod {
                grace_seconds: 30,
                reason: TerminationReason::Terminal
            },
            Action::RemoveContainer {
                id: "app-1".into(),
                container: "app".into()
            },
        ]
    );
    o.sandbox = None;
    let p = plan_at(&pod, &o, t(5));
    assert_eq!(
        p.actions,
        vec![Action::RemoveContainer {
            id: "app-1".into(),
            container: "app".into()
        }]
    );
    assert_eq!(
        p.stage,
        Stage::Terminated {
            reason: TerminationReason::Terminal
        }
    );
}

/// A tiny in-memory runtime that executes plans, to check whole lifecycles converge.
struct Sim {
    pod: k8s_openapi::api::core::v1::Pod,
    o: Observed,
    book: BackoffBook,
    state: WorkerState,
    now: super::Timestamp,
    /// Exit code of each started attempt (by container name and attempt) after it ran 1 s.
    exit_code: fn(&str, u32) -> Option<i32>,
    max_attempts_seen: usize,
}

impl Sim {
    fn new(pod: k8s_openapi::api::core::v1::Pod, exit_code: fn(&str, u32) -> Option<i32>) -> Self {
        Sim {
            pod,
            o: Observed::default(),
            book: BackoffBook::default(),
            state: WorkerState::Syncing,
            now: t(0),
            exit_code,
            max_attempts_seen: 0,
        }
    }

    fn advance(&mut self, secs: i64) {
        self.now = self
            .now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .unwrap();
        let now = self.now;
        for c in &mut self.o.containers {
            if let AttemptState::Running { started_at } = c.state
                && now.duration_since(started_at).as_secs() >= 1
                && let Some(code) = (self.exit_code)(&c.name, c.attempt)
            {
                c.state = AttemptState::Exited {
                    exit_code: code,
                    reason: super::terminated_reason(code, false).into(),
                    message: String::new(),
                    started_at: Some(started_at),
                    finished_at: now,
                };
            }
        }
    }

    fn kill(c: &mut super::ContainerAttempt, now: super::Timestamp) {
        if let AttemptState::Running { started_at } = c.state {
            c.state = AttemptState::Exited {
                exit_code: 137,
                reason: "Error".into(),
                message: String::new(),
                started_at: Some(started_at),
                finished_at: now,
            };
        }
    }

    /// One worker step, its actions executed; then the status is written back to the pod.
    fn step(&mut self) -> super::Plan {
        let (p, next) = step(
            self.state,
            &Input {
                pod: &self.pod,
                observed: &self.o,
                backoff: &self.book,
                now: self.now,
            },
        );
        self.state = next;
        self.book.apply(&p.backoff, self.now);
        for (name, err) in &p.start_errors {
            self.o.start_errors.insert(name.clone(), err.clone());
        }
        for a in &p.actions {
            match a {
                Action::CreateSandbox { attempt } => {
                    self.o.sandbox = Some(SandboxState {
                        id: format!("sb{attempt}"),
                        attempt: *attempt,
                        ready: true,
                    })
                }
                Action::PullImage { image, .. } => {
                    self.o.images_present.insert(image.clone());
                }
                Action::StartContainer {
                    container,
                    attempt,
                    spec_hash,
                    ..
                } => {
                    let mut a = running(&self.pod, container, *attempt, self.now);
                    a.spec_hash = spec_hash.clone();
                    self.o.containers.push(a);
                    self.o.start_errors.remove(container);
                }
                Action::KillContainer { id, .. } => {
                    let now = self.now;
                    self.o
                        .containers
                        .iter_mut()
                        .filter(|c| &c.id == id)
                        .for_each(|c| Self::kill(c, now));
                }
                Action::RemoveContainer { id, .. } => self.o.containers.retain(|c| &c.id != id),
                Action::KillPod { .. } => {
                    let now = self.now;
                    self.o.containers.iter_mut().for_each(|c| Self::kill(c, now));
                    self.o.sandbox = None;
                }
                Action::RemovePod => self.o = Observed::default(),
            }
        }
        for c in &self.pod.spec.as_ref().unwrap().containers {
            self.max_attempts_seen = self.max_attempts_seen.max(self.o.attempts(&c.name).len());
        }
        let st = super::status(&self.pod, &self.o, self.now, "10.0.0.5");
        self.pod.status = Some(st);
        p
    }

    fn phase(&self) -> String {
        self.pod.status.as_ref().unwrap().phase.clone().unwrap()
    }
}

#[test]
fn lifecycle_never_pod_with_init_runs_to_succeeded_and_stops() {
    let mut pod = pod_with(vec![container("app", "img:1")], "Never");
    set_init(&mut pod, vec![container("init", "img:1")]);
    let mut sim = Sim::new(pod, |_, _| Some(0));
    let mut phases = vec![];
    for _ in 0..10 {
        sim.step();
        phases.push(sim.phase());
        sim.advance(2);
    }
    phases.dedup();
    assert_eq!(phases, ["Pending", "Running", "Succeeded"]);
    assert_eq!(
        sim.state,
        WorkerState::Terminated {
            reason: TerminationReason::Completed
        }
    );
    assert!(sim.o.sandbox.is_none());
    assert!(sim.step().actions.is_empty(), "nothing ever runs again");
    let st = sim.pod.status.clone().unwrap();
    let init = &st.init_container_statuses.unwrap()[0];
    assert_eq!(terminated_reason_of(init), Some("Completed"));
    assert_eq!(st.container_statuses.unwrap()[0].restart_count, 0);
}

#[test]
fn lifecycle_crash_looping_container_backs_off_and_counts_restarts() {
    let pod = one("Always");
    let mut sim = Sim::new(pod, |_, _| Some(1));
    let mut messages = vec![];
    for _ in 0..400 {
        let p = sim.step();
        if let Some(e) = held(&p, "app") {
            messages.push(e.message);
        }
        sim.advance(1);
    }
    messages.dedup();
    let delays: Vec<&str> = messages.iter().map(|m| m.split(' ').nth(1).unwrap()).collect();
    assert_eq!(delays, ["10s", "20s", "40s", "1m20s", "2m40s", "5m0s"]);
    let st = sim.pod.status.clone().unwrap();
    let c = &st.container_statuses.unwrap()[0];
    assert_eq!(
        c.restart_count, 6,
        "started at 0, then restarted after each backoff"
    );
    assert_eq!(sim.phase(), "Running");
    assert!(
        sim.max_attempts_seen <= 3,
        "old attempts are pruned: saw {}",
        sim.max_attempts_seen
    );
    assert_eq!(sim.state, WorkerState::Syncing);
}

#[test]
fn lifecycle_deleted_running_pod_is_killed_removed_and_finished() {
    let pod = one("Always");
    let mut sim = Sim::new(pod, |_, _| None);
    sim.step();
    sim.advance(5);
    sim.step();
    assert_eq!(sim.phase(), "Running");
    sim.pod.metadata.deletion_timestamp = Some(Time(sim.now));
    sim.pod.metadata.deletion_grace_period_seconds = Some(30);
    let p = sim.step();
    assert_eq!(p.actions, kill_pod(30, TerminationReason::Deleted));
    assert_eq!(
        sim.phase(),
        "Failed",
        "Always pod killed on deletion ends Failed (exit 137)"
    );
    let p = sim.step();
    assert_eq!(p.actions, vec![Action::RemovePod]);
    assert_eq!(sim.state, WorkerState::Finished);
}
