//! The kubelet's hands on containerd 1.6 (gRPC, no CRI shim), the only module that speaks its gRPC:
//! the seam the rest of the kubelet calls ([`PodRuntime`], in `pod_runtime`, with a recording fake in
//! `fake` for unit tests), images (`image`), containers and tasks with CRI-format logs (`container`),
//! exec and task stdin/terminal/wait (`exec`), task events (`events`) and the image's users
//! (`passwd`), all over one connection; the pause-less pod sandbox is `crate::sandbox`.
//!
//! Every request carries the `containerd-namespace` header (knode uses `k8s.io` by default) and, while
//! a multi-step operation runs, a `containerd-lease` header so containerd's garbage collector does not
//! take content or snapshots that are not referenced yet.

pub mod container;
pub mod events;
pub mod exec;
pub mod image;
pub mod passwd;
pub mod pod_runtime;
pub mod stdin;

#[cfg(test)]
pub mod fake;

pub use pod_runtime::{ContainerdRuntime, PodRuntime, SnapshotUsage};

use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// The containerd namespace upstream's CRI plugin uses; knode uses it too so `ctr -n k8s.io` shows
/// what the kubelet runs.
pub const DEFAULT_NAMESPACE: &str = "k8s.io";

/// The snapshotter images are unpacked into (PLATFORM.md: overlayfs is available here).
pub const SNAPSHOTTER: &str = "overlayfs";

/// Errors talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("containerd {op}: {status}")]
    Grpc {
        op: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("connecting to containerd at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("invalid containerd namespace or lease name {0:?}")]
    BadName(String),
}

impl RuntimeError {
    pub(crate) fn grpc(op: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
        move |status| RuntimeError::Grpc {
            op,
            status: Box::new(status),
        }
    }

    /// The gRPC code, if this is a gRPC error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            RuntimeError::Grpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// A connection to containerd bound to one containerd namespace.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Channel,
    namespace: MetadataValue<tonic::metadata::Ascii>,
    namespace_name: String,
}

impl Containerd {
    /// Connects to containerd's gRPC socket: a path or a `unix://` URL as in
    /// `--container-runtime-endpoint`.
    pub async fn connect(endpoint: &str, namespace: &str) -> Result<Self, RuntimeError> {
        let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
        let channel = containerd_client::connect(path)
            .await
            .map_err(|e| RuntimeError::Connect {
                endpoint: endpoint.to_string(),
                message: e.to_string(),
            })?;
        Self::new(channel, namespace)
    }

    /// Wraps an existing channel.
    pub fn new(channel: Channel, namespace: &str) -> Result<Self, RuntimeError> {
        let value = namespace
            .parse()
            .map_err(|_| RuntimeError::BadName(namespace.to_string()))?;
        Ok(Containerd {
            channel,
            namespace: value,
            namespace_name: namespace.to_string(),
        })
    }

    /// The containerd namespace requests go to.
    pub fn namespace(&self) -> &str {
        &self.namespace_name
    }

    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A request in this namespace, under `lease` if given.
    pub(crate) fn request<T>(&self, msg: T, lease: Option<&Lease>) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        if let Some(lease) = lease {
            req.metadata_mut()
                .insert("containerd-lease", lease.header.clone());
        }
        req
    }
}

impl Containerd {
    /// Creates a lease (ID `knode-<purpose>-<nanos>`) that expires by itself after `expire`, so a
    /// kubelet dying mid-operation pins nothing for ever.
    pub async fn create_lease(
        &self,
        purpose: &str,
        expire: std::time::Duration,
    ) -> Result<Lease, RuntimeError> {
        use containerd_client::services::v1::CreateRequest;
        use containerd_client::services::v1::leases_client::LeasesClient;
        let now = std::time::SystemTime::now();
        let nanos = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let id = format!("knode-{purpose}-{nanos}");
        let labels = std::collections::HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            container::rfc3339_nano(now + expire),
        )]);
        LeasesClient::new(self.channel())
            .create(self.request(
                CreateRequest {
                    id: id.clone(),
                    labels,
                },
                None,
            ))
            .await
            .map_err(RuntimeError::grpc("Leases.Create"))?;
        Lease::new(id)
    }

    /// Deletes a lease; what it protected is now up to references (or GC).
    pub async fn delete_lease(&self, lease: &Lease) -> Result<(), RuntimeError> {
        use containerd_client::services::v1::DeleteRequest;
        use containerd_client::services::v1::leases_client::LeasesClient;
        LeasesClient::new(self.channel())
            .delete(self.request(
                DeleteRequest {
                    id: lease.id.clone(),
                    sync: false,
                },
                None,
            ))
            .await
            .map_err(RuntimeError::grpc("Leases.Delete"))?;
        Ok(())
    }
}

/// A containerd lease held while content and snapshots are being created.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
    header: MetadataValue<tonic::metadata::Ascii>,
}

impl Lease {
    pub(crate) fn new(id: String) -> Result<Self, RuntimeError> {
        let header = id.parse().map_err(|_| RuntimeError::BadName(id.clone()))?;
        Ok(Lease { id, header })
    }
}
