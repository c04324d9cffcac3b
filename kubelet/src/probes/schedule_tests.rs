use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ExecAction, Probe};

use super::*;
use crate::probes::{ProbeKind, ProbeOutcome, ProbeResults};

fn ok() -> ProbeOutcome {
    ProbeOutcome::Success
}
fn fail() -> ProbeOutcome {
    ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn probe(delay: i32, period: i32, success: i32, failure: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["true".into()]),
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(period),
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        ..Default::default()
    }
}

fn container(l: Option<Probe>, r: Option<Probe>, s: Option<Probe>) -> Container {
    Container {
        name: "app".into(),
        liveness_probe: l,
        readiness_probe: r,
        startup_probe: s,
        ..Default::default()
    }
}

#[test]
fn defaults_are_upstreams() {
    let t = ProbeTiming::from_probe(ProbeKind::Readiness, &Probe::default());
    assert_eq!(t, ProbeTiming::default());
    assert_eq!(t.period, secs(10));
    assert_eq!(t.timeout, secs(1));
    assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    assert_eq!(t.initial_delay, Duration::ZERO);
}

#[test]
fn zero_or_negative_values_fall_back_or_clamp() {
    let p = Probe {
        period_seconds: Some(0),
        timeout_seconds: Some(-4),
        failure_threshold: Some(0),
        success_threshold: Some(-1),
        initial_delay_seconds: Some(-3),
        ..Default::default()
    };
    let t = ProbeTiming::from_probe(ProbeKind::Readiness, &p);
    assert_eq!(t.period, secs(1));
    assert_eq!(t.timeout, secs(1));
    assert_eq!(t.failure_threshold, 3);
    assert_eq!(t.success_threshold, 1);
    assert_eq!(t.initial_delay, Duration::ZERO);
}

#[test]
fn liveness_and_startup_success_threshold_is_one() {
    let p = probe(0, 5, 4, 2);
    assert_eq!(
        ProbeTiming::from_probe(ProbeKind::Liveness, &p).success_threshold,
        1
    );
    assert_eq!(
        ProbeTiming::from_probe(ProbeKind::Startup, &p).success_threshold,
        1
    );
    assert_eq!(
        ProbeTiming::from_probe(ProbeKind::Readiness, &p).success_threshold,
        4
    );
}

#[test]
fn initial_results_are_upstreams() {
    let t0 = Instant::now();
    let t = ProbeTiming::default();
    assert_eq!(
        ProbeWorker::new(ProbeKind::Readiness, t, t0).result(),
        Some(false)
    );
    assert_eq!(ProbeWorker::new(ProbeKind::Liveness, t, t0).result(), Some(true));
    assert_eq!(ProbeWorker::new(ProbeKind::Startup, t, t0).result(), None);
}

#[test]
fn first_run_waits_for_initial_delay_then_every_period() {
    let t0 = Instant::now();
    let mut w = ProbeWorker::new(
        ProbeKind::Readiness,
        ProbeTiming::from_probe(ProbeKind::Readiness, &probe(15, 5, 1, 3)),
        t0,
    );
    assert_eq!(w.next_due(t0), t0 + secs(15));
    w.record(&ok(), t0 + secs(15));
    assert_eq!(w.next_due(t0 + secs(15)), t0 + secs(20));
    w.record(&ok(), t0 + secs(21));
    assert_eq!(w.next_due(t0 + secs(21)), t0 + secs(26));
}

#[test]
fn container_started_long_ago_is_due_at_once() {
    let t0 = Instant::now();
    let w = ProbeWorker::new(ProbeKind::Liveness, ProbeTiming::default(), t0);
    let later = t0 + secs(100);
    assert!(w.next_due(later) <= later);
}

