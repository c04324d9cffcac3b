//! Image service: client-side pulls into containerd 1.6 (which has no Transfer service), plus list,
//! inspect and remove for image GC.
//!
//! A pull is: resolve the reference on the registry (OCI distribution API via oci-client; an index
//! resolves to linux/amd64) → write config and layer blobs into containerd's content store (digests
//! verified by oci-client on download and by containerd on commit) → apply each layer with the Diff
//! service onto an overlayfs snapshot named by its chain ID → create the Image record. All of it runs
//! under a lease, and the content carries containerd's `gc.ref` labels so that once the lease is gone
//! the image record keeps everything it needs alive.
//!
//! Pure parts (chain IDs, pull-policy decisions, error classification, registry credentials) are
//! plain functions, unit-tested; the rest is a thin adapter over the two clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, InfoRequest,
    ListImagesRequest, UpdateImageRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor;
use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::{Containerd, Lease, RuntimeError, SNAPSHOTTER};

/// Why a pull failed. The variants are distinguished because the pod's waiting reason depends on them.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// → `InvalidImageName`.
    #[error("invalid image reference {reference:?}: {message}")]
    InvalidReference { reference: String, message: String },
    /// → `ErrImageNeverPull`.
    #[error("image {reference:?} is not present with pull policy Never")]
    NeverPull { reference: String },
    /// → `ErrImagePull`: the registry has no such repository, tag or digest.
    #[error("image {reference:?} not found: {message}")]
    NotFound { reference: String, message: String },
    /// → `ErrImagePull`: credentials missing or refused.
    #[error("pulling {reference:?}: unauthorized: {message}")]
    Unauthorized { reference: String, message: String },
    /// → `ErrImagePull`: the registry could not be reached.
    #[error("pulling {reference:?}: registry unavailable: {message}")]
    RegistryUnavailable { reference: String, message: String },
    /// → `ErrImagePull`: a blob did not match its digest.
    #[error("pulling {reference:?}: digest mismatch: {message}")]
    DigestMismatch { reference: String, message: String },
    /// → `ErrImagePull`: anything else the registry answered.
    #[error("pulling {reference:?}: {message}")]
    Registry { reference: String, message: String },
    /// The image could not be stored or unpacked by containerd.
    #[error("storing {reference:?} in containerd: {source}")]
    Runtime { reference: String, source: RuntimeError },
}

impl PullError {
    /// The container waiting reason upstream's kubelet reports for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::InvalidReference { .. } => "InvalidImageName",
            PullError::NeverPull { .. } => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }
}

/// `imagePullPolicy` of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// A pod's `imagePullPolicy` that is none of upstream's three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported imagePullPolicy {0:?}")]
pub struct UnsupportedPullPolicy(pub String);

impl PullPolicy {
    /// Parses the pod field, applying upstream's default: `Always` for `:latest` or untagged
    /// references, `IfNotPresent` otherwise.
    pub fn from_spec(policy: Option<&str>, image: &str) -> Result<Self, UnsupportedPullPolicy> {
        match policy {
            Some("Always") => Ok(PullPolicy::Always),
            Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
            Some("Never") => Ok(PullPolicy::Never),
            Some(other) => Err(UnsupportedPullPolicy(other.to_string())),
            None => {
                let name = image.rsplit('/').next().unwrap_or(image);
                let tagged = name.contains(':') || image.contains('@');
                if !tagged || image.ends_with(":latest") {
                    Ok(PullPolicy::Always)
                } else {
                    Ok(PullPolicy::IfNotPresent)
                }
            }
        }
    }
}

/// What to do for a policy given whether the image is present: pull, use what is there, or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullDecision {
    Pull,
    UsePresent,
    NeverPullError,
}

/// Upstream's policy table.
pub fn decide(policy: PullPolicy, present: bool) -> PullDecision {
    match (policy, present) {
        (PullPolicy::Always, _) => PullDecision::Pull,
        (PullPolicy::IfNotPresent, true) | (PullPolicy::Never, true) => PullDecision::UsePresent,
        (PullPolicy::IfNotPresent, false) => PullDecision::Pull,
        (PullPolicy::Never, false) => PullDecision::NeverPullError,
    }
}

