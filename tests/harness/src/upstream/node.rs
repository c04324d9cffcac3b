//! What an upstream node (upstream's own kubelet and kube-proxy, the benchmark baselines) needs
//! beside its CRI containerd ([`crate::containerd::CriOptions`]): their configuration files, set
//! to match knode's daemons on the same cluster wherever both have the setting (so a benchmark
//! ratio measures implementations, not settings), the cgroup root upstream's kubelet insists on,
//! the CNI config knode's kubelet would write, and the kernel settings upstream's kubelet changes
//! (restored on drop).

use std::path::{Path, PathBuf};

use crate::{HarnessError, Result};

/// The KubeletConfiguration both kinds of node get (knode's kubelet ignores keys it does not
/// know): serving on `node_ip`, logs under `pod_logs_dir`, clients verified against `client_ca`,
/// plus `extra` (top-level YAML keys of the test).
pub fn kubelet_config_common(node_ip: &str, pod_logs_dir: &Path, client_ca: &Path, extra: &str) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         podLogsDir: {logs}\naddress: {node_ip}\nrotateCertificates: true\nserverTLSBootstrap: true\n\
         clusterDomain: {domain}\nclusterDNS: [{dns}]\n\
         authentication:\n  x509:\n    clientCAFile: {ca}\n  webhook:\n    enabled: true\n\
         authorization:\n  mode: Webhook\nevictionHard:\n  memory.available: 100Mi\n  \
         nodefs.available: 100Mi\n  imagefs.available: 100Mi\nimageGCHighThresholdPercent: 100\n{extra}\n",
        logs = pod_logs_dir.display(),
        domain = super::coredns::CLUSTER_DOMAIN,
        dns = super::coredns::CLUSTER_DNS_IP,
        ca = client_ca.display(),
    )
}

/// Upstream's kubelet: `common` ([`kubelet_config_common`]) plus what it needs on this host — containerd's CRI
/// socket, the cgroupfs driver under a private cgroup root, cgroup v1 allowed (the host has no
/// unified hierarchy; 1.35+ refuses v1 unless told), swap tolerated, its plugin dir private.
pub fn upstream_kubelet_config(common: &str, cri_socket: &Path, cgroup_root: &str, dir: &Path) -> String {
    format!(
        "{common}containerRuntimeEndpoint: unix://{sock}\ncgroupDriver: cgroupfs\ncgroupRoot: {cgroup_root}\n\
         failCgroupV1: false\nfailSwapOn: false\nvolumePluginDir: {plugins}\nreadOnlyPort: 0\n",
        sock = cri_socket.display(),
        plugins = dir.join("volume-plugins").display(),
    )
}

/// Upstream's kube-proxy in nftables mode, with the sync periods knode's kube-proxy defaults to
/// (set explicitly on both) and conntrack left as the host has it (knode's does not tune it).
pub fn upstream_proxy_config(kubeconfig: &Path, node_name: &str, cluster_cidr: &str) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n\
         clientConnection:\n  kubeconfig: {kc}\nhostnameOverride: {node_name}\nclusterCIDR: {cluster_cidr}\n\
         healthzBindAddress: 127.0.0.1:10256\nmetricsBindAddress: 127.0.0.1:10249\n\
         nftables:\n  syncPeriod: {SYNC_PERIOD}\n  minSyncPeriod: {MIN_SYNC_PERIOD}\n\
         conntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n",
        kc = kubeconfig.display(),
    )
}

/// `nftables.syncPeriod` of both kube-proxies (upstream's and knode's default).
pub const SYNC_PERIOD: &str = "30s";
/// `nftables.minSyncPeriod` of both kube-proxies (upstream's and knode's default).
pub const MIN_SYNC_PERIOD: &str = "1s";

/// The network config knode's kubelet writes for a node's podCIDR (`kubelet::network::
/// default_conflist`): knode-bridge with its host-local IPAM, so both kinds of node wire pods the
/// same way. `ipam_dir` holds the IPAM reservations.
pub fn cni_conflist(pod_cidr: &str, ipam_dir: &Path, cluster_cidr: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "knode",
        "plugins": [{
            "type": "knode-bridge",
            "bridge": "knode0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "clusterCIDR": cluster_cidr,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "dataDir": ipam_dir},
        }]
    })
    .to_string()
}

