//! The file source: static pod manifests in `staticPodPath` (YAML or JSON, one pod each), each run
//! under a UID derived from its content and node, with a mirror pod in the API ([`super::mirror`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;

use super::mirror::ensure_mirror;
use crate::pods::manager::{ManagerMsg, Source};

/// Why a static pod manifest was skipped.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("not a Pod: {0}")]
    NotAPod(serde_json::Error),
    #[error("metadata.name is required")]
    NoName,
}

/// Static pods: manifests in `dir` (YAML or JSON, one pod each), checked every second for changes and
/// fully every 20 s; each runs under a UID derived from its content and gets a mirror pod.
pub async fn static_pods(
    dir: PathBuf,
    node: String,
    node_uid: Option<String>,
    client: kube::Client,
    tx: mpsc::Sender<ManagerMsg>,
) {
    let mut known: HashMap<PathBuf, (std::time::SystemTime, String)> = HashMap::new();
    let mut last_full = Instant::now() - Duration::from_secs(60);
    loop {
        let full = last_full.elapsed() >= Duration::from_secs(20);
        if full {
            last_full = Instant::now();
        }
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "yaml" | "yml" | "json") {
                continue;
            }
            present.push(path.clone());
            let mtime = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            if !full && known.get(&path).is_some_and(|(t, _)| *t == mtime) {
                continue;
            }
            match load_static(&path, &node) {
                Ok(pod) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if let Some((_, old)) = known.get(&path)
                        && *old != uid
                        && tx.send(ManagerMsg::Gone(old.clone())).await.is_err()
                    {
                        return;
                    }
                    known.insert(path.clone(), (mtime, uid));
                    ensure_mirror(&client, &pod, &node, node_uid.as_deref()).await;
                    if tx
                        .send(ManagerMsg::Apply(Box::new(pod), Source::File))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "static pod manifest skipped");
                    known.insert(path.clone(), (mtime, String::new()));
                }
            }
        }
        let gone: Vec<PathBuf> = known.keys().filter(|p| !present.contains(p)).cloned().collect();
        for p in gone {
            if let Some((_, uid)) = known.remove(&p)
                && !uid.is_empty()
                && tx.send(ManagerMsg::Gone(uid)).await.is_err()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads one static pod manifest and gives it its node-specific identity (upstream's file source).
pub fn load_static(path: &Path, node: &str) -> Result<Pod, ManifestError> {
    let text = std::fs::read_to_string(path)?;
    let v: serde_json::Value = serde_saphyr_or_json(&text)?;
    let mut pod: Pod = serde_json::from_value(v).map_err(ManifestError::NotAPod)?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ManifestError::NoName)?;
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(text.as_bytes());
    h.update(node.as_bytes());
    let hash: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    pod.metadata.name = Some(format!("{name}-{node}"));
    pod.metadata.namespace = Some(pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()));
    pod.metadata.uid = Some(hash.clone());
    let ann = pod.metadata.annotations.get_or_insert_with(Default::default);
    ann.insert("kubernetes.io/config.source".into(), "file".into());
    ann.insert("kubernetes.io/config.hash".into(), hash);
    ann.insert("kubernetes.io/config.seen".into(), Timestamp::now().to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.enable_service_links.get_or_insert(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy.get_or_insert_with(|| "File".into());
        let image = c.image.clone().unwrap_or_default();
        c.image_pull_policy.get_or_insert_with(|| {
            let last = image.rsplit('/').next().unwrap_or("");
            if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
    }
    Ok(pod)
}

fn serde_saphyr_or_json(text: &str) -> Result<serde_json::Value, ManifestError> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(ManifestError::Json);
    }
    serde_saphyr::from_str(text).map_err(|e| ManifestError::Yaml(e.to_string()))
}
