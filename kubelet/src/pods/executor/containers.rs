//! Starting a container attempt: image and pull credentials, env, volumes and mounts, the OCI
//! spec, create + start through the runtime, the postStart hook.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;

use super::observe::pod_ip_for;
use super::terminate::kill_container;
use super::{Facts, NodeContext, event, find_container, lock, uid_of};
use crate::hooks;
use crate::inputs::{self, PodFacts};
use crate::pods::{Observed, StartError, pod_display, pod_ref};
use crate::runtime::container::{ContainerMeta, CreateContainer, TaskState};
use crate::runtime::image::{ImageInfo, ImageService, PullPolicy, credentials_for};
use crate::sandbox;
use crate::spec::{BindMount, ImageConfig, NamespaceSource, SpecInput, container_spec};
use crate::volumes;

fn pod_facts(ctx: &NodeContext, pod_ip: &str) -> PodFacts {
    PodFacts {
        node_name: ctx.node_name.clone(),
        host_ip: ctx.node_ip.clone(),
        pod_ip: if pod_ip.is_empty() {
            ctx.node_ip.clone()
        } else {
            pod_ip.to_string()
        },
        node_cpu_millis: ctx.node_cpu_millis,
        node_memory: ctx.node_memory,
    }
}

/// Pulls a container's image as its pull policy says, with the `Pulling`/`Pulled`/`Failed` events;
/// a failure is booked in the backoff book (ImagePullBackOff) and returned as the start error.
pub(super) async fn pull_image(
    ctx: &NodeContext,
    pod: &Pod,
    container: &str,
    image: &str,
    start_sli: &mut crate::metrics::PodStartTracker,
) -> Result<(), StartError> {
    let c = Some(container);
    event(
        ctx,
        pod,
        c,
        "Normal",
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    let started = std::time::Instant::now();
    let policy = find_container(pod, container)
        .and_then(|(c, _)| PullPolicy::from_spec(c.image_pull_policy.as_deref(), image).ok())
        .unwrap_or(PullPolicy::IfNotPresent);
    let auth = pull_auth(ctx, pod, image).await;
    match ctx.runtime.pull(image, policy, &auth).await {
        Ok(info) => {
            let secs = started.elapsed().as_secs_f64();
            start_sli.pulled(secs);
            event(
                ctx,
                pod,
                c,
                "Normal",
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {secs:.3}s ({secs:.3}s including waiting). Image size: {} bytes.",
                    info.size
                ),
            );
            Ok(())
        }
        Err(e) => {
            let reason = e.reason();
            let message = format!("Failed to pull image \"{image}\": {e}");
            event(ctx, pod, c, "Warning", "Failed", message);
            event(ctx, pod, c, "Warning", "Failed", format!("Error: {reason}"));
            lock(&ctx.book).pull_failed(&uid_of(pod), image, reason, &e.to_string(), Timestamp::now());
            Err(StartError::new(reason, e.to_string()))
        }
    }
}

async fn pull_auth(ctx: &NodeContext, pod: &Pod, image: &str) -> oci_client::secrets::RegistryAuth {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut configs = Vec::new();
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .collect();
    for name in names {
        if let Ok(Some(s)) = api.get_opt(&name).await
            && let Some(d) = s.data.as_ref().and_then(|d| d.get(".dockerconfigjson"))
        {
            configs.push(d.0.clone());
        }
    }
    let registry = image.split('/').next().unwrap_or("");
    credentials_for(&configs, registry)
}

/// For an ephemeral container with `targetContainerName`, the target's PID namespace to join;
/// like upstream's `getTargetID`, the start fails while the target is not running.
async fn target_pid_namespace(
    ctx: &NodeContext,
    pod: &Pod,
    uid: &str,
    name: &str,
) -> Result<Option<NamespaceSource>, StartError> {
    let Some(target) = pod
        .spec
        .as_ref()
        .and_then(|s| crate::pods::ephemeral::target(s, name))
    else {
        return Ok(None);
    };
    let listed = ctx
        .runtime
        .list_pod(uid)
        .await
        .map_err(|e| StartError::new("CreateContainerError", e.to_string()))?;
    listed
        .iter()
        .filter(|l| l.meta.container_name == target)
        .find_map(|l| match l.state {
            TaskState::Running { pid } => Some(NamespaceSource::Path(format!("/proc/{pid}/ns/pid").into())),
            _ => None,
        })
        .map(Some)
        .ok_or_else(|| {
            StartError::new(
                "CreateContainerConfigError",
                format!("unable to find target container {target}"),
            )
        })
}

