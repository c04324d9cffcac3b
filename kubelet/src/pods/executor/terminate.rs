//! Stopping and removing: a container (preStop, SIGTERM, grace, SIGKILL), a container record, and
//! everything of a pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::containers::run_hook;
use super::observe::{sandboxes_of, termination_message};
use super::sandbox::teardown_sandbox;
use super::{Facts, NodeContext, event, find_container, lock, uid_of};
use crate::hooks;
use crate::pods::sidecars::kill_stages;
use crate::pods::{ContainerAttempt, Observed, pod_ref};
use crate::runtime::container::TaskState;

/// The shortest grace period a container gets (upstream's `minimumGracePeriodInSeconds`).
const MIN_GRACE_SECONDS: i64 = 2;

pub(super) async fn kill_container(
    ctx: &NodeContext,
    pod: &Pod,
    id: &str,
    name: &str,
    grace: i64,
    message: &str,
) {
    if !message.is_empty() {
        event(ctx, pod, Some(name), "Normal", "Killing", message.to_string());
    }
    let grace = pre_stop(ctx, pod, id, name, grace).await;
    stop_container(ctx, pod, id, name, grace).await;
}

/// Runs the container's preStop hook, if any, within `grace` seconds; the grace period left.
async fn pre_stop(ctx: &NodeContext, pod: &Pod, id: &str, name: &str, grace: i64) -> i64 {
    let mut grace = grace.max(0);
    // preStop runs first, within the grace period (upstream: only when there is one).
    let found = find_container(pod, name);
    if let Some((c, _)) = &found
        && let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
        && grace > 0
    {
        let c = c.as_ref();
        let started = std::time::Instant::now();
        let limit = Duration::from_secs(grace as u64);
        if let Err(message) = run_hook(ctx, pod, c, id, handler, hooks::HookKind::PreStop, Some(limit)).await
        {
            tracing::warn!(pod = %pod_ref(pod), container = name, id, error = %message, "preStop hook failed");
            event(
                ctx,
                pod,
                Some(name),
                "Warning",
                "FailedPreStopHook",
                "PreStopHook failed".into(),
            );
        }
        grace -= started.elapsed().as_secs() as i64;
    }
    grace
}

/// SIGTERM, up to `grace` seconds (at least [`MIN_GRACE_SECONDS`]), then SIGKILL; records the exit.
async fn stop_container(ctx: &NodeContext, pod: &Pod, id: &str, name: &str, grace: i64) {
    // Upstream always leaves a minimal shutdown window to avoid needless SIGKILLs.
    let grace = Duration::from_secs(grace.max(MIN_GRACE_SECONDS) as u64);
    match ctx.runtime.stop(id, libc::SIGTERM as u32, grace).await {
        Ok(status) => {
            let mut f = ctx.facts(id).unwrap_or_else(|| Facts {
                pod_uid: uid_of(pod),
                ..Default::default()
            });
            if f.finished_at.is_none() {
                f.finished_at = Some(Timestamp::now());
                f.exit_code = Some(status.code);
                f.oom = f.oom || crate::cgroups::fs::oom_killed(&f.cgroups_path);
                f.message = termination_message(&f, status.code);
                ctx.save_facts(id, f);
            }
        }
        Err(e) => {
            tracing::warn!(pod = %pod_ref(pod), container = name, id, error = %e, "stopping container failed")
        }
    }
}

/// Deletes one container with its FIFOs and cgroups; whether it is gone (on failure its facts
/// stay, for the next attempt).
pub(super) async fn remove_container(ctx: &NodeContext, id: &str) -> bool {
    ctx.probes.remove_container(id);
    let handle = lock(&ctx.handles).remove(id);
    let r = match handle {
        Some(mut h) => {
            let h = tokio::task::spawn_blocking(move || {
                h.flush_logs();
                h
            })
            .await;
            match h {
                Ok(h) => ctx.runtime.remove(&h).await,
                Err(_) => ctx.runtime.delete(id).await,
            }
        }
        None => {
            let r = ctx.runtime.delete(id).await;
            let _ = std::fs::remove_dir_all(ctx.root_dir.join("fifo").join(id));
            if let Some(f) = ctx.facts(id) {
                crate::cgroups::fs::remove_cgroup_dirs(&f.cgroups_path);
            }
            r
        }
    };
    if let Err(e) = r {
        tracing::warn!(container = id, error = %e, "removing container failed");
        return false;
    }
    ctx.forget_facts(id);
    true
}

