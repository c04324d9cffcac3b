//! The probe manager (upstream `prober_manager.go`): one task per probed running container
//! runs its [`ContainerProbes`] schedule, executes due probes and publishes the results; every
//! result change sends the pod's UID on the notification channel so its pod worker re-syncs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::schedule::ContainerProbes;
use super::{ProbeAction, ProbeKind, ProbeOutcome};
use crate::pods::Timestamp;
use crate::runtime::Containerd;

/// A failed probe run, for upstream's `Warning Unhealthy` event
/// (`"{kind} probe failed: {message}"`, see [`ProbeEvent::event_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    pub pod_uid: String,
    pub container: String,
    pub container_id: String,
    pub kind: ProbeKind,
    pub message: String,
}

impl ProbeEvent {
    /// Upstream's event reason.
    pub const REASON: &'static str = "Unhealthy";

    /// Upstream's event message, e.g. `Liveness probe failed: HTTP probe failed with statuscode: 500`.
    pub fn event_message(&self) -> String {
        format!("{} probe failed: {}", self.kind.as_str(), self.message)
    }
}

/// The probe results of one container as the pod core consumes them
/// (see `pods::observed::ContainerAttempt`): `None` = no such probe / no result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeResults {
    pub ready: Option<bool>,
    pub started: Option<bool>,
    pub live: Option<bool>,
}

struct Entry {
    pod_uid: String,
    results: ProbeResults,
    task: JoinHandle<()>,
}

struct Inner {
    containerd: Containerd,
    fifo_dir: PathBuf,
    containers: Mutex<HashMap<String, Entry>>,
    notify: mpsc::UnboundedSender<String>,
    events: broadcast::Sender<ProbeEvent>,
    exec_seq: AtomicU64,
    /// When the manager was created: probes of containers found right after a (re)start are
    /// spread over their period (upstream's first-run jitter).
    start: Instant,
}

impl Inner {
    fn containers(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        crate::lock::lock(&self.containers)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, entry) in self.containers().drain() {
            entry.task.abort();
        }
    }
}

/// Runs the probes of the running containers. Cheap to clone; dropping the last clone stops
/// every probe task.
#[derive(Clone)]
pub struct ProbeManager {
    inner: Arc<Inner>,
}

impl ProbeManager {
    /// A manager running exec probes through `containerd` (FIFOs under `fifo_dir`), and the
    /// receiver of the UIDs of pods whose probe results changed.
    pub fn new(containerd: Containerd, fifo_dir: PathBuf) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (notify, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            containerd,
            fifo_dir,
            containers: Mutex::new(HashMap::new()),
            notify,
            events: broadcast::channel(1024).0,
            exec_seq: AtomicU64::new(0),
            start: Instant::now(),
        });
        (ProbeManager { inner }, rx)
    }

    /// Starts probing the running container `container_id` (container `container` of `pod`,
    /// running since `started_at`). A container without probes, or one already added, is left
    /// alone. Must be called within a tokio runtime.
    pub fn add_container(
        &self,
        pod: &Pod,
        container: &Container,
        container_id: &str,
        pod_ip: String,
        started_at: Timestamp,
    ) {
        let mut probes = ContainerProbes::new(container, started_instant(started_at));
        if probes.liveness.is_none() && probes.readiness.is_none() && probes.startup.is_none() {
            return;
        }
        let mut containers = self.inner.containers();
        if containers.contains_key(container_id) {
            return;
        }
        // This very container as the API last saw it: reported by a previous kubelet process.
        let reported = pod
            .status
            .iter()
            .flat_map(|s| {
                // Sidecars report in the init container statuses.
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            })
            .find(|s| {
                s.name == container.name
                    && s.container_id
                        .as_deref()
                        .and_then(|id| id.rsplit_once("://"))
                        .map(|(_, id)| id)
                        == Some(container_id)
            });
        if let Some(s) = reported {
            probes.resume(s.started == Some(true), s.ready);
        }
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod_name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let actions = [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness].map(|kind| {
            kind.probe_of(container)
                .map(|p| ProbeAction::from_probe(p, container, &pod_ip).map_err(|e| e.to_string()))
        });
        let results = probes.results();
        let task = tokio::spawn(run(
            Arc::downgrade(&self.inner),
            Target {
                pod_uid: pod_uid.clone(),
                pod_name,
                container: container.name.clone(),
                container_id: container_id.to_string(),
                actions,
            },
            probes,
        ));
        containers.insert(
            container_id.to_string(),
            Entry {
                pod_uid,
                results,
                task,
            },
        );
    }

    /// Stops probing `container_id` and forgets its results (a container that is not running
    /// has none).
    pub fn remove_container(&self, container_id: &str) {
        if let Some(entry) = self.inner.containers().remove(container_id) {
            entry.task.abort();
        }
        crate::metrics::registry().forget_probes(container_id);
    }

    /// The current results of `container_id` (all `None` when it is not probed).
    pub fn results(&self, container_id: &str) -> ProbeResults {
        self.inner
            .containers()
            .get(container_id)
            .map(|e| e.results)
            .unwrap_or_default()
    }

    /// Failed probe runs from now on (each failure, as upstream emits an event per failure).
    /// A receiver that lags loses the oldest events.
    pub fn events(&self) -> broadcast::Receiver<ProbeEvent> {
        self.inner.events.subscribe()
    }

    /// The IDs of the containers being probed.
    pub fn container_ids(&self) -> Vec<String> {
        self.inner.containers().keys().cloned().collect()
    }

    /// The UID of the pod `container_id` belongs to, when probed.
    pub fn pod_of(&self, container_id: &str) -> Option<String> {
        self.inner
            .containers()
            .get(container_id)
            .map(|e| e.pod_uid.clone())
    }
}

