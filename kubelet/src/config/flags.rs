//! The kubelet's command-line flags, with upstream's names. A flag given on the command line
//! overrides the same setting from `--config`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use super::upstream_flags::{self, UpstreamFlag};
use super::{ConfigError, KubeletConfiguration};

/// Upstream kubelet flags that knode implements.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "kubelet",
    version,
    about = "knode kubelet: runs this node's pods through containerd"
)]
pub struct KubeletFlags {
    /// Path to a kubeconfig file for connecting to the API server.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig with a bootstrap token: used to request a client certificate when
    /// `--kubeconfig` does not exist yet (TLS bootstrap); `--kubeconfig` is then written.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the kubelet's certificates are kept (default `<root-dir>/pki`).
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Path to a KubeletConfiguration file (kubelet.config.k8s.io/v1beta1).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Use this name as the node's name instead of the hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// IP address(es) of the node (comma-separated, at most one per family).
    #[arg(long, value_delimiter = ',')]
    pub node_ip: Vec<IpAddr>,
    /// Directory for the kubelet's files (volume mounts, pod sandboxes, plugins).
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// The container runtime's endpoint, e.g. unix:///run/containerd/containerd.sock.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// Directory of static pod manifests.
    #[arg(long)]
    pub pod_manifest_path: Option<String>,
    /// Labels to add when registering the node (key=value,key2=value2).
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Register the node with the API server.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub register_node: Option<bool>,
    /// Maximum number of pods on this node.
    #[arg(long)]
    pub max_pods: Option<i32>,
    /// cgroupfs or systemd.
    #[arg(long)]
    pub cgroup_driver: Option<String>,
    /// Log verbosity (klog's -v).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
    /// Root of the pods' cgroups (upstream's `--cgroup-root`); overrides the file's `cgroupRoot`.
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Create the QoS cgroup hierarchy (`cgroupsPerQOS`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub cgroups_per_qos: Option<bool>,
    /// Resources reserved for the system (`cpu=100m,memory=1Gi,...`; `systemReserved`).
    #[arg(long)]
    pub system_reserved: Option<String>,
    /// Resources reserved for Kubernetes daemons (`kubeReserved`).
    #[arg(long)]
    pub kube_reserved: Option<String>,
    /// Hard eviction thresholds (`memory.available<100Mi,nodefs.available<10%`; `evictionHard`).
    #[arg(long)]
    pub eviction_hard: Option<String>,
    /// Soft eviction thresholds (`evictionSoft`).
    #[arg(long)]
    pub eviction_soft: Option<String>,
    /// Grace periods of the soft thresholds (`memory.available=1m30s`; `evictionSoftGracePeriod`).
    #[arg(long)]
    pub eviction_soft_grace_period: Option<String>,
    /// Maximum number of processes per pod (`podPidsLimit`; -1: unlimited).
    #[arg(long)]
    pub pod_max_pids: Option<i64>,
    /// Comma-separated allowlist of unsafe sysctls or sysctl patterns (ending in `*`) pods may set;
    /// overrides the file's `allowedUnsafeSysctls`.
    #[arg(long, value_delimiter = ',')]
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Minimum age of an unused image before it is garbage collected (`imageMinimumGCAge`).
    #[arg(long, value_parser = knode_config::duration::parse)]
    pub minimum_image_gc_age: Option<std::time::Duration>,
    /// Disk usage percent that starts image garbage collection (`imageGCHighThresholdPercent`).
    #[arg(long)]
    pub image_gc_high_threshold: Option<i32>,
    /// Disk usage percent image garbage collection frees down to (`imageGCLowThresholdPercent`).
    #[arg(long)]
    pub image_gc_low_threshold: Option<i32>,
    /// knode: registries reached over plain HTTP (e.g. a local `127.0.0.1:5000`); repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// knode: CNI network configuration directory (the kubelet runs CNI itself, containerd's CRI
    /// plugin is not used).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// knode: directories searched for CNI plugin binaries.
    #[arg(long, value_delimiter = ',', default_value = "/opt/cni/bin,/usr/lib/cni")]
    pub cni_bin_dir: Vec<PathBuf>,
    /// knode: the containerd namespace the kubelet's containers and images live in.
    #[arg(long, default_value = "k8s.io")]
    pub containerd_namespace: String,
    /// knode: the cluster's pod network (every node's podCIDR, as kube-proxy's `--cluster-cidr`).
    /// The default CNI config the kubelet writes does not masquerade traffic to it, so pods on
    /// other nodes (routed by `knode-hostgw`) see pod source addresses.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// Upstream flags clap does not parse (see [`upstream_flags`]).
    #[arg(skip)]
    pub upstream: Vec<UpstreamFlag>,
}

/// Everything the kubelet runs with: the merged configuration and the flag-only settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: KubeletConfiguration,
    /// Upstream fields found in the file that knode does not act on (logged at start-up).
    pub ignored_fields: Vec<String>,
    pub kubeconfig: Option<PathBuf>,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub node_name: String,
    pub node_ips: Vec<IpAddr>,
    pub root_dir: PathBuf,
    pub node_labels: BTreeMap<String, String>,
    pub verbosity: u8,
    pub insecure_registries: Vec<String>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub containerd_namespace: String,
    pub cluster_cidr: Option<cni::ipnet::Ipv4Net>,
    /// Upstream flags given that have no effect in knode (logged once at start-up).
    pub no_effect_flags: Vec<String>,
}

