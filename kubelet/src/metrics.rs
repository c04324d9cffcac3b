//! The kubelet's Prometheus metrics with upstream's names: `/metrics` (kubelet_node_name,
//! kubelet_running_pods, kubelet_running_containers, kubelet_started_pods_total,
//! kubelet_started_containers_total, kubelet_pod_start_sli_duration_seconds,
//! kubelet_pod_start_duration_seconds, kubelet_pleg_relist_duration_seconds, kubelet_evictions) and
//! `/metrics/resource` (the node/pod/container cpu and memory series metrics-server reads) and
//! `/metrics/probes` (prober_probe_total, prober_probe_duration_seconds).
//!
//! The workers record into a process-wide registry ([`registry`]); rendering is pure
//! ([`render_resource`], [`Registry::render`]) in Prometheus' text format 0.0.4.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use crate::stats::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodStats, Summary};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upstream's pod start buckets (seconds).
const POD_START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0,
    480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];
/// Prometheus' default buckets (upstream's relist duration uses them).
const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A cumulative histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The series lines of one histogram; `labels` (`k="v",...`, may be empty) go before `le`.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let (open, sep) = if labels.is_empty() {
            ("", "")
        } else {
            (labels, ",")
        };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{open}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{open}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What the kubelet counts while it runs.
#[derive(Debug)]
pub struct Registry {
    started_pods: AtomicU64,
    started_pods_errors: AtomicU64,
    started_containers: Mutex<BTreeMap<&'static str, u64>>,
    started_containers_errors: Mutex<BTreeMap<(String, &'static str), u64>>,
    pod_start_sli: Mutex<Histogram>,
    pod_start: Mutex<Histogram>,
    relist: Mutex<Histogram>,
    evictions: Mutex<BTreeMap<String, u64>>,
    /// Per (container ID, probe type): `/metrics/probes`.
    probes: Mutex<BTreeMap<(String, String), ProbeSeries>>,
}

impl Registry {
    /// A registry with nothing counted yet.
    fn new() -> Registry {
        Registry {
            started_pods: AtomicU64::new(0),
            started_pods_errors: AtomicU64::new(0),
            started_containers: Mutex::new(BTreeMap::new()),
            started_containers_errors: Mutex::new(BTreeMap::new()),
            pod_start_sli: Mutex::new(Histogram::new(&POD_START_BUCKETS)),
            pod_start: Mutex::new(Histogram::new(&POD_START_BUCKETS)),
            relist: Mutex::new(Histogram::new(&DEFAULT_BUCKETS)),
            evictions: Mutex::new(BTreeMap::new()),
            probes: Mutex::new(BTreeMap::new()),
        }
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

use crate::lock::lock;

/// Container counts by state (`kubelet_running_containers{container_state}`) and pods with a
/// running container (`kubelet_running_pods`), taken at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Running {
    pub pods: u64,
    pub containers: BTreeMap<&'static str, u64>,
}

impl Registry {
    /// A pod worker started a pod's first container (`kubelet_started_pods_total`).
    pub fn pod_started(&self) {
        self.started_pods.fetch_add(1, Ordering::Relaxed);
    }