pub(super) async fn start_container(
    ctx: &NodeContext,
    pod: &Pod,
    name: &str,
    attempt: u32,
    spec_hash: &str,
    observed: &Observed,
) -> Result<(), StartError> {
    let (c, _) = find_container(pod, name).ok_or_else(|| {
        StartError::new(
            "CreateContainerError",
            format!("container {name} is not in the pod spec"),
        )
    })?;
    let c = c.as_ref();
    let uid = uid_of(pod);
    let image_ref = c.image.clone().unwrap_or_default();
    let image_name = ImageService::normalize(&image_ref)
        .map_err(|e| StartError::new("InvalidImageName", e.to_string()))?;
    let info = ctx
        .runtime
        .image(&image_name)
        .await
        .map_err(|e| StartError::new("CreateContainerError", e.to_string()))?
        .ok_or_else(|| StartError::new("ErrImagePull", format!("image {image_ref:?} is not present")))?;
    let refs = inputs::fetch_refs(&ctx.client, pod).await.map_err(|e| {
        StartError::new(
            "CreateContainerConfigError",
            format!("fetching referenced objects: {e}"),
        )
    })?;
    let pod_ip = observed.pod_ips.first().cloned().unwrap_or_default();
    let facts = pod_facts(ctx, &pod_ip);
    let env = inputs::container_env(pod, c, &refs, &facts)?;
    let expanded = Container {
        command: inputs::expand_args(c.command.as_ref(), &env),
        args: inputs::expand_args(c.args.as_ref(), &env),
        ..c.clone()
    };
    let vols = volumes::setup_pod(ctx, pod, &refs, &facts).await?;
    let mut mounts = volumes::mounts_for(c, &vols, &env)?;
    let pdir = volumes::pod_dir(&ctx.root_dir, &uid);
    etc_mounts(ctx, pod, c, &pdir, &pod_ip, &mut mounts)?;
    let id = container_id(&uid, name, attempt, Timestamp::now().as_nanosecond() as u64);
    let term_host = termination_mount(c, &pdir, name, &id, &mut mounts)?;
    let sb = sandbox_of(ctx, pod, observed);
    let img = ImageConfig::from_json(&info.config);
    // The pod's cgroup (and its QoS parents) exist with the pod's limits before a container joins.
    ctx.cgroups.ensure_pod(pod).map_err(|e| {
        StartError::new(
            "CreateContainerError",
            format!("failed to ensure that the pod: {uid} cgroups exist and are correctly applied: {e}"),
        )
    })?;
    let cgroups_path = ctx.cgroups.container_path(pod, &id);
    let (resources, oom_score_adj) = ctx.cgroups.container_resources(pod, c);
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    // The image's /etc/passwd and /etc/group, for a named USER and the user's groups.
    let users = ctx
        .runtime
        .image_users(&info.top_chain_id)
        .await
        .map_err(|e| StartError::new("CreateContainerError", e.to_string()))?;
    let mut namespaces = sb.namespaces();
    if let Some(pid) = target_pid_namespace(ctx, pod, &uid, name).await? {
        namespaces.pid = pid;
    }
    let input = SpecInput {
        pod,
        container: &expanded,
        image: &img,
        env: env.clone(),
        namespaces,
        hostname,
        mounts,
        passwd: users.passwd.clone(),
        group: users.group.clone(),
        cgroups_path: cgroups_path.clone(),
        oom_score_adj,
        resources,
        rootfs: "rootfs".into(),
    };
    let mut spec = container_spec(&input).map_err(|e| StartError::new(e.reason(), e.to_string()))?;
    crate::spec::security::finish(&mut spec, pod, c, &ctx.root_dir)?;
    let created = Created {
        id: &id,
        name,
        attempt,
        spec_hash,
        term_host,
    };
    create_and_start(ctx, pod, c, &info, spec, created).await?;
    if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        post_start(ctx, pod, c, &id, handler).await?;
    }
    Ok(())
}

