//! kube-proxy configuration: upstream's flags and the `KubeProxyConfiguration` file
//! (kubeproxy.config.k8s.io/v1alpha1) with upstream field names and defaults. Flags override the file.
//!
//! knode implements the nftables mode only: `mode` may be empty (meaning nftables here) or "nftables";
//! any other mode fails start-up with a message saying so.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use knode_config::go_duration;
pub use knode_config::{ConfigError, duration};
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

/// The fields of upstream's KubeProxyConfiguration that knode implements, with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeProxyConfiguration {
    pub api_version: String,
    pub kind: String,
    pub feature_gates: BTreeMap<String, bool>,
    pub client_connection: ClientConnection,
    pub hostname_override: String,
    pub bind_address: String,
    pub healthz_bind_address: String,
    pub metrics_bind_address: String,
    pub bind_address_hard_fail: bool,
    pub mode: String,
    pub nftables: NftablesConfiguration,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    pub node_port_addresses: Vec<String>,
    pub oom_score_adj: Option<i32>,
    pub conntrack: ConntrackConfiguration,
    #[serde(with = "go_duration")]
    pub config_sync_period: Duration,
}

/// `clientConnection`: how to reach the API server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClientConnection {
    pub kubeconfig: String,
    pub accept_content_types: String,
    pub content_type: String,
    pub qps: f32,
    pub burst: i32,
}

/// `nftables`: the mode's own settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NftablesConfiguration {
    pub masquerade_bit: i32,
    pub masquerade_all: bool,
    #[serde(with = "go_duration")]
    pub sync_period: Duration,
    #[serde(with = "go_duration")]
    pub min_sync_period: Duration,
}

/// `conntrack`: conntrack table settings (knode reads them; the sysctls are the node's business).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConntrackConfiguration {
    pub max_per_core: Option<i32>,
    pub min: Option<i32>,
    #[serde(with = "go_duration")]
    pub tcp_established_timeout: Duration,
    #[serde(with = "go_duration")]
    pub tcp_close_wait_timeout: Duration,
    pub tcp_be_liberal: bool,
    #[serde(with = "go_duration")]
    pub udp_timeout: Duration,
    #[serde(with = "go_duration")]
    pub udp_stream_timeout: Duration,
}

impl Default for ClientConnection {
    fn default() -> Self {
        ClientConnection {
            kubeconfig: String::new(),
            accept_content_types: String::new(),
            content_type: "application/vnd.kubernetes.protobuf".into(),
            qps: 5.0,
            burst: 10,
        }
    }
}

impl Default for NftablesConfiguration {
    fn default() -> Self {
        NftablesConfiguration {
            masquerade_bit: 14,
            masquerade_all: false,
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
        }
    }
}