impl KubeletFlags {
    /// Parses a command line (without the program name) the way upstream's kubelet accepts it:
    /// every upstream flag is accepted, see [`upstream_flags`].
    pub fn parse_upstream(args: &[String]) -> Result<KubeletFlags, clap::Error> {
        let known: Vec<String> = KubeletFlags::command()
            .get_arguments()
            .flat_map(|a| {
                a.get_long()
                    .map(String::from)
                    .into_iter()
                    .chain(a.get_short().map(|c| c.to_string()))
            })
            // clap's own, added when the command is built.
            .chain(["help".to_string(), "version".to_string()])
            .collect();
        let (keep, upstream) = upstream_flags::split_args(args, &known);
        let mut flags = KubeletFlags::try_parse_from(std::iter::once("kubelet".to_string()).chain(keep))?;
        flags.upstream = upstream;
        Ok(flags)
    }

    /// Loads `--config` (if any) and applies the flags over it. `hostname` is the machine's hostname,
    /// the node name unless `--hostname-override` is given.
    pub fn resolve(&self, hostname: &str) -> Result<Settings, ConfigError> {
        let (mut config, ignored_fields) = match &self.config {
            Some(path) => {
                let l = KubeletConfiguration::load(path)?;
                (l.config, l.ignored_fields)
            }
            None => (KubeletConfiguration::default(), Vec::new()),
        };
        let no_effect_flags = upstream_flags::apply(&mut config, &self.upstream)?;
        if let Some(v) = &self.container_runtime_endpoint {
            config.container_runtime_endpoint = v.clone();
        }
        if let Some(v) = &self.pod_manifest_path {
            config.static_pod_path = v.clone();
        }
        if let Some(v) = self.register_node {
            config.register_node = v;
        }
        if let Some(v) = self.max_pods {
            config.max_pods = v;
        }
        if let Some(v) = &self.cgroup_driver {
            config.cgroup_driver = v.clone();
        }
        if let Some(v) = &self.cgroup_root {
            config.cgroup_root = v.clone();
        }
        if !self.allowed_unsafe_sysctls.is_empty() {
            config.allowed_unsafe_sysctls = self
                .allowed_unsafe_sysctls
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = self.cgroups_per_qos {
            config.cgroups_per_qos = v;
        }
        if let Some(v) = self.pod_max_pids {
            config.pod_pids_limit = v;
        }
        if let Some(v) = self.minimum_image_gc_age {
            config.image_minimum_gc_age = v;
        }
        if let Some(v) = self.image_gc_high_threshold {
            config.image_gc_high_threshold_percent = v;
        }
        if let Some(v) = self.image_gc_low_threshold {
            config.image_gc_low_threshold_percent = v;
        }
        let map_flag = |flag: &str, v: &str, sep: char| -> Result<BTreeMap<String, String>, ConfigError> {
            crate::cgroups::parse_map_flag(v, sep).map_err(|e| ConfigError::Flag {
                flag: flag.to_string(),
                message: e.to_string(),
            })
        };
        if let Some(v) = &self.system_reserved {
            config.system_reserved = map_flag("--system-reserved", v, '=')?;
        }
        if let Some(v) = &self.kube_reserved {
            config.kube_reserved = map_flag("--kube-reserved", v, '=')?;
        }
        if let Some(v) = &self.eviction_hard {
            config.eviction_hard = map_flag("--eviction-hard", v, '<')?;
        }
        if let Some(v) = &self.eviction_soft {
            config.eviction_soft = map_flag("--eviction-soft", v, '<')?;
        }
        if let Some(v) = &self.eviction_soft_grace_period {
            config.eviction_soft_grace_period = map_flag("--eviction-soft-grace-period", v, '=')?;
        }
        // Flag values go through the same checks as file values; name the flag on failure.
        config.validate().map_err(|(field, message)| ConfigError::Flag {
            flag: flag_for_field(&field).unwrap_or(&field).to_string(),
            message,
        })?;

        let node_name = self
            .hostname_override
            .clone()
            .unwrap_or_else(|| hostname.to_string())
            .trim()
            .to_lowercase();
        if node_name.is_empty() {
            return Err(ConfigError::Flag {
                flag: "--hostname-override".into(),
                message: "the node name is empty".into(),
            });
        }
        if self.node_ip.iter().filter(|ip| ip.is_ipv4()).count() > 1
            || self.node_ip.iter().filter(|ip| ip.is_ipv6()).count() > 1
        {
            return Err(ConfigError::Flag {
                flag: "--node-ip".into(),
                message: "at most one IPv4 and one IPv6 address".into(),
            });
        }
        let cluster_cidr = match &self.cluster_cidr {
            None => None,
            Some(c) => Some(
                c.parse::<cni::ipnet::Ipv4Net>()
                    .map_err(|e| ConfigError::Flag {
                        flag: "--cluster-cidr".into(),
                        message: e.to_string(),
                    })?
                    .trunc(),
            ),
        };
        let mut node_labels = BTreeMap::new();
        for kv in self.node_labels.iter().filter(|s| !s.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(ConfigError::Flag {
                    flag: "--node-labels".into(),
                    message: format!("{kv:?} is not key=value"),
                });
            };
            if k.is_empty() {
                return Err(ConfigError::Flag {
                    flag: "--node-labels".into(),
                    message: format!("{kv:?} has an empty key"),
                });
            }
            node_labels.insert(k.to_string(), v.to_string());
        }
        Ok(Settings {
            config,
            ignored_fields,
            kubeconfig: self.kubeconfig.clone(),
            bootstrap_kubeconfig: self.bootstrap_kubeconfig.clone(),
            cert_dir: self.cert_dir.clone().unwrap_or_else(|| self.root_dir.join("pki")),
            node_name,
            node_ips: self.node_ip.clone(),
            root_dir: self.root_dir.clone(),
            node_labels,
            verbosity: self.verbosity,
            insecure_registries: self.insecure_registries.clone(),
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_bin_dirs: self.cni_bin_dir.clone(),
            containerd_namespace: self.containerd_namespace.clone(),
            cluster_cidr,
            no_effect_flags,
        })
    }
}