/// The kubelet-managed /etc/hosts (the node's own entries for hostNetwork pods) and the pod's
/// /etc/resolv.conf, unless the container mounts its own.
fn etc_mounts(
    ctx: &NodeContext,
    pod: &Pod,
    c: &Container,
    pdir: &Path,
    pod_ip: &str,
    mounts: &mut Vec<BindMount>,
) -> Result<(), StartError> {
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    // /etc/hosts managed by the kubelet (the node's own for hostNetwork pods), /etc/resolv.conf.
    let hosts_path = pdir.join("etc-hosts");
    let (hostname, domain) = crate::pods::dns::hostname_and_domain(pod, &ctx.dns.cluster_domain)
        .map_err(|e| StartError::new("CreateContainerConfigError", e.to_string()))?;
    let host_hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").ok()
    } else {
        None
    };
    let _ = std::fs::create_dir_all(pdir);
    std::fs::write(
        &hosts_path,
        inputs::hosts_file(pod, pod_ip, host_hosts.as_deref(), &hostname, domain.as_deref()),
    )
    .map_err(|e| StartError::new("CreateContainerError", format!("writing /etc/hosts: {e}")))?;
    if !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
        mounts.push(BindMount {
            host_path: hosts_path,
            container_path: "/etc/hosts".into(),
            read_only: false,
            host_to_container: false,
        });
    }
    let resolv = pdir.join("resolv.conf");
    if resolv.exists() && !mounts.iter().any(|m| m.container_path == "/etc/resolv.conf") {
        // containerd's CRI mounts it writable unless the root filesystem is read-only.
        let read_only_rootfs = c
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false);
        mounts.push(BindMount {
            host_path: resolv,
            container_path: "/etc/resolv.conf".into(),
            read_only: read_only_rootfs,
            host_to_container: false,
        });
    }
    Ok(())
}

/// The host file for the container's termination message, bind-mounted at its
/// `terminationMessagePath`.
fn termination_mount(
    c: &Container,
    pdir: &Path,
    name: &str,
    id: &str,
    mounts: &mut Vec<BindMount>,
) -> Result<PathBuf, StartError> {
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let term_host = pdir.join("containers").join(name).join(id);
    create_termination_file(&term_host).map_err(|e| {
        StartError::new(
            "CreateContainerConfigError",
            format!("create termination message file {}: {e}", term_host.display()),
        )
    })?;
    mounts.push(BindMount {
        host_path: term_host.clone(),
        container_path: term_path,
        read_only: false,
        host_to_container: false,
    });
    Ok(term_host)
}

/// The pod sandbox's namespaces a new container joins.
fn sandbox_of(ctx: &NodeContext, pod: &Pod, observed: &Observed) -> sandbox::Sandbox {
    let sandbox_dir = observed.sandbox.as_ref().map(|s| ctx.sandbox_root().join(&s.id));
    sandbox::Sandbox {
        id: observed
            .sandbox
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default(),
        dir: sandbox_dir.clone().unwrap_or_default(),
        net: sandbox_dir.as_ref().map(|d| d.join("net")).filter(|p| p.exists()),
        ipc: sandbox_dir.as_ref().map(|d| d.join("ipc")).filter(|p| p.exists()),
        uts: sandbox_dir.as_ref().map(|d| d.join("uts")).filter(|p| p.exists()),
        host_pid: pod.spec.as_ref().and_then(|s| s.host_pid).unwrap_or(false),
    }
}

/// A container attempt about to be created.
struct Created<'a> {
    id: &'a str,
    name: &'a str,
    attempt: u32,
    spec_hash: &'a str,
    term_host: PathBuf,
}

/// Creates the container through the runtime, records its facts, starts it; with the `Created` and
/// `Started` events.
async fn create_and_start(
    ctx: &NodeContext,
    pod: &Pod,
    c: &Container,
    info: &ImageInfo,
    spec: oci_spec::runtime::Spec,
    new: Created<'_>,
) -> Result<(), StartError> {
    let Created {
        id,
        name,
        attempt,
        spec_hash,
        term_host,
    } = new;
    let uid = uid_of(pod);
    let created = ctx
        .runtime
        .create(CreateContainer {
            id: id.to_string(),
            meta: ContainerMeta {
                pod_uid: uid.clone(),
                pod_namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                container_name: name.to_string(),
                restart_count: attempt,
                spec_hash: spec_hash.to_string(),
            },
            image: info.name.clone(),
            parent_snapshot: info.top_chain_id.clone(),
            spec,
            log_dir: ctx.pod_log_dir(pod),
            fifo_dir: ctx.root_dir.join("fifo"),
            log_rotation: ctx.log_rotation,
            stdin: crate::runtime::stdin::StdinConfig {
                open: c.stdin.unwrap_or(false),
                once: c.stdin_once.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
            },
        })
        .await
        .map_err(|e| StartError::new("CreateContainerError", e.to_string()))?;
    let repo = info.name.rsplit_once(':').map(|(r, _)| r).unwrap_or(&info.name);
    let repo = repo.split('@').next().unwrap_or(repo);
    let mut f = Facts {
        pod_uid: uid.clone(),
        created_at: Some(Timestamp::now()),
        image_id: format!("{repo}@{}", info.manifest_digest),
        cgroups_path: created.cgroups_path.clone(),
        termination_file: Some(term_host),
        termination_policy: c
            .termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
        log_path: Some(created.log_path.clone()),
        ..Default::default()
    };
    ctx.save_facts(id, f.clone());
    event(
        ctx,
        pod,
        Some(name),
        "Normal",
        "Created",
        format!("Created container {name}"),
    );
    lock(&ctx.handles).insert(id.to_string(), created);
    ctx.runtime
        .start(id)
        .await
        .map_err(|e| StartError::new("RunContainerError", e.to_string()))?;
    f.started_at = Some(Timestamp::now());
    ctx.save_facts(id, f);
    event(
        ctx,
        pod,
        Some(name),
        "Normal",
        "Started",
        format!("Started container {name}"),
    );
    tracing::info!(pod = %pod_ref(pod), container = name, id, attempt, "container started");
    Ok(())
}

