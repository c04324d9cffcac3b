//! Ephemeral containers (`spec.ephemeralContainers`, added through the `pods/ephemeralcontainers`
//! subresource, e.g. by `kubectl debug`). As upstream's kubelet does them: each is started once the
//! sandbox is up — even before the pod is initialized — and never restarted; they take no part in
//! the pod's phase, readiness or completion; they have their own `ephemeralContainerStatuses`; and
//! they are stopped with the pod. Their spec is a container's (`EphemeralContainerCommon`), so the
//! rest of the kubelet runs them as containers converted by [`as_container`].

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, PodSpec};

/// The container an ephemeral container runs as (its `targetContainerName` aside).
pub fn as_container(e: &EphemeralContainer) -> Container {
    let e = e.clone();
    Container {
        args: e.args,
        command: e.command,
        env: e.env,
        env_from: e.env_from,
        image: e.image,
        image_pull_policy: e.image_pull_policy,
        lifecycle: e.lifecycle,
        liveness_probe: e.liveness_probe,
        name: e.name,
        ports: e.ports,
        readiness_probe: e.readiness_probe,
        resize_policy: e.resize_policy,
        resources: e.resources,
        restart_policy: e.restart_policy,
        security_context: e.security_context,
        startup_probe: e.startup_probe,
        stdin: e.stdin,
        stdin_once: e.stdin_once,
        termination_message_path: e.termination_message_path,
        termination_message_policy: e.termination_message_policy,
        tty: e.tty,
        volume_devices: e.volume_devices,
        volume_mounts: e.volume_mounts,
        working_dir: e.working_dir,
    }
}

/// The pod's ephemeral containers as containers, in spec order.
pub fn containers(spec: &PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .map(as_container)
        .collect()
}

/// The ephemeral container named `name`.
pub fn find(spec: &PodSpec, name: &str) -> Option<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .map(as_container)
}

/// The `targetContainerName` of the ephemeral container `name`: the container whose process
/// namespace it joins (`kubectl debug --target`).
pub fn target<'a>(spec: &'a PodSpec, name: &str) -> Option<&'a str> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .target_container_name
        .as_deref()
}
