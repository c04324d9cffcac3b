//! The executor's behaviour through the recording fake runtime and a recording API server: no
//! containerd, no root. Each test drives whole worker turns ([`Worker::sync`] + [`Worker::report`])
//! and checks what reached the runtime and the API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::NodeContext;
use super::worker::Worker;
use crate::cgroups::{CgroupManager, Driver, Layout, ResourceConfig};
use crate::pods::fixtures::{container, pod_with};
use crate::pods::stop::{TurnEnd, turn_end};
use crate::pods::{BackoffBook, BackoffConfig, Observed, WorkerState};
use crate::runtime::container::{ContainerMeta, ListedContainer, LogRotation, TaskState};
use crate::runtime::fake::{Call, FakeRuntime, image_info};

/// One request the API server got: method, path, body.
type Request = (String, String, String);

/// An API server that answers everything with an empty object of the asked kind and records the
/// requests.
#[derive(Clone, Default)]
struct Api {
    requests: Arc<Mutex<Vec<Request>>>,
}

impl tower::Service<http::Request<kube::client::Body>> for Api {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let requests = self.requests.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let path = parts.uri.path().to_string();
            requests.lock().unwrap().push((
                parts.method.to_string(),
                path.clone(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let answer = if path.ends_with("/services") {
                r#"{"apiVersion":"v1","kind":"ServiceList","metadata":{},"items":[]}"#
            } else if path.contains("/events") {
                r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e"},"involvedObject":{}}"#
            } else {
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"}}"#
            };
            Ok(http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer)))
                .unwrap())
        })
    }
}

impl Api {
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The reasons of the `Warning`/`Normal` events posted so far.
    fn event_reasons(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|(m, p, _)| m == "POST" && p.contains("/events"))
            .filter_map(|(_, _, b)| {
                let v: serde_json::Value = serde_json::from_str(b).ok()?;
                Some(v["reason"].as_str()?.to_string())
            })
            .collect()
    }
}

struct Node {
    ctx: Arc<NodeContext>,
    runtime: FakeRuntime,
    api: Api,
    _root: tempfile::TempDir,
}

fn node() -> Node {
    let root = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime::new();
    let api = Api::default();
    let client = kube::Client::new(api.clone(), "default");
    let cgroups = CgroupManager::new(
        Layout::new(Driver::Cgroupfs, "/", false),
        crate::cgroups::fs::CgroupFs::at(root.path().join("cgroup"), crate::cgroups::Version::V2),
        ResourceConfig::default(),
        0,
        4 << 30,
    );
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    let containerd = crate::runtime::Containerd::new(channel, "test").unwrap();
    let (probes, _pokes) = crate::probes::ProbeManager::new(containerd, root.path().join("probe-fifo"));
    let ctx = NodeContext::new(
        client,
        "node-1".into(),
        "10.0.0.1".into(),
        root.path().to_path_buf(),
        root.path().join("logs"),
        Arc::new(runtime.clone()),
        Arc::new(cgroups),
        LogRotation::default(),
        BackoffBook::new(BackoffConfig::default(), BackoffConfig::default()),
        None,
        2000,
        4 << 30,
        probes,
    );
    // The fake sandboxes are plain files: alive while they exist.
    let ctx = NodeContext {
        sandbox_alive: |dir| dir.exists(),
        ..ctx
    };
    Node {
        ctx: Arc::new(ctx),
        runtime,
        api,
        _root: root,
    }
}