/// The host file bind-mounted at the container's `terminationMessagePath`. Mode 0666 whatever the
/// umask, as upstream: a container running as any user must be able to write its last words.
fn create_termination_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, b"")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
}

/// Runs a lifecycle hook of container `id`; the error is the message for the pod's status.
pub(super) async fn run_hook(
    ctx: &NodeContext,
    pod: &Pod,
    c: &Container,
    id: &str,
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    kind: hooks::HookKind,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let action = hooks::action(handler, c, &pod_ip_for(ctx, pod, &uid_of(pod))).map_err(|e| e.to_string())?;
    let exec_id = match kind {
        hooks::HookKind::PostStart => "poststart-hook",
        hooks::HookKind::PreStop => "prestop-hook",
    };
    let fifo_dir = ctx.root_dir.join("hook-fifo");
    hooks::run(ctx.runtime.as_ref(), &fifo_dir, id, exec_id, &action, timeout)
        .await
        .map_err(|f| hooks::failure_message(&action, &c.name, &pod_display(pod), &f.error, &f.output))
}

/// postStart: blocks this pod's worker until done, as upstream; a failure kills the container
/// (which then restarts per policy) and is reported as `PostStartHookError`.
async fn post_start(
    ctx: &NodeContext,
    pod: &Pod,
    c: &Container,
    id: &str,
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
) -> Result<(), StartError> {
    let Err(message) = run_hook(ctx, pod, c, id, handler, hooks::HookKind::PostStart, None).await else {
        return Ok(());
    };
    tracing::warn!(pod = %pod_ref(pod), container = %c.name, id, error = %message, "postStart hook failed");
    // Upstream leaves the message out of the event so that secrets cannot leak through it.
    event(
        ctx,
        pod,
        Some(&c.name),
        "Warning",
        "FailedPostStartHook",
        "PostStartHook failed".into(),
    );
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    kill_container(ctx, pod, id, &c.name, grace, "FailedPostStartHook").await;
    Err(StartError::new("PostStartHookError", message))
}

/// containerd refuses identifiers longer than this (`identifiers.Validate`).
const MAX_CONTAINERD_ID: usize = 76;

/// A container's containerd ID: `<pod uid prefix>-<name>-<attempt>-<nonce>`, readable in `ctr`
/// listings. A long container name (up to 63 characters) is cut so the ID fits containerd's limit;
/// the pod and container are in the labels, the ID only has to be unique.
fn container_id(uid: &str, name: &str, attempt: u32, nanos: u64) -> String {
    let uid8: String = uid.chars().take(8).collect();
    let tail = format!("-{attempt}-{:x}", nanos & 0xffffff);
    let room = MAX_CONTAINERD_ID.saturating_sub(uid8.len() + 1 + tail.len());
    let name: String = name.chars().take(room).collect();
    format!("{uid8}-{}{tail}", name.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn container_ids_fit_containerd_limit() {
        let uid = "68c4729d-busy-box-uid";
        assert_eq!(container_id(uid, "app", 2, 0xabcdef12), "68c4729d-app-2-cdef12");
        // The conformance suite's longest names (63 characters) still make a valid ID.
        let long = "busybox-privileged-false-89106282-166b-4615-bbd5-a7da5fbf024e";
        let id = container_id(uid, long, 4_000_000_000, u64::MAX);
        assert!(id.len() <= MAX_CONTAINERD_ID, "{id} is {} long", id.len());
        assert!(id.starts_with("68c4729d-busybox-privileged-false-") && id.ends_with("-4000000000-ffffff"));
        assert!(
            !id.contains("--"),
            "a cut never leaves a dangling separator: {id}"
        );
    }
}