    /// A pod's sandbox could not be created (`kubelet_started_pods_errors_total`).
    pub fn pod_start_failed(&self) {
        self.started_pods_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A container started (`kubelet_started_containers_total{container_type}`).
    pub fn container_started(&self, init: bool) {
        *lock(&self.started_containers)
            .entry(if init { "init_container" } else { "container" })
            .or_default() += 1;
    }

    /// A container failed to start (`kubelet_started_containers_errors_total{code,container_type}`).
    pub fn container_start_failed(&self, code: &str, init: bool) {
        *lock(&self.started_containers_errors)
            .entry((
                code.to_string(),
                if init { "init_container" } else { "container" },
            ))
            .or_default() += 1;
    }

    /// All of a pod's containers are running: `total` seconds since the pod's creation, `pulling`
    /// of them spent pulling images (the SLI leaves those out).
    pub fn pod_start(&self, total: f64, pulling: f64) {
        lock(&self.pod_start).observe(total.max(0.0));
        lock(&self.pod_start_sli).observe((total - pulling).max(0.0));
    }

    /// One relist of a pod's containers took `secs` (the PLEG relist equivalent).
    pub fn relist(&self, secs: f64) {
        lock(&self.relist).observe(secs);
    }

    /// A pod was evicted for `signal` (`kubelet_evictions{eviction_signal}`).
    pub fn eviction(&self, signal: &str) {
        *lock(&self.evictions).entry(signal.to_string()).or_default() += 1;
    }

    /// `/metrics` in the text format.
    pub fn render(&self, node: &str, running: &Running) -> String {
        let mut out = String::new();
        family(
            &mut out,
            ("kubelet_node_name", "gauge"),
            "[ALPHA] The node's name. The count is always 1.",
            [(format!("{{node=\"{}\"}}", escape(node)), 1)],
        );
        family(
            &mut out,
            ("kubelet_running_pods", "gauge"),
            "[ALPHA] Number of pods that have a running pod sandbox",
            [(String::new(), running.pods)],
        );
        family(
            &mut out,
            ("kubelet_running_containers", "gauge"),
            "[ALPHA] Number of containers currently running",
            running
                .containers
                .iter()
                .map(|(state, n)| (format!("{{container_state=\"{state}\"}}"), *n)),
        );
        for (name, help, n) in [
            (
                "kubelet_started_pods_total",
                "[ALPHA] Cumulative number of pods started",
                &self.started_pods,
            ),
            (
                "kubelet_started_pods_errors_total",
                "[ALPHA] Cumulative number of errors when starting pods",
                &self.started_pods_errors,
            ),
        ] {
            family(
                &mut out,
                (name, "counter"),
                help,
                [(String::new(), n.load(Ordering::Relaxed))],
            );
        }
        family(
            &mut out,
            ("kubelet_started_containers_total", "counter"),
            "[ALPHA] Cumulative number of containers started",
            lock(&self.started_containers)
                .iter()
                .map(|(ty, n)| (format!("{{container_type=\"{ty}\"}}"), *n)),
        );
        family(
            &mut out,
            ("kubelet_started_containers_errors_total", "counter"),
            "[ALPHA] Cumulative number of errors when starting containers",
            lock(&self.started_containers_errors)
                .iter()
                .map(|((code, ty), n)| {
                    let code = escape(code);
                    (format!("{{code=\"{code}\",container_type=\"{ty}\"}}"), *n)
                }),
        );
        for (histogram, name, help) in [
            (
                &self.pod_start_sli,
                "kubelet_pod_start_sli_duration_seconds",
                "[BETA] Duration in seconds to start a pod, excluding time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch",
            ),
            (
                &self.pod_start,
                "kubelet_pod_start_duration_seconds",
                "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            ),
            (
                &self.relist,
                "kubelet_pleg_relist_duration_seconds",
                "[ALPHA] Duration in seconds for relisting pods in PLEG.",
            ),
        ] {
            lock(histogram).render(&mut out, name, help);
        }
        family(
            &mut out,
            ("kubelet_evictions", "counter"),
            "[ALPHA] Cumulative number of pod evictions by eviction signal",
            lock(&self.evictions)
                .iter()
                .map(|(signal, n)| (format!("{{eviction_signal=\"{}\"}}", escape(signal)), *n)),
        );
        out
    }
}

/// One metric family: its HELP and TYPE lines, then a sample per `(labels, value)` (`labels` is
/// `{k="v",...}` or empty).
fn family(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, n) in samples {
        let _ = writeln!(out, "{name}{labels} {n}");
    }
}

/// One probe run, for `prober_probe_total` and `prober_probe_duration_seconds`.
#[derive(Debug, Clone, Copy)]
pub struct ProbeRun<'a> {
    pub container_id: &'a str,
    /// `Liveness`, `Readiness` or `Startup`, as upstream's probe type labels.
    pub probe_type: &'a str,
    /// `namespace/name`.
    pub pod: &'a str,
    pub pod_uid: &'a str,
    pub container: &'a str,
    pub success: bool,
    pub seconds: f64,
}

/// The series of one probe of one container.
#[derive(Debug, Clone)]
struct ProbeSeries {
    /// `probe_type`, `container`, `pod`, `namespace` label values.
    labels: [String; 4],
    pod_uid: String,
    successful: u64,
    failed: u64,
    /// Upstream times successful probes only.
    duration: Histogram,
}

impl Registry {
    /// Records a probe run (upstream's worker: every run counts by result, successful ones are timed).
    pub fn probe_ran(&self, run: ProbeRun<'_>) {
        let mut probes = lock(&self.probes);
        let s = probes
            .entry((run.container_id.to_string(), run.probe_type.to_string()))
            .or_insert_with(|| {
                let (namespace, pod) = run.pod.split_once('/').unwrap_or(("", run.pod));
                ProbeSeries {
                    labels: [run.probe_type, run.container, pod, namespace].map(String::from),
                    pod_uid: run.pod_uid.to_string(),
                    successful: 0,
                    failed: 0,
                    duration: Histogram::new(&DEFAULT_BUCKETS),
                }
            });
        if run.success {
            s.successful += 1;
            s.duration.observe(run.seconds.max(0.0));
        } else {
            s.failed += 1;
        }
    }