/// Chain IDs of an image's layers, from its diff IDs (OCI image spec: ChainID(L0) = DiffID(L0),
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))). Snapshots are named by them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!("sha256:{:x}", Sha256::digest(format!("{parent} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

/// Registry credentials for `registry` from a pod's pull secrets (`.dockerconfigjson` contents),
/// first match wins, as upstream's keyring does for exact host matches.
pub fn credentials_for(docker_configs: &[Vec<u8>], registry: &str) -> RegistryAuth {
    use base64::Engine as _;
    for raw in docker_configs {
        let Ok(cfg) = serde_json::from_slice::<serde_json::Value>(raw) else {
            continue;
        };
        let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) else {
            continue;
        };
        for (host, entry) in auths {
            let host = host.trim_start_matches("https://").trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            let matches = host == registry
                || (registry == "docker.io" && matches!(host, "index.docker.io" | "registry-1.docker.io"));
            if !matches {
                continue;
            }
            let s = |k: &str| entry.get(k).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
            if let Some(token) = s("registrytoken").or(s("identitytoken")) {
                return RegistryAuth::Bearer(token.to_string());
            }
            if let (Some(u), Some(p)) = (s("username"), s("password")) {
                return RegistryAuth::Basic(u.to_string(), p.to_string());
            }
            if let Some(auth) = s("auth")
                && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(auth)
                && let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':')
            {
                return RegistryAuth::Basic(u.to_string(), p.to_string());
            }
        }
    }
    RegistryAuth::Anonymous
}

/// Maps an oci-client error onto the distinguished pull errors.
pub fn classify(reference: &str, e: OciDistributionError) -> PullError {
    let reference = reference.to_string();
    let message = e.to_string();
    match &e {
        OciDistributionError::ImageManifestNotFoundError(_) => PullError::NotFound { reference, message },
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => {
            PullError::Unauthorized { reference, message }
        }
        OciDistributionError::DigestError(_) => PullError::DigestMismatch { reference, message },
        OciDistributionError::RequestError(_) => PullError::RegistryUnavailable { reference, message },
        OciDistributionError::ServerError { code, .. } if *code == 404 => {
            PullError::NotFound { reference, message }
        }
        OciDistributionError::ServerError { code, .. } if *code == 401 || *code == 403 => {
            PullError::Unauthorized { reference, message }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
                )
            }) {
                PullError::NotFound { reference, message }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                PullError::Unauthorized { reference, message }
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::DigestInvalid)) {
                PullError::DigestMismatch { reference, message }
            } else {
                PullError::Registry { reference, message }
            }
        }
        _ => PullError::Registry { reference, message },
    }
}

/// Bytes transferred so far for one pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A stored image, as the kubelet needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// Normalized reference, e.g. `docker.io/library/busybox:latest` (the containerd image name).
    pub name: String,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    pub config_digest: String,
    /// Chain ID of the top layer: the parent snapshot of a container's rootfs.
    pub top_chain_id: String,
    /// Compressed size of config and layers.
    pub size: u64,
    /// The image config's `config` section (Entrypoint, Cmd, Env, WorkingDir, User …).
    pub config: serde_json::Value,
}