/// Stops every running container of the pod within `grace_seconds` (app containers together, then
/// sidecars in reverse order), then tears the sandbox down; the stopped containers stay for status
/// and logs.
pub(super) async fn kill_pod(ctx: &NodeContext, pod: &Pod, observed: &Observed, grace_seconds: i64) {
    let running: Vec<&ContainerAttempt> = observed
        .containers
        .iter()
        .filter(|c| c.state.is_running())
        .collect();
    // Upstream's termination ordering: every container runs its preStop hook at once; the app
    // containers then get SIGTERM, each sidecar only once the containers of the stages before it
    // stopped (or its grace period ran out waiting).
    let stages = kill_stages(pod.spec.as_ref(), &running);
    let (stages_done, _) = tokio::sync::watch::channel(0usize);
    let left: Vec<std::sync::atomic::AtomicUsize> = stages
        .iter()
        .map(|s| std::sync::atomic::AtomicUsize::new(s.len()))
        .collect();
    let kills = stages.iter().enumerate().flat_map(|(stage, containers)| {
        let (stages_done, left) = (&stages_done, &left);
        containers.iter().map(move |c| async move {
            event(
                ctx,
                pod,
                Some(&c.name),
                "Normal",
                "Killing",
                format!("Stopping container {}", c.name),
            );
            let grace = pre_stop(ctx, pod, &c.id, &c.name, grace_seconds).await;
            let waited = std::time::Instant::now();
            let mut turn = stages_done.subscribe();
            let limit = Duration::from_secs(grace.max(0) as u64);
            if tokio::time::timeout(limit, turn.wait_for(|done| *done >= stage))
                .await
                .is_err()
            {
                tracing::debug!(pod = %pod_ref(pod), container = %c.name, "stopping without waiting for its turn: grace period over");
            }
            let grace = grace - waited.elapsed().as_secs() as i64;
            stop_container(ctx, pod, &c.id, &c.name, grace).await;
            if left[stage].fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                stages_done.send_modify(|done| *done = (*done).max(stage + 1));
            }
        })
    });
    futures::future::join_all(kills).await;
    for (_, id) in sandboxes_of(&ctx.sandbox_root(), &uid_of(pod)) {
        teardown_sandbox(ctx, pod, &id).await;
    }
}

/// Removes everything of a pod from the node: containers, sandboxes, volumes, logs.
/// Whether everything is gone: when containerd could not list or delete the containers (it is
/// restarting) the pod must not be deleted from the API yet, or its containers would be left to
/// the orphan sweep; the caller retries.
pub async fn remove_pod(ctx: &NodeContext, pod: &Pod) -> bool {
    let uid = uid_of(pod);
    let mine = match ctx.runtime.list_pod(&uid).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(pod = %pod_ref(pod), error = %e, "listing the pod's containers for removal failed");
            return false;
        }
    };
    let mut all_removed = true;
    for l in mine {
        if matches!(l.state, TaskState::Running { .. }) {
            let _ = ctx
                .runtime
                .stop(&l.id, libc::SIGKILL as u32, Duration::from_secs(1))
                .await;
        }
        all_removed &= remove_container(ctx, &l.id).await;
    }
    if !all_removed {
        return false;
    }
    for (_, id) in sandboxes_of(&ctx.sandbox_root(), &uid) {
        teardown_sandbox(ctx, pod, &id).await;
    }
    ctx.volumes.teardown(&ctx.root_dir, &uid);
    let _ = std::fs::remove_dir_all(ctx.pod_log_dir(pod));
    if let Err(e) = ctx.cgroups.remove_pod(&uid) {
        tracing::warn!(pod = %pod_ref(pod), error = %e, "removing the pod's cgroups failed");
    }
    lock(&ctx.book).forget_pod(&uid);
    true
}
