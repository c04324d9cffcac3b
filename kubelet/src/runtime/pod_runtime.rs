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
    LogRotation, NamespaceContainer,
};
use super::exec::ExecOutput;
use super::image::{ImageInfo, ImageService, PullError, PullPolicy};
use super::passwd::{PasswdError, UserDb};
use super::{Containerd, RuntimeError, SNAPSHOTTER};

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
    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>>;

    /// Every kubelet-created container with its task state.
    fn list_containers(&self) -> BoxFuture<'_, Result<Vec<ListedContainer>, RuntimeError>>;
    /// Every container of the namespace, the kubelet's or not.
    fn list_all_containers(&self) -> BoxFuture<'_, Result<Vec<NamespaceContainer>, RuntimeError>>;
    /// The containers of one pod.
    fn list_pod<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, Result<Vec<ListedContainer>, RuntimeError>>;
    /// Creates a container and its task (not started), with its log copy running.
    fn create(&self, req: CreateContainer) -> BoxFuture<'_, Result<CreatedContainer, ContainerError>>;
    /// Starts a created container's task; returns its pid.
    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<u32, ContainerError>>;
    /// Stops a container: `signal`, up to `grace`, then SIGKILL.
    fn stop<'a>(
        &'a self,
        id: &'a str,
        signal: u32,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ExitStatus, ContainerError>>;
    /// Deletes a container this process created (and its FIFOs and cgroup directories).
    fn remove<'a>(&'a self, created: &'a CreatedContainer) -> BoxFuture<'a, Result<(), ContainerError>>;
    /// Deletes a container by ID (task, record, snapshot).
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ContainerError>>;
    /// Resumes the log copy of a running container an earlier kubelet process created.
    fn reattach_logs(
        &self,
        id: &str,
        fifo_root: &Path,
        log_path: &Path,
        rotation: LogRotation,
        cgroups_path: &str,
    ) -> Result<CreatedContainer, ContainerError>;
    /// Runs a command in a running container (hooks), collecting its output.
    fn exec<'a>(
        &'a self,
        id: &'a str,
        exec_id: &'a str,
        command: &'a [String],
        fifo_dir: &'a Path,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<ExecOutput, ContainerError>>;

    /// A stored image by its containerd name, if present.
    fn image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ImageInfo>, RuntimeError>>;
    /// Every stored image.
    fn list_images(&self) -> BoxFuture<'_, Result<Vec<ImageInfo>, RuntimeError>>;
    /// Applies the pull policy: the stored image, pulled first if the policy says so.
    fn pull<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        auth: &'a RegistryAuth,
    ) -> BoxFuture<'a, Result<ImageInfo, PullError>>;
    /// Removes an image name.
    fn remove_image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;
    /// The image's /etc/passwd and /etc/group (its top snapshot is `chain_id`).
    fn image_users<'a>(&'a self, chain_id: &'a str) -> BoxFuture<'a, Result<Arc<UserDb>, PasswdError>>;

    /// The root directory of the snapshotter (the image filesystem), when the runtime says.
    fn snapshotter_root(&self) -> BoxFuture<'_, Option<PathBuf>>;
    /// The disk use of a container's rootfs snapshot (its key is the container ID).
    fn snapshot_usage<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<SnapshotUsage, RuntimeError>>;
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
    fn version(&self) -> BoxFuture<'_, Result<String, RuntimeError>> {
        Box::pin(version(self.containerd()))
    }

    fn list_containers(&self) -> BoxFuture<'_, Result<Vec<ListedContainer>, RuntimeError>> {
        Box::pin(self.containers.list())
    }

    fn list_all_containers(&self) -> BoxFuture<'_, Result<Vec<NamespaceContainer>, RuntimeError>> {
        Box::pin(self.containers.list_all())
    }

    fn list_pod<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, Result<Vec<ListedContainer>, RuntimeError>> {
        Box::pin(self.containers.list_pod(pod_uid))
    }

    fn create(&self, req: CreateContainer) -> BoxFuture<'_, Result<CreatedContainer, ContainerError>> {
        Box::pin(self.containers.create(req))
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<u32, ContainerError>> {
        Box::pin(self.containers.start(id))
    }

    fn stop<'a>(
        &'a self,
        id: &'a str,
        signal: u32,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ExitStatus, ContainerError>> {
        Box::pin(async move { self.containers.stop(id, signal, grace).await.map(|(s, _)| s) })
    }

    fn remove<'a>(&'a self, created: &'a CreatedContainer) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(self.containers.remove(created))
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(self.containers.delete(id))
    }

    fn reattach_logs(
        &self,
        id: &str,
        fifo_root: &Path,
        log_path: &Path,
        rotation: LogRotation,
        cgroups_path: &str,
    ) -> Result<CreatedContainer, ContainerError> {
        ContainerService::reattach_logs(id, fifo_root, log_path, rotation, cgroups_path)
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        exec_id: &'a str,
        command: &'a [String],
        fifo_dir: &'a Path,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<ExecOutput, ContainerError>> {
        Box::pin(super::exec::exec(
            self.containerd(),
            id,
            exec_id,
            command,
            fifo_dir,
            timeout,
        ))
    }

    fn image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<ImageInfo>, RuntimeError>> {
        Box::pin(self.images.inspect(name))
    }

    fn list_images(&self) -> BoxFuture<'_, Result<Vec<ImageInfo>, RuntimeError>> {
        Box::pin(self.images.list())
    }

    fn pull<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        auth: &'a RegistryAuth,
    ) -> BoxFuture<'a, Result<ImageInfo, PullError>> {
        Box::pin(async move { self.images.ensure(image, policy, auth, &|_| {}).await })
    }

    fn remove_image<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.images.remove(name))
    }

    fn image_users<'a>(&'a self, chain_id: &'a str) -> BoxFuture<'a, Result<Arc<UserDb>, PasswdError>> {
        Box::pin(super::passwd::image_user_db(self.containerd(), chain_id))
    }

    fn snapshotter_root(&self) -> BoxFuture<'_, Option<PathBuf>> {
        Box::pin(snapshotter_root(self.containerd()))
    }

    fn snapshot_usage<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<SnapshotUsage, RuntimeError>> {
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
