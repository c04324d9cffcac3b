//! Kubelet configuration: upstream's flags and the `KubeletConfiguration` file
//! (kubelet.config.k8s.io/v1beta1) with upstream field names and defaults. Flags override the file.
//!
//! Decoding is strict like upstream's: a misspelt field fails start-up with a message naming it. Fields
//! that upstream defines but knode does not act on yet are accepted with a warning, so an existing
//! upstream config file keeps working.

mod flags;
pub mod upstream_flags;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use knode_config::go_duration;
pub use knode_config::{ConfigError, duration};
use serde::{Deserialize, Serialize};

pub use flags::{KubeletFlags, Settings};

pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
pub const KIND: &str = "KubeletConfiguration";

/// The fields of upstream's KubeletConfiguration that knode implements, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeletConfiguration {
    pub api_version: String,
    pub kind: String,
    pub enable_server: bool,
    /// Serve `/var/log` under the kubelet API's `/logs/`.
    pub enable_system_log_handler: bool,
    pub static_pod_path: String,
    pub pod_logs_dir: String,
    #[serde(with = "go_duration")]
    pub sync_frequency: Duration,
    #[serde(with = "go_duration")]
    pub file_check_frequency: Duration,
    pub address: String,
    pub port: i32,
    pub read_only_port: i32,
    pub tls_cert_file: String,
    pub tls_private_key_file: String,
    pub authentication: Authentication,
    pub authorization: Authorization,
    pub register_node: bool,
    pub register_with_taints: Vec<Taint>,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub healthz_port: i32,
    pub healthz_bind_address: String,
    #[serde(rename = "oomScoreAdj")]
    pub oom_score_adj: i32,
    #[serde(with = "go_duration")]
    pub node_status_update_frequency: Duration,
    #[serde(with = "go_duration")]
    pub node_status_report_frequency: Duration,
    pub node_lease_duration_seconds: i32,
    #[serde(rename = "imageMinimumGCAge", with = "go_duration")]
    pub image_minimum_gc_age: Duration,
    /// Unused images older than this are removed whatever the disk usage (0: off).
    #[serde(rename = "imageMaximumGCAge", with = "go_duration")]
    pub image_maximum_gc_age: Duration,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: i32,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: i32,
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    pub cgroup_driver: String,
    pub cgroup_root: String,
    pub max_pods: i32,
    pub pod_pids_limit: i64,
    pub resolv_conf: String,
    pub serialize_image_pulls: bool,
    pub max_parallel_image_pulls: Option<i32>,
    pub eviction_hard: BTreeMap<String, String>,
    pub eviction_soft: BTreeMap<String, String>,
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    #[serde(with = "go_duration")]
    pub eviction_pressure_transition_period: Duration,
    pub eviction_max_pod_grace_period: i32,
    pub system_reserved: BTreeMap<String, String>,
    pub kube_reserved: BTreeMap<String, String>,
    pub enforce_node_allocatable: Vec<String>,
    pub allowed_unsafe_sysctls: Vec<String>,
    pub container_log_max_size: String,
    pub container_log_max_files: i32,
    #[serde(with = "go_duration")]
    pub shutdown_grace_period: Duration,
    #[serde(with = "go_duration")]
    pub shutdown_grace_period_critical_pods: Duration,
    pub container_runtime_endpoint: String,
    /// Renew the client certificate (from TLS bootstrap) before it expires.
    pub rotate_certificates: bool,
    /// Request the serving certificate from the API (`kubernetes.io/kubelet-serving`).
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: bool,
    pub feature_gates: BTreeMap<String, bool>,
    pub crash_loop_back_off: CrashLoopBackOff,
}