impl Default for ConntrackConfiguration {
    fn default() -> Self {
        ConntrackConfiguration {
            max_per_core: Some(32768),
            min: Some(131072),
            tcp_established_timeout: Duration::from_secs(24 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }
}

impl Default for KubeProxyConfiguration {
    /// Upstream's v1alpha1 defaults (pkg/proxy/apis/config/v1alpha1/defaults.go).
    fn default() -> Self {
        KubeProxyConfiguration {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            feature_gates: BTreeMap::new(),
            client_connection: ClientConnection::default(),
            hostname_override: String::new(),
            bind_address: "0.0.0.0".into(),
            healthz_bind_address: "0.0.0.0:10256".into(),
            metrics_bind_address: "127.0.0.1:10249".into(),
            bind_address_hard_fail: false,
            mode: String::new(),
            nftables: NftablesConfiguration::default(),
            cluster_cidr: String::new(),
            node_port_addresses: Vec::new(),
            oom_score_adj: Some(-999),
            conntrack: ConntrackConfiguration::default(),
            config_sync_period: Duration::from_secs(15 * 60),
        }
    }
}

/// Upstream fields accepted without effect: the other modes' sections and operational knobs.
const UPSTREAM_NOT_IMPLEMENTED: &[&str] = &[
    "detectLocal",
    "detectLocalMode",
    "enableProfiling",
    "iptables",
    "ipvs",
    "linux",
    "logging",
    "portRange",
    "showHiddenMetricsForVersion",
    "windowsRunAsService",
    "winkernel",
    "windows",
];

const SCHEMA: knode_config::Schema = knode_config::Schema {
    api_version: API_VERSION,
    kind: KIND,
    upstream_not_implemented: UPSTREAM_NOT_IMPLEMENTED,
};

/// A parsed CIDR (address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (want addr/prefix)"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: bad address {a:?}"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("{s:?}: bad prefix length {p:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s:?}: prefix length {prefix} > {max}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// Parses `clusterCIDR` / `--cluster-cidr`: empty, or comma-separated CIDRs (one per family).
pub fn parse_cidr_list(s: &str) -> Result<Vec<Cidr>, String> {
    let cidrs: Vec<Cidr> = s
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if cidrs.iter().filter(|c| c.addr.is_ipv4()).count() > 1
        || cidrs.iter().filter(|c| c.addr.is_ipv6()).count() > 1
    {
        return Err("at most one CIDR per IP family".into());
    }
    Ok(cidrs)
}

impl KubeProxyConfiguration {
    /// Reads, decodes and validates a KubeProxyConfiguration file.
    pub fn load(path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let d: knode_config::Decoded<Self> = knode_config::load(path, &SCHEMA)?;
        d.value
            .validate()
            .map_err(|(field, message)| ConfigError::Field {
                path: path.to_path_buf(),
                field,
                message,
            })?;
        Ok((d.value, d.ignored_fields))
    }

    /// Upstream's validation for the fields knode implements: (field path, message) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_string(), m));
        if !matches!(self.mode.as_str(), "" | "nftables") {
            return bad(
                "mode",
                format!(
                    "knode implements only the \"nftables\" proxy mode, got {:?}",
                    self.mode
                ),
            );
        }
        if !(0..=31).contains(&self.nftables.masquerade_bit) {
            return bad(
                "nftables.masqueradeBit",
                format!("must be between 0 and 31, got {}", self.nftables.masquerade_bit),
            );
        }
        if self.nftables.sync_period.is_zero() {
            return bad("nftables.syncPeriod", "must be greater than 0".into());
        }
        if self.nftables.min_sync_period > self.nftables.sync_period {
            return bad(
                "nftables.minSyncPeriod",
                "must not be greater than nftables.syncPeriod".into(),
            );
        }
        if let Err(e) = parse_cidr_list(&self.cluster_cidr) {
            return bad("clusterCIDR", e);
        }
        for (i, a) in self.node_port_addresses.iter().enumerate() {
            if a != "primary" && a.parse::<Cidr>().is_err() {
                return bad(
                    &format!("nodePortAddresses[{i}]"),
                    format!("{a:?} must be a CIDR or \"primary\""),
                );
            }
        }
        for (f, v) in [
            ("healthzBindAddress", &self.healthz_bind_address),
            ("metricsBindAddress", &self.metrics_bind_address),
        ] {
            if !v.is_empty() && v.parse::<SocketAddr>().is_err() {
                return bad(f, format!("{v:?} must be IP:port"));
            }
        }
        if self.bind_address.parse::<IpAddr>().is_err() {
            return bad(
                "bindAddress",
                format!("{:?} is not an IP address", self.bind_address),
            );
        }
        Ok(())
    }
}

/// Upstream kube-proxy flags that knode implements.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "kube-proxy",
    version,
    about = "knode kube-proxy: Service load balancing with nftables"
)]
pub struct ProxyFlags {
    /// Path to a kubeconfig file for connecting to the API server.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Path to a KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Use this name as the node's name instead of the hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The cluster's pod CIDR(s): traffic from outside them to a ClusterIP is masqueraded.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// CIDRs (or "primary") of the node addresses NodePorts answer on.
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Vec<String>,
    /// Proxy mode: only "nftables" here.
    #[arg(long)]
    pub proxy_mode: Option<String>,
    /// Masquerade all traffic sent to Service IPs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub masquerade_all: Option<bool>,
    /// IP:port of the health check server.
    #[arg(long)]
    pub healthz_bind_address: Option<String>,
    /// IP:port of the metrics server.
    #[arg(long)]
    pub metrics_bind_address: Option<String>,
    /// Minimum interval between rule syncs (Go duration, e.g. 1s).
    #[arg(long)]
    pub min_sync_period: Option<String>,
    /// Interval of full rule resyncs (Go duration, e.g. 30s).
    #[arg(long)]
    pub sync_period: Option<String>,
    /// Remove kube-proxy's nftables table and exit (upstream `--cleanup`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub cleanup: Option<bool>,
    /// Log verbosity (klog's -v).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

/// The merged configuration kube-proxy runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: KubeProxyConfiguration,
    pub ignored_fields: Vec<String>,
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub cluster_cidrs: Vec<Cidr>,
    pub verbosity: u8,
}

