//! Every flag of upstream's kubelet (v1.37: `cmd/kubelet/app/options`, the logging and version flags,
//! cadvisor's `--housekeeping-interval`), so the command lines kubeadm's drop-in and upstream's test
//! launchers write start knode too. Flags knode implements are parsed by clap in `flags.rs`; the
//! others are taken out of the command line here. A flag whose setting is a KubeletConfiguration
//! field knode implements acts through that field (flags override the file, as upstream); the rest
//! are reported once at start-up as having no effect. A flag upstream does not have is still an
//! error.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{ConfigError, KubeletConfiguration};

/// Whether an upstream flag takes a value (`--name value` / `--name=value`) or is a boolean
/// (`--name` / `--name=false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Bool,
    Val,
}
use Arity::{Bool, Val};

/// Upstream kubelet flags (long names) and their arity.
pub const UPSTREAM_FLAGS: &[(&str, Arity)] = &[
    ("address", Val),
    ("allowed-unsafe-sysctls", Val),
    ("anonymous-auth", Bool),
    ("authentication-token-webhook", Bool),
    ("authentication-token-webhook-cache-ttl", Val),
    ("authorization-mode", Val),
    ("authorization-webhook-cache-authorized-ttl", Val),
    ("authorization-webhook-cache-unauthorized-ttl", Val),
    ("bootstrap-kubeconfig", Val),
    ("cert-dir", Val),
    ("cgroup-driver", Val),
    ("cgroup-root", Val),
    ("cgroups-per-qos", Bool),
    ("client-ca-file", Val),
    ("cloud-provider", Val),
    ("cluster-dns", Val),
    ("cluster-domain", Val),
    ("config", Val),
    ("config-dir", Val),
    ("container-log-max-files", Val),
    ("container-log-max-size", Val),
    ("container-runtime-endpoint", Val),
    ("contention-profiling", Bool),
    ("cpu-cfs-quota", Bool),
    ("cpu-cfs-quota-period", Val),
    ("cpu-manager-policy", Val),
    ("cpu-manager-policy-options", Val),
    ("cpu-manager-reconcile-period", Val),
    ("enable-controller-attach-detach", Bool),
    ("enable-debugging-handlers", Bool),
    ("enable-server", Bool),
    ("enforce-node-allocatable", Val),
    ("event-burst", Val),
    ("event-qps", Val),
    ("eviction-hard", Val),
    ("eviction-max-pod-grace-period", Val),
    ("eviction-minimum-reclaim", Val),
    ("eviction-pressure-transition-period", Val),
    ("eviction-soft", Val),
    ("eviction-soft-grace-period", Val),
    ("exit-on-lock-contention", Bool),
    ("experimental-allocatable-ignore-eviction", Bool),
    ("experimental-mounter-path", Val),
    ("fail-cgroupv1", Bool),
    ("fail-swap-on", Bool),
    ("feature-gates", Val),
    ("file-check-frequency", Val),
    ("hairpin-mode", Val),
    ("healthz-bind-address", Val),
    ("healthz-port", Val),
    ("help", Bool),
    ("hostname-override", Val),
    ("housekeeping-interval", Val),
    ("http-check-frequency", Val),
    ("image-credential-provider-bin-dir", Val),
    ("image-credential-provider-config", Val),
    ("image-gc-high-threshold", Val),
    ("image-gc-low-threshold", Val),
    ("image-service-endpoint", Val),
    ("kernel-memcg-notification", Bool),
    ("kube-api-burst", Val),
    ("kube-api-content-type", Val),
    ("kube-api-qps", Val),
    ("kube-reserved", Val),
    ("kube-reserved-cgroup", Val),
    ("kubeconfig", Val),
    ("kubelet-cgroups", Val),
    ("local-storage-capacity-isolation", Bool),
    ("lock-file", Val),
    ("log-flush-frequency", Val),
    ("log-json-info-buffer-size", Val),
    ("log-json-split-stream", Bool),
    ("log-text-info-buffer-size", Val),
    ("log-text-split-stream", Bool),
    ("logging-format", Val),
    ("make-iptables-util-chains", Bool),
    ("manifest-url", Val),
    ("manifest-url-header", Val),
    ("max-open-files", Val),
    ("max-pods", Val),
    ("maximum-dead-containers", Val),
    ("maximum-dead-containers-per-container", Val),
    ("memory-manager-policy", Val),
    ("minimum-container-ttl-duration", Val),
    ("minimum-image-ttl-duration", Val),
    ("node-ip", Val),
    ("node-labels", Val),
    ("node-status-max-images", Val),
    ("node-status-update-frequency", Val),
    ("oom-score-adj", Val),
    ("pod-cidr", Val),
    ("pod-manifest-path", Val),
    ("pod-max-pids", Val),
    ("pods-per-core", Val),
    ("port", Val),
    ("protect-kernel-defaults", Bool),
    ("provider-id", Val),
    ("qos-reserved", Val),
    ("read-only-port", Val),
    ("register-node", Bool),
    ("register-with-taints", Val),
    ("registry-burst", Val),
    ("registry-qps", Val),
    ("reserved-cpus", Val),
    ("reserved-memory", Val),
    ("resolv-conf", Val),
    ("root-dir", Val),
    ("rotate-certificates", Bool),
    ("rotate-server-certificates", Bool),
    ("runonce", Bool),
    ("runtime-cgroups", Val),
    ("runtime-request-timeout", Val),
    ("seccomp-default", Bool),
    ("serialize-image-pulls", Bool),
    ("streaming-connection-idle-timeout", Val),
    ("sync-frequency", Val),
    ("system-cgroups", Val),
    ("system-reserved", Val),
    ("system-reserved-cgroup", Val),
    ("tls-cert-file", Val),
    ("tls-cipher-suites", Val),
    ("tls-min-version", Val),
    ("tls-private-key-file", Val),
    ("topology-manager-policy", Val),
    ("topology-manager-policy-options", Val),
    ("topology-manager-scope", Val),
    ("v", Val),
    ("version", Bool),
    ("vmodule", Val),
    ("volume-plugin-dir", Val),
    ("volume-stats-agg-period", Val),
    ("windows-priorityclass", Val),
    ("windows-service", Bool),
];