/// The `Instant` corresponding to a wall-clock start time (now for a time in the future).
fn started_instant(started_at: Timestamp) -> Instant {
    let now = Instant::now();
    let elapsed = SystemTime::now()
        .duration_since(SystemTime::from(started_at))
        .unwrap_or_default();
    now.checked_sub(elapsed).unwrap_or(now)
}

struct Target {
    pod_uid: String,
    pod_name: String,
    container: String,
    container_id: String,
    /// Startup, liveness, readiness.
    actions: [Option<Result<ProbeAction, String>>; 3],
}

impl Target {
    fn action(&self, kind: ProbeKind) -> Option<&Result<ProbeAction, String>> {
        let i = match kind {
            ProbeKind::Startup => 0,
            ProbeKind::Liveness => 1,
            ProbeKind::Readiness => 2,
        };
        self.actions[i].as_ref()
    }
}

/// A pseudo-random delay in `[0, period)` derived from the container ID and the clock.
fn jitter(container_id: &str, period: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(container_id.as_bytes());
    let fraction = (h.finish() % 1000) as u32;
    period * fraction / 1000
}

async fn run(inner: Weak<Inner>, target: Target, mut probes: ContainerProbes) {
    // Upstream: right after the kubelet started, a worker sleeps a random part of its period
    // first, so that the probes of all existing containers do not fire at once.
    let period = [&probes.startup, &probes.liveness, &probes.readiness]
        .into_iter()
        .flatten()
        .map(|w| w.timing.period)
        .min();
    let recent = inner.upgrade().map(|i| i.start.elapsed());
    if let (Some(period), Some(since_start)) = (period, recent)
        && since_start < period
    {
        tokio::time::sleep(jitter(&target.container_id, period)).await;
    }
    loop {
        let Some(next) = probes.next_due(Instant::now()) else {
            tracing::debug!(pod = %target.pod_name, container = %target.container, "no more probes to run");
            return;
        };
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        for kind in probes.due(now) {
            let Some(worker) = probes.worker(kind) else {
                continue;
            };
            let timeout = worker.timing.timeout;
            let begun = Instant::now();
            let outcome = match target.action(kind) {
                Some(Ok(action)) => {
                    let Some(inner) = inner.upgrade() else { return };
                    execute(&inner, &target, action, timeout).await
                }
                Some(Err(message)) => ProbeOutcome::Failure(message.clone()),
                None => continue,
            };
            crate::metrics::registry().probe_ran(crate::metrics::ProbeRun {
                container_id: &target.container_id,
                probe_type: kind.as_str(),
                pod: &target.pod_name,
                pod_uid: &target.pod_uid,
                container: &target.container,
                success: outcome.is_success(),
                seconds: begun.elapsed().as_secs_f64(),
            });
            if let ProbeOutcome::Failure(message) = &outcome {
                tracing::info!(
                    pod = %target.pod_name, container = %target.container, probe = kind.as_str(),
                    %message, "{} probe failed", kind.as_str()
                );
                if let Some(inner) = inner.upgrade() {
                    let _ = inner.events.send(ProbeEvent {
                        pod_uid: target.pod_uid.clone(),
                        container: target.container.clone(),
                        container_id: target.container_id.clone(),
                        kind,
                        message: message.clone(),
                    });
                }
            }
            if probes.record(kind, &outcome, Instant::now()) {
                let Some(inner) = inner.upgrade() else { return };
                let results = probes.results();
                tracing::info!(
                    pod = %target.pod_name, container = %target.container, probe = kind.as_str(),
                    ?results, "probe result changed"
                );
                if let Some(entry) = inner.containers().get_mut(&target.container_id) {
                    entry.results = results;
                }
                let _ = inner.notify.send(target.pod_uid.clone());
            }
        }
    }
}

async fn execute(
    inner: &Inner,
    target: &Target,
    action: &ProbeAction,
    timeout: std::time::Duration,
) -> ProbeOutcome {
    match action {
        ProbeAction::Http(t) => super::http::probe(t, timeout).await,
        ProbeAction::Tcp { host, port } => super::tcp::probe(host, *port, timeout).await,
        ProbeAction::Grpc { host, port, service } => {
            super::grpc::probe(host, *port, service.as_deref(), timeout).await
        }
        ProbeAction::Exec { command } => {
            let seq = inner.exec_seq.fetch_add(1, Ordering::Relaxed);
            let exec_id = format!("probe-{seq}");
            super::exec::probe(
                &inner.containerd,
                &target.container_id,
                &exec_id,
                command,
                &inner.fifo_dir,
                timeout,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn jitter_stays_within_the_period() {
        for id in ["a", "b", "c", "0123456789abcdef"] {
            let j = super::jitter(id, Duration::from_secs(10));
            assert!(j < Duration::from_secs(10), "{j:?}");
        }
        assert_eq!(super::jitter("a", Duration::ZERO), Duration::ZERO);
    }
}