/// `authentication`: how the kubelet API authenticates callers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Authentication {
    pub x509: X509Authentication,
    pub webhook: WebhookAuthentication,
    pub anonymous: AnonymousAuthentication,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct X509Authentication {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookAuthentication {
    pub enabled: bool,
    #[serde(rename = "cacheTTL", with = "go_duration")]
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AnonymousAuthentication {
    pub enabled: bool,
}

/// `authorization`: `AlwaysAllow` or `Webhook` (SubjectAccessReview), as upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Authorization {
    pub mode: String,
    pub webhook: WebhookAuthorization,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookAuthorization {
    #[serde(rename = "cacheAuthorizedTTL", with = "go_duration")]
    pub cache_authorized_ttl: Duration,
    #[serde(rename = "cacheUnauthorizedTTL", with = "go_duration")]
    pub cache_unauthorized_ttl: Duration,
}

/// A taint the node registers with (`registerWithTaints`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub effect: String,
}

/// `crashLoopBackOff` (upstream 1.32+, KubeletCrashLoopBackOffMax): the cap of the restart back-off.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CrashLoopBackOff {
    #[serde(with = "go_duration")]
    pub max_container_restart_period: Duration,
}

impl Default for CrashLoopBackOff {
    fn default() -> Self {
        CrashLoopBackOff {
            max_container_restart_period: Duration::from_secs(300),
        }
    }
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            x509: X509Authentication::default(),
            webhook: WebhookAuthentication::default(),
            anonymous: AnonymousAuthentication { enabled: false },
        }
    }
}

impl Default for WebhookAuthentication {
    fn default() -> Self {
        WebhookAuthentication {
            enabled: true,
            cache_ttl: Duration::from_secs(120),
        }
    }
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            mode: "Webhook".into(),
            webhook: WebhookAuthorization::default(),
        }
    }
}

impl Default for WebhookAuthorization {
    fn default() -> Self {
        WebhookAuthorization {
            cache_authorized_ttl: Duration::from_secs(300),
            cache_unauthorized_ttl: Duration::from_secs(30),
        }
    }
}

impl Default for KubeletConfiguration {
    /// Upstream's v1beta1 defaults (pkg/kubelet/apis/config/v1beta1/defaults.go).
    fn default() -> Self {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        KubeletConfiguration {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            enable_server: true,
            enable_system_log_handler: true,
            static_pod_path: String::new(),
            pod_logs_dir: "/var/log/pods".into(),
            sync_frequency: Duration::from_secs(60),
            file_check_frequency: Duration::from_secs(20),
            address: "0.0.0.0".into(),
            port: 10250,
            read_only_port: 0,
            tls_cert_file: String::new(),
            tls_private_key_file: String::new(),
            authentication: Authentication::default(),
            authorization: Authorization::default(),
            register_node: true,
            register_with_taints: Vec::new(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            healthz_port: 10248,
            healthz_bind_address: "127.0.0.1".into(),
            oom_score_adj: -999,
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            node_lease_duration_seconds: 40,
            image_minimum_gc_age: Duration::from_secs(120),
            image_maximum_gc_age: Duration::ZERO,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            cgroups_per_qos: true,
            cgroup_driver: "cgroupfs".into(),
            cgroup_root: "/".into(),
            max_pods: 110,
            pod_pids_limit: -1,
            resolv_conf: "/etc/resolv.conf".into(),
            serialize_image_pulls: true,
            max_parallel_image_pulls: None,
            eviction_hard: map(&[
                ("memory.available", "100Mi"),
                ("nodefs.available", "10%"),
                ("imagefs.available", "15%"),
                ("nodefs.inodesFree", "5%"),
            ]),
            eviction_soft: BTreeMap::new(),
            eviction_soft_grace_period: BTreeMap::new(),
            eviction_pressure_transition_period: Duration::from_secs(300),
            eviction_max_pod_grace_period: 0,
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            enforce_node_allocatable: vec!["pods".into()],
            allowed_unsafe_sysctls: Vec::new(),
            container_log_max_size: "10Mi".into(),
            container_log_max_files: 5,
            shutdown_grace_period: Duration::ZERO,
            shutdown_grace_period_critical_pods: Duration::ZERO,
            container_runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
            rotate_certificates: false,
            server_tls_bootstrap: false,
            feature_gates: BTreeMap::new(),
            crash_loop_back_off: CrashLoopBackOff::default(),
        }
    }
}

/// Upstream KubeletConfiguration fields knode accepts but does not act on (yet): a config file
/// written for upstream's kubelet must not fail on them. Each is reported once at start-up.
const SCHEMA: knode_config::Schema = knode_config::Schema {
    api_version: API_VERSION,
    kind: KIND,
    upstream_not_implemented: UPSTREAM_NOT_IMPLEMENTED,
};

const UPSTREAM_NOT_IMPLEMENTED: &[&str] = &[
    "configMapAndSecretChangeDetectionStrategy",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "contentType",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "cpuManagerPolicy",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "enableContentionProfiling",
    "enableControllerAttachDetach",
    "enableDebugFlagsHandler",
    "enableDebuggingHandlers",
    "enableProfilingHandler",
    "enableSystemLogQuery",
    "eventBurst",
    "eventRecordQPS",
    "evictionMinimumReclaim",
    "failCgroupV1",
    "failSwapOn",
    "hairpinMode",
    "imageServiceEndpoint",
    "iptablesDropBit",
    "iptablesMasqueradeBit",
    "kernelMemcgNotification",
    "kubeAPIBurst",
    "kubeAPIQPS",
    "kubeReservedCgroup",
    "kubeletCgroups",
    "localStorageCapacityIsolation",
    "logging",
    "makeIPTablesUtilChains",
    "maxOpenFiles",
    "memoryManagerPolicy",
    "memorySwap",
    "mergeDefaultEvictionSettings",
    "nodeStatusMaxImages",
    "podCIDR",
    "podsPerCore",
    "protectKernelDefaults",
    "providerID",
    "qosReserved",
    "reservedMemory",
    "reservedSystemCPUs",
    "runtimeRequestTimeout",
    "seccompDefault",
    "showHiddenMetricsForVersion",
    "shutdownGracePeriodByPodPriority",
    "singleProcessOOMKill",
    "staticPodURL",
    "staticPodURLHeader",
    "streamingConnectionIdleTimeout",
    "systemCgroups",
    "systemReservedCgroup",
    "tlsCipherSuites",
    "tlsMinVersion",
    "topologyManagerPolicy",
    "topologyManagerPolicyOptions",
    "topologyManagerScope",
    "tracing",
    "userNamespaces",
    "volumePluginDir",
    "volumeStatsAggPeriod",
];

/// A decoded file: the configuration plus the upstream fields that were ignored.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: KubeletConfiguration,
    pub ignored_fields: Vec<String>,
}

