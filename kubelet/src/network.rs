//! Pod networking: the kubelet runs CNI itself (knode has no CRI plugin in between).
//!
//! - Readiness, as upstream reports it through the runtime's `NetworkReady` condition: the network is
//!   ready once `--cni-conf-dir` holds a valid config (the lexicographically first `.conflist`/`.conf`
//!   that parses, as libcni picks it). Until then the node's Ready condition is False with
//!   [`NETWORK_NOT_READY`], and pods that need the network wait (hostNetwork pods still run).
//! - The default network, kubenet-like: when the conf dir holds no config file at all, the kubelet
//!   writes [`DEFAULT_CONFLIST`] (knode-bridge on bridge `knode0`, host-local-compatible IPAM over the
//!   node's `spec.podCIDR`, masquerade on) as soon as the control plane has allocated the pod CIDR.
//!   A conf dir with files that do not parse is left alone (someone else's config): not ready.
//! - A `--cni-conf-dir` that does not exist turns pod networking off for this node (pods get a
//!   network namespace with loopback only, the node is network-ready), as upstream's no-op network
//!   plugin did. Create the directory to get the default network.
//! - ADD/DEL for a sandbox: the config and result are cached in the sandbox's directory (like
//!   libcni's result cache), so DEL uses the config the ADD used even if the conf dir changed, and a
//!   kubelet killed mid-ADD leaves enough for the next DEL to clean up.
//! - `net.ipv4.ip_forward` is turned on when pod networking is on ([`enable_ip_forward`]).
//!
//! [`decide`] and [`default_conflist`] are pure; [`PodNetwork`] does the file and plugin I/O.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cni::ipnet::Ipv4Net;
use cni::types::{NetConfList, PluginResult};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde::{Deserialize, Serialize};

/// The network error the runtime reports while no CNI config is loaded, as upstream's kubelet shows
/// it in the node's Ready condition (containerd's `NetworkPluginNotReady`).
pub const NETWORK_NOT_READY: &str = "container runtime network not ready: NetworkReady=false \
     reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

/// Upstream's prefix for a pod that cannot start because the network is not ready
/// (`NetworkNotReadyErrorMsg`); the event reason is [`NETWORK_NOT_READY_REASON`].
pub const NETWORK_NOT_READY_POD: &str = "network is not ready";

/// Upstream's event reason for a pod held back by a not-ready network (`events.NetworkNotReady`).
pub const NETWORK_NOT_READY_REASON: &str = "NetworkNotReady";

/// The file name of the default network config the kubelet writes.
pub const DEFAULT_CONFLIST: &str = "10-knode.conflist";
/// The reference plugin that maps host ports (containernetworking/plugins `portmap`).
const PORTMAP: &str = "portmap";
/// The default network's name (also the IPAM store's directory name).
pub const DEFAULT_NETWORK: &str = "knode";
/// The default network's bridge.
pub const DEFAULT_BRIDGE: &str = "knode0";

/// The interface name of the pod's network inside its namespace.
const POD_IFNAME: &str = "eth0";
/// The per-sandbox CNI cache file (config + result).
const CACHE_FILE: &str = "cni.json";

/// Pod network failures.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No usable config in the conf dir (at ADD time).
    #[error("no CNI network config: {0}")]
    NoConfig(String),
    /// A plugin of the network failed; `message` is the plugin's own.
    #[error("plugin type={plugin_type:?} name={network:?} failed ({command}): {message}")]
    Plugin {
        plugin_type: String,
        network: String,
        command: &'static str,
        message: String,
    },
    /// The sandbox's CNI cache could not be written or read.
    #[error("CNI cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    /// The default config could not be written.
    #[error("writing the default CNI config {path}: {source}")]
    WriteDefault {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the conf dir holds, as far as readiness is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfDir {
    /// The directory cannot be read.
    Unreadable(String),
    /// No file with a CNI extension.
    Empty,
    /// The config libcni would load.
    Valid(PathBuf),
    /// Config files exist, none is valid (the reasons, per file).
    Invalid(String),
}

/// What to do about the conf dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A valid config is present: the network is ready.
    Ready(PathBuf),
    /// Write the default config for this pod CIDR, then re-check.
    WriteDefault(Ipv4Net),
    /// Not ready, for this reason (logged; the node shows [`NETWORK_NOT_READY`]).
    NotReady(String),
}

