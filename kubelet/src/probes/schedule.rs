//! The pure probe schedule and result state, after upstream's prober `worker.go`: per probe the
//! initial delay from container start, the period, the success/failure thresholds (a result
//! flips only after that many equal outcomes in a row), readiness starting as failure,
//! liveness as success and startup as unknown; liveness and readiness wait for the startup
//! probe to succeed, which then never runs again; a failed liveness/startup probe holds (stops
//! probing) until the container is replaced.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};

use super::{ProbeKind, ProbeOutcome, seconds};

/// A probe's timing and thresholds with upstream's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    /// `periodSeconds`, default 10, minimum 1.
    pub period: Duration,
    /// `timeoutSeconds`, default 1, minimum 1.
    pub timeout: Duration,
    /// `successThreshold`, default 1; always 1 for liveness and startup (API validation).
    pub success_threshold: u32,
    /// `failureThreshold`, default 3.
    pub failure_threshold: u32,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

impl ProbeTiming {
    /// The timing of `probe` as a `kind` probe.
    pub fn from_probe(kind: ProbeKind, probe: &Probe) -> Self {
        let threshold = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v >= 1)
                .unwrap_or(default)
        };
        let success_threshold = match kind {
            ProbeKind::Readiness => threshold(probe.success_threshold, 1),
            ProbeKind::Liveness | ProbeKind::Startup => 1,
        };
        ProbeTiming {
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: threshold(probe.failure_threshold, 3),
        }
    }
}

/// The state of one probe of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeWorker {
    pub kind: ProbeKind,
    pub timing: ProbeTiming,
    started_at: Instant,
    last_probe: Option<Instant>,
    /// Outcome of the last run and how many runs in a row had it (upstream `lastResult`/`resultRun`).
    last_outcome: Option<bool>,
    run: u32,
    result: Option<bool>,
    /// Liveness/startup after a failure result: not probed again for this container.
    on_hold: bool,
}

impl ProbeWorker {
    /// A worker for a container that started (running) at `started_at`.
    pub fn new(kind: ProbeKind, timing: ProbeTiming, started_at: Instant) -> Self {
        // Upstream's initial values: readiness Failure, liveness Success, startup Unknown.
        let result = match kind {
            ProbeKind::Readiness => Some(false),
            ProbeKind::Liveness => Some(true),
            ProbeKind::Startup => None,
        };
        ProbeWorker {
            kind,
            timing,
            started_at,
            last_probe: None,
            last_outcome: None,
            run: 0,
            result,
            on_hold: false,
        }
    }

    /// The current result (`None` = unknown).
    pub fn result(&self) -> Option<bool> {
        self.result
    }

    /// Whether the probe stopped for good on this container (failed liveness/startup, or a
    /// startup probe that succeeded).
    pub fn finished(&self) -> bool {
        self.on_hold || (self.kind == ProbeKind::Startup && self.result == Some(true))
    }

    /// When the probe should run next: not before the initial delay after the container start,
    /// then every period after the previous run. (Callers skip [`finished`](Self::finished) workers.)
    pub fn next_due(&self, _now: Instant) -> Instant {
        let first = self.started_at + self.timing.initial_delay;
        match self.last_probe {
            None => first,
            Some(last) => (last + self.timing.period).max(first),
        }
    }

    /// A success carried over from a previous kubelet process (see [`ContainerProbes::resume`]):
    /// the next failures count from there, as if the last run had succeeded.
    fn resume_success(&mut self) {
        self.result = Some(true);
        self.last_outcome = Some(true);
        self.run = self.timing.success_threshold;
    }

    /// Records one outcome at `now`; returns the new result when it changed.
    pub fn record(&mut self, outcome: &ProbeOutcome, now: Instant) -> Option<bool> {
        self.last_probe = Some(now);
        if self.finished() {
            return None;
        }
        let success = outcome.is_success();
        if self.last_outcome == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last_outcome = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.timing.success_threshold
        } else {
            self.timing.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        let changed = self.result != Some(success);
        self.result = Some(success);
        if !success && self.kind != ProbeKind::Readiness {
            // Upstream puts the worker on hold until the container is restarted (new ID).
            self.on_hold = true;
            self.run = 0;
        }
        changed.then_some(success)
    }
}

