//! containerd task events the kubelet reacts to: a task's init process exiting (`/tasks/exit`) and
//! the kernel OOM-killing inside a container (`/tasks/oom`, which upstream turns into the
//! `OOMKilled` reason), for this connection's namespace only.
//!
//! containerd 1.6's Events.Subscribe answers only with the first event (PLATFORM.md), so the
//! subscription runs in its own task and feeds a channel. When the stream breaks (containerd
//! restarted) it resubscribes with backoff and reports [`TaskEvent::Resubscribed`] first: events in
//! the gap are lost, so the consumer relists (`ContainerService::list`).

use std::time::Duration;

use containerd_client::events::{TaskExit, TaskOom};
use containerd_client::services::v1::SubscribeRequest;
use containerd_client::services::v1::events_client::EventsClient;
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
    /// The subscription broke and was re-established: events may have been missed, relist.
    Resubscribed,
}

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

/// The subscription filters for `namespace` (a list of filters is an OR in containerd).
pub fn filters(namespace: &str) -> Vec<String> {
    ["/tasks/exit", "/tasks/oom"]
        .iter()
        .map(|t| format!("namespace=={namespace},topic==\"{t}\""))
        .collect()
}

/// Subscribes to the namespace's task events; the subscription lives until the receiver is dropped.
pub fn subscribe(containerd: Containerd) -> mpsc::Receiver<TaskEvent> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut broken = false;
        loop {
            let req = containerd.request(
                SubscribeRequest {
                    filters: filters(containerd.namespace()),
                },
                None,
            );
            let mut client = EventsClient::new(containerd.channel());
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
                                backoff = Duration::from_millis(100);
                                if broken {
                                    broken = false;
                                    if tx.send(TaskEvent::Resubscribed).await.is_err() {
                                        return;
                                    }
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
            broken = true;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    rx
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
    fn filters_are_per_namespace_and_topic() {
        assert_eq!(
            filters("k8s.io"),
            [
                "namespace==k8s.io,topic==\"/tasks/exit\"",
                "namespace==k8s.io,topic==\"/tasks/oom\""
            ]
        );
    }
}