/// A ready sandbox on disk (made without namespaces: creating real ones needs root).
fn ready_sandbox(root: &Path, uid: &str) {
    let dir = root.join("sandboxes").join(format!("{uid}-0"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("net"), "").unwrap();
    std::fs::write(dir.join("ip"), "10.244.0.7").unwrap();
}

fn web_pod(restart_policy: &str) -> Pod {
    let mut pod = pod_with(vec![container("app", "registry.test/app:v1")], restart_policy);
    if let Some(s) = pod.spec.as_mut() {
        s.enable_service_links = Some(false);
    }
    pod
}

/// One worker turn: sync, observe again, report; returns the observed picture.
async fn turn(w: &mut Worker) -> Observed {
    let (_plan, _turn) = w.sync().await.expect("the fake runtime lists");
    let observed = super::observe(&w.ctx, &w.pod, &w.start_errors).await.unwrap();
    w.report(&observed).await;
    observed
}

/// The waiting reason of container `name` in the pod's last reported status.
fn waiting_reason(pod: &Pod, name: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

/// Container `id`, attempt 0 of the web pod's `app`, running (as an earlier kubelet left it).
fn running_app(id: &str) -> ListedContainer {
    ListedContainer {
        id: id.into(),
        meta: ContainerMeta {
            pod_uid: "uid-1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            container_name: "app".into(),
            restart_count: 0,
            spec_hash: String::new(),
        },
        image: "registry.test/app:v1".into(),
        state: TaskState::Running { pid: 7 },
    }
}

fn count(calls: &[Call], f: impl Fn(&Call) -> bool) -> usize {
    calls.iter().filter(|c| f(c)).count()
}

#[tokio::test]
async fn image_pull_failure_backs_off_and_reports_image_pull_backoff() {
    let n = node();
    ready_sandbox(n.ctx.root_dir.as_path(), "uid-1");
    n.runtime
        .state()
        .pull_failures
        .insert("registry.test/app:v1".into(), "manifest unknown".into());
    let mut w = Worker::new(n.ctx.clone(), web_pod("Always"), WorkerState::Syncing);

    turn(&mut w).await;
    assert_eq!(
        n.runtime.calls(),
        vec![Call::Pull {
            image: "registry.test/app:v1".into()
        }]
    );
    assert_eq!(waiting_reason(&w.pod, "app").as_deref(), Some("ErrImagePull"));
    assert_eq!(w.start_errors["app"].reason, "ErrImagePull");
    let reasons = n.api.event_reasons();
    assert!(
        reasons.starts_with(&["Pulling".into(), "Failed".into(), "Failed".into()]),
        "{reasons:?}"
    );

    // The next turn holds the pull back (the backoff book has the failure): no second pull.
    turn(&mut w).await;
    assert_eq!(count(&n.runtime.calls(), |c| matches!(c, Call::Pull { .. })), 1);
    assert_eq!(waiting_reason(&w.pod, "app").as_deref(), Some("ImagePullBackOff"));
    assert_eq!(w.state, WorkerState::Syncing);
    // Both statuses went to the API, guarded by the pod's UID.
    let patches: Vec<Request> = n
        .api
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m == "PATCH" && p.ends_with("/pods/web/status"))
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches[1].2.contains("ImagePullBackOff") && patches[1].2.contains("\"uid\":\"uid-1\""));
}

#[tokio::test]
async fn container_start_failure_is_reported_then_backed_off_as_crash_loop() {
    let n = node();
    ready_sandbox(n.ctx.root_dir.as_path(), "uid-1");
    {
        let mut st = n.runtime.state();
        let name = crate::runtime::image::ImageService::normalize("registry.test/app:v1").unwrap();
        st.images.insert(name.clone(), image_info(&name));
        st.start_failures
            .insert("app".into(), "exec: \"/bin/sh\": no such file".into());
    }
    let mut w = Worker::new(n.ctx.clone(), web_pod("Always"), WorkerState::Syncing);

    turn(&mut w).await;
    let calls = n.runtime.calls();
    assert!(
        matches!(&calls[..], [Call::Create { container, restart_count: 0, .. }, Call::Start { .. }] if container == "app"),
        "{calls:?}"
    );
    assert_eq!(w.start_errors["app"].reason, "RunContainerError");
    let reasons = n.api.event_reasons();
    assert_eq!(reasons, vec!["Created", "Failed"], "{reasons:?}");

    // The failed attempt exited: the first restart is immediate (upstream starts the backoff with
    // it), and fails again.
    turn(&mut w).await;
    let creates: Vec<u32> = n
        .runtime
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Create { restart_count, .. } => Some(*restart_count),
            _ => None,
        })
        .collect();
    assert_eq!(creates, vec![0, 1]);
    // Then the restart is held back with CrashLoopBackOff, said once with a BackOff event.
    turn(&mut w).await;
    assert_eq!(waiting_reason(&w.pod, "app").as_deref(), Some("CrashLoopBackOff"));
    turn(&mut w).await;
    assert_eq!(count_events(&n.api, "BackOff"), 1);
    assert_eq!(count(&n.runtime.calls(), |c| matches!(c, Call::Create { .. })), 2);
}

fn count_events(api: &Api, reason: &str) -> usize {
    api.event_reasons().iter().filter(|r| *r == reason).count()
}

#[tokio::test]
async fn started_container_clears_its_start_error_and_reports_running() {
    let n = node();
    ready_sandbox(n.ctx.root_dir.as_path(), "uid-1");
    let mut w = Worker::new(n.ctx.clone(), web_pod("Always"), WorkerState::Syncing);
    w.start_errors
        .insert("app".into(), crate::pods::StartError::new("ErrImagePull", "old"));

    turn(&mut w).await;
    let calls = n.runtime.calls();
    assert!(matches!(calls[0], Call::Pull { .. }), "{calls:?}");
    assert_eq!(count(&calls, |c| matches!(c, Call::Start { .. })), 1);
    assert!(!w.start_errors.contains_key("app"));
    let running = w
        .pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.as_ref())
        .and_then(|s| s.running.as_ref());
    assert!(running.is_some(), "{:?}", w.pod.status);
    assert_eq!(
        w.pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.244.0.7")
    );
}