impl ProxyFlags {
    /// Loads `--config` (if any) and applies the flags over it.
    pub fn resolve(&self, hostname: &str) -> Result<Settings, ConfigError> {
        let (mut c, ignored_fields) = match &self.config {
            Some(p) => KubeProxyConfiguration::load(p)?,
            None => (KubeProxyConfiguration::default(), Vec::new()),
        };
        let flag_err = |flag: &str, message: String| ConfigError::Flag {
            flag: flag.into(),
            message,
        };
        if let Some(v) = &self.hostname_override {
            c.hostname_override = v.clone();
        }
        if let Some(v) = &self.cluster_cidr {
            c.cluster_cidr = v.clone();
        }
        if !self.nodeport_addresses.is_empty() {
            c.node_port_addresses = self.nodeport_addresses.clone();
        }
        if let Some(v) = &self.proxy_mode {
            c.mode = v.clone();
        }
        if let Some(v) = self.masquerade_all {
            c.nftables.masquerade_all = v;
        }
        if let Some(v) = &self.healthz_bind_address {
            c.healthz_bind_address = v.clone();
        }
        if let Some(v) = &self.metrics_bind_address {
            c.metrics_bind_address = v.clone();
        }
        if let Some(v) = &self.min_sync_period {
            c.nftables.min_sync_period =
                duration::parse(v).map_err(|e| flag_err("--min-sync-period", e.to_string()))?;
        }
        if let Some(v) = &self.sync_period {
            c.nftables.sync_period =
                duration::parse(v).map_err(|e| flag_err("--sync-period", e.to_string()))?;
        }
        let kubeconfig = self.kubeconfig.clone().or_else(|| {
            (!c.client_connection.kubeconfig.is_empty())
                .then(|| PathBuf::from(&c.client_connection.kubeconfig))
        });
        c.validate()
            .map_err(|(field, message)| match flag_for_field(&field) {
                Some(flag) => flag_err(flag, message),
                None => flag_err(&field, message),
            })?;
        let cluster_cidrs = parse_cidr_list(&c.cluster_cidr).map_err(|e| flag_err("--cluster-cidr", e))?;
        let node_name = if c.hostname_override.is_empty() {
            hostname
        } else {
            &c.hostname_override
        }
        .trim()
        .to_lowercase();
        if node_name.is_empty() {
            return Err(flag_err("--hostname-override", "the node name is empty".into()));
        }
        Ok(Settings {
            config: c,
            ignored_fields,
            kubeconfig,
            node_name,
            cluster_cidrs,
            verbosity: self.verbosity,
        })
    }
}

