//! The runtime seam: what the rest of the kubelet (pod executor, GC, stats, eviction, node status)
//! asks of the container runtime, as one small trait ([`PodRuntime`]). [`ContainerdRuntime`]
//! implements it over containerd's gRPC API (the only place besides this module's siblings that
//! touches `containerd_client`); tests use the recording fake in `runtime::fake`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::PluginsRequest;
use containerd_client::services::v1::introspection_client::IntrospectionClient;
use containerd_client::services::v1::snapshots::UsageRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::version_client::VersionClient;
use futures::future::BoxFuture;
use oci_client::secrets::RegistryAuth;

use super::container::{
    ContainerError, ContainerService, CreateContainer, CreatedContainer, ExitStatus, ListedContainer,
    NamespaceContainer,
};
use super::exec::ExecOutput;
use super::image::{ImageInfo, ImageService, PullError, PullPolicy};
use super::passwd::{PasswdError, UserDb};
use super::{Containerd, RuntimeError, SNAPSHOTTER};

/// A boxed runtime call's future.
pub type Fut<'a, T, E = RuntimeError> = BoxFuture<'a, Result<T, E>>;

/// A command to run in a container ([`PodRuntime::exec`]).
#[derive(Debug, Clone, Copy)]
pub struct ExecSpec<'a> {
    pub exec_id: &'a str,
    pub command: &'a [String],
    /// Where the FIFOs live while the command runs.
    pub fifo_dir: &'a Path,
    /// A command still running then is killed (`exit_code: None`).
    pub timeout: Option<Duration>,
}

/// A snapshot's disk use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Containers, tasks, images and snapshots as the kubelet uses them. Object-safe (futures boxed) so
/// the kubelet holds an `Arc<dyn PodRuntime>`.
pub trait PodRuntime: Send + Sync {
    /// The runtime's name and version (`containerd://1.6.20`); an error when it does not answer.
    fn version(&self) -> Fut<'_, String>;

    /// Every kubelet-created container with its task state.
    fn list_containers(&self) -> Fut<'_, Vec<ListedContainer>>;
    /// Every container of the namespace, the kubelet's or not.
    fn list_all_containers(&self) -> Fut<'_, Vec<NamespaceContainer>>;
    /// The containers of one pod.
    fn list_pod<'a>(&'a self, pod_uid: &'a str) -> Fut<'a, Vec<ListedContainer>>;
    /// Creates a container and its task (not started), with its log copy running.
    fn create(&self, req: CreateContainer) -> Fut<'_, CreatedContainer, ContainerError>;
    /// Starts a created container's task; returns its pid.
    fn start<'a>(&'a self, id: &'a str) -> Fut<'a, u32, ContainerError>;
    /// Stops a container: `signal`, up to `grace`, then SIGKILL.
    fn stop<'a>(&'a self, id: &'a str, signal: u32, grace: Duration) -> Fut<'a, ExitStatus, ContainerError>;
    /// Deletes a container this process created (and its FIFOs and cgroup directories).
    fn remove<'a>(&'a self, created: &'a CreatedContainer) -> Fut<'a, (), ContainerError>;
    /// Deletes a container by ID (task, record, snapshot).
    fn delete<'a>(&'a self, id: &'a str) -> Fut<'a, (), ContainerError>;
    /// Runs a command in a running container (hooks), collecting its output.
    fn exec<'a>(&'a self, id: &'a str, spec: ExecSpec<'a>) -> Fut<'a, ExecOutput, ContainerError>;

    /// A stored image by its containerd name, if present.
    fn image<'a>(&'a self, name: &'a str) -> Fut<'a, Option<ImageInfo>>;
    /// Every stored image.
    fn list_images(&self) -> Fut<'_, Vec<ImageInfo>>;
    /// Applies the pull policy: the stored image, pulled first if the policy says so.
    fn pull<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        auth: &'a RegistryAuth,
    ) -> Fut<'a, ImageInfo, PullError>;
    /// Removes an image name.
    fn remove_image<'a>(&'a self, name: &'a str) -> Fut<'a, ()>;
    /// The image's /etc/passwd and /etc/group (its top snapshot is `chain_id`).
    fn image_users<'a>(&'a self, chain_id: &'a str) -> Fut<'a, Arc<UserDb>, PasswdError>;

    /// The root directory of the snapshotter (the image filesystem), when the runtime says.
    fn snapshotter_root(&self) -> BoxFuture<'_, Option<PathBuf>>;
    /// The disk use of a container's rootfs snapshot (its key is the container ID).
    fn snapshot_usage<'a>(&'a self, key: &'a str) -> Fut<'a, SnapshotUsage>;
}

/// [`PodRuntime`] over containerd.
pub struct ContainerdRuntime {
    pub containers: ContainerService,
    pub images: ImageService,
}

