//! containerd task events the kubelet reacts to: a task's init process exiting (`/tasks/exit`) and
//! the kernel OOM-killing inside a container (`/tasks/oom`, which upstream turns into the
//! `OOMKilled` reason), for this connection's namespace only.
//!
//! containerd 1.6's Events.Subscribe sends its response headers only with the first event
//! (PLATFORM.md), so a quiet subscription cannot be told from one containerd has not registered
//! yet. To know when it is live, the subscriber publishes a marker event on a topic of its own
//! (Events.Publish, included in its filters) until the first envelope comes back: from then on every
//! task event is delivered. It reports that point as [`TaskEvent::Subscribed`] and, after a broken
//! stream (containerd restarted) is re-established with backoff, as [`TaskEvent::Resubscribed`]:
//! events in the gap are lost, so the consumer relists (`ContainerService::list`) then. Without the
//! marker, a resubscription is only noticed at the next real event — exits that happen between
//! containerd coming back and the resubscription landing are neither delivered nor relisted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use containerd_client::events::{TaskExit, TaskOom};
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use prost::Message;
use tokio::sync::mpsc;

use super::Containerd;

/// A task event of interest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// A process of the container's task exited; `exec_id` is empty for the init process (the
    /// container itself) and the exec ID otherwise.
    Exit {
        container_id: String,
        exec_id: String,
        exit_code: u32,
    },
    /// The kernel OOM killer hit a process of the container.
    Oom { container_id: String },
    /// The first subscription is live: every task event from now on is delivered. Sent once,
    /// before any other event.
    Subscribed,
    /// The subscription broke and is live again: events may have been missed, relist.
    Resubscribed,
}

/// How often the marker is re-published while the subscription is not known to be live (a publish
/// that containerd handles before it registers the subscription reaches nobody).
const MARKER_INTERVAL: Duration = Duration::from_millis(200);

/// Decodes an event envelope's payload by its type URL (containerd 1.6 sends it without the
/// leading `/`, newer versions with it). Other events yield `None`.
pub fn decode(type_url: &str, value: &[u8]) -> Option<TaskEvent> {
    match type_url.trim_start_matches('/') {
        "containerd.events.TaskExit" => {
            let e = TaskExit::decode(value).ok()?;
            // For the init process containerd sets `id` to the container ID.
            let exec_id = if e.id == e.container_id {
                String::new()
            } else {
                e.id
            };
            Some(TaskEvent::Exit {
                container_id: e.container_id,
                exec_id,
                exit_code: e.exit_status,
            })
        }
        "containerd.events.TaskOOM" => {
            let e = TaskOom::decode(value).ok()?;
            Some(TaskEvent::Oom {
                container_id: e.container_id,
            })
        }
        _ => None,
    }
}

/// The subscription filters for `namespace` (a list of filters is an OR in containerd): the task
/// topics and this subscriber's own `marker` topic.
pub fn filters(namespace: &str, marker: &str) -> Vec<String> {
    ["/tasks/exit", "/tasks/oom", marker]
        .iter()
        .map(|t| format!("namespace=={namespace},topic==\"{t}\""))
        .collect()
}

/// A marker topic unique to one subscriber (containerd topics are `/`-separated identifiers).
fn marker_topic() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "/knode/subscribed/{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Publishes the marker every [`MARKER_INTERVAL`] until dropped (aborted); failures (containerd
/// not up yet) are retried the same way.
async fn publish_markers(containerd: Containerd, topic: String) {
    let mut client = EventsClient::new(containerd.channel());
    loop {
        let req = containerd.request(
            PublishRequest {
                topic: topic.clone(),
                // Any payload will do; an Empty decodes in every client (`ctr events`).
                event: Some(prost_types::Any {
                    type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                    value: Vec::new(),
                }),
            },
            None,
        );
        if let Err(status) = client.publish(req).await {
            tracing::debug!(error = %status, "publishing the event subscription marker failed");
        }
        tokio::time::sleep(MARKER_INTERVAL).await;
    }
}