/// The probes of one running container, with startup gating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProbes {
    pub liveness: Option<ProbeWorker>,
    pub readiness: Option<ProbeWorker>,
    pub startup: Option<ProbeWorker>,
}

impl ContainerProbes {
    /// The workers for the probes `container` defines, for an attempt running since `started_at`.
    pub fn new(container: &Container, started_at: Instant) -> Self {
        let worker = |kind: ProbeKind| {
            kind.probe_of(container)
                .map(|p| ProbeWorker::new(kind, ProbeTiming::from_probe(kind, p), started_at))
        };
        ContainerProbes {
            liveness: worker(ProbeKind::Liveness),
            readiness: worker(ProbeKind::Readiness),
            startup: worker(ProbeKind::Startup),
        }
    }

    /// Whether the container counts as started: no startup probe, or it succeeded.
    pub fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|s| s.result() == Some(true))
    }

    pub fn worker(&self, kind: ProbeKind) -> Option<&ProbeWorker> {
        match kind {
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
            ProbeKind::Startup => self.startup.as_ref(),
        }
    }

    fn worker_mut(&mut self, kind: ProbeKind) -> Option<&mut ProbeWorker> {
        match kind {
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
            ProbeKind::Startup => self.startup.as_mut(),
        }
    }

    /// The probes that may run now or later: startup until it succeeds, then liveness and
    /// readiness; finished probes never.
    fn active(&self) -> impl Iterator<Item = &ProbeWorker> {
        let started = self.started();
        [&self.startup, &self.liveness, &self.readiness]
            .into_iter()
            .flatten()
            .filter(move |w| !w.finished() && (w.kind == ProbeKind::Startup || started))
    }

    /// The earliest time a probe is due; `None` when nothing will run again.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.active().map(|w| w.next_due(now)).min()
    }

    /// The probes due at `now`, startup first.
    pub fn due(&self, now: Instant) -> Vec<ProbeKind> {
        self.active()
            .filter(|w| w.next_due(now) <= now)
            .map(|w| w.kind)
            .collect()
    }

    /// Records an outcome of the `kind` probe; returns whether a result changed.
    pub fn record(&mut self, kind: ProbeKind, outcome: &ProbeOutcome, now: Instant) -> bool {
        self.worker_mut(kind)
            .and_then(|w| w.record(outcome, now))
            .is_some()
    }

    /// Takes over the results a previous kubelet process last reported for this same container
    /// (`started`/`ready` of its status in the API): a kubelet restart then leaves a ready pod
    /// Ready until its probes say otherwise. Upstream restarts every result at its initial value,
    /// so each kubelet restart turns every probed pod NotReady for up to a probe period and
    /// churns the endpoints of their Services. Only a success is taken over.
    pub fn resume(&mut self, started: bool, ready: bool) {
        if started && let Some(w) = &mut self.startup {
            w.resume_success();
        }
        if ready
            && self.started()
            && let Some(w) = &mut self.readiness
        {
            w.resume_success();
        }
    }

    /// The results as the pod core consumes them.
    pub fn results(&self) -> super::ProbeResults {
        let started = self.started();
        super::ProbeResults {
            // Liveness and readiness have no meaningful result before startup succeeded:
            // readiness stays false (upstream's initial Failure), liveness unknown.
            ready: self
                .readiness
                .as_ref()
                .map(|w| started && w.result() == Some(true)),
            // Unknown until the startup probe succeeds or fails for good (`Some(false)` kills).
            started: self.startup.as_ref().and_then(|w| w.result()),
            live: self
                .liveness
                .as_ref()
                .and_then(|w| if started { w.result() } else { None }),
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
