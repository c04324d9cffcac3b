//! What the runtime shows for one pod, as the I/O layer supplies it to [`super::plan`] and
//! [`super::status()`]: the sandbox, every container attempt still known to containerd (identified by the
//! labels of `runtime::container::ContainerMeta`), probe results, the last start error per container
//! (upstream's "reason cache") and the pod's IPs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Container;
use sha2::{Digest, Sha256};

use super::Timestamp;
use crate::runtime::container::{ListedContainer, TaskState};

/// The runtime picture of one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The pod sandbox, if one exists.
    pub sandbox: Option<SandboxState>,
    /// Every container of this pod known to the runtime (all attempts, any state, in any order),
    /// including ones whose name is not in the spec any more.
    pub containers: Vec<ContainerAttempt>,
    /// Upstream's reason cache: the last failed start of a container by name, e.g. `ErrImagePull`,
    /// `CreateContainerConfigError`, `CrashLoopBackOff`. The I/O layer inserts the entries of
    /// [`super::Plan::start_errors`] and the failures of the actions it runs, and removes a container's
    /// entry when a `StartContainer` for it succeeds.
    pub start_errors: BTreeMap<String, StartError>,
    /// Image references (as written in the spec) present in the runtime's image store; decides
    /// whether `IfNotPresent` pulls.
    pub images_present: BTreeSet<String>,
    /// The pod's IPs (first is the primary), once networking is set up; ignored for hostNetwork pods,
    /// which report the node's IP.
    pub pod_ips: Vec<String>,
}

/// The pod sandbox (pinned namespaces; `crate::sandbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxState {
    pub id: String,
    /// Starts at 0; a replacement sandbox gets the next attempt.
    pub attempt: u32,
    /// The namespaces exist and networking is configured. A sandbox that is not ready is replaced,
    /// restarting the pod's containers (upstream's `podSandboxChanged`).
    pub ready: bool,
}

/// One container of the pod as the runtime knows it: one attempt (restart) of one spec container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerAttempt {
    /// containerd container ID.
    pub id: String,
    /// The spec container's name (label `io.kubernetes.container.name`).
    pub name: String,
    /// The restart count it was created with (label `io.kubernetes.container.restartCount`).
    pub attempt: u32,
    /// [`spec_hash`] of the spec it was created from (label `io.kubernetes.container.hash`).
    pub spec_hash: String,
    /// The image reference as reported (status `image`).
    pub image: String,
    /// The resolved image (status `imageID`, e.g. `registry/repo@sha256:…`).
    pub image_id: String,
    /// When the container record was created; orders attempts with equal `attempt`.
    pub created_at: Timestamp,
    pub state: AttemptState,
    /// Latest readiness probe result; `None` = no result (ready iff the spec has no readiness probe).
    pub ready: Option<bool>,
    /// Latest startup probe result; `None` = no result yet (started iff the spec has no startup
    /// probe), `Some(false)` = failed for good, which kills the container like a liveness failure.
    pub started: Option<bool>,
    /// Latest liveness probe result; `Some(false)` kills the container (restarted unless policy Never).
    pub live: Option<bool>,
}

/// The state of one container attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptState {
    /// Created, never started.
    Created,
    Running {
        started_at: Timestamp,
    },
    Exited {
        exit_code: i32,
        /// `Completed`, `Error` or `OOMKilled` (see [`terminated_reason`]).
        reason: String,
        /// The termination message (file or log tail), possibly empty.
        message: String,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
    /// The runtime could not say.
    Unknown,
}

impl AttemptState {
    pub fn is_running(&self) -> bool {
        matches!(self, AttemptState::Running { .. })
    }

