//! A recording fake of [`PodRuntime`] for unit tests: containers live in a map, every call is
//! recorded ([`Call`]), and failures are injected per operation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use oci_client::secrets::RegistryAuth;

use super::container::{
    ContainerError, ContainerMeta, CreateContainer, CreatedContainer, ExitStatus, ListedContainer,
    NamespaceContainer, TaskState,
};
use super::exec::ExecOutput;
use super::image::{ImageInfo, PullError, PullPolicy};
use super::passwd::{PasswdError, UserDb};
use super::pod_runtime::{ExecSpec, Fut};
use super::{PodRuntime, SnapshotUsage};

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Pull {
        image: String,
    },
    Create {
        id: String,
        container: String,
        restart_count: u32,
    },
    Start {
        id: String,
    },
    Stop {
        id: String,
        signal: u32,
    },
    Remove {
        id: String,
    },
    Delete {
        id: String,
    },
    Exec {
        id: String,
        command: Vec<String>,
    },
}

/// What the fake holds and how it fails.
#[derive(Debug, Default)]
pub struct FakeState {
    pub calls: Vec<Call>,
    pub containers: BTreeMap<String, ListedContainer>,
    /// Stored images by containerd name.
    pub images: BTreeMap<String, ImageInfo>,
    /// Pulls of these images (as the pod names them) fail with a registry error of this message.
    pub pull_failures: BTreeMap<String, String>,
    /// Creating a container of this name fails with this message.
    pub create_failures: BTreeMap<String, String>,
    /// Starting a container of this name fails with this message.
    pub start_failures: BTreeMap<String, String>,
    /// The exit code a stopped container gets.
    pub stop_exit_code: u32,
    /// Listing fails (containerd restarting).
    pub list_unavailable: bool,
}

/// The fake runtime.
#[derive(Debug, Default, Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
}

fn failed(id: &str, message: &str) -> ContainerError {
    ContainerError::Io {
        id: id.to_string(),
        step: "fake",
        source: std::io::Error::other(message.to_string()),
    }
}