    /// Drops the series of a container that is no longer probed (upstream deletes a stopped
    /// worker's series).
    pub fn forget_probes(&self, container_id: &str) {
        lock(&self.probes).retain(|(id, _), _| id != container_id);
    }

    /// `/metrics/probes` in the text format.
    pub fn render_probes(&self) -> String {
        let probes = lock(&self.probes);
        let mut series: Vec<&ProbeSeries> = probes.values().collect();
        series.sort_by(|a, b| {
            (&a.labels[3], &a.labels[2], &a.labels[1], &a.labels[0]).cmp(&(
                &b.labels[3],
                &b.labels[2],
                &b.labels[1],
                &b.labels[0],
            ))
        });
        // Labels in Go's order (sorted by name), the pod UID only on the counter.
        let labels = |s: &ProbeSeries, uid: bool| {
            let [t, c, p, n] = s.labels.each_ref().map(|v| escape(v));
            let uid = if uid {
                format!("pod_uid=\"{}\",", escape(&s.pod_uid))
            } else {
                String::new()
            };
            format!("container=\"{c}\",namespace=\"{n}\",pod=\"{p}\",{uid}probe_type=\"{t}\"")
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP prober_probe_duration_seconds [ALPHA] Duration in seconds for a probe response.\n# TYPE prober_probe_duration_seconds histogram"
        );
        for s in &series {
            if s.duration.count > 0 {
                s.duration
                    .render_series(&mut out, "prober_probe_duration_seconds", &labels(s, false));
            }
        }
        let _ = writeln!(
            out,
            "# HELP prober_probe_total [BETA] Cumulative number of a liveness, readiness or startup probe for a container by result.\n# TYPE prober_probe_total counter"
        );
        for s in &series {
            for (result, n) in [("failed", s.failed), ("successful", s.successful)] {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "prober_probe_total{{{},result=\"{result}\"}} {n}",
                        labels(s, true)
                    );
                }
            }
        }
        out
    }
}

/// Times one relist of a pod's containers; records when dropped.
#[derive(Debug)]
pub struct RelistTimer(std::time::Instant);

impl RelistTimer {
    pub fn start() -> RelistTimer {
        RelistTimer(std::time::Instant::now())
    }
}

impl Drop for RelistTimer {
    fn drop(&mut self) {
        registry().relist(self.0.elapsed().as_secs_f64());
    }
}

/// One pod worker's view of its pod's start: records the start duration once, when every
/// container first runs, from the pod's creation timestamp, less the time spent pulling images.
/// A pod already running when the worker starts (adopted after a kubelet restart) is not counted.
#[derive(Debug, Clone, PartialEq)]
pub struct PodStartTracker {
    done: bool,
    pulling: f64,
}

impl PodStartTracker {
    pub fn new(pod: &k8s_openapi::api::core::v1::Pod) -> PodStartTracker {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        PodStartTracker {
            done: running,
            pulling: 0.0,
        }
    }

    /// An image pull took `secs`.
    pub fn pulled(&mut self, secs: f64) {
        self.pulling += secs;
    }

