//! Builders for the unit tests of this module tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodSpec, PodStatus,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::Timestamp;
use super::observed::{AttemptState, ContainerAttempt, SandboxState, spec_hash, terminated_reason};

/// A fixed instant plus `s` seconds.
pub fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

pub fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        ..Default::default()
    }
}

pub fn with_resources(mut c: Container, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
    let map = |kv: &[(&str, &str)]| -> Option<BTreeMap<String, Quantity>> {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    };
    c.resources = Some(ResourceRequirements {
        requests: map(requests),
        limits: map(limits),
        ..Default::default()
    });
    c
}

pub fn pod_with(containers: Vec<Container>, restart_policy: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            restart_policy: Some(restart_policy.into()),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn with_uid(mut p: Pod, uid: &str) -> Pod {
    p.metadata.uid = Some(uid.into());
    p.metadata.name = Some(uid.into());
    p
}

pub fn set_init(p: &mut Pod, init: Vec<Container>) {
    p.spec.as_mut().unwrap().init_containers = Some(init);
}

pub fn set_phase(p: &mut Pod, phase: &str) {
    p.status.get_or_insert_with(PodStatus::default).phase = Some(phase.into());
}

pub fn set_start_time(p: &mut Pod, at: Timestamp) {
    p.status.get_or_insert_with(PodStatus::default).start_time = Some(Time(at));
}

/// The container of the pod's spec (init or app) with this name.
pub fn spec_of<'a>(p: &'a Pod, name: &str) -> &'a Container {
    let spec = p.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap()
}

fn attempt_of(
    p: &Pod,
    name: &str,
    attempt: u32,
    state: AttemptState,
    created: Timestamp,
) -> ContainerAttempt {
    let spec = p.spec.as_ref().unwrap();
    let c = &super::ephemeral::find(spec, name).unwrap_or_else(|| spec_of(p, name).clone());
    ContainerAttempt {
        id: format!("{name}-{attempt}"),
        name: name.into(),
        attempt,
        spec_hash: spec_hash(c),
        image: c.image.clone().unwrap_or_default(),
        image_id: format!("{}@sha256:abc", c.image.clone().unwrap_or_default()),
        created_at: created,
        state,
        ready: None,
        started: None,
        live: None,
    }
}

pub fn running(p: &Pod, name: &str, attempt: u32, started: Timestamp) -> ContainerAttempt {
    attempt_of(
        p,
        name,
        attempt,
        AttemptState::Running { started_at: started },
        started,
    )
}

pub fn exited(
    p: &Pod,
    name: &str,
    attempt: u32,
    code: i32,
    started: Timestamp,
    finished: Timestamp,
) -> ContainerAttempt {
    attempt_of(
        p,
        name,
        attempt,
        AttemptState::Exited {
            exit_code: code,
            reason: terminated_reason(code, false).into(),
            message: String::new(),
            started_at: Some(started),
            finished_at: finished,
        },
        started,
    )
}

pub fn created(p: &Pod, name: &str, attempt: u32, at: Timestamp) -> ContainerAttempt {
    attempt_of(p, name, attempt, AttemptState::Created, at)
}

pub fn sandbox_ready() -> Option<SandboxState> {
    sandbox(true)
}

/// The pod's first sandbox, `ready` or not.
pub fn sandbox(ready: bool) -> Option<SandboxState> {
    Some(SandboxState {
        id: "sb".into(),
        attempt: 0,
        ready,
    })
}

/// The terminated state of a container state (panics when it is not terminated).
pub fn terminated_state(state: &Option<ContainerState>) -> &ContainerStateTerminated {
    state.as_ref().unwrap().terminated.as_ref().unwrap()
}

/// The reason of a container status' current terminated state.
pub fn terminated_reason_of(c: &ContainerStatus) -> Option<&str> {
    terminated_state(&c.state).reason.as_deref()
}

/// The plan's container starts: (name, init, attempt), in order.
pub fn starts(p: &super::Plan) -> Vec<(String, bool, u32)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            super::Action::StartContainer {
                container,
                init,
                attempt,
                ..
            } => Some((container.clone(), *init, *attempt)),
            _ => None,
        })
        .collect()
}
