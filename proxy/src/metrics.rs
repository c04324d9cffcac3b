//! kube-proxy's Prometheus metrics with upstream's names, help strings and buckets
//! (pkg/proxy/metrics/metrics.go), rendered in the text exposition format (pure).

use std::collections::BTreeMap;
use std::fmt::Write;

/// A cumulative histogram with fixed upper bounds.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram with these bucket upper bounds (ascending; `+Inf` is implied).
    pub fn new(bounds: Vec<f64>) -> Self {
        let n = bounds.len();
        Histogram {
            bounds,
            counts: vec![0; n],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value.
    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} [ALPHA] {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

fn exponential(start: f64, factor: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start * factor.powi(i as i32)).collect()
}

fn linear(start: f64, width: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start + width * i as f64).collect()
}

/// All metrics kube-proxy exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub sync_duration: Histogram,
    pub full_sync_duration: Histogram,
    pub partial_sync_duration: Histogram,
    pub network_programming: Histogram,
    pub last_sync_timestamp: f64,
    pub last_queued_timestamp: f64,
    pub service_changes_total: u64,
    pub endpoint_changes_total: u64,
    pub service_changes_pending: u64,
    pub endpoint_changes_pending: u64,
    pub sync_failures_total: u64,
    pub healthz_total: BTreeMap<u16, u64>,
    pub livez_total: BTreeMap<u16, u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let sync = || Histogram::new(exponential(0.001, 2.0, 15));
        let mut npl = linear(0.25, 0.25, 2);
        npl.extend(linear(1.0, 1.0, 59));
        npl.extend(linear(60.0, 5.0, 12));
        npl.extend(linear(120.0, 30.0, 7));
        Metrics {
            sync_duration: sync(),
            full_sync_duration: sync(),
            partial_sync_duration: sync(),
            network_programming: Histogram::new(npl),
            last_sync_timestamp: 0.0,
            last_queued_timestamp: 0.0,
            service_changes_total: 0,
            endpoint_changes_total: 0,
            service_changes_pending: 0,
            endpoint_changes_pending: 0,
            sync_failures_total: 0,
            healthz_total: BTreeMap::new(),
            livez_total: BTreeMap::new(),
        }
    }
}

impl Metrics {
    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.sync_duration.render(
            &mut out,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
        );
        self.full_sync_duration.render(
            &mut out,
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
        );
        self.partial_sync_duration.render(
            &mut out,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
        );
        self.network_programming.render(
            &mut out,
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
        );
        let mut scalar = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} [ALPHA] {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        scalar(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "gauge",
            "The last time proxy rules were successfully synced",
            self.last_sync_timestamp.to_string(),
        );
        scalar(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "gauge",
            "The last time a sync of proxy rules was queued",
            self.last_queued_timestamp.to_string(),
        );
        scalar(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "gauge",
            "Pending proxy rules Service changes",
            self.service_changes_pending.to_string(),
        );
        scalar(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "gauge",
            "Pending proxy rules Endpoint changes",
            self.endpoint_changes_pending.to_string(),
        );
        scalar(
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "counter",
            "Cumulative proxy rules Service changes",
            self.service_changes_total.to_string(),
        );
        scalar(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "counter",
            "Cumulative proxy rules Endpoint changes",
            self.endpoint_changes_total.to_string(),
        );
        scalar(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "counter",
            "Cumulative proxy nftables sync failures",
            self.sync_failures_total.to_string(),
        );
        for (name, help, map) in [
            (
                "kubeproxy_proxy_healthz_total",
                "Cumulative proxy healthz HTTP status",
                &self.healthz_total,
            ),
            (
                "kubeproxy_proxy_livez_total",
                "Cumulative proxy livez HTTP status",
                &self.livez_total,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} [ALPHA] {help}\n# TYPE {name} counter");
            for (code, n) in map {
                let _ = writeln!(out, "{name}{{code=\"{code}\"}} {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_upstreams() {
        let mut m = Metrics::default();
        m.sync_duration.observe(0.003);
        m.sync_duration.observe(20.0);
        m.network_programming.observe(1.2);
        m.service_changes_total = 3;
        m.endpoint_changes_pending = 4;
        m.healthz_total.insert(200, 2);
        let text = m.render();
        for line in [
            "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 0",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 1",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"+Inf\"} 2",
            "kubeproxy_sync_proxy_rules_duration_seconds_count 2",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"1\"} 0",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"2\"} 1",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"300\"} 1",
            "kubeproxy_sync_proxy_rules_service_changes_total 3",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 0",
            "# TYPE kubeproxy_sync_proxy_rules_service_changes_pending gauge",
            "# HELP kubeproxy_sync_proxy_rules_endpoint_changes_pending [ALPHA] Pending proxy rules Endpoint changes",
            "kubeproxy_sync_proxy_rules_service_changes_pending 0",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 4",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds 0",
            "kubeproxy_proxy_healthz_total{code=\"200\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // 2 + 59 + 12 + 7 network programming buckets, as upstream.
        assert_eq!(
            text.matches("kubeproxy_network_programming_duration_seconds_bucket")
                .count(),
            81
        );
    }
}