/// Reads the conf dir as libcni does (sorted `.conf`/`.conflist`/`.json`, first valid one wins).
pub fn inspect(conf_dir: &Path) -> ConfDir {
    match cni::config::conf_files(conf_dir) {
        Err(e) => ConfDir::Unreadable(e.to_string()),
        Ok(files) if files.is_empty() => ConfDir::Empty,
        Ok(_) => match cni::config::load_default_network(conf_dir) {
            Ok((path, _)) => ConfDir::Valid(path),
            Err(e) => ConfDir::Invalid(e.to_string()),
        },
    }
}

/// The pure readiness decision from the conf dir's state and the node's `spec.podCIDR`.
pub fn decide(dir: &ConfDir, pod_cidr: Option<&str>) -> Decision {
    match dir {
        ConfDir::Valid(p) => Decision::Ready(p.clone()),
        ConfDir::Invalid(why) => Decision::NotReady(why.clone()),
        ConfDir::Unreadable(why) => Decision::NotReady(why.clone()),
        ConfDir::Empty => match pod_cidr.map(str::trim).filter(|c| !c.is_empty()) {
            None => Decision::NotReady(
                "no CNI config yet: waiting for the control plane to allocate the node's spec.podCIDR \
                 to write the default network config"
                    .into(),
            ),
            Some(c) => match c.parse::<Ipv4Net>() {
                // A /31 or /32 leaves no address for a pod besides the gateway.
                Ok(n) if n.prefix <= 30 => Decision::WriteDefault(n.trunc()),
                _ => Decision::NotReady(format!(
                    "the node's spec.podCIDR {c:?} is not an IPv4 CIDR with room for pods (at most /30); \
                     write a CNI config into the conf dir instead"
                )),
            },
        },
    }
}

/// The default network config for `pod_cidr`: knode-bridge on `knode0`, gateway `.1`, default route,
/// masquerade for traffic leaving the pod CIDR, hairpin, host-local's store under `ipam_dir`.
pub fn default_conflist(
    pod_cidr: Ipv4Net,
    ipam_dir: &Path,
    cluster_cidr: Option<Ipv4Net>,
    portmap: bool,
) -> String {
    let mut v = serde_json::json!({
        "cniVersion": cni::SPEC_VERSION,
        "name": DEFAULT_NETWORK,
        "plugins": [{
            "type": "knode-bridge",
            "bridge": DEFAULT_BRIDGE,
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": pod_cidr.trunc().to_string()}]],
                "dataDir": ipam_dir.display().to_string(),
            }
        }]
    });
    // Only a range containing the node's subnet can exempt it (knode-bridge checks the same).
    if let Some(c) = cluster_cidr.filter(|c| c.prefix <= pod_cidr.prefix && c.contains(pod_cidr.addr)) {
        v["plugins"][0]["clusterCIDR"] = serde_json::Value::String(c.trunc().to_string());
    }
    // hostPort, as upstream's runtimes do it: the reference portmap plugin chained after the bridge
    // (DNAT from the host's addresses, SNAT for hairpin and localhost traffic).
    if portmap && let Some(plugins) = v["plugins"].as_array_mut() {
        plugins.push(serde_json::json!({
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "snat": true,
        }));
    }
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// Turns on `net.ipv4.ip_forward` (of the kubelet's network namespace) through procfs; returns
/// whether it was off before.
pub fn enable_ip_forward() -> std::io::Result<bool> {
    enable_ip_forward_at(Path::new("/proc/sys/net/ipv4/ip_forward"))
}

/// [`enable_ip_forward`] on an explicit sysctl file.
pub fn enable_ip_forward_at(path: &Path) -> std::io::Result<bool> {
    if std::fs::read_to_string(path)?.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(path, b"1\n")?;
    Ok(true)
}