impl KubeletConfiguration {
    /// Reads and decodes a KubeletConfiguration file, then validates it.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        Self::checked(path, knode_config::load(path, &SCHEMA)?)
    }

    /// Decodes YAML (or JSON) text strictly and validates it; `path` is only used in messages.
    pub fn decode(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
        Self::checked(path, knode_config::decode(path, text, &SCHEMA)?)
    }

    fn checked(path: &Path, d: knode_config::Decoded<Self>) -> Result<Loaded, ConfigError> {
        d.value
            .validate()
            .map_err(|(field, message)| ConfigError::Field {
                path: path.to_path_buf(),
                field,
                message,
            })?;
        Ok(Loaded {
            config: d.value,
            ignored_fields: d.ignored_fields,
        })
    }

    /// Semantic checks upstream's validation does for the fields knode implements.
    /// Returns (field path, message) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_string(), m));
        let port_ok = |p: i32| (0..=65535).contains(&p);
        if !port_ok(self.port) || self.port == 0 {
            return bad("port", format!("must be between 1 and 65535, got {}", self.port));
        }
        if !port_ok(self.read_only_port) {
            return bad(
                "readOnlyPort",
                format!("must be between 0 and 65535, got {}", self.read_only_port),
            );
        }
        if !port_ok(self.healthz_port) {
            return bad(
                "healthzPort",
                format!("must be between 0 and 65535, got {}", self.healthz_port),
            );
        }
        for (f, v) in [
            (
                "imageGCHighThresholdPercent",
                self.image_gc_high_threshold_percent,
            ),
            ("imageGCLowThresholdPercent", self.image_gc_low_threshold_percent),
        ] {
            if !(0..=100).contains(&v) {
                return bad(f, format!("must be between 0 and 100, got {v}"));
            }
        }
        if self.image_gc_low_threshold_percent >= self.image_gc_high_threshold_percent {
            return bad(
                "imageGCLowThresholdPercent",
                format!(
                    "must be less than imageGCHighThresholdPercent ({} >= {})",
                    self.image_gc_low_threshold_percent, self.image_gc_high_threshold_percent
                ),
            );
        }
        if !self.image_maximum_gc_age.is_zero() && self.image_maximum_gc_age <= self.image_minimum_gc_age {
            return bad(
                "imageMaximumGCAge",
                format!(
                    "{} must be greater than imageMinimumGCAge {}",
                    knode_config::duration::format(self.image_maximum_gc_age),
                    knode_config::duration::format(self.image_minimum_gc_age)
                ),
            );
        }
        if self.max_pods <= 0 {
            return bad(
                "maxPods",
                format!("must be greater than 0, got {}", self.max_pods),
            );
        }
        if !matches!(self.cgroup_driver.as_str(), "cgroupfs" | "systemd") {
            return bad(
                "cgroupDriver",
                format!(
                    "must be \"cgroupfs\" or \"systemd\", got {:?}",
                    self.cgroup_driver
                ),
            );
        }
        if !matches!(self.authorization.mode.as_str(), "AlwaysAllow" | "Webhook") {
            return bad(
                "authorization.mode",
                format!(
                    "must be \"AlwaysAllow\" or \"Webhook\", got {:?}",
                    self.authorization.mode
                ),
            );
        }
        if self.node_lease_duration_seconds <= 0 {
            return bad(
                "nodeLeaseDurationSeconds",
                format!("must be greater than 0, got {}", self.node_lease_duration_seconds),
            );
        }
        if self.container_log_max_files < 2 {
            return bad(
                "containerLogMaxFiles",
                format!("must be at least 2, got {}", self.container_log_max_files),
            );
        }
        if self.shutdown_grace_period_critical_pods > self.shutdown_grace_period {
            return bad(
                "shutdownGracePeriodCriticalPods",
                "must not be greater than shutdownGracePeriod".to_string(),
            );
        }
        for (i, t) in self.register_with_taints.iter().enumerate() {
            if !matches!(t.effect.as_str(), "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                return bad(
                    &format!("registerWithTaints[{i}].effect"),
                    format!(
                        "must be NoSchedule, PreferNoSchedule or NoExecute, got {:?}",
                        t.effect
                    ),
                );
            }
        }
        if self.container_runtime_endpoint.is_empty() {
            return bad("containerRuntimeEndpoint", "must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<Loaded, ConfigError> {
        KubeletConfiguration::decode(Path::new("/etc/knode/kubelet-config.yaml"), text)
    }

    const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    #[test]
    fn empty_config_gets_upstream_defaults() {
        let c = decode(HEADER).unwrap().config;
        assert_eq!(c, KubeletConfiguration::default());
        assert_eq!(c.port, 10250);
        assert_eq!(c.healthz_port, 10248);
        assert_eq!(c.sync_frequency, Duration::from_secs(60));
        assert_eq!(c.file_check_frequency, Duration::from_secs(20));
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(300));
        assert_eq!(c.node_lease_duration_seconds, 40);
        assert_eq!(c.max_pods, 110);
        assert_eq!(
            (
                c.image_gc_high_threshold_percent,
                c.image_gc_low_threshold_percent
            ),
            (85, 80)
        );
        assert_eq!(c.eviction_hard["memory.available"], "100Mi");
        assert_eq!(c.eviction_hard["nodefs.available"], "10%");
        assert_eq!(c.eviction_hard["imagefs.available"], "15%");
        assert_eq!(c.eviction_hard["nodefs.inodesFree"], "5%");
        assert!(!c.authentication.anonymous.enabled);
        assert!(c.authentication.webhook.enabled);
        assert_eq!(c.authorization.mode, "Webhook");
        assert_eq!(c.container_log_max_size, "10Mi");
        assert_eq!(c.container_log_max_files, 5);
    }

    #[test]
    fn shipped_default_file_decodes() {
        let text = include_str!("../../../systemd/defaults/kubelet-config.yaml");
        let c = decode(text).unwrap().config;
        // Off as upstream: systemd sends the same SIGTERM for a kubelet restart (systemd/README.md).
        assert_eq!(c.shutdown_grace_period, Duration::ZERO);
        assert_eq!(c.static_pod_path, "/etc/kubernetes/manifests");
        assert_eq!(c.authentication.x509.client_ca_file, "/etc/kubernetes/pki/ca.crt");
    }

    #[test]
    fn fields_use_upstream_names() {
        let text = format!(
            "{HEADER}maxPods: 20\nclusterDNS: [10.96.0.10]\nimageGCHighThresholdPercent: 90\n\
             syncFrequency: 30s\nevictionHard:\n  memory.available: 200Mi\ncgroupsPerQOS: false\n\
             authentication:\n  x509:\n    clientCAFile: /ca.crt\n  webhook:\n    cacheTTL: 1m\n"
        );
        let c = decode(&text).unwrap().config;
        assert_eq!(c.max_pods, 20);
        assert_eq!(c.cluster_dns, vec!["10.96.0.10"]);
        assert_eq!(c.image_gc_high_threshold_percent, 90);
        assert_eq!(c.sync_frequency, Duration::from_secs(30));
        assert_eq!(
            c.eviction_hard.get("memory.available").map(String::as_str),
            Some("200Mi")
        );
        assert_eq!(
            c.eviction_hard.len(),
            1,
            "a given evictionHard replaces the defaults, as upstream"
        );
        assert!(!c.cgroups_per_qos);
        assert_eq!(c.authentication.x509.client_ca_file, "/ca.crt");
        assert_eq!(c.authentication.webhook.cache_ttl, Duration::from_secs(60));
        // Round trip through the upstream field names.
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["imageGCHighThresholdPercent"], 90);
        assert_eq!(back["clusterDNS"][0], "10.96.0.10");
        assert_eq!(back["syncFrequency"], "30s");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("maxPods: lots\n", "maxPods"),
            ("maxPods: 0\n", "maxPods"),
            ("maxPod: 3\n", "maxPod"),
            ("syncFrequency: 10\n", "syncFrequency"),
            (
                "authentication:\n  webhook:\n    cacheTTL: forever\n",
                "authentication.webhook.cacheTTL",
            ),
            (
                "authentication:\n  x509:\n    clientCaFile: /x\n",
                "authentication.x509",
            ),
            (
                "imageGCHighThresholdPercent: 120\n",
                "imageGCHighThresholdPercent",
            ),
            ("imageGCLowThresholdPercent: 90\n", "imageGCLowThresholdPercent"),
            ("cgroupDriver: magic\n", "cgroupDriver"),
            ("port: 70000\n", "port"),
            (
                "registerWithTaints:\n- key: a\n  effect: Sometimes\n",
                "registerWithTaints[0].effect",
            ),
        ];
        for (body, field) in cases {
            let err = decode(&format!("{HEADER}{body}")).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, ConfigError::Field { field: f, .. } if f.starts_with(field)),
                "{body:?}: expected field {field}, got {msg}"
            );
            assert!(msg.contains("/etc/knode/kubelet-config.yaml"), "{msg}");
        }
    }

    #[test]
    fn wrong_kind_or_version_or_yaml_is_refused() {
        assert!(
            decode("kind: KubeletConfiguration\n")
                .unwrap_err()
                .to_string()
                .contains("apiVersion")
        );
        let e = decode("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: Pod\n").unwrap_err();
        assert!(e.to_string().contains("field kind"), "{e}");
        assert!(matches!(
            decode("a: [unclosed\n").unwrap_err(),
            ConfigError::Yaml { .. }
        ));
        assert!(matches!(
            decode("- a list\n").unwrap_err(),
            ConfigError::Yaml { .. }
        ));
    }

    #[test]
    fn upstream_fields_not_implemented_are_accepted_and_reported() {
        let l = decode(&format!(
            "{HEADER}failSwapOn: false\nstaticPodURL: http://x\nrotateCertificates: true\nmaxPods: 7\n"
        ))
        .unwrap();
        assert_eq!(l.ignored_fields, vec!["failSwapOn", "staticPodURL"]);
        assert_eq!(l.config.max_pods, 7);
        assert!(l.config.rotate_certificates);
    }
}
