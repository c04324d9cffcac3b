//! The whole pod lifecycle. Pods come from the sources ([`sources`]: API watch, static manifests,
//! mirror pods), the pod manager ([`manager`]) admits them ([`admit`]) and runs one worker per pod UID
//! ([`executor`]), so a worker never blocks another. Each worker turn builds the [`Observed`] runtime
//! picture, calls the pure [`step`] (the [`mod@plan`] and the worker's state machine), executes the
//! plan's [`Action`]s, and reports [`status()`] when [`status_changed`] says so. Stops from outside the
//! pod object (orphaned, node shutdown, evicted) are inputs too ([`stop`]).
//!
//! Semantics follow upstream's kubelet: `kuberuntime_manager.computePodActions` and the pod workers
//! (sandbox → init containers one by one → app containers, restart policies, CrashLoopBackOff, graceful
//! termination), `kubelet_pods.generateAPIPodStatus` / `getPhase` / `convertToAPIContainerStatuses`,
//! `status/generate.go` (conditions), `qos.GetPodQOS`, and the resource/pod-count admission handler.
//!
//! Module map — pure (no I/O): [`mod@plan`] (the plan and the worker's state machine), [`stop`] (stop
//! requests and the end-of-turn policy), [`observed`] (the runtime picture), [`backoff`]
//! (CrashLoopBackOff and ImagePullBackOff bookkeeping), [`resources`] (quantities, requests, QoS,
//! admission), [`mod@status`] (the pod status), [`dns`] (resolv.conf and hostname per `dnsPolicy`),
//! [`sidecars`] (init containers with `restartPolicy: Always`: start gating, stop order),
//! [`ephemeral`] (ephemeral containers: started once, never restarted).
//! I/O: [`sources`], [`manager`], [`executor`].

pub mod backoff;
pub mod dns;
pub mod ephemeral;
pub mod executor;
pub mod manager;
pub mod observed;
pub mod plan;
pub mod resources;
pub mod sidecars;
pub mod sources;
pub mod status;
pub mod stop;

#[cfg(test)]
mod fixtures;

pub use backoff::{BackoffBook, BackoffConfig, BackoffStep, go_duration};
pub use observed::{
    AttemptState, ContainerAttempt, Observed, SandboxState, StartError, container_id_uri, spec_hash,
    terminated_reason,
};
pub use plan::{Action, Input, Plan, Stage, TerminationReason, WorkerState, plan, step};
pub use resources::{Admission, NodeCapacity, Rejection, admit, pod_qos, rejected_status};
pub use status::{status, status_changed};

/// Which list of the pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    App,
    Init,
    Ephemeral,
}

impl ContainerKind {
    /// The spec field of that list, as in an event's `fieldPath` (`spec.<field>{name}`).
    pub fn spec_field(self) -> &'static str {
        match self {
            ContainerKind::App => "containers",
            ContainerKind::Init => "initContainers",
            ContainerKind::Ephemeral => "ephemeralContainers",
        }
    }
}

/// The timestamp type used throughout (the one `k8s_openapi`'s `Time` wraps).
pub type Timestamp = k8s_openapi::jiff::Timestamp;

/// Upstream's `format.Pod`: `name_namespace(uid)`, used in messages and logs.
pub fn pod_display(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// Upstream's `klog.KObj`: `namespace/name`, the pod in log lines.
pub fn pod_ref(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default()
    )
}

/// Whether the pod comes from the static manifest directory (`kubernetes.io/config.source: file`).
pub fn is_static(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s == "file")
}

#[cfg(test)]
mod ephemeral_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod sidecar_tests;
#[cfg(test)]
mod status_tests;