/// Flags whose KubeletConfiguration field is not the camel-cased flag name.
const FIELD_OF_FLAG: &[(&str, &str)] = &[
    ("anonymous-auth", "authentication.anonymous.enabled"),
    ("authentication-token-webhook", "authentication.webhook.enabled"),
    (
        "authentication-token-webhook-cache-ttl",
        "authentication.webhook.cacheTTL",
    ),
    ("authorization-mode", "authorization.mode"),
    (
        "authorization-webhook-cache-authorized-ttl",
        "authorization.webhook.cacheAuthorizedTTL",
    ),
    (
        "authorization-webhook-cache-unauthorized-ttl",
        "authorization.webhook.cacheUnauthorizedTTL",
    ),
    ("cgroups-per-qos", "cgroupsPerQOS"),
    ("client-ca-file", "authentication.x509.clientCAFile"),
    ("cluster-dns", "clusterDNS"),
    ("cpu-cfs-quota", "cpuCFSQuota"),
    ("cpu-cfs-quota-period", "cpuCFSQuotaPeriod"),
    ("event-qps", "eventRecordQPS"),
    ("image-gc-high-threshold", "imageGCHighThresholdPercent"),
    ("image-gc-low-threshold", "imageGCLowThresholdPercent"),
    ("kube-api-burst", "kubeAPIBurst"),
    ("kube-api-content-type", "contentType"),
    ("kube-api-qps", "kubeAPIQPS"),
    ("manifest-url", "staticPodURL"),
    ("minimum-image-ttl-duration", "imageMinimumGCAge"),
    ("pod-cidr", "podCIDR"),
    ("pod-manifest-path", "staticPodPath"),
    ("pod-max-pids", "podPidsLimit"),
    ("provider-id", "providerID"),
    ("registry-qps", "registryPullQPS"),
    ("reserved-cpus", "reservedSystemCPUs"),
    ("rotate-server-certificates", "serverTLSBootstrap"),
    ("tls-cert-file", "tlsCertFile"),
    ("tls-private-key-file", "tlsPrivateKeyFile"),
];

