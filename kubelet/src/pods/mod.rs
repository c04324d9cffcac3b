//! The pure core of the pod workers and the status manager: from a pod's desired spec and what the
//! runtime shows for it ([`Observed`]), decide what to do next ([`plan`], [`step`]) and what status to
//! report ([`status()`]). No I/O here: the I/O layer lists containerd (see `runtime::container`), runs the
//! [`Action`]s in order, and patches the pod status when [`status_changed`] says so.
//!
//! Semantics follow upstream's kubelet: `kuberuntime_manager.computePodActions` and the pod workers
//! (sandbox → init containers one by one → app containers, restart policies, CrashLoopBackOff, graceful
//! termination), `kubelet_pods.generateAPIPodStatus` / `getPhase` / `convertToAPIContainerStatuses`,
//! `status/generate.go` (conditions), `qos.GetPodQOS`, and the resource/pod-count admission handler.
//!
//! Wiring, per pod UID (one task each, so a worker never blocks another): admit with [`admit`] and
//! start from [`WorkerState::admitted`]; then loop: build the [`Observed`] (containerd relist by labels,
//! sandbox, probe results, the reason cache), call [`step`], run the plan's actions in order, apply
//! `plan.backoff` to the node's [`BackoffBook`], store `plan.start_errors` in the reason cache, compute
//! [`status()`] and patch it when [`status_changed`] against the pod's current status; sleep until
//! `plan.wake_at`, a runtime event or a pod update. End the worker when the state is `Finished`.
//!
//! Module map: [`observed`] (the runtime picture the I/O layer supplies), [`backoff`] (CrashLoopBackOff
//! and ImagePullBackOff bookkeeping), [`resources`] (quantities, requests, QoS, admission), [`worker`]
//! (the plan and the pod worker's state machine), [`mod@status`] (the pod status), [`dns`] (resolv.conf
//! and hostname per `dnsPolicy`).

pub mod backoff;
pub mod dns;
pub mod executor;
pub mod manager;
pub mod observed;
pub mod plan;
pub mod resources;
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

/// Whether the pod comes from the static manifest directory (`kubernetes.io/config.source: file`).
pub fn is_static(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s == "file")
}

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod status_tests;