/// The pod UIDs that have sandbox directories (`<uid>-<attempt>`) under `sandbox_root`.
pub fn sandbox_uids(sandbox_root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(sandbox_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (uid, attempt) = name.rsplit_once('-')?;
            attempt.parse::<u32>().ok()?;
            (!uid.is_empty()).then(|| uid.to_string())
        })
        .collect()
}

/// The pod a sandbox is for, as CNI_ARGS tell plugins, and its host ports.
#[derive(Debug, Clone, Default)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The `portMappings` capability argument (the portmap plugin programs them).
    pub port_mappings: Vec<PortMapping>,
}

/// One host port of a pod, as CRI runtimes hand it to CNI's portmap plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The host ports of a pod's containers (upstream's `MakePortMappings`): ports with a `hostPort`,
/// protocol lower-cased (TCP when unset). Init containers' ports are not mapped, as upstream.
pub fn port_mappings(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<PortMapping> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = p.host_port.filter(|h| *h > 0)?;
            Some(PortMapping {
                host_port,
                container_port: p.container_port,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// What a sandbox's ADD used and returned, for its DEL.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cache {
    /// The network config the ADD ran with.
    conflist: NetConfList,
    /// The ADD's result, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<PluginResult>,
    /// The capability arguments the ADD had (portmap's DEL needs the same port mappings).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    capability_args: serde_json::Map<String, serde_json::Value>,
}

use crate::lock::lock;

/// The node's pod network (shared by the node status loop and the pod workers).
#[derive(Debug)]
pub struct PodNetwork {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    ipam_dir: PathBuf,
    /// `None` while ready; else why not (logged on change).
    not_ready: Mutex<Option<String>>,
    /// Plugin time limit per invocation.
    timeout: Duration,
    /// `--cluster-cidr`: not masqueraded by the default config.
    cluster_cidr: Option<Ipv4Net>,
}

impl PodNetwork {
    /// The network of `conf_dir` (plugins in `bin_dirs`; the default config keeps its IPAM store in
    /// `ipam_dir`). Not ready until the first [`PodNetwork::sync`].
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, ipam_dir: PathBuf) -> Self {
        PodNetwork {
            conf_dir,
            bin_dirs,
            ipam_dir,
            not_ready: Mutex::new(Some("not checked yet".into())),
            timeout: Duration::from_secs(60),
            cluster_cidr: None,
        }
    }

    /// With `--cluster-cidr`: the default config does not masquerade traffic to it.
    pub fn with_cluster_cidr(mut self, cluster_cidr: Option<Ipv4Net>) -> Self {
        self.cluster_cidr = cluster_cidr;
        self
    }

    /// The conf dir.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// Whether a valid network config was found at the last sync.
    pub fn is_ready(&self) -> bool {
        lock(&self.not_ready).is_none()
    }

    /// Looks at the conf dir once, writing the default config when it is empty and `pod_cidr` is
    /// known; records and logs readiness changes. Blocking (file I/O). Returns readiness.
    pub fn sync(&self, pod_cidr: Option<&str>) -> bool {
        let mut decision = decide(&inspect(&self.conf_dir), pod_cidr);
        if let Decision::WriteDefault(net) = decision {
            decision = match self.write_default(net) {
                Ok(path) => {
                    tracing::info!(file = %path.display(), pod_cidr = %net, "wrote the default CNI network config");
                    decide(&inspect(&self.conf_dir), pod_cidr)
                }
                Err(e) => Decision::NotReady(e.to_string()),
            };
        }
        let now = match &decision {
            Decision::Ready(_) => None,
            Decision::NotReady(why) => Some(why.clone()),
            Decision::WriteDefault(_) => Some("the default CNI config did not load after writing it".into()),
        };
        let mut cur = lock(&self.not_ready);
        if *cur != now {
            match (&now, &decision) {
                (None, Decision::Ready(path)) => {
                    tracing::info!(config = %path.display(), "pod network ready")
                }
                (Some(why), _) => {
                    tracing::warn!(conf_dir = %self.conf_dir.display(), reason = why, "{NETWORK_NOT_READY}")
                }
                _ => {}
            }
            *cur = now;
        }
        cur.is_none()
    }

    fn write_default(&self, net: Ipv4Net) -> Result<PathBuf, NetworkError> {
        let path = self.conf_dir.join(DEFAULT_CONFLIST);
        let err = |source| NetworkError::WriteDefault {
            path: path.clone(),
            source,
        };
        // Written under a name without a CNI extension, then renamed: a reader never sees half a file.
        let tmp = self.conf_dir.join(format!(".{DEFAULT_CONFLIST}.tmp"));
        let portmap = cni::exec::find_plugin(PORTMAP, &self.bin_dirs).is_ok();
        if !portmap {
            tracing::warn!(
                bin_dirs = ?self.bin_dirs,
                "the portmap CNI plugin is not in the CNI bin dirs: pods' hostPorts will not be reachable"
            );
        }
        std::fs::write(
            &tmp,
            default_conflist(net, &self.ipam_dir, self.cluster_cidr, portmap),
        )
        .map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(path)
    }

    /// Keeps readiness current: checks the conf dir every second while not ready (reading the node's
    /// `spec.podCIDR` until it is known), every 5 s after.
    pub async fn run(self: Arc<Self>, nodes: Api<Node>, node_name: String) {
        let mut pod_cidr: Option<String> = None;
        let mut ready = self.is_ready();
        loop {
            // The pod CIDR only matters for writing the default config, i.e. while not ready.
            if pod_cidr.is_none() && !ready {
                match nodes.get_opt(&node_name).await {
                    Ok(Some(n)) => {
                        pod_cidr = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty());
                        if let Some(c) = &pod_cidr {
                            tracing::info!(node = node_name, pod_cidr = c, "node pod CIDR allocated");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "reading the node for its pod CIDR failed"),
                }
            }
            let me = self.clone();
            let cidr = pod_cidr.clone();
            ready = tokio::task::spawn_blocking(move || me.sync(cidr.as_deref()))
                .await
                .unwrap_or(false);
            tokio::time::sleep(if ready {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(1)
            })
            .await;
        }
    }

    fn runtime_conf(&self, id: &str, netns: &Path, pod: Option<&PodRef>) -> cni::exec::RuntimeConf {
        let mut rt = cni::exec::RuntimeConf::new(
            id,
            &netns.display().to_string(),
            POD_IFNAME,
            self.bin_dirs.clone(),
        );
        rt.timeout = self.timeout;
        if let Some(p) = pod {
            // What upstream's runtimes pass; IgnoreUnknown lets the reference plugins accept the K8S_ keys.
            rt.args = vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), p.namespace.clone()),
                ("K8S_POD_NAME".into(), p.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), id.to_string()),
                ("K8S_POD_UID".into(), p.uid.clone()),
            ];
            if !p.port_mappings.is_empty() {
                rt.capability_args.insert(
                    "portMappings".into(),
                    serde_json::to_value(&p.port_mappings).unwrap_or_default(),
                );
            }
        }
        rt
    }

    fn write_cache(path: &Path, cache: &Cache) -> Result<(), NetworkError> {
        let err = |reason: String| NetworkError::Cache {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = serde_json::to_vec(cache).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    fn read_cache(path: &Path) -> Option<Cache> {
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable CNI cache ignored");
                None
            }
        }
    }

    /// ADD the sandbox `id` (namespace `netns`, directory `sandbox_dir`) to the network; returns the
    /// pod's IPv4 address. Blocking (runs plugins). On failure the caller tears the sandbox down
    /// (which runs [`PodNetwork::del`]).
    pub fn add(
        &self,
        sandbox_dir: &Path,
        id: &str,
        netns: &Path,
        pod: &PodRef,
    ) -> Result<String, NetworkError> {
        let (_, list) = cni::config::load_default_network(&self.conf_dir)
            .map_err(|e| NetworkError::NoConfig(e.to_string()))?;
        let cache_path = sandbox_dir.join(CACHE_FILE);
        let rt = self.runtime_conf(id, netns, Some(pod));
        // Recorded before the plugins run: a kubelet killed mid-ADD leaves what DEL needs.
        Self::write_cache(
            &cache_path,
            &Cache {
                conflist: list.clone(),
                result: None,
                capability_args: rt.capability_args.clone(),
            },
        )?;
        let result = cni::exec::add_network_list(&list, &rt).map_err(|e| plugin_error(&list, "add", e))?;
        Self::write_cache(
            &cache_path,
            &Cache {
                conflist: list,
                result: Some(result.clone()),
                capability_args: rt.capability_args.clone(),
            },
        )?;
        Ok(result
            .ips
            .iter()
            .filter_map(|ip| ip.address.split('/').next())
            .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
            .unwrap_or_default()
            .to_string())
    }

    /// Whether the sandbox directory has a CNI record (an ADD was started for it).
    pub fn has_cache(sandbox_dir: &Path) -> bool {
        sandbox_dir.join(CACHE_FILE).exists()
    }

    /// DEL the sandbox from the network it was added to (the cached config; the current one when
    /// there is no record). Idempotent. The record is removed once DEL succeeded. Blocking.
    pub fn del(&self, sandbox_dir: &Path, id: &str, netns: &Path) -> Result<(), NetworkError> {
        let cache_path = sandbox_dir.join(CACHE_FILE);
        let (list, cached, capability_args) = match Self::read_cache(&cache_path) {
            Some(c) => (c.conflist, c.result, c.capability_args),
            None => match cni::config::load_default_network(&self.conf_dir) {
                Ok((_, list)) => (list, None, Default::default()),
                // Nothing was added with a config we know, and there is none now: nothing to undo.
                Err(_) => return Ok(()),
            },
        };
        let mut rt = self.runtime_conf(id, netns, None);
        rt.capability_args = capability_args;
        cni::exec::del_network_list(&list, &rt, cached.as_ref())
            .map_err(|e| plugin_error(&list, "delete", e))?;
        match std::fs::remove_file(&cache_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetworkError::Cache {
                path: cache_path,
                reason: e.to_string(),
            }),
        }
    }
}