#[test]
fn readiness_flips_after_success_threshold_and_failure_threshold() {
    let t0 = Instant::now();
    let mut w = ProbeWorker::new(
        ProbeKind::Readiness,
        ProbeTiming::from_probe(ProbeKind::Readiness, &probe(0, 1, 2, 3)),
        t0,
    );
    assert_eq!(w.record(&ok(), t0), None);
    assert_eq!(w.result(), Some(false));
    assert_eq!(w.record(&ok(), t0 + secs(1)), Some(true));
    assert_eq!(
        w.record(&ok(), t0 + secs(2)),
        None,
        "unchanged result is not reported"
    );
    assert_eq!(w.record(&fail(), t0 + secs(3)), None);
    assert_eq!(w.record(&fail(), t0 + secs(4)), None);
    assert_eq!(w.result(), Some(true));
    assert_eq!(w.record(&fail(), t0 + secs(5)), Some(false));
    // Readiness keeps probing after failing and recovers.
    assert!(!w.finished());
    assert_eq!(w.record(&ok(), t0 + secs(6)), None);
    assert_eq!(w.record(&ok(), t0 + secs(7)), Some(true));
}

#[test]
fn an_interrupted_run_starts_over() {
    let t0 = Instant::now();
    let mut w = ProbeWorker::new(
        ProbeKind::Liveness,
        ProbeTiming::from_probe(ProbeKind::Liveness, &probe(0, 1, 1, 3)),
        t0,
    );
    assert_eq!(w.record(&fail(), t0), None);
    assert_eq!(w.record(&fail(), t0), None);
    assert_eq!(w.record(&ok(), t0), None);
    assert_eq!(w.record(&fail(), t0), None);
    assert_eq!(w.record(&fail(), t0), None);
    assert_eq!(w.result(), Some(true));
    assert_eq!(w.record(&fail(), t0), Some(false));
}

#[test]
fn liveness_failure_holds_until_the_container_is_replaced() {
    let t0 = Instant::now();
    let mut w = ProbeWorker::new(
        ProbeKind::Liveness,
        ProbeTiming::from_probe(ProbeKind::Liveness, &probe(0, 1, 1, 1)),
        t0,
    );
    assert_eq!(w.record(&fail(), t0), Some(false));
    assert!(w.finished());
    assert_eq!(w.record(&ok(), t0 + secs(1)), None);
    assert_eq!(w.result(), Some(false));
}

#[test]
fn startup_success_is_final() {
    let t0 = Instant::now();
    let mut w = ProbeWorker::new(
        ProbeKind::Startup,
        ProbeTiming::from_probe(ProbeKind::Startup, &probe(0, 1, 1, 30)),
        t0,
    );
    assert_eq!(w.record(&fail(), t0), None);
    assert_eq!(w.result(), None);
    assert_eq!(w.record(&ok(), t0 + secs(1)), Some(true));
    assert!(w.finished());
    assert_eq!(w.record(&fail(), t0 + secs(2)), None);
    assert_eq!(w.result(), Some(true));
}

#[test]
fn startup_failure_after_threshold() {
    let t0 = Instant::now();
    let mut w = ProbeWorker::new(
        ProbeKind::Startup,
        ProbeTiming::from_probe(ProbeKind::Startup, &probe(0, 1, 1, 2)),
        t0,
    );
    assert_eq!(w.record(&fail(), t0), None);
    assert_eq!(w.record(&fail(), t0 + secs(1)), Some(false));
    assert!(w.finished());
}