impl ContainerdRuntime {
    pub fn new(containerd: Containerd, insecure_registries: Vec<String>) -> Self {
        ContainerdRuntime {
            images: ImageService::new(containerd.clone(), insecure_registries),
            containers: ContainerService::new(containerd),
        }
    }

    /// The connection (exec probes, streaming, events).
    pub fn containerd(&self) -> &Containerd {
        self.containers.containerd()
    }
}

/// The root of containerd's snapshotter, from the introspection service (with the namespace
/// header, as every request).
pub async fn snapshotter_root(c: &Containerd) -> Option<PathBuf> {
    let req = PluginsRequest {
        filters: vec![format!("type==io.containerd.snapshotter.v1,id=={SNAPSHOTTER}")],
    };
    IntrospectionClient::new(c.channel())
        .plugins(c.request(req, None))
        .await
        .ok()?
        .into_inner()
        .plugins
        .into_iter()
        .find_map(|p| p.exports.get("root").cloned())
        .map(PathBuf::from)
}

/// containerd's version as the node reports it (`containerd://1.6.20`).
pub async fn version(c: &Containerd) -> Result<String, RuntimeError> {
    let v = VersionClient::new(c.channel())
        .version(())
        .await
        .map_err(RuntimeError::grpc("version"))?;
    Ok(format!(
        "containerd://{}",
        v.into_inner().version.trim_start_matches('v')
    ))
}

impl PodRuntime for ContainerdRuntime {
    fn version(&self) -> Fut<'_, String> {
        Box::pin(version(self.containerd()))
    }

    fn list_containers(&self) -> Fut<'_, Vec<ListedContainer>> {
        Box::pin(self.containers.list())
    }

    fn list_all_containers(&self) -> Fut<'_, Vec<NamespaceContainer>> {
        Box::pin(self.containers.list_all())
    }

    fn list_pod<'a>(&'a self, pod_uid: &'a str) -> Fut<'a, Vec<ListedContainer>> {
        Box::pin(self.containers.list_pod(pod_uid))
    }

    fn create(&self, req: CreateContainer) -> Fut<'_, CreatedContainer, ContainerError> {
        Box::pin(self.containers.create(req))
    }

    fn start<'a>(&'a self, id: &'a str) -> Fut<'a, u32, ContainerError> {
        Box::pin(self.containers.start(id))
    }

    fn stop<'a>(&'a self, id: &'a str, signal: u32, grace: Duration) -> Fut<'a, ExitStatus, ContainerError> {
        Box::pin(async move { self.containers.stop(id, signal, grace).await.map(|(s, _)| s) })
    }

    fn remove<'a>(&'a self, created: &'a CreatedContainer) -> Fut<'a, (), ContainerError> {
        Box::pin(self.containers.remove(created))
    }

    fn delete<'a>(&'a self, id: &'a str) -> Fut<'a, (), ContainerError> {
        Box::pin(self.containers.delete(id))
    }

    fn exec<'a>(&'a self, id: &'a str, spec: ExecSpec<'a>) -> Fut<'a, ExecOutput, ContainerError> {
        let ExecSpec {
            exec_id,
            command,
            fifo_dir,
            timeout,
        } = spec;
        Box::pin(super::exec::exec(
            self.containerd(),
            id,
            exec_id,
            command,
            fifo_dir,
            timeout,
        ))
    }

    fn image<'a>(&'a self, name: &'a str) -> Fut<'a, Option<ImageInfo>> {
        Box::pin(self.images.inspect(name))
    }

    fn list_images(&self) -> Fut<'_, Vec<ImageInfo>> {
        Box::pin(self.images.list())
    }

    fn pull<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        auth: &'a RegistryAuth,
    ) -> Fut<'a, ImageInfo, PullError> {
        Box::pin(async move { self.images.ensure(image, policy, auth, &|_| {}).await })
    }

    fn remove_image<'a>(&'a self, name: &'a str) -> Fut<'a, ()> {
        Box::pin(self.images.remove(name))
    }

    fn image_users<'a>(&'a self, chain_id: &'a str) -> Fut<'a, Arc<UserDb>, PasswdError> {
        Box::pin(super::passwd::image_user_db(self.containerd(), chain_id))
    }

    fn snapshotter_root(&self) -> BoxFuture<'_, Option<PathBuf>> {
        Box::pin(snapshotter_root(self.containerd()))
    }

    fn snapshot_usage<'a>(&'a self, key: &'a str) -> Fut<'a, SnapshotUsage> {
        Box::pin(async move {
            let c = self.containerd();
            let u = SnapshotsClient::new(c.channel())
                .usage(c.request(
                    UsageRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.to_string(),
                    },
                    None,
                ))
                .await
                .map_err(RuntimeError::grpc("snapshot usage"))?
                .into_inner();
            Ok(SnapshotUsage {
                bytes: u.size.max(0) as u64,
                inodes: u.inodes.max(0) as u64,
            })
        })
    }
}