fn flag_for_field(field: &str) -> Option<&'static str> {
    Some(match field {
        "mode" => "--proxy-mode",
        "clusterCIDR" => "--cluster-cidr",
        "healthzBindAddress" => "--healthz-bind-address",
        "metricsBindAddress" => "--metrics-bind-address",
        "nftables.syncPeriod" => "--sync-period",
        "nftables.minSyncPeriod" => "--min-sync-period",
        f if f.starts_with("nodePortAddresses") => "--nodeport-addresses",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Result<KubeProxyConfiguration, ConfigError> {
        let text = format!("apiVersion: {API_VERSION}\nkind: {KIND}\n{body}");
        let d: knode_config::Decoded<KubeProxyConfiguration> =
            knode_config::decode(Path::new("/etc/knode/kube-proxy-config.yaml"), &text, &SCHEMA)?;
        d.value
            .validate()
            .map_err(|(field, message)| ConfigError::Field {
                path: "/etc/knode/kube-proxy-config.yaml".into(),
                field,
                message,
            })?;
        Ok(d.value)
    }

    fn flags(args: &[&str]) -> ProxyFlags {
        ProxyFlags::try_parse_from(std::iter::once("kube-proxy").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_upstreams() {
        let c = decode("").unwrap();
        assert_eq!(c, KubeProxyConfiguration::default());
        assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
        assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
        assert_eq!(c.nftables.masquerade_bit, 14);
        assert_eq!(c.nftables.sync_period, Duration::from_secs(30));
        assert_eq!(c.nftables.min_sync_period, Duration::from_secs(1));
        assert_eq!(c.conntrack.tcp_established_timeout, Duration::from_secs(86400));
    }

    #[test]
    fn shipped_default_file_decodes() {
        let text = include_str!("../../systemd/defaults/kube-proxy-config.yaml");
        let d: knode_config::Decoded<KubeProxyConfiguration> =
            knode_config::decode(Path::new("/x"), text, &SCHEMA).unwrap();
        d.value.validate().unwrap();
        assert_eq!(d.value.mode, "nftables");
        assert_eq!(d.value.cluster_cidr, "10.244.0.0/16");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (body, field) in [
            ("mode: iptables\n", "mode"),
            ("nftables:\n  masqueradeBit: 40\n", "nftables.masqueradeBit"),
            (
                "nftables:\n  syncPeriod: 1s\n  minSyncPeriod: 5s\n",
                "nftables.minSyncPeriod",
            ),
            ("clusterCIDR: 10.244.0.0\n", "clusterCIDR"),
            ("clusterCIDR: 10.244.0.0/16,10.245.0.0/16\n", "clusterCIDR"),
            ("nodePortAddresses: [\"10.0.0.0/33\"]\n", "nodePortAddresses[0]"),
            ("healthzBindAddress: nowhere\n", "healthzBindAddress"),
            ("nftables:\n  syncPeriod: often\n", "nftables.syncPeriod"),
            ("clusterCidr: 10.0.0.0/8\n", "clusterCidr"),
        ] {
            let err = decode(body).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Field { field: f, .. } if f == field),
                "{body:?}: expected {field}, got {err}"
            );
        }
        assert!(
            decode("iptables:\n  masqueradeBit: 14\n").is_ok(),
            "other modes' sections are tolerated"
        );
    }

    #[test]
    fn flags_override_file_and_are_named_when_bad() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kp.yaml");
        std::fs::write(&p, format!("apiVersion: {API_VERSION}\nkind: {KIND}\nclusterCIDR: 10.244.0.0/16\nclientConnection:\n  kubeconfig: /etc/kubernetes/kube-proxy.conf\n")).unwrap();
        let s = flags(&[
            "--config",
            p.to_str().unwrap(),
            "--sync-period=10s",
            "--masquerade-all",
            "--hostname-override=N1",
        ])
        .resolve("host")
        .unwrap();
        assert_eq!(s.config.nftables.sync_period, Duration::from_secs(10));
        assert!(s.config.nftables.masquerade_all);
        assert_eq!(s.node_name, "n1");
        assert_eq!(
            s.kubeconfig,
            Some(PathBuf::from("/etc/kubernetes/kube-proxy.conf"))
        );
        assert_eq!(s.cluster_cidrs, vec!["10.244.0.0/16".parse::<Cidr>().unwrap()]);
        assert_eq!(flags(&["--cleanup"]).cleanup, Some(true));
        assert_eq!(flags(&["--cleanup=false"]).cleanup, Some(false));
        assert_eq!(flags(&[]).cleanup, None);
        let e = flags(&["--proxy-mode=ipvs"])
            .resolve("h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--proxy-mode") && e.contains("nftables"), "{e}");
        let e = flags(&["--min-sync-period=soon"])
            .resolve("h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--min-sync-period"), "{e}");
        let e = flags(&["--cluster-cidr=10.0.0.0/99"])
            .resolve("h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cluster-cidr"), "{e}");
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert_eq!("fd00::/64".parse::<Cidr>().unwrap().prefix, 64);
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert_eq!(parse_cidr_list("10.244.0.0/16, fd00::/48").unwrap().len(), 2);
        assert_eq!(parse_cidr_list("").unwrap(), vec![]);
    }
}