/// A stored image as the fake reports it.
pub fn image_info(name: &str) -> ImageInfo {
    ImageInfo {
        name: name.to_string(),
        manifest_digest: "sha256:feed".into(),
        config_digest: "sha256:c0f1".into(),
        top_chain_id: "sha256:cha1".into(),
        size: 1000,
        config: serde_json::json!({"Cmd": ["/bin/sh"]}),
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, to set up failures and inspect calls.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        crate::lock::lock(&self.state)
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Lets a running container exit with `code`.
    pub fn exit(&self, id: &str, code: u32) {
        if let Some(c) = self.state().containers.get_mut(id) {
            c.state = TaskState::Exited { code };
        }
    }

    fn record(&self, call: Call) {
        self.state().calls.push(call);
    }

    fn container_name(&self, id: &str) -> String {
        self.state()
            .containers
            .get(id)
            .map(|c| c.meta.container_name.clone())
            .unwrap_or_default()
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl PodRuntime for FakeRuntime {
    fn version(&self) -> Fut<'_, String> {
        ready(Ok("fake://1.0".into()))
    }

    fn list_containers(&self) -> Fut<'_, Vec<ListedContainer>> {
        ready(Ok(self.state().containers.values().cloned().collect()))
    }

    fn list_all_containers(&self) -> Fut<'_, Vec<NamespaceContainer>> {
        let all = self
            .state()
            .containers
            .values()
            .map(|c| NamespaceContainer {
                id: c.id.clone(),
                meta: Some(c.meta.clone()),
                image: c.image.clone(),
                state: c.state,
                created: None,
            })
            .collect();
        ready(Ok(all))
    }

    fn list_pod<'a>(&'a self, pod_uid: &'a str) -> Fut<'a, Vec<ListedContainer>> {
        if self.state().list_unavailable {
            return ready(Err(super::RuntimeError::grpc("Containers.List")(
                tonic::Status::unavailable("connection refused"),
            )));
        }
        let mine = self
            .state()
            .containers
            .values()
            .filter(|c| c.meta.pod_uid == pod_uid)
            .cloned()
            .collect();
        ready(Ok(mine))
    }

    fn create(&self, req: CreateContainer) -> Fut<'_, CreatedContainer, ContainerError> {
        let name = req.meta.container_name.clone();
        self.record(Call::Create {
            id: req.id.clone(),
            container: name.clone(),
            restart_count: req.meta.restart_count,
        });
        let failure = self.state().create_failures.get(&name).cloned();
        if let Some(m) = failure {
            return ready(Err(failed(&req.id, &m)));
        }
        let meta: ContainerMeta = req.meta.clone();
        self.state().containers.insert(
            req.id.clone(),
            ListedContainer {
                id: req.id.clone(),
                meta,
                image: req.image.clone(),
                state: TaskState::Created,
            },
        );
        let log_path = req.log_dir.join(format!("{name}/{}.log", req.meta.restart_count));
        ready(Ok(CreatedContainer::without_logs(
            &req.id,
            log_path,
            String::new(),
            req.fifo_dir.join(&req.id),
        )))
    }

    fn start<'a>(&'a self, id: &'a str) -> Fut<'a, u32, ContainerError> {
        self.record(Call::Start { id: id.to_string() });
        let name = self.container_name(id);
        let failure = self.state().start_failures.get(&name).cloned();
        if let Some(m) = failure {
            // As runc: the task never ran; it exits with 128.
            self.exit(id, 128);
            return ready(Err(failed(id, &m)));
        }
        if let Some(c) = self.state().containers.get_mut(id) {
            c.state = TaskState::Running { pid: 4242 };
        }
        ready(Ok(4242))
    }

    fn stop<'a>(&'a self, id: &'a str, signal: u32, _grace: Duration) -> Fut<'a, ExitStatus, ContainerError> {
        self.record(Call::Stop {
            id: id.to_string(),
            signal,
        });
        let code = self.state().stop_exit_code;
        let mut st = self.state();
        let Some(c) = st.containers.get_mut(id) else {
            return ready(Err(failed(id, "not found")));
        };
        let code = match c.state {
            TaskState::Exited { code } => code,
            _ => code,
        };
        c.state = TaskState::Exited { code };
        ready(Ok(ExitStatus {
            code,
            exited_at: None,
            oom_killed: false,
        }))
    }

    fn remove<'a>(&'a self, created: &'a CreatedContainer) -> Fut<'a, (), ContainerError> {
        self.record(Call::Remove {
            id: created.id.clone(),
        });
        self.state().containers.remove(&created.id);
        ready(Ok(()))
    }

    fn delete<'a>(&'a self, id: &'a str) -> Fut<'a, (), ContainerError> {
        self.record(Call::Delete { id: id.to_string() });
        self.state().containers.remove(id);
        ready(Ok(()))
    }

    fn exec<'a>(&'a self, id: &'a str, spec: ExecSpec<'a>) -> Fut<'a, ExecOutput, ContainerError> {
        self.record(Call::Exec {
            id: id.to_string(),
            command: spec.command.to_vec(),
        });
        ready(Ok(ExecOutput {
            exit_code: Some(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }))
    }

    fn image<'a>(&'a self, name: &'a str) -> Fut<'a, Option<ImageInfo>> {
        ready(Ok(self.state().images.get(name).cloned()))
    }

    fn list_images(&self) -> Fut<'_, Vec<ImageInfo>> {
        ready(Ok(self.state().images.values().cloned().collect()))
    }

    fn pull<'a>(
        &'a self,
        image: &'a str,
        _policy: PullPolicy,
        _auth: &'a RegistryAuth,
    ) -> Fut<'a, ImageInfo, PullError> {
        self.record(Call::Pull {
            image: image.to_string(),
        });
        let failure = self.state().pull_failures.get(image).cloned();
        if let Some(m) = failure {
            return ready(Err(PullError::NotFound {
                reference: image.to_string(),
                message: m,
            }));
        }
        let name = match super::image::ImageService::normalize(image) {
            Ok(n) => n,
            Err(e) => return ready(Err(e)),
        };
        let info = image_info(&name);
        self.state().images.insert(name, info.clone());
        ready(Ok(info))
    }

    fn remove_image<'a>(&'a self, name: &'a str) -> Fut<'a, ()> {
        self.state().images.remove(name);
        ready(Ok(()))
    }

    fn image_users<'a>(&'a self, _chain_id: &'a str) -> Fut<'a, Arc<UserDb>, PasswdError> {
        ready(Ok(Arc::new(UserDb::default())))
    }

    fn snapshotter_root(&self) -> BoxFuture<'_, Option<PathBuf>> {
        ready(None)
    }

    fn snapshot_usage<'a>(&'a self, _key: &'a str) -> Fut<'a, SnapshotUsage> {
        ready(Ok(SnapshotUsage::default()))
    }
}
