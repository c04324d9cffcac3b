//! What the executor writes to the API server: events, the pod status, the final deletion.

use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

use super::{NodeContext, find_container};
use crate::pods::ContainerKind;
use crate::pods::{is_static, pod_ref};

/// Records a core/v1 Event about the pod (fire and forget, as upstream's recorder).
pub fn event(ctx: &NodeContext, pod: &Pod, container: Option<&str>, ty: &str, reason: &str, message: String) {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let now = Time(Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                pod.metadata.name.as_deref().unwrap_or("pod"),
                Timestamp::now().as_nanosecond()
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(ns.clone()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            api_version: Some("v1".into()),
            field_path: container.map(|c| {
                let kind = find_container(pod, c).map_or(ContainerKind::App, |(_, k)| k);
                format!("spec.{}{{{c}}}", kind.spec_field())
            }),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(ty.into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("kubelet".into()),
            host: Some(ctx.node_name.clone()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(ctx.node_name.clone()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::debug!(error = %e, "recording an event failed");
        }
    });
}

/// Where status goes: the pod itself, or a static pod's mirror.
fn status_target(pod: &Pod) -> Option<(String, String)> {
    Some((
        pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone()?,
    ))
}

pub(super) async fn patch_status(
    ctx: &NodeContext,
    pod: &Pod,
    status: &PodStatus,
) -> Result<(), kube::Error> {
    let Some((ns, name)) = status_target(pod) else {
        return Ok(());
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut patch = crate::pods::status::status_patch(status);
    if let Some(uid) = &pod.metadata.uid
        && !is_static(pod)
    {
        // Guard against patching a newer pod with the same name.
        patch["metadata"] = serde_json::json!({"uid": uid});
    }
    api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(())
}

/// Deletes the pod object for good (grace 0, with its UID as precondition) once everything of it is
/// removed from the node, as upstream's status manager does for a gracefully deleted pod.
pub(super) async fn delete_from_api(ctx: &NodeContext, pod: &Pod) {
    let Some((ns, name)) = status_target(pod) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(pod = %pod_ref(pod), "pod deleted from the API server"),
        // Already gone (a late watch event started a worker for a pod another one finished).
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::debug!(pod = %pod_ref(pod), "pod already deleted from the API server")
        }
        Err(e) => tracing::warn!(pod = %pod_ref(pod), error = %e, "final pod deletion failed"),
    }
}