/// Pulls, lists, inspects and removes images in one containerd namespace.
pub struct ImageService {
    containerd: Containerd,
    insecure_registries: Vec<String>,
    /// One lock per reference being pulled: concurrent pulls of the same image wait for the first
    /// and then find its content present, instead of downloading it twice.
    inflight: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CHUNK: usize = 1 << 20;

impl ImageService {
    /// `insecure_registries` lists `host[:port]` registries that are reached over plain HTTP; every
    /// other registry must speak HTTPS.
    pub fn new(containerd: Containerd, insecure_registries: Vec<String>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        ImageService {
            containerd,
            insecure_registries,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    fn parse(image: &str) -> Result<Reference, PullError> {
        image
            .parse::<Reference>()
            .map_err(|e| PullError::InvalidReference {
                reference: image.to_string(),
                message: e.to_string(),
            })
    }

    /// The containerd image name of a pod's image field (`busybox` → `docker.io/library/busybox:latest`).
    pub fn normalize(image: &str) -> Result<String, PullError> {
        Ok(Self::parse(image)?.whole())
    }

    /// Applies `policy`: returns the stored image, pulling it if the policy says so.
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        auth: &RegistryAuth,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<ImageInfo, PullError> {
        let name = Self::normalize(image)?;
        let present = self.inspect(&name).await.map_err(|source| PullError::Runtime {
            reference: name.clone(),
            source,
        })?;
        match (decide(policy, present.is_some()), present) {
            (PullDecision::UsePresent, Some(info)) => Ok(info),
            (PullDecision::NeverPullError, _) => Err(PullError::NeverPull {
                reference: image.to_string(),
            }),
            _ => self.pull(image, auth, progress).await,
        }
    }

    /// Pulls `image` from its registry into containerd, unpacked.
    pub async fn pull(
        &self,
        image: &str,
        auth: &RegistryAuth,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<ImageInfo, PullError> {
        let reference = Self::parse(image)?;
        let name = reference.whole();
        let lock = {
            let mut map = self.inflight.lock().await;
            map.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let result = self.pull_locked(&reference, auth, progress).await;
        drop(_guard);
        let mut map = self.inflight.lock().await;
        if map.get(&name).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(&name);
        }
        result
    }

    async fn pull_locked(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<ImageInfo, PullError> {
        let name = reference.whole();
        let reg_err = |e| classify(&name, e);
        let rt_err = |source| PullError::Runtime {
            reference: name.clone(),
            source,
        };
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure_registries.clone()),
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        });
        let (manifest, manifest_digest) = client
            .pull_image_manifest(reference, auth)
            .await
            .map_err(reg_err)?;
        let mut config_raw = Vec::new();
        client
            .pull_blob(reference, &manifest.config, &mut config_raw)
            .await
            .map_err(reg_err)?;
        let config: serde_json::Value =
            serde_json::from_slice(&config_raw).map_err(|e| PullError::Registry {
                reference: name.clone(),
                message: format!("image config is not JSON: {e}"),
            })?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
            .unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() || diff_ids.is_empty() {
            return Err(PullError::Registry {
                reference: name.clone(),
                message: format!(
                    "image config lists {} diff IDs for {} layers",
                    diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        let chains = chain_ids(&diff_ids);
        let total: u64 = manifest.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>()
            + manifest.config.size.max(0) as u64;
        let mut done = manifest.config.size.max(0) as u64;
        progress(Progress { done, total });

        // Expires by itself if the kubelet dies mid-pull, so nothing stays pinned for ever.
        let lease = self
            .containerd
            .create_lease("pull", Duration::from_secs(3600))
            .await
            .map_err(rt_err)?;
        let result = async {
            for (i, layer) in manifest.layers.iter().enumerate() {
                if !self.content_exists(&layer.digest, &lease).await.map_err(rt_err)? {
                    let mut blob = Vec::with_capacity(layer.size.max(0) as usize);
                    client
                        .pull_blob(reference, layer, &mut blob)
                        .await
                        .map_err(reg_err)?;
                    let labels =
                        BTreeMap::from([("containerd.io/uncompressed".to_string(), diff_ids[i].clone())]);
                    self.write_content(&layer.digest, &blob, labels, &lease)
                        .await
                        .map_err(rt_err)?;
                }
                done += layer.size.max(0) as u64;
                progress(Progress { done, total });
                let parent = if i == 0 {
                    String::new()
                } else {
                    chains[i - 1].clone()
                };
                self.unpack_layer(layer, &diff_ids[i], &chains[i], &parent, &lease)
                    .await
                    .map_err(|e| match e {
                        UnpackError::Runtime(source) => PullError::Runtime {
                            reference: name.clone(),
                            source,
                        },
                        UnpackError::DiffIdMismatch { applied } => PullError::DigestMismatch {
                            reference: name.clone(),
                            message: format!(
                                "layer {} unpacked to {applied}, config says {}",
                                layer.digest, diff_ids[i]
                            ),
                        },
                    })?;
            }
            let top = chains.last().cloned().unwrap_or_default();
            // gc.ref labels: manifest → config and layers; config → top snapshot.
            let config_labels = BTreeMap::from([(
                format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                top.clone(),
            )]);
            self.write_content(&manifest.config.digest, &config_raw, config_labels, &lease)
                .await
                .map_err(rt_err)?;
            let manifest_raw = serde_json::to_vec(&OciManifest::Image(manifest.clone())).map_err(|e| {
                PullError::Registry {
                    reference: name.clone(),
                    message: format!("re-encoding manifest: {e}"),
                }
            })?;
            let manifest_labels = manifest_gc_labels(&manifest);
            let manifest_digest_local = format!("sha256:{:x}", Sha256::digest(&manifest_raw));
            self.write_content(&manifest_digest_local, &manifest_raw, manifest_labels, &lease)
                .await
                .map_err(rt_err)?;
            let target = Descriptor {
                media_type: MANIFEST_MEDIA_TYPE.to_string(),
                digest: manifest_digest_local.clone(),
                size: manifest_raw.len() as i64,
                annotations: HashMap::new(),
            };
            let labels = HashMap::from([("io.knode.manifest-digest".to_string(), manifest_digest.clone())]);
            self.put_image(&name, target, labels).await.map_err(rt_err)?;
            Ok(ImageInfo {
                name: name.clone(),
                manifest_digest: manifest_digest.clone(),
                config_digest: manifest.config.digest.clone(),
                top_chain_id: top,
                size: total,
                config: config.get("config").cloned().unwrap_or(serde_json::Value::Null),
            })
        }
        .await;
        // The image record (or nothing, on failure) now holds what the lease protected.
        let _ = self.containerd.delete_lease(&lease).await;
        result
    }

    async fn content_exists(&self, digest: &str, lease: &Lease) -> Result<bool, RuntimeError> {
        match ContentClient::new(self.containerd.channel())
            .info(self.containerd.request(
                InfoRequest {
                    digest: digest.to_string(),
                },
                Some(lease),
            ))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(RuntimeError::grpc("Content.Info")(s)),
        }
    }

    /// Writes a blob; containerd verifies size and digest on commit. Present content is left as is.
    async fn write_content(
        &self,
        digest: &str,
        data: &[u8],
        labels: BTreeMap<String, String>,
        lease: &Lease,
    ) -> Result<(), RuntimeError> {
        let total = data.len() as i64;
        let write_ref = format!("knode-{}-{digest}", lease.id);
        let mut msgs = Vec::with_capacity(data.len() / CHUNK + 2);
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            msgs.push(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: write_ref.clone(),
                total,
                expected: digest.to_string(),
                offset: (i * CHUNK) as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            });
        }
        msgs.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: write_ref,
            total,
            expected: digest.to_string(),
            offset: total,
            data: Vec::new(),
            labels: labels.into_iter().collect(),
        });
        let req = self.containerd.request(tokio_stream::iter(msgs), Some(lease));
        let mut responses = match ContentClient::new(self.containerd.channel()).write(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(RuntimeError::grpc("Content.Write")(s)),
        };
        loop {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(RuntimeError::grpc("Content.Write")(s)),
            }
        }
    }

