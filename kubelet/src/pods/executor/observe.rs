//! The runtime picture of one pod ([`Observed`]): containerd's containers by the pod's UID label,
//! the sandbox pins on disk, the recorded container facts and probe results.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::{Facts, NodeContext, find_container, uid_of};
use crate::pods::{AttemptState, ContainerAttempt, Observed, SandboxState, StartError};
use crate::runtime::container::TaskState;
use crate::runtime::image::ImageService;

/// The sandboxes of a pod on disk: `<root>/sandboxes/<uid>-<attempt>`.
pub(super) fn sandboxes_of(root: &Path, uid: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let attempt = name.strip_prefix(&format!("{uid}-"))?.parse().ok()?;
            Some((attempt, name))
        })
        .collect();
    out.sort();
    out
}

/// The termination message: the file, else (FallbackToLogsOnError, failed) the log's last lines.
pub(super) fn termination_message(f: &Facts, exit_code: u32) -> String {
    let from_file = f
        .termination_file
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
        .unwrap_or_default();
    if !from_file.is_empty() || f.termination_policy != "FallbackToLogsOnError" || exit_code == 0 {
        return from_file;
    }
    let log = f
        .log_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let lines: Vec<String> = log
        .lines()
        .filter_map(|l| {
            // CRI format: <time> <stream> <P|F> <content>
            let mut parts = l.splitn(4, ' ');
            let (_, _, _, content) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some(content.to_string())
        })
        .collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let bytes = tail.as_bytes();
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(2048)..]).into_owned()
}

/// The address probes dial: the pod's IP, or the node's for hostNetwork pods (and pods without
/// networking).
pub(super) fn pod_ip_for(ctx: &NodeContext, pod: &Pod, uid: &str) -> String {
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    if !host_network
        && let Some((_, id)) = sandboxes_of(&ctx.sandbox_root(), uid).pop()
        && let Ok(ip) = std::fs::read_to_string(ctx.sandbox_root().join(id).join("ip"))
        && !ip.trim().is_empty()
    {
        return ip.trim().to_string();
    }
    ctx.node_ip.clone()
}

/// Builds the runtime picture of one pod. Fails when containerd cannot list the pod's containers
/// (it is restarting): an empty list then would read as "every container vanished".
pub async fn observe(
    ctx: &NodeContext,
    pod: &Pod,
    start_errors: &BTreeMap<String, StartError>,
) -> Result<Observed, crate::runtime::RuntimeError> {
    let _relist = crate::metrics::RelistTimer::start();
    let uid = uid_of(pod);
    let now = Timestamp::now();
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let sandbox_and_pins = sandboxes_of(&ctx.sandbox_root(), &uid)
        .pop()
        .map(|(attempt, id)| {
            let dir = ctx.sandbox_root().join(&id);
            // The `ip` record is written once networking is set up (empty without CNI): a sandbox
            // whose ADD never finished (kubelet killed mid-ADD) is not ready and gets replaced, as
            // is one whose pinned namespaces are gone (the node rebooted).
            let pins = (ctx.sandbox_alive)(&dir);
            let ready = pins && (host_network || (dir.join("net").exists() && dir.join("ip").exists()));
            (SandboxState { id, attempt, ready }, pins)
        });
    // Namespace pins gone with a sandbox still recorded: the node rebooted under the pod.
    let rebooted = sandbox_and_pins.as_ref().is_some_and(|(_, pins)| !pins);
    let sandbox = sandbox_and_pins.map(|(s, _)| s);
    let listed = ctx.runtime.list_pod(&uid).await?;
    let mut containers = Vec::new();
    for l in listed.iter().filter(|l| l.meta.pod_uid == uid) {
        let mut f = ctx.facts(&l.id).unwrap_or_else(|| Facts {
            pod_uid: uid.clone(),
            ..Default::default()
        });
        // A container that ran but whose task is gone with the node's namespaces (the node
        // rebooted) ended at an unknown time with an unknown code; containerd's CRI reports such a
        // container exited with 255, reason "Unknown", and so does knode. (A missing task alone
        // is no proof: a restarting containerd answers NotFound until its shims are back.)
        let lost = l.state == TaskState::NoTask && (f.lost || (rebooted && f.started_at.is_some()));
        let task = if lost {
            TaskState::Exited {
                code: f.exit_code.unwrap_or(255),
            }
        } else {
            l.state
        };
        if let TaskState::Exited { code } = task
            && f.finished_at.is_none()
        {
            f.lost = lost;
            f.finished_at = Some(now);
            f.exit_code = Some(code);
            f.oom = f.oom || crate::cgroups::fs::oom_killed(&f.cgroups_path);
            f.message = termination_message(&f, code);
            ctx.save_facts(&l.id, f.clone());
        }
        let running = matches!(l.state, TaskState::Running { .. });
        if running {
            ctx.ensure_log_copy(&l.id, &f);
            if let Some((spec, _)) = find_container(pod, &l.meta.container_name) {
                let ip = pod_ip_for(ctx, pod, &uid);
                ctx.probes
                    .add_container(pod, &spec, &l.id, ip, f.started_at.unwrap_or(now));
            }
        } else {
            ctx.probes.remove_container(&l.id);
        }
        let mut state = AttemptState::from_task(task, f.started_at, f.finished_at, f.oom, &f.message, now);
        if f.lost
            && let AttemptState::Exited { reason, .. } = &mut state
        {
            *reason = "Unknown".into();
        }
        let mut attempt = ContainerAttempt::from_listed(l, state, f.created_at.unwrap_or(now), &f.image_id);
        if running {
            let r = ctx.probes.results(&l.id);
            attempt.ready = r.ready;
            attempt.started = r.started;
            attempt.live = r.live;
        }
        containers.push(attempt);
    }
    let pod_ips = sandbox
        .as_ref()
        .and_then(|s| std::fs::read_to_string(ctx.sandbox_root().join(&s.id).join("ip")).ok())
        .map(|ip| vec![ip.trim().to_string()])
        .filter(|v| !v[0].is_empty())
        .unwrap_or_default();
    let mut images_present = BTreeSet::new();
    let images: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .filter_map(|c| c.image.clone())
        .collect();
    for image in images {
        if let Ok(name) = ImageService::normalize(&image)
            && matches!(ctx.runtime.image(&name).await, Ok(Some(_)))
        {
            images_present.insert(image);
        }
    }
    Ok(Observed {
        sandbox,
        containers,
        start_errors: start_errors.clone(),
        images_present,
        pod_ips,
    })
}
