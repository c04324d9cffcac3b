//! Mirror pods: the API's view of static pods, created with them and deleted after them (upstream's
//! mirror client, `DeleteMirrorPod` with a UID precondition).

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

/// A mirror pod by name and the static pod hash (the static pod's UID here) it mirrors.
#[derive(Debug, Clone)]
pub struct MirrorRef {
    pub namespace: String,
    pub name: String,
    pub hash: String,
    /// The mirror's UID in the API (empty for a static pod's own view of it).
    pub api_uid: String,
}

impl MirrorRef {
    /// From a mirror pod seen in the API (it carries `config.mirror`; its copied annotations say
    /// `config.source: file` too), or from the static pod it mirrors.
    pub fn of(pod: &Pod) -> Option<MirrorRef> {
        let ann = pod.metadata.annotations.as_ref();
        let (hash, api_uid) = match ann.and_then(|a| a.get("kubernetes.io/config.mirror")) {
            Some(h) => (h.clone(), pod.metadata.uid.clone().unwrap_or_default()),
            None => (
                ann.and_then(|a| a.get("kubernetes.io/config.hash"))?.clone(),
                String::new(),
            ),
        };
        Some(MirrorRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone()?,
            hash,
            api_uid,
        })
    }
}

/// Deletes a mirror pod if it still mirrors `m.hash` (a newer mirror of the same name is kept);
/// grace 0 with a UID precondition, as upstream's `DeleteMirrorPod`.
pub async fn delete_mirror(client: kube::Client, m: MirrorRef) {
    let api: Api<Pod> = Api::namespaced(client, &m.namespace);
    let pod = format!("{}/{}", m.namespace, m.name);
    let existing = match api.get_opt(&m.name).await {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(pod, error = %e, "reading the mirror pod to delete it failed; retried later");
            return;
        }
    };
    let mirrors = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.mirror"));
    if mirrors != Some(&m.hash) {
        return;
    }
    let params = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&m.name, &params).await {
        Ok(_) => tracing::info!(pod, "mirror pod deleted: its static pod is gone"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod, error = %e, "deleting the mirror pod failed; retried later"),
    }
}

/// Creates (or recreates) the mirror pod of a static pod.
pub async fn ensure_mirror(client: &kube::Client, pod: &Pod, node: &str, node_uid: Option<&str>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = pod.metadata.name.clone().unwrap_or_default();
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    if let Ok(Some(existing)) = api.get_opt(&name).await {
        let same = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/config.mirror"))
            == Some(&hash);
        if same {
            return;
        }
        let _ = api
            .delete(
                &name,
                &kube::api::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
    }
    let mut mirror = pod.clone();
    mirror.metadata.uid = None;
    mirror.metadata.resource_version = None;
    mirror.status = None;
    mirror
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("kubernetes.io/config.mirror".into(), hash);
    if let Some(uid) = node_uid {
        mirror.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid: uid.to_string(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
    }
    match api.create(&PostParams::default(), &mirror).await {
        Ok(_) => tracing::info!(pod = format!("{ns}/{name}"), "mirror pod created"),
        Err(e) => tracing::warn!(pod = format!("{ns}/{name}"), error = %e, "creating the mirror pod failed"),
    }
}