/// libcni's error shape: `plugin type="bridge" name="knode" failed (add): <the plugin's message>`.
fn plugin_error(list: &NetConfList, command: &'static str, e: cni::exec::ExecError) -> NetworkError {
    use cni::exec::ExecError;
    let (plugin_type, message) = match &e {
        ExecError::Plugin { plugin, error, .. } => (
            type_of(list, plugin),
            if error.details.is_empty() {
                error.msg.clone()
            } else {
                format!("{}: {}", error.msg, error.details)
            },
        ),
        ExecError::NotFound { plugin, .. } => (plugin.clone(), e.to_string()),
        ExecError::Io { plugin, .. }
        | ExecError::Timeout { plugin, .. }
        | ExecError::BadOutput { plugin, .. } => (type_of(list, plugin), e.to_string()),
        ExecError::Config(_) => (String::new(), e.to_string()),
    };
    NetworkError::Plugin {
        plugin_type,
        network: list.name.clone(),
        command,
        message,
    }
}

/// The plugin type of the executable at `path` (its file name).
fn type_of(list: &NetConfList, path: &str) -> String {
    let file = Path::new(path)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    list.plugins
        .iter()
        .find(|p| p.plugin_type == file)
        .map(|p| p.plugin_type.clone())
        .unwrap_or(file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decisions_follow_the_conf_dir_and_the_pod_cidr() {
        let valid = ConfDir::Valid("/etc/cni/net.d/05-x.conflist".into());
        assert_eq!(
            decide(&valid, None),
            Decision::Ready("/etc/cni/net.d/05-x.conflist".into())
        );
        // An empty dir waits for the pod CIDR, then gets the default for exactly that network.
        assert!(matches!(decide(&ConfDir::Empty, None), Decision::NotReady(m) if m.contains("podCIDR")));
        assert!(matches!(decide(&ConfDir::Empty, Some("")), Decision::NotReady(_)));
        assert_eq!(
            decide(&ConfDir::Empty, Some("10.244.3.7/24")),
            Decision::WriteDefault("10.244.3.0/24".parse().unwrap())
        );
        for bad in ["fd00::/64", "10.0.0.0/31", "nope"] {
            assert!(
                matches!(decide(&ConfDir::Empty, Some(bad)), Decision::NotReady(m) if m.contains(bad)),
                "{bad}"
            );
        }
        // Someone else's broken config is not overwritten.
        assert!(matches!(
            decide(&ConfDir::Invalid("05-x.conflist: bad".into()), Some("10.244.0.0/24")),
            Decision::NotReady(m) if m.contains("05-x")
        ));
        assert!(matches!(
            decide(&ConfDir::Unreadable("denied".into()), Some("10.244.0.0/24")),
            Decision::NotReady(_)
        ));
    }

    #[test]
    fn default_config_is_knode_bridge_over_the_pod_cidr_and_loads() {
        let d = tempfile::tempdir().unwrap();
        let text = default_conflist(
            "10.244.5.0/24".parse().unwrap(),
            Path::new("/var/lib/x/networks"),
            None,
            false,
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["plugins"].as_array().map(Vec::len),
            Some(1),
            "no portmap without the plugin"
        );
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "knode");
        let p = &v["plugins"][0];
        assert_eq!(p["type"], "knode-bridge");
        assert_eq!(p["bridge"], "knode0");
        assert_eq!(p["ipMasq"], true);
        assert_eq!(p["isDefaultGateway"], true);
        assert_eq!(p["ipam"]["ranges"][0][0]["subnet"], "10.244.5.0/24");
        assert_eq!(p["ipam"]["dataDir"], "/var/lib/x/networks");
        std::fs::write(d.path().join(DEFAULT_CONFLIST), &text).unwrap();
        let (_, list) = cni::config::load_default_network(d.path()).unwrap();
        // The plugin's own config parser accepts it.
        let conf = list.plugin_conf(0, None).unwrap();
        let bc = cni::bridge::BridgeConf::from_conf(&conf).unwrap();
        assert_eq!(bc.ipam.subnet.to_string(), "10.244.5.0/24");
        assert!(bc.ip_masq && bc.is_gateway && bc.hairpin_mode);
        assert_eq!(bc.cluster_cidr, None);
    }

    #[test]
    fn host_ports_go_to_portmap_as_upstream_runtimes_pass_them() {
        let text = default_conflist("10.244.5.0/24".parse().unwrap(), Path::new("/x"), None, true);
        let list = cni::types::NetConfList::from_bytes(text.as_bytes()).unwrap();
        assert_eq!(list.plugins[1].plugin_type, "portmap");
        let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "a", "ports": [
                    {"containerPort": 8080, "hostPort": 54323, "hostIP": "127.0.0.1"},
                    {"containerPort": 8081},
                ]},
                {"name": "b", "ports": [{"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}]},
            ],
            "initContainers": [{"name": "i", "ports": [{"containerPort": 1, "hostPort": 1}]}],
        }))
        .unwrap();
        let maps = port_mappings(&spec);
        assert_eq!(
            serde_json::to_value(&maps).unwrap(),
            serde_json::json!([
                {"hostPort": 54323, "containerPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
            ])
        );
        // Only portmap (which declares the capability) gets them, on ADD and (from the cache) DEL.
        let net = PodNetwork::new(PathBuf::from("/x"), vec![], PathBuf::from("/x"));
        let pod = PodRef {
            port_mappings: maps,
            ..Default::default()
        };
        let rt = net.runtime_conf("sb-0", Path::new("/n"), Some(&pod));
        let bridge = list.plugin_conf(0, None).map(|mut c| {
            c.inject_runtime_config(&rt.capability_args);
            c
        });
        assert!(bridge.unwrap().runtime_config.is_none());
        let mut portmap = list.plugin_conf(1, None).unwrap();
        portmap.inject_runtime_config(&rt.capability_args);
        assert_eq!(
            portmap.runtime_config.unwrap()["portMappings"][1]["hostPort"],
            5353
        );
    }

    #[test]
    fn the_cluster_cidr_is_exempt_from_masquerade_when_it_holds_the_node_subnet() {
        let node: Ipv4Net = "10.244.5.0/24".parse().unwrap();
        let with = |c: &str| {
            let text = default_conflist(node, Path::new("/x"), Some(c.parse().unwrap()), false);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["plugins"][0]["clusterCIDR"].as_str().map(str::to_string)
        };
        assert_eq!(with("10.244.0.0/16").as_deref(), Some("10.244.0.0/16"));
        assert_eq!(with("10.96.0.0/12"), None);
        assert_eq!(with("10.244.5.0/28"), None);
    }

    #[test]
    fn sync_writes_the_default_once_and_tracks_readiness() {
        let d = tempfile::tempdir().unwrap();
        let net = PodNetwork::new(d.path().to_path_buf(), vec![], d.path().join("ipam"));
        assert!(!net.is_ready());
        assert!(!net.sync(None));
        assert!(!d.path().join(DEFAULT_CONFLIST).exists());
        assert!(net.sync(Some("10.244.1.0/24")));
        assert!(net.is_ready());
        let text = std::fs::read_to_string(d.path().join(DEFAULT_CONFLIST)).unwrap();
        assert!(text.contains("10.244.1.0/24"));
        // No temp file left; an existing config is kept, not rewritten for another CIDR.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(net.sync(Some("10.244.9.0/24")));
        assert!(
            std::fs::read_to_string(d.path().join(DEFAULT_CONFLIST))
                .unwrap()
                .contains("10.244.1.0/24")
        );
        // The config removed: not ready until it is back (the default is written again).
        std::fs::remove_file(d.path().join(DEFAULT_CONFLIST)).unwrap();
        std::fs::write(d.path().join("00-broken.conf"), b"{oops").unwrap();
        assert!(!net.sync(Some("10.244.1.0/24")));
        std::fs::remove_file(d.path().join("00-broken.conf")).unwrap();
        assert!(net.sync(Some("10.244.1.0/24")));
        // A missing conf dir is not ready (the agent treats a missing dir as "networking off" first).
        let gone = PodNetwork::new(d.path().join("missing"), vec![], d.path().join("ipam"));
        assert!(!gone.sync(Some("10.244.1.0/24")));
    }

    #[test]
    fn ip_forward_is_switched_on_once() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ip_forward");
        std::fs::write(&f, "0\n").unwrap();
        assert!(enable_ip_forward_at(&f).unwrap());
        assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "1");
        assert!(!enable_ip_forward_at(&f).unwrap());
        assert!(enable_ip_forward_at(&d.path().join("missing")).is_err());
    }

    #[test]
    fn sandbox_uids_parse_directory_names() {
        let d = tempfile::tempdir().unwrap();
        for n in ["3f2a-11-22-0", "3f2a-11-22-1", "abc123-4", "junk", "x-y"] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        let uids: Vec<String> = sandbox_uids(d.path()).into_iter().collect();
        assert_eq!(uids, ["3f2a-11-22", "abc123"]);
        assert!(sandbox_uids(&d.path().join("missing")).is_empty());
    }

    #[test]
    fn plugin_failures_read_like_libcni_errors() {
        let list = NetConfList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"knode","plugins":[{"type":"knode-bridge"}]}"#,
        )
        .unwrap();
        let e = plugin_error(
            &list,
            "add",
            cni::exec::ExecError::Plugin {
                plugin: "/opt/cni/bin/knode-bridge".into(),
                command: "ADD",
                error: cni::CniError::new(
                    cni::ErrorCode::Generic,
                    "no IP addresses available in range set 10.0.0.2-10.0.0.2",
                    "",
                ),
            },
        );
        assert_eq!(
            e.to_string(),
            "plugin type=\"knode-bridge\" name=\"knode\" failed (add): no IP addresses available in range set 10.0.0.2-10.0.0.2"
        );
    }

    #[test]
    fn add_without_config_is_a_clear_error_and_del_without_anything_is_a_no_op() {
        let d = tempfile::tempdir().unwrap();
        let net = PodNetwork::new(d.path().join("conf"), vec![], d.path().join("ipam"));
        let e = net
            .add(d.path(), "sb-0", Path::new("/nonexistent"), &PodRef::default())
            .unwrap_err();
        assert!(matches!(e, NetworkError::NoConfig(_)), "{e}");
        assert!(!PodNetwork::has_cache(d.path()));
        net.del(d.path(), "sb-0", Path::new("/nonexistent")).unwrap();
    }
}
