//! The pod sandbox: pinned namespaces, CNI networking, resolv.conf; created before the containers
//! and torn down after them.

use k8s_openapi::api::core::v1::Pod;

use super::observe::sandboxes_of;
use super::{NodeContext, event, uid_of};
use crate::pods::{StartError, pod_ref};
use crate::sandbox::{self, SandboxConfig};
use crate::volumes;

pub(super) async fn create_sandbox(ctx: &NodeContext, pod: &Pod, attempt: u32) -> Result<(), StartError> {
    let uid = uid_of(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    // Upstream's SyncPod gate: only hostNetwork pods start while the network is not ready.
    if !host_network && ctx.cni.as_ref().is_some_and(|n| !n.is_ready()) {
        return Err(StartError::new(
            crate::network::NETWORK_NOT_READY_REASON,
            format!(
                "{}: {}",
                crate::network::NETWORK_NOT_READY_POD,
                crate::network::NETWORK_NOT_READY
            ),
        ));
    }
    let hostname = crate::pods::dns::kernel_hostname(pod, &ctx.dns.cluster_domain)
        .map_err(|e| StartError::new("CreatePodSandboxError", e.to_string()))?;
    write_resolv_conf(ctx, pod)?;
    let cfg = SandboxConfig {
        id: format!("{uid}-{attempt}"),
        hostname,
        host_network,
        host_ipc: spec.host_ipc.unwrap_or(false),
        host_pid: spec.host_pid.unwrap_or(false),
    };
    let root = ctx.sandbox_root();
    std::fs::create_dir_all(&root).map_err(|e| StartError::new("CreatePodSandboxError", e.to_string()))?;
    // Older sandboxes of this pod are gone for good (a replaced sandbox restarts the pod).
    for (_, old) in sandboxes_of(&root, &uid) {
        teardown_sandbox(ctx, pod, &old).await;
    }
    let created = {
        let root = root.clone();
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || sandbox::create(&root, &cfg))
            .await
            .map_err(|e| StartError::new("CreatePodSandboxError", e.to_string()))?
            .map_err(|e| {
                StartError::new(
                    "CreatePodSandboxError",
                    format!("Failed to create pod sandbox: {e}"),
                )
            })?
    };
    let mut ip = String::new();
    if !host_network && let (Some(cni), Some(net)) = (&ctx.cni, &created.net) {
        let (cni, dir, id, net) = (cni.clone(), root.join(&cfg.id), cfg.id.clone(), net.clone());
        let pod_ref = crate::network::PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
            port_mappings: pod
                .spec
                .as_ref()
                .map(crate::network::port_mappings)
                .unwrap_or_default(),
        };
        let added = tokio::task::spawn_blocking(move || cni.add(&dir, &id, &net, &pod_ref))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match added {
            Ok(a) => ip = a,
            Err(e) => {
                // As containerd does for a failed RunPodSandbox: undo (DEL, unpin), report, retry later.
                teardown_sandbox(ctx, pod, &cfg.id).await;
                return Err(StartError::new(
                    "CreatePodSandboxError",
                    format!(
                        "Failed to create pod sandbox: failed to setup network for sandbox {:?}: {e}",
                        cfg.id
                    ),
                ));
            }
        }
    }
    if !host_network {
        // The record that networking is done (empty without CNI); see `observe`.
        std::fs::write(root.join(&cfg.id).join("ip"), &ip)
            .map_err(|e| StartError::new("CreatePodSandboxError", format!("recording the pod IP: {e}")))?;
    }
    tracing::info!(pod = %pod_ref(pod), uid, attempt, ip, "pod sandbox created");
    Ok(())
}

pub(super) async fn teardown_sandbox(ctx: &NodeContext, pod: &Pod, id: &str) {
    let root = ctx.sandbox_root();
    let dir = root.join(id);
    if let Some(cni) = &ctx.cni
        && (dir.join("net").exists() || crate::network::PodNetwork::has_cache(&dir))
    {
        let (cni, d, sid) = (cni.clone(), dir.clone(), id.to_string());
        let r = tokio::task::spawn_blocking(move || cni.del(&d, &sid, &d.join("net"))).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(pod = %pod_ref(pod), sandbox = id, error = %e, "CNI DEL failed");
        }
    }
    // Our own record of the sandbox's IP lives in its directory; the pins are the sandbox's.
    let _ = std::fs::remove_file(dir.join("ip"));
    let sid = id.to_string();
    let r = tokio::task::spawn_blocking(move || sandbox::teardown(&root, &sid)).await;
    if let Ok(Err(e)) = r {
        tracing::warn!(pod = %pod_ref(pod), sandbox = id, error = %e, "sandbox teardown failed");
    }
}

/// Writes the pod's resolv.conf (upstream's `GetPodDNS` for its `dnsPolicy` and `dnsConfig`) into the
/// pod directory, where each container mounts it; forming warnings become events on the pod.
fn write_resolv_conf(ctx: &NodeContext, pod: &Pod) -> Result<(), StartError> {
    let node_dns = ctx
        .dns
        .load()
        .map_err(|e| StartError::new("CreatePodSandboxError", e.to_string()))?;
    let (conf, warnings) = crate::pods::dns::pod_resolv_conf(pod, &node_dns);
    for w in warnings {
        event(ctx, pod, None, "Warning", w.reason, w.message);
    }
    let pdir = volumes::pod_dir(&ctx.root_dir, &uid_of(pod));
    std::fs::create_dir_all(&pdir)
        .and_then(|()| std::fs::write(pdir.join("resolv.conf"), conf.render()))
        .map_err(|e| StartError::new("CreatePodSandboxError", format!("writing resolv.conf: {e}")))
}