/// Aborts the marker publisher when the attempt that started it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Subscribes to the namespace's task events; the subscription lives until the receiver is
/// dropped. The first event is [`TaskEvent::Subscribed`], once containerd delivers to it.
pub fn subscribe(containerd: Containerd) -> mpsc::Receiver<TaskEvent> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(containerd, marker_topic(), tx));
    rx
}

async fn run(containerd: Containerd, marker: String, tx: mpsc::Sender<TaskEvent>) {
    let mut backoff = Duration::from_millis(100);
    let mut live_before = false;
    loop {
        let req = containerd.request(
            SubscribeRequest {
                filters: filters(containerd.namespace(), &marker),
            },
            None,
        );
        let mut client = EventsClient::new(containerd.channel());
        let mut pinger = Some(AbortOnDrop(tokio::spawn(publish_markers(
            containerd.clone(),
            marker.clone(),
        ))));
        let stream = tokio::select! {
            r = client.subscribe(req) => r,
            _ = tx.closed() => return,
        };
        match stream {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = tx.closed() => return,
                    };
                    match msg {
                        Ok(Some(env)) => {
                            // The first envelope (marker or not) proves containerd delivers to
                            // this stream.
                            if pinger.take().is_some() {
                                backoff = Duration::from_millis(100);
                                let cue = if std::mem::replace(&mut live_before, true) {
                                    TaskEvent::Resubscribed
                                } else {
                                    TaskEvent::Subscribed
                                };
                                if tx.send(cue).await.is_err() {
                                    return;
                                }
                            }
                            if env.topic == marker {
                                continue;
                            }
                            let Some(any) = env.event else { continue };
                            if let Some(ev) = decode(&any.type_url, &any.value)
                                && tx.send(ev).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(error = %status, "containerd event stream broke");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(error = %status, ?backoff, "subscribing to containerd events failed");
            }
        }
        drop(pinger);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exit_and_oom_with_or_without_leading_slash() {
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit_status: 3,
            exited_at: None,
        };
        assert_eq!(
            decode("containerd.events.TaskExit", &exit.encode_to_vec()),
            Some(TaskEvent::Exit {
                container_id: "c1".into(),
                exec_id: String::new(),
                exit_code: 3
            })
        );
        let exec_exit = TaskExit {
            id: "probe-1".into(),
            ..exit
        };
        assert!(matches!(
            decode("/containerd.events.TaskExit", &exec_exit.encode_to_vec()),
            Some(TaskEvent::Exit { exec_id, .. }) if exec_id == "probe-1"
        ));
        let oom = TaskOom {
            container_id: "c2".into(),
        };
        assert_eq!(
            decode("containerd.events.TaskOOM", &oom.encode_to_vec()),
            Some(TaskEvent::Oom {
                container_id: "c2".into()
            })
        );
        assert_eq!(decode("containerd.events.TaskCreate", &[]), None);
        assert_eq!(decode("containerd.events.TaskExit", &[0xff, 0xff]), None);
    }

    #[test]
    fn marker_topics_are_unique_valid_containerd_topics() {
        let (a, b) = (marker_topic(), marker_topic());
        assert_ne!(a, b);
        // containerd's identifier rule per `/`-separated component: alphanumerics joined by single
        // `.`, `_` or `-`, at most 76 characters.
        let rest = a.strip_prefix('/').unwrap();
        for part in rest.split('/') {
            assert!(!part.is_empty() && part.len() <= 76, "{a}");
            assert!(
                part.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "{a}"
            );
            assert!(part.starts_with(|c: char| c.is_ascii_alphanumeric()), "{a}");
            assert!(part.ends_with(|c: char| c.is_ascii_alphanumeric()), "{a}");
        }
    }

    #[test]
    fn filters_are_per_namespace_and_topic() {
        assert_eq!(
            filters("k8s.io", "/knode/subscribed/1"),
            [
                "namespace==k8s.io,topic==\"/tasks/exit\"",
                "namespace==k8s.io,topic==\"/tasks/oom\"",
                "namespace==k8s.io,topic==\"/knode/subscribed/1\""
            ]
        );
    }
}