    /// From a relisted task state plus what the I/O layer recorded about the attempt (its start and
    /// exit times, whether the OOM killer hit it, its termination message). `fallback_time` stands
    /// in for a time the I/O layer does not know (e.g. after a kubelet restart). A container record
    /// without a task counts as created-not-started; a paused or unreadable one as unknown.
    pub fn from_task(
        task: TaskState,
        started_at: Option<Timestamp>,
        finished_at: Option<Timestamp>,
        oom_killed: bool,
        message: &str,
        fallback_time: Timestamp,
    ) -> Self {
        match task {
            TaskState::NoTask | TaskState::Created => AttemptState::Created,
            TaskState::Running { .. } => AttemptState::Running {
                started_at: started_at.unwrap_or(fallback_time),
            },
            TaskState::Exited { code } => {
                let exit_code = i32::try_from(code).unwrap_or(i32::MAX);
                AttemptState::Exited {
                    exit_code,
                    reason: terminated_reason(exit_code, oom_killed).into(),
                    message: message.to_string(),
                    started_at,
                    finished_at: finished_at.unwrap_or(fallback_time),
                }
            }
            TaskState::Paused | TaskState::Unknown => AttemptState::Unknown,
        }
    }
}

impl ContainerAttempt {
    /// An attempt from a relisted kubelet container: name, restart count and spec hash come from its
    /// labels (`ContainerMeta`); no probe results yet.
    pub fn from_listed(
        listed: &ListedContainer,
        state: AttemptState,
        created_at: Timestamp,
        image_id: &str,
    ) -> Self {
        ContainerAttempt {
            id: listed.id.clone(),
            name: listed.meta.container_name.clone(),
            attempt: listed.meta.restart_count,
            spec_hash: listed.meta.spec_hash.clone(),
            image: listed.image.clone(),
            image_id: image_id.to_string(),
            created_at,
            state,
            ready: None,
            started: None,
            live: None,
        }
    }
}

/// Why a container could not be started, as its waiting state shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    /// Upstream's waiting reason: `ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`,
    /// `ErrImageNeverPull`, `CreateContainerConfigError`, `CreateContainerError`, `CrashLoopBackOff`, …
    pub reason: String,
    pub message: String,
}

impl StartError {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        StartError {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// The terminated reason upstream's CRI reports: `OOMKilled` when the OOM killer hit the container,
/// else `Completed` for exit code 0 and `Error` otherwise.
pub fn terminated_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// `containerd://<id>`, the status `containerID`.
pub fn container_id_uri(id: &str) -> String {
    format!("containerd://{id}")
}

/// The hash recorded on a container (label `io.kubernetes.container.hash`): the first 16 hex digits
/// of the SHA-256 of the container spec's JSON. k8s-openapi serializes struct fields in a fixed order
/// and maps as sorted `BTreeMap`s, so the hash is deterministic; any change of the spec (in practice
/// the image, the only mutable container field) changes it and restarts the container.
pub fn spec_hash(container: &Container) -> String {
    // Serializing a k8s-openapi struct to JSON cannot fail (no non-string map keys, no foreign types);
    // should it ever, hashing the name alone still yields a stable value.
    let json = serde_json::to_vec(container).unwrap_or_else(|_| container.name.clone().into_bytes());
    let digest = Sha256::digest(&json);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Observed {
    /// The attempts of one container name, newest first (highest attempt, then latest created).
    pub fn attempts(&self, name: &str) -> Vec<&ContainerAttempt> {
        let mut v: Vec<&ContainerAttempt> = self.containers.iter().filter(|c| c.name == name).collect();
        v.sort_by(|a, b| {
            b.attempt
                .cmp(&a.attempt)
                .then(b.created_at.cmp(&a.created_at))
                .then(b.id.cmp(&a.id))
        });
        v
    }

    /// The newest attempt of a container (upstream's `FindContainerStatusByName`).
    pub fn latest(&self, name: &str) -> Option<&ContainerAttempt> {
        self.attempts(name).into_iter().next()
    }

    /// Whether any container of the pod is running or in an unknown state (may be running).
    pub fn any_running(&self) -> bool {
        self.containers
            .iter()
            .any(|c| matches!(c.state, AttemptState::Running { .. } | AttemptState::Unknown))
    }

    /// The sandbox exists and is ready.
    pub fn sandbox_ready(&self) -> bool {
        self.sandbox.as_ref().is_some_and(|s| s.ready)
    }
}