    async fn snapshot_exists(&self, key: &str, lease: &Lease) -> Result<bool, RuntimeError> {
        let req = StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.to_string(),
        };
        match SnapshotsClient::new(self.containerd.channel())
            .stat(self.containerd.request(req, Some(lease)))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(RuntimeError::grpc("Snapshots.Stat")(s)),
        }
    }

    /// Applies one layer onto a snapshot named by its chain ID (skipped if it exists).
    async fn unpack_layer(
        &self,
        layer: &OciDescriptor,
        diff_id: &str,
        chain_id: &str,
        parent: &str,
        lease: &Lease,
    ) -> Result<(), UnpackError> {
        if self.snapshot_exists(chain_id, lease).await? {
            return Ok(());
        }
        let mut snapshots = SnapshotsClient::new(self.containerd.channel());
        let key = format!("extract-{}-{chain_id}", lease.id);
        let prep = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.clone(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        };
        let mounts = snapshots
            .prepare(self.containerd.request(prep, Some(lease)))
            .await
            .map_err(RuntimeError::grpc("Snapshots.Prepare"))?
            .into_inner()
            .mounts;
        let applied = async {
            let diff = Descriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
                annotations: HashMap::new(),
            };
            let req = ApplyRequest {
                diff: Some(diff),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            };
            let applied = DiffClient::new(self.containerd.channel())
                .apply(self.containerd.request(req, Some(lease)))
                .await
                .map_err(RuntimeError::grpc("Diff.Apply"))?
                .into_inner()
                .applied
                .map(|d| d.digest)
                .unwrap_or_default();
            if applied != diff_id {
                return Err(UnpackError::DiffIdMismatch { applied });
            }
            let commit = CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                name: chain_id.to_string(),
                key: key.clone(),
                labels: HashMap::new(),
            };
            match snapshots
                .commit(self.containerd.request(commit, Some(lease)))
                .await
            {
                Ok(_) => Ok(true),
                // Another pull committed the same chain meanwhile: equally good, but our
                // extraction snapshot is then left over and must go.
                Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
                Err(s) => Err(RuntimeError::grpc("Snapshots.Commit")(s).into()),
            }
        }
        .await;
        if !matches!(applied, Ok(true)) {
            let rm = RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key,
            };
            let _ = snapshots.remove(self.containerd.request(rm, Some(lease))).await;
        }
        applied.map(|_| ())
    }

    async fn put_image(
        &self,
        name: &str,
        target: Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let image = Image {
            name: name.to_string(),
            labels,
            target: Some(target),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.containerd.channel());
        let create = CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        };
        match images.create(self.containerd.request(create, None)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let update = UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                };
                images
                    .update(self.containerd.request(update, None))
                    .await
                    .map_err(RuntimeError::grpc("Images.Update"))?;
                Ok(())
            }
            Err(s) => Err(RuntimeError::grpc("Images.Create")(s)),
        }
    }

    /// The stored image named `name` (a normalized reference), or None.
    pub async fn inspect(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let got = ImagesClient::new(self.containerd.channel())
            .get(self.containerd.request(
                GetImageRequest {
                    name: name.to_string(),
                },
                None,
            ))
            .await;
        let image = match got {
            Ok(r) => match r.into_inner().image {
                Some(i) => i,
                None => return Ok(None),
            },
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(RuntimeError::grpc("Images.Get")(s)),
        };
        self.describe(image).await
    }

    /// Reads manifest and config of a stored image back from the content store.
    async fn describe(&self, image: Image) -> Result<Option<ImageInfo>, RuntimeError> {
        let Some(target) = image.target else {
            return Ok(None);
        };
        let Some(manifest) = self.read_json::<OciImageManifest>(&target.digest).await? else {
            return Ok(None);
        };
        let Some(config) = self
            .read_json::<serde_json::Value>(&manifest.config.digest)
            .await?
        else {
            return Ok(None);
        };
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let size = manifest.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>()
            + manifest.config.size.max(0) as u64;
        Ok(Some(ImageInfo {
            manifest_digest: image
                .labels
                .get("io.knode.manifest-digest")
                .cloned()
                .unwrap_or(target.digest),
            name: image.name,
            config_digest: manifest.config.digest.clone(),
            top_chain_id: chain_ids(&diff_ids).pop().unwrap_or_default(),
            size,
            config: config.get("config").cloned().unwrap_or(serde_json::Value::Null),
        }))
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &str,
    ) -> Result<Option<T>, RuntimeError> {
        use containerd_client::services::v1::ReadContentRequest;
        let req = ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        };
        let mut stream = match ContentClient::new(self.containerd.channel())
            .read(self.containerd.request(req, None))
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(RuntimeError::grpc("Content.Read")(s)),
        };
        let mut data = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(RuntimeError::grpc("Content.Read"))?
        {
            data.extend_from_slice(&chunk.data);
        }
        Ok(serde_json::from_slice(&data).ok())
    }

    /// All stored images.
    pub async fn list(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let images = ImagesClient::new(self.containerd.channel())
            .list(
                self.containerd
                    .request(ListImagesRequest { filters: Vec::new() }, None),
            )
            .await
            .map_err(RuntimeError::grpc("Images.List"))?
            .into_inner()
            .images;
        let mut out = Vec::with_capacity(images.len());
        for image in images {
            if let Some(info) = self.describe(image).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Removes the image record; containerd's GC then frees its content and snapshots (synchronously).
    pub async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let req = DeleteImageRequest {
            name: name.to_string(),
            sync: true,
            target: None,
        };
        match ImagesClient::new(self.containerd.channel())
            .delete(self.containerd.request(req, None))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(RuntimeError::grpc("Images.Delete")(s)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum UnpackError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("applied layer has diff ID {applied}")]
    DiffIdMismatch { applied: String },
}

/// `containerd.io/gc.ref.content.*` labels that keep a manifest's config and layers alive.
fn manifest_gc_labels(m: &OciImageManifest) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        m.config.digest.clone(),
    )]);
    for (i, l) in m.layers.iter().enumerate() {
        labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), l.digest.clone());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let ids = chain_ids(&[d('a'), d('b'), d('c')]);
        assert_eq!(ids[0], d('a'), "the first chain ID is the first diff ID");
        let want1 = format!(
            "sha256:{:x}",
            Sha256::digest(format!("{} {}", d('a'), d('b')).as_bytes())
        );
        assert_eq!(ids[1], want1);
        let want2 = format!(
            "sha256:{:x}",
            Sha256::digest(format!("{want1} {}", d('c')).as_bytes())
        );
        assert_eq!(ids[2], want2);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn pull_policy_defaults_and_decisions_match_upstream() {
        use PullPolicy::*;
        assert_eq!(PullPolicy::from_spec(None, "busybox").unwrap(), Always);
        assert_eq!(PullPolicy::from_spec(None, "busybox:latest").unwrap(), Always);
        assert_eq!(PullPolicy::from_spec(None, "busybox:1.36").unwrap(), IfNotPresent);
        assert_eq!(
            PullPolicy::from_spec(None, "127.0.0.1:5000/knode/testimg").unwrap(),
            Always
        );
        assert_eq!(
            PullPolicy::from_spec(None, "127.0.0.1:5000/knode/testimg:v1").unwrap(),
            IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_spec(None, "busybox@sha256:abc").unwrap(),
            IfNotPresent
        );
        assert_eq!(PullPolicy::from_spec(Some("Never"), "x:latest").unwrap(), Never);
        assert!(PullPolicy::from_spec(Some("Sometimes"), "x").is_err());
        assert_eq!(decide(Always, true), PullDecision::Pull);
        assert_eq!(decide(IfNotPresent, true), PullDecision::UsePresent);
        assert_eq!(decide(IfNotPresent, false), PullDecision::Pull);
        assert_eq!(decide(Never, true), PullDecision::UsePresent);
        assert_eq!(decide(Never, false), PullDecision::NeverPullError);
    }

    #[test]
    fn references_normalize_like_containerd_cri() {
        assert_eq!(
            ImageService::normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            ImageService::normalize("127.0.0.1:5000/knode/testimg:v1").unwrap(),
            "127.0.0.1:5000/knode/testimg:v1"
        );
        let e = ImageService::normalize("Bad Name!").unwrap_err();
        assert_eq!(e.reason(), "InvalidImageName");
    }

    #[test]
    fn docker_config_credentials() {
        let cfg = br#"{"auths":{"https://reg.example:5000":{"username":"u","password":"p"},
            "tok.example":{"registrytoken":"T"},"b64.example":{"auth":"YWxpY2U6czNjcjN0"}}}"#
            .to_vec();
        let cfgs = vec![b"not json".to_vec(), cfg];
        assert_eq!(
            credentials_for(&cfgs, "reg.example:5000"),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        assert_eq!(
            credentials_for(&cfgs, "tok.example"),
            RegistryAuth::Bearer("T".into())
        );
        assert_eq!(
            credentials_for(&cfgs, "b64.example"),
            RegistryAuth::Basic("alice".into(), "s3cr3t".into())
        );
        assert_eq!(credentials_for(&cfgs, "other.example"), RegistryAuth::Anonymous);
    }

    #[test]
    fn error_reasons() {
        let e = classify("x", OciDistributionError::ImageManifestNotFoundError("x".into()));
        assert!(matches!(e, PullError::NotFound { .. }));
        assert_eq!(e.reason(), "ErrImagePull");
        let e = classify("x", OciDistributionError::AuthenticationFailure("no".into()));
        assert!(matches!(e, PullError::Unauthorized { .. }));
        assert_eq!(
            PullError::NeverPull {
                reference: "x".into()
            }
            .reason(),
            "ErrImageNeverPull"
        );
    }

    #[test]
    fn gc_labels_reference_config_and_every_layer() {
        let desc = |d: &str| OciDescriptor {
            digest: d.into(),
            ..Default::default()
        };
        let m = OciImageManifest {
            config: desc("c"),
            layers: vec![desc("l0"), desc("l1")],
            ..Default::default()
        };
        let labels = manifest_gc_labels(&m);
        assert_eq!(labels["containerd.io/gc.ref.content.config"], "c");
        assert_eq!(labels["containerd.io/gc.ref.content.l.0"], "l0");
        assert_eq!(labels["containerd.io/gc.ref.content.l.1"], "l1");
    }
}