#[test]
fn liveness_and_readiness_wait_for_startup() {
    let t0 = Instant::now();
    let c = container(
        Some(probe(0, 1, 1, 3)),
        Some(probe(0, 1, 1, 3)),
        Some(probe(0, 2, 1, 10)),
    );
    let mut p = ContainerProbes::new(&c, t0);
    assert_eq!(p.due(t0), vec![ProbeKind::Startup]);
    assert_eq!(
        p.results(),
        ProbeResults {
            ready: Some(false),
            started: None,
            live: None
        }
    );
    assert!(!p.record(ProbeKind::Startup, &fail(), t0));
    assert_eq!(p.next_due(t0), Some(t0 + secs(2)));
    assert_eq!(p.due(t0 + secs(1)), Vec::<ProbeKind>::new());
    assert!(p.record(ProbeKind::Startup, &ok(), t0 + secs(2)));
    assert_eq!(
        p.results(),
        ProbeResults {
            ready: Some(false),
            started: Some(true),
            live: Some(true)
        }
    );
    // Startup never runs again; liveness and readiness are due now.
    assert_eq!(
        p.due(t0 + secs(2)),
        vec![ProbeKind::Liveness, ProbeKind::Readiness]
    );
    assert!(p.record(ProbeKind::Readiness, &ok(), t0 + secs(2)));
    assert_eq!(p.results().ready, Some(true));
    assert!(!p.record(ProbeKind::Liveness, &ok(), t0 + secs(2)));
    assert_eq!(p.next_due(t0 + secs(2)), Some(t0 + secs(3)));
}

#[test]
fn startup_failure_stops_everything() {
    let t0 = Instant::now();
    let c = container(Some(probe(0, 1, 1, 3)), None, Some(probe(0, 1, 1, 1)));
    let mut p = ContainerProbes::new(&c, t0);
    assert!(p.record(ProbeKind::Startup, &fail(), t0));
    assert_eq!(p.results().started, Some(false));
    assert_eq!(p.results().live, None);
    assert_eq!(p.next_due(t0), None);
    assert!(p.due(t0 + secs(100)).is_empty());
}

#[test]
fn no_startup_probe_means_started() {
    let t0 = Instant::now();
    let c = container(Some(probe(5, 1, 1, 3)), Some(probe(0, 1, 1, 3)), None);
    let p = ContainerProbes::new(&c, t0);
    assert!(p.started());
    assert_eq!(p.due(t0), vec![ProbeKind::Readiness]);
    assert_eq!(p.next_due(t0), Some(t0));
    assert_eq!(
        p.results(),
        ProbeResults {
            ready: Some(false),
            started: None,
            live: Some(true)
        }
    );
}

#[test]
fn liveness_failure_ends_liveness_but_not_readiness() {
    let t0 = Instant::now();
    let c = container(Some(probe(0, 1, 1, 1)), Some(probe(0, 3, 1, 3)), None);
    let mut p = ContainerProbes::new(&c, t0);
    assert!(p.record(ProbeKind::Liveness, &fail(), t0));
    assert_eq!(p.results().live, Some(false));
    assert_eq!(p.due(t0 + secs(1)), vec![ProbeKind::Readiness]);
}

#[test]
fn no_probes_nothing_due() {
    let p = ContainerProbes::new(&container(None, None, None), Instant::now());
    assert_eq!(p.next_due(Instant::now()), None);
    assert_eq!(p.results(), ProbeResults::default());
}

#[test]
fn a_restarted_kubelet_takes_over_reported_successes_only() {
    let t0 = Instant::now();
    let c = container(None, Some(probe(0, 10, 1, 3)), Some(probe(0, 10, 1, 3)));
    let mut p = ContainerProbes::new(&c, t0);
    p.resume(true, true);
    assert_eq!(
        p.results(),
        ProbeResults {
            ready: Some(true),
            started: Some(true),
            live: None
        }
    );
    // Readiness failures count from a success: three in a row turn it false.
    for i in 1..=2 {
        assert!(!p.record(ProbeKind::Readiness, &fail(), t0 + secs(10 * i)));
    }
    assert!(p.record(ProbeKind::Readiness, &fail(), t0 + secs(30)));
    assert_eq!(p.results().ready, Some(false));
    // Reported not ready (or not started): the initial values stay.
    let mut q = ContainerProbes::new(&c, t0);
    q.resume(true, false);
    assert_eq!(
        q.results(),
        ProbeResults {
            ready: Some(false),
            started: Some(true),
            live: None
        }
    );
    let mut r = ContainerProbes::new(&c, t0);
    r.resume(false, true);
    assert_eq!(
        r.results(),
        ProbeResults {
            ready: Some(false),
            started: None,
            live: None
        }
    );
}