/// A flag taken out of the command line: `--name` with its value as given (`true` for a bare
/// boolean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFlag {
    pub name: String,
    pub value: String,
}

fn arity(name: &str) -> Option<Arity> {
    UPSTREAM_FLAGS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// Splits `args` (without the program name) into what clap parses — the flags in `clap_known` and
/// anything upstream does not know, so clap reports it — and the remaining upstream flags.
pub fn split_args(args: &[String], clap_known: &[String]) -> (Vec<String>, Vec<UpstreamFlag>) {
    let mut keep = Vec::new();
    let mut taken = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let body = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        let Some(body) = body.filter(|b| !b.is_empty()) else {
            keep.push(a.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        // Upstream normalises underscores to dashes (`--log_flush_frequency`).
        let name = name.replace('_', "-");
        let known_to_clap = clap_known.contains(&name);
        match arity(&name) {
            Some(ar) if !known_to_clap => {
                let value = match (inline, ar) {
                    (Some(v), _) => v,
                    (None, Bool) => "true".into(),
                    (None, Val) => it.next().cloned().unwrap_or_default(),
                };
                taken.push(UpstreamFlag { name, value });
            }
            _ => keep.push(a.clone()),
        }
    }
    (keep, taken)
}

/// The KubeletConfiguration field (dotted path) an upstream flag sets.
pub fn field_of(flag: &str) -> String {
    if let Some((_, f)) = FIELD_OF_FLAG.iter().find(|(n, _)| *n == flag) {
        return f.to_string();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in flag.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Applies the upstream flags whose field knode implements to `config` (typed by the field's
/// current JSON type: bool, number, string, list `a,b`, map `k=v,k2=v2` — `k<v` for eviction
/// thresholds). Returns the flags that have no effect in knode.
pub fn apply(config: &mut KubeletConfiguration, flags: &[UpstreamFlag]) -> Result<Vec<String>, ConfigError> {
    let bad = |flag: &str, message: String| ConfigError::Flag {
        flag: format!("--{flag}"),
        message,
    };
    let mut json = serde_json::to_value(&*config).map_err(|e| bad("config", e.to_string()))?;
    let mut no_effect = Vec::new();
    for f in flags {
        let field = field_of(&f.name);
        let Some(slot) = field.split('.').try_fold(&mut json, |v, k| v.get_mut(k)) else {
            no_effect.push(format!("--{}", f.name));
            continue;
        };
        *slot = match f.name.as_str() {
            // Merged over the file's gates, as upstream's flag precedence does.
            "feature-gates" => feature_gates(slot, &f.value),
            "register-with-taints" => taints(&f.value),
            _ => typed_value(slot, &f.name, &f.value),
        }
        .map_err(|m| bad(&f.name, m))?;
        // Check each flag on its own so a wrong value names its flag.
        serde_json::from_value::<KubeletConfiguration>(json.clone())
            .map_err(|e| bad(&f.name, e.to_string()))?;
    }
    *config = serde_json::from_value(json).map_err(|e| bad("config", e.to_string()))?;
    Ok(no_effect)
}

/// `A=true,B=false` over the gates already set.
fn feature_gates(current: &Value, raw: &str) -> Result<Value, String> {
    let mut gates = current.as_object().cloned().unwrap_or_default();
    for kv in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?} is not Gate=true|false"))?;
        let on = parse_bool(v.trim()).ok_or_else(|| format!("{kv:?}: {v:?} is not a boolean"))?;
        gates.insert(k.trim().to_string(), Value::Bool(on));
    }
    Ok(Value::Object(gates))
}

/// `key[=value]:Effect,…` as upstream's `--register-with-taints`.
fn taints(raw: &str) -> Result<Value, String> {
    let mut out = Vec::new();
    for t in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kv, effect) = t
            .rsplit_once(':')
            .ok_or_else(|| format!("{t:?} is not key[=value]:effect"))?;
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        let mut taint = serde_json::json!({"key": key, "effect": effect});
        if !value.is_empty() {
            taint["value"] = Value::from(value);
        }
        out.push(taint);
    }
    Ok(Value::Array(out))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn typed_value(current: &Value, flag: &str, raw: &str) -> Result<Value, String> {
    let list = || -> Vec<String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    Ok(match current {
        Value::Bool(_) => {
            Value::Bool(parse_bool(raw).ok_or_else(|| format!("{raw:?} is not a boolean (true or false)"))?)
        }
        Value::Number(_) => {
            let n: i64 = raw.parse().map_err(|_| format!("{raw:?} is not an integer"))?;
            Value::from(n)
        }
        Value::Array(_) => Value::from(list()),
        Value::Object(_) => {
            let sep = if matches!(flag, "eviction-hard" | "eviction-soft") {
                '<'
            } else {
                '='
            };
            let mut m = BTreeMap::new();
            for kv in list() {
                let (k, v) = kv
                    .split_once(sep)
                    .ok_or_else(|| format!("{kv:?} is not key{sep}value"))?;
                m.insert(k.trim().to_string(), v.trim().to_string());
            }
            serde_json::to_value(m).map_err(|e| e.to_string())?
        }
        _ => Value::from(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn upstream_flags_are_split_off_and_unknown_ones_left_for_clap() {
        let known = args(&["kubeconfig", "v"]);
        let (keep, taken) = split_args(
            &args(&[
                "--kubeconfig=/k",
                "--fail-swap-on=false",
                "--cluster-domain",
                "cluster.local",
                "--read-only-port=0",
                "--enable-server",
                "--v=2",
                "--no-such-flag=1",
                "--log_flush_frequency=5s",
            ]),
            &known,
        );
        assert_eq!(keep, args(&["--kubeconfig=/k", "--v=2", "--no-such-flag=1"]));
        let names: Vec<&str> = taken.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fail-swap-on",
                "cluster-domain",
                "read-only-port",
                "enable-server",
                "log-flush-frequency"
            ]
        );
        assert_eq!(taken[1].value, "cluster.local");
        assert_eq!(taken[3].value, "true");
    }

    #[test]
    fn flags_act_through_config_fields_and_the_rest_have_no_effect() {
        let mut c = KubeletConfiguration::default();
        let f = |n: &str, v: &str| UpstreamFlag {
            name: n.into(),
            value: v.into(),
        };
        let no_effect = apply(
            &mut c,
            &[
                f("cluster-dns", "10.96.0.10,fd00::a"),
                f("cluster-domain", "cluster.local"),
                f("node-status-update-frequency", "4s"),
                f("client-ca-file", "/pki/ca.crt"),
                f("anonymous-auth", "false"),
                f("eviction-hard", "memory.available<100Mi,nodefs.available<10%"),
                f("read-only-port", "0"),
                f("fail-swap-on", "false"),
                f("kube-api-qps", "50"),
            ],
        )
        .unwrap();
        assert_eq!(c.cluster_dns, ["10.96.0.10", "fd00::a"]);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(c.node_status_update_frequency, std::time::Duration::from_secs(4));
        assert_eq!(c.authentication.x509.client_ca_file, "/pki/ca.crt");
        assert!(!c.authentication.anonymous.enabled);
        assert_eq!(c.eviction_hard["nodefs.available"], "10%");
        assert_eq!(no_effect, ["--fail-swap-on", "--kube-api-qps"]);
        let mut c = KubeletConfiguration::default();
        c.feature_gates.insert("FromFile".into(), true);
        apply(
            &mut c,
            &[
                f("feature-gates", "A=true,B=False"),
                f(
                    "register-with-taints",
                    "dedicated=infra:NoSchedule,edge:NoExecute",
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.feature_gates.len(), 3, "merged: {:?}", c.feature_gates);
        assert!(!c.feature_gates["B"]);
        assert_eq!(c.register_with_taints.len(), 2);
        let e = apply(&mut c, &[f("max-pods", "many")]).unwrap_err().to_string();
        assert_eq!(e, "flag --max-pods: \"many\" is not an integer");
        let e = apply(&mut c, &[f("sync-frequency", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("flag --sync-frequency: "), "{e}");
    }

    #[test]
    fn the_table_is_sorted_without_duplicates() {
        assert!(UPSTREAM_FLAGS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(UPSTREAM_FLAGS.len() > 120);
    }
}