    /// Looks at a freshly computed status; returns the start duration when it is recorded.
    pub fn observe(
        &mut self,
        pod: &k8s_openapi::api::core::v1::Pod,
        status: &k8s_openapi::api::core::v1::PodStatus,
    ) -> Option<f64> {
        if self.done || status.phase.as_deref() != Some("Running") {
            return None;
        }
        let statuses = status.container_statuses.as_deref().unwrap_or_default();
        if statuses.is_empty()
            || !statuses
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        {
            return None;
        }
        self.done = true;
        let created = pod.metadata.creation_timestamp.as_ref()?.0;
        let total = k8s_openapi::jiff::Timestamp::now()
            .duration_since(created)
            .as_secs_f64();
        registry().pod_start(total, self.pulling);
        Some(total)
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Counts from a container listing: `(pod uid, state)` per container.
pub fn running_from<'a>(containers: impl IntoIterator<Item = (&'a str, &'static str)>) -> Running {
    let mut r = Running::default();
    let mut pods = std::collections::BTreeSet::new();
    for (uid, state) in containers {
        *r.containers.entry(state).or_default() += 1;
        if state == "running" {
            pods.insert(uid);
        }
    }
    r.pods = pods.len() as u64;
    r
}

/// RFC 3339 → milliseconds since the epoch (Prometheus sample timestamps).
fn millis(t: &str) -> Option<i64> {
    t.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn secs(t: &str) -> Option<f64> {
    t.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_nanosecond() as f64 / 1e9)
}

/// `/metrics/resource` from a summary, with upstream's names, help and labels.
pub fn render_resource(s: &Summary, scrape_error: bool) -> String {
    let mut out = String::new();
    let head = |out: &mut String, name: &str, ty: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
    };
    let sample = |out: &mut String, name: &str, labels: &str, v: f64, t: &str| match millis(t) {
        Some(ms) => {
            let _ = writeln!(out, "{name}{labels} {v} {ms}");
        }
        None => {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let clabels = |ns: &str, pod: &str, c: &str| {
        format!(
            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            escape(c),
            escape(ns),
            escape(pod)
        )
    };
    let plabels = |ns: &str, pod: &str| format!("{{namespace=\"{}\",pod=\"{}\"}}", escape(ns), escape(pod));

    for m in CONTAINER_SERIES {
        head(&mut out, m.name, m.kind, m.help);
        for p in &s.pods {
            for c in &p.containers {
                if let Some((v, t)) = (m.value)(c) {
                    let l = clabels(&p.pod_ref.namespace, &p.pod_ref.name, &c.name);
                    sample(&mut out, m.name, &l, v, t);
                }
            }
        }
    }
    for m in NODE_SERIES {
        head(&mut out, m.name, m.kind, m.help);
        if let Some((v, t)) = (m.value)(&s.node) {
            sample(&mut out, m.name, "", v, t);
        }
    }
    for m in POD_SERIES {
        head(&mut out, m.name, m.kind, m.help);
        for p in &s.pods {
            if let Some((v, t)) = (m.value)(p) {
                let l = plabels(&p.pod_ref.namespace, &p.pod_ref.name);
                sample(&mut out, m.name, &l, v, t);
            }
        }
    }
    let err = if scrape_error { 1 } else { 0 };
    head(
        &mut out,
        "resource_scrape_error",
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    );
    let _ = writeln!(out, "resource_scrape_error {err}");
    head(
        &mut out,
        "scrape_error",
        "gauge",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
    );
    let _ = writeln!(out, "scrape_error {err}");
    out
}

/// One `/metrics/resource` series: its name, type and help, and how to read its value and sample
/// time from a node, pod or container's stats.
struct ResourceSeries<T: 'static> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<(f64, &str)>,
}

/// Cumulative cpu seconds and the sample time.
fn cpu_seconds(cpu: &Option<CpuStats>) -> Option<(f64, &str)> {
    let c = cpu.as_ref()?;
    Some((c.usage_core_nano_seconds? as f64 / 1e9, &c.time))
}

/// Working set bytes and the sample time.
fn working_set(memory: &Option<MemoryStats>) -> Option<(f64, &str)> {
    let m = memory.as_ref()?;
    Some((m.working_set_bytes? as f64, &m.time))
}

/// The cpu and memory series of a node, pod or container (`$scope`, with upstream's names and
/// help), then `$more`.
macro_rules! usage_series {
    ($scope:literal $(, $more:expr)*) => {
        [
            ResourceSeries {
                name: concat!($scope, "_cpu_usage_seconds_total"),
                kind: "counter",
                help: concat!("[STABLE] Cumulative cpu time consumed by the ", $scope, " in core-seconds"),
                value: |s| cpu_seconds(&s.cpu),
            },
            ResourceSeries {
                name: concat!($scope, "_memory_working_set_bytes"),
                kind: "gauge",
                help: concat!("[STABLE] Current working set of the ", $scope, " in bytes"),
                value: |s| working_set(&s.memory),
            },
            $($more),*
        ]
    };
}

/// The container series, in upstream's order.
const CONTAINER_SERIES: [ResourceSeries<ContainerStats>; 3] = usage_series!(
    "container",
    ResourceSeries {
        name: "container_start_time_seconds",
        kind: "gauge",
        help: "[STABLE] Start time of the container since unix epoch in seconds",
        value: |c| secs(&c.start_time).map(|v| (v, c.start_time.as_str())),
    }
);

const NODE_SERIES: [ResourceSeries<NodeStats>; 2] = usage_series!("node");

const POD_SERIES: [ResourceSeries<PodStats>; 2] = usage_series!("pod");

/// The body of a stats or metrics endpoint: `(status, content type, body)`, or `None` for a path
/// that is not one of them. `/stats/summary`, `/metrics`, `/metrics/resource`.
pub async fn respond(path: &str) -> Option<(u16, &'static str, String)> {
    let path = path.trim_end_matches('/');
    if !matches!(
        path,
        "/stats/summary" | "/stats" | "/metrics" | "/metrics/resource" | "/metrics/probes"
    ) {
        return None;
    }
    if path == "/metrics/probes" {
        return Some((200, CONTENT_TYPE, registry().render_probes()));
    }
    let Some(p) = crate::stats::collect::provider() else {
        return Some((503, "text/plain", "stats are not available yet".into()));
    };
    Some(match path {
        "/stats/summary" | "/stats" => {
            let s = p.summary().await;
            match serde_json::to_string(&*s) {
                Ok(body) => (200, "application/json", body),
                Err(e) => (500, "text/plain", format!("encoding the summary: {e}")),
            }
        }
        "/metrics/resource" => {
            let s = p.summary().await;
            (200, CONTENT_TYPE, render_resource(&s, false))
        }
        _ => {
            let running = p.running().await;
            (200, CONTENT_TYPE, registry().render(p.node_name(), &running))
        }
    })
}

/// The kubelet API's authorization subresource for a path (upstream's `nodes/stats`,
/// `nodes/metrics`), `None` for paths this module does not serve.
pub fn subresource(path: &str) -> Option<&'static str> {
    if path == "/stats" || path.starts_with("/stats/") {
        Some("stats")
    } else if path == "/metrics" || path.starts_with("/metrics/") {
        Some("metrics")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::PodReference;

    #[test]
    fn resource_metrics_have_upstream_names_and_labels() {
        let t = "2024-01-01T00:00:00Z".to_string();
        let cpu = |nano_cores, core_ns| {
            Some(CpuStats {
                time: t.clone(),
                usage_nano_cores: nano_cores,
                usage_core_nano_seconds: Some(core_ns),
            })
        };
        let memory = |working_set| {
            Some(MemoryStats {
                time: t.clone(),
                working_set_bytes: Some(working_set),
                ..Default::default()
            })
        };
        let s = Summary {
            node: NodeStats {
                node_name: "n".into(),
                cpu: cpu(None, 2_500_000_000),
                memory: memory(1000),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference::new("ns", "p", "u"),
                containers: vec![ContainerStats {
                    name: "c".into(),
                    start_time: t.clone(),
                    cpu: cpu(Some(1), 1_000_000_000),
                    memory: memory(42),
                    ..Default::default()
                }],
                memory: memory(50),
                ..Default::default()
            }],
        };
        let text = render_resource(&s, false);
        let ms = 1_704_067_200_000i64;
        for line in [
            format!("container_cpu_usage_seconds_total{{container=\"c\",namespace=\"ns\",pod=\"p\"}} 1 {ms}"),
            format!(
                "container_memory_working_set_bytes{{container=\"c\",namespace=\"ns\",pod=\"p\"}} 42 {ms}"
            ),
            format!(
                "container_start_time_seconds{{container=\"c\",namespace=\"ns\",pod=\"p\"}} 1704067200 {ms}"
            ),
            format!("node_cpu_usage_seconds_total 2.5 {ms}"),
            format!("node_memory_working_set_bytes 1000 {ms}"),
            format!("pod_memory_working_set_bytes{{namespace=\"ns\",pod=\"p\"}} 50 {ms}"),
            "resource_scrape_error 0".to_string(),
            "# TYPE container_cpu_usage_seconds_total counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn kubelet_metrics_render_counters_and_histograms() {
        let r = Registry {
            started_pods: AtomicU64::new(2),
            ..Registry::new()
        };
        r.container_started(false);
        r.container_started(true);
        r.container_start_failed("CreateContainerError", false);
        r.pod_start(3.5, 2.0);
        r.relist(0.02);
        r.eviction("memory.available");
        let running = running_from([("a", "running"), ("a", "exited"), ("b", "running")]);
        assert_eq!(running.pods, 2);
        let text = r.render("node-1", &running);
        for line in [
            "kubelet_node_name{node=\"node-1\"} 1",
            "kubelet_running_pods 2",
            "kubelet_running_containers{container_state=\"running\"} 2",
            "kubelet_running_containers{container_state=\"exited\"} 1",
            "kubelet_started_pods_total 2",
            "kubelet_started_containers_total{container_type=\"container\"} 1",
            "kubelet_started_containers_total{container_type=\"init_container\"} 1",
            "kubelet_started_containers_errors_total{code=\"CreateContainerError\",container_type=\"container\"} 1",
            "kubelet_pod_start_sli_duration_seconds_bucket{le=\"1\"} 0",
            "kubelet_pod_start_sli_duration_seconds_bucket{le=\"2\"} 1",
            "kubelet_pod_start_sli_duration_seconds_count 1",
            "kubelet_pod_start_duration_seconds_bucket{le=\"3\"} 0",
            "kubelet_pod_start_duration_seconds_bucket{le=\"4\"} 1",
            "kubelet_pleg_relist_duration_seconds_bucket{le=\"0.025\"} 1",
            "kubelet_pleg_relist_duration_seconds_bucket{le=\"+Inf\"} 1",
            "kubelet_evictions{eviction_signal=\"memory.available\"} 1",
            "# TYPE kubelet_pod_start_sli_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert_eq!(subresource("/metrics/resource"), Some("metrics"));
        assert_eq!(subresource("/metrics/probes"), Some("metrics"));
        assert_eq!(subresource("/stats/summary"), Some("stats"));
        assert_eq!(subresource("/containerLogs/a/b/c"), None);
    }

    #[test]
    fn probe_metrics_have_upstream_names_and_labels() {
        let r = registry();
        let run = ProbeRun {
            container_id: "probe-metrics-test",
            probe_type: "Readiness",
            pod: "ns1/web",
            pod_uid: "u-1",
            container: "c",
            success: true,
            seconds: 0.02,
        };
        r.probe_ran(run);
        r.probe_ran(ProbeRun {
            success: false,
            ..run
        });
        r.probe_ran(ProbeRun {
            success: false,
            ..run
        });
        let text = r.render_probes();
        let series = "container=\"c\",namespace=\"ns1\",pod=\"web\"";
        for line in [
            "# TYPE prober_probe_total counter".to_string(),
            "# TYPE prober_probe_duration_seconds histogram".to_string(),
            format!(
                "prober_probe_total{{{series},pod_uid=\"u-1\",probe_type=\"Readiness\",result=\"successful\"}} 1"
            ),
            format!(
                "prober_probe_total{{{series},pod_uid=\"u-1\",probe_type=\"Readiness\",result=\"failed\"}} 2"
            ),
            format!(
                "prober_probe_duration_seconds_bucket{{{series},probe_type=\"Readiness\",le=\"0.01\"}} 0"
            ),
            format!(
                "prober_probe_duration_seconds_bucket{{{series},probe_type=\"Readiness\",le=\"0.025\"}} 1"
            ),
            format!("prober_probe_duration_seconds_count{{{series},probe_type=\"Readiness\"}} 1"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        r.forget_probes("probe-metrics-test");
        assert!(!r.render_probes().contains("pod=\"web\""));
    }
}