/// Fills CRI's plugin dir: knode-bridge (from `bin_dir`) and the loopback plugin CRI sets `lo` up with.
pub fn link_cni_plugins(cni_bin: &Path, knode_bin_dir: &Path) -> Result<()> {
    for (name, target) in [
        ("knode-bridge", knode_bin_dir.join("knode-bridge")),
        ("loopback", PathBuf::from("/usr/lib/cni/loopback")),
    ] {
        if !target.exists() {
            return Err(HarnessError::Missing(format!(
                "CNI plugin {} is missing (cargo build --bins; apt-get install containernetworking-plugins)",
                target.display()
            )));
        }
        std::os::unix::fs::symlink(&target, cni_bin.join(name))
            .map_err(HarnessError::io(format!("linking CNI plugin {name}")))?;
    }
    Ok(())
}

/// Creates `root` (e.g. `/knode-test/<ns>`) in every mounted v1 hierarchy, as a node's
/// provisioning would: upstream's kubelet refuses a `cgroupRoot` that does not exist. A new cpuset
/// group starts empty; it gets its parent's CPUs and memory nodes so tasks can join it.
pub fn create_cgroup_root(root: &str) -> Result<()> {
    let rel = root.trim_start_matches('/');
    for ctl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let base = ctl.path();
        if base.is_symlink() || ctl.file_name() == "unified" || !base.join("cgroup.procs").exists() {
            continue;
        }
        let mut dir = base.clone();
        for part in rel.split('/') {
            let parent = dir.clone();
            dir.push(part);
            if dir.exists() {
                continue;
            }
            std::fs::create_dir(&dir).map_err(HarnessError::io(format!("creating {}", dir.display())))?;
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(parent.join(f)) {
                    let _ = std::fs::write(dir.join(f), v.trim());
                }
            }
        }
    }
    Ok(())
}

/// Kernel settings upstream's kubelet sets at start-up (`protectKernelDefaults: false`, its
/// default): saved before it starts, put back on drop.
#[derive(Debug)]
pub struct KernelTunables {
    saved: Vec<(PathBuf, String)>,
}

const TUNABLES: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

impl KernelTunables {
    pub fn save() -> KernelTunables {
        let saved = TUNABLES
            .iter()
            .map(|t| Path::new("/proc/sys").join(t))
            .filter_map(|p| {
                std::fs::read_to_string(&p)
                    .ok()
                    .map(|v| (p, v.trim().to_string()))
            })
            .collect();
        KernelTunables { saved }
    }
}

impl Drop for KernelTunables {
    fn drop(&mut self) {
        for (p, v) in &self.saved {
            let _ = std::fs::write(p, v);
        }
    }
}

/// Removes what upstream's kubelet leaves on the host outside its `--root-dir` whatever its flags:
/// its device-plugin socket and checkpoint (fixed paths), and the `/var/log/containers` links of
/// pods whose logs were under `pod_logs_dir` (it removes those only when it deletes the pods).
pub fn remove_host_leftovers(pod_logs_dir: &Path) {
    for f in ["kubelet.sock", "kubelet_internal_checkpoint"] {
        let _ = std::fs::remove_file(Path::new("/var/lib/kubelet/device-plugins").join(f));
    }
    for e in std::fs::read_dir("/var/log/containers")
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(pod_logs_dir)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_match_where_both_daemons_have_the_setting() {
        let common = kubelet_config_common(
            "10.0.0.2",
            Path::new("/tmp/x/logs"),
            Path::new("/tmp/ca.crt"),
            "maxPods: 150",
        );
        let up = upstream_kubelet_config(
            &common,
            Path::new("/tmp/c.sock"),
            "/knode-test/n",
            Path::new("/tmp/x"),
        );
        assert!(up.starts_with(&common), "{up}");
        for want in [
            "containerRuntimeEndpoint: unix:///tmp/c.sock",
            "cgroupRoot: /knode-test/n",
            "failCgroupV1: false",
            "maxPods: 150",
        ] {
            assert!(up.contains(want), "{want} missing in {up}");
        }
        let proxy = upstream_proxy_config(Path::new("/k.conf"), "n1", "10.244.0.0/16");
        assert!(
            proxy.contains("mode: nftables") && proxy.contains("minSyncPeriod: 1s"),
            "{proxy}"
        );
        let cni: serde_json::Value = serde_json::from_str(&cni_conflist(
            "10.244.3.0/24",
            Path::new("/ipam"),
            "10.244.0.0/16",
        ))
        .unwrap();
        assert_eq!(
            cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.3.0/24"
        );
    }
}