fn flag_for_field(field: &str) -> Option<&'static str> {
    Some(match field {
        "maxPods" => "--max-pods",
        "cgroupDriver" => "--cgroup-driver",
        "containerRuntimeEndpoint" => "--container-runtime-endpoint",
        "imageMinimumGCAge" => "--minimum-image-gc-age",
        "imageGCHighThresholdPercent" => "--image-gc-high-threshold",
        "imageGCLowThresholdPercent" => "--image-gc-low-threshold",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> KubeletFlags {
        KubeletFlags::try_parse_from(std::iter::once("kubelet").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn upstream_flag_spellings_parse() {
        let f = parse(&[
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--hostname-override=Node-1",
            "--node-ip=192.0.2.10",
            "--root-dir=/tmp/kubelet",
            "--container-runtime-endpoint=unix:///tmp/c.sock",
            "--pod-manifest-path=/etc/kubernetes/manifests",
            "--node-labels=rack=r1,zone=z",
            "--register-node=false",
            "--max-pods=30",
            "--cgroup-driver=systemd",
            "--v=4",
        ]);
        let s = f.resolve("ignored").unwrap();
        assert_eq!(s.node_name, "node-1", "node names are lower-cased as upstream");
        assert_eq!(s.node_ips, vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.root_dir, PathBuf::from("/tmp/kubelet"));
        assert_eq!(s.config.container_runtime_endpoint, "unix:///tmp/c.sock");
        assert_eq!(s.config.static_pod_path, "/etc/kubernetes/manifests");
        assert_eq!(s.node_labels.get("rack").map(String::as_str), Some("r1"));
        assert_eq!(s.node_labels.get("zone").map(String::as_str), Some("z"));
        assert!(!s.config.register_node);
        assert_eq!(s.config.max_pods, 30);
        assert_eq!(s.config.cgroup_driver, "systemd");
        assert_eq!(s.verbosity, 4);
        assert_eq!(parse(&["-v", "2"]).verbosity, 2);
        assert_eq!(parse(&["--register-node"]).register_node, Some(true));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 50\ncgroupDriver: systemd\n",
        )
        .unwrap();
        let s = parse(&["--config", path.to_str().unwrap(), "--max-pods=12"])
            .resolve("h")
            .unwrap();
        assert_eq!(s.config.max_pods, 12, "flag wins");
        assert_eq!(
            s.config.cgroup_driver, "systemd",
            "file value kept where no flag is given"
        );
        assert_eq!(s.node_name, "h");
    }

    #[test]
    fn bad_flags_and_files_are_named() {
        let e = parse(&["--max-pods=0"]).resolve("h").unwrap_err().to_string();
        assert!(e.contains("--max-pods"), "{e}");
        let e = parse(&["--node-labels=novalue"])
            .resolve("h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--node-labels"), "{e}");
        let e = parse(&["--node-ip=192.0.2.1,192.0.2.2"])
            .resolve("h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--node-ip"), "{e}");
        let e = parse(&["--config=/nonexistent/k.yaml"])
            .resolve("h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/k.yaml"), "{e}");
        assert!(KubeletFlags::try_parse_from(["kubelet", "--max-pods=many"]).is_err());
        assert!(KubeletFlags::try_parse_from(["kubelet", "--node-ip=not-an-ip"]).is_err());
    }
}