#[tokio::test]
async fn deleted_pod_is_killed_removed_and_deleted_from_the_api() {
    let n = node();
    let mut pod = web_pod("Always");
    pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    pod.metadata.deletion_grace_period_seconds = Some(5);
    n.runtime
        .state()
        .containers
        .insert("c1".into(), running_app("c1"));
    let mut w = Worker::new(n.ctx.clone(), pod, WorkerState::Syncing);

    // Turn 1: SIGTERM to the running container.
    turn(&mut w).await;
    assert_eq!(
        n.runtime.calls(),
        vec![Call::Stop {
            id: "c1".into(),
            signal: libc::SIGTERM as u32
        }]
    );
    assert!(matches!(
        w.state,
        WorkerState::Terminating { grace_seconds: 5, .. }
    ));
    assert!(n.api.event_reasons().contains(&"Killing".to_string()));

    // Turn 2: nothing runs: everything is removed, the worker is finished and deletes the pod.
    turn(&mut w).await;
    assert_eq!(w.state, WorkerState::Finished);
    assert_eq!(
        count(
            &n.runtime.calls(),
            |c| matches!(c, Call::Delete { id } if id == "c1")
        ),
        1
    );
    assert!(n.runtime.state().containers.is_empty());
    assert_eq!(
        turn_end(w.state, &w.stops, &w.pod),
        TurnEnd::Finish {
            delete_from_api: true
        }
    );
    super::api::delete_from_api(&n.ctx, &w.pod).await;
    let deletes: Vec<Request> = n
        .api
        .requests()
        .into_iter()
        .filter(|(m, _, _)| m == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0].1.ends_with("/namespaces/default/pods/web"));
    assert!(deletes[0].2.contains("\"gracePeriodSeconds\":0") && deletes[0].2.contains("uid-1"));
}

#[tokio::test]
async fn orphaned_pod_is_stopped_without_writing_to_the_api() {
    let n = node();
    n.runtime
        .state()
        .containers
        .insert("c1".into(), running_app("c1"));
    let mut w = Worker::new(n.ctx.clone(), web_pod("Always"), WorkerState::Syncing);
    w.stop(crate::pods::stop::StopRequest::Orphaned);
    assert!(w.pod.metadata.deletion_timestamp.is_some());
    turn(&mut w).await;
    turn(&mut w).await;
    assert_eq!(w.state, WorkerState::Finished);
    assert_eq!(
        turn_end(w.state, &w.stops, &w.pod),
        TurnEnd::Finish {
            delete_from_api: false
        }
    );
    // Events are fine (upstream records them too); no status patch, no deletion.
    assert!(
        n.api
            .requests()
            .iter()
            .all(|(m, p, _)| m == "POST" && p.contains("/events")),
        "{:?}",
        n.api.requests()
    );
}

#[tokio::test]
async fn eviction_reports_evicted_and_shutdown_ends_the_worker() {
    let n = node();
    ready_sandbox(n.ctx.root_dir.as_path(), "uid-1");
    let mut w = Worker::new(n.ctx.clone(), web_pod("Always"), WorkerState::Syncing);
    w.stop(crate::pods::stop::StopRequest::Evicted(
        crate::eviction::manager::Eviction {
            grace_seconds: 0,
            message: "The node was low on resource: memory. ".into(),
            disruption: true,
        },
    ));
    w.stops.mark(&mut w.pod, Timestamp::now());
    turn(&mut w).await;
    let status = w.pod.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    // Nothing was started for an evicted pod.
    assert_eq!(count(&n.runtime.calls(), |c| matches!(c, Call::Create { .. })), 0);
    assert_ne!(w.state, WorkerState::Syncing);
    assert_eq!(
        turn_end(w.state, &w.stops, &w.pod),
        TurnEnd::Continue { free_volumes: true }
    );
    w.stop(crate::pods::stop::StopRequest::NodeShutdown { grace_seconds: 1 });
    assert_eq!(turn_end(w.state, &w.stops, &w.pod), TurnEnd::EndForShutdown);
}

#[tokio::test]
async fn an_unlistable_runtime_plans_and_reports_nothing() {
    let n = node();
    ready_sandbox(n.ctx.root_dir.as_path(), "uid-1");
    let mut w = Worker::new(n.ctx.clone(), web_pod("Always"), WorkerState::Syncing);
    turn(&mut w).await;
    let calls = n.runtime.calls().len();
    let patches = n.api.requests().len();
    // containerd goes away: an empty list must not read as "the container vanished".
    n.runtime.state().list_unavailable = true;
    assert!(w.sync().await.is_none());
    assert_eq!(n.runtime.calls().len(), calls, "nothing started or stopped");
    assert_eq!(n.api.requests().len(), patches, "no status written");
}
