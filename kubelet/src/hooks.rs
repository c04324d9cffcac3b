//! Container lifecycle hooks, as upstream's `pkg/kubelet/lifecycle/handlers.go`: `postStart` runs
//! right after the container started (a failure kills it: `FailedPostStartHook`), `preStop` runs
//! before SIGTERM within the grace period (`FailedPreStopHook` on failure, the kill goes on).
//! Actions: exec in the container (no timeout of its own), httpGet (any HTTP response counts as
//! success, unlike probes: only a failed exchange fails), sleep. Resolving a handler is pure; the
//! runner is a thin adapter over the runtime's exec and the probes' HTTP client.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use crate::probes::http::HttpTarget;
use crate::runtime::PodRuntime;
use crate::runtime::pod_runtime::ExecSpec;

/// `User-Agent` of hook requests (upstream: `kube-lifecycle/<major.minor>`).
pub const USER_AGENT: &str = concat!(
    "kube-lifecycle/",
    knode_config::k8s_version!(major),
    ".",
    knode_config::k8s_version!(minor)
);

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    PostStart,
    PreStop,
}

/// A hook's handler resolved against its container and the pod IP: what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    Exec { command: Vec<String> },
    Http(HttpTarget),
    Sleep { seconds: u64 },
}

/// A lifecycle handler that cannot run; the message is the whole one for the pod's status, as
/// upstream's "Cannot run handler" one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    #[error("Cannot run handler: {0}")]
    BadHttpGet(String),
    /// tcpSocket is kept in the API for compatibility only; upstream refuses to run it.
    #[error("Cannot run handler: invalid handler: only exec, httpGet and sleep are supported")]
    Unsupported,
}

/// Resolves `handler` for `container` (named ports, the pod IP as the default host).
pub fn action(
    handler: &LifecycleHandler,
    container: &Container,
    pod_ip: &str,
) -> Result<HookAction, HandlerError> {
    if let Some(e) = &handler.exec {
        return Ok(HookAction::Exec {
            command: e.command.clone().unwrap_or_default(),
        });
    }
    if let Some(h) = &handler.http_get {
        let mut target = HttpTarget::from_action(h, container, pod_ip)
            .map_err(|e| HandlerError::BadHttpGet(e.to_string()))?;
        if !target
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
        {
            target.headers.push(("User-Agent".into(), USER_AGENT.into()));
        }
        return Ok(HookAction::Http(target));
    }
    if let Some(s) = &handler.sleep {
        return Ok(HookAction::Sleep {
            seconds: u64::try_from(s.seconds).unwrap_or(0),
        });
    }
    Err(HandlerError::Unsupported)
}

/// The message upstream puts in the container status when a hook fails (`pod` formatted as
/// upstream's `format.Pod`: `name_namespace(uid)`).
pub fn failure_message(action: &HookAction, container: &str, pod: &str, error: &str, output: &str) -> String {
    match action {
        HookAction::Exec { command } => format!(
            "Exec lifecycle hook ([{}]) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {output:?}",
            command.join(" ")
        ),
        HookAction::Http(t) => format!(
            "HTTP lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - error: {error}",
            t.path
        ),
        HookAction::Sleep { seconds } => format!(
            "Sleep lifecycle hook ({seconds}) for Container {container:?} in Pod {pod:?} failed - error: {error}"
        ),
    }
}

/// Why a hook failed: the error and (for exec) the command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    pub error: String,
    pub output: String,
}

/// Runs `action` for container `id`, bounded by `timeout` when given (preStop: the grace period).
pub async fn run(
    runtime: &dyn PodRuntime,
    fifo_dir: &Path,
    id: &str,
    exec_id: &str,
    action: &HookAction,
    timeout: Option<Duration>,
) -> Result<(), HookFailure> {
    let fail = |error: String| HookFailure {
        error,
        output: String::new(),
    };
    match action {
        HookAction::Exec { command } => {
            let spec = ExecSpec {
                exec_id,
                command,
                fifo_dir,
                timeout,
            };
            let out = runtime.exec(id, spec).await.map_err(|e| fail(e.to_string()))?;
            match out.exit_code {
                Some(0) => Ok(()),
                Some(code) => Err(HookFailure {
                    error: format!(
                        "command '{}' exited with {code}: {}",
                        command.join(" "),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                    output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned(),
                }),
                None => Err(fail(format!("command '{}' timed out", command.join(" ")))),
            }
        }
        HookAction::Http(target) => {
            // No timeout of its own upstream either; bound it so a black hole cannot wedge the pod.
            let limit = timeout.unwrap_or(Duration::from_secs(120));
            crate::probes::http::get(target, limit)
                .await
                .map(|_| ())
                .map_err(|e| fail(e.to_string()))
        }
        HookAction::Sleep { seconds } => {
            let want = Duration::from_secs(*seconds);
            match timeout {
                Some(t) if t < want => {
                    tokio::time::sleep(t).await;
                    Err(fail("context deadline exceeded".into()))
                }
                _ => {
                    tokio::time::sleep(want).await;
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, ExecAction, HTTPGetAction, HTTPHeader, SleepAction, TCPSocketAction,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn handlers_resolve_like_upstream() {
        let exec = LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into(), "-c".into(), "true".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            action(&exec, &container(), "10.0.0.5"),
            Ok(HookAction::Exec {
                command: vec!["sh".into(), "-c".into(), "true".into()]
            })
        );
        let http = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/hook".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let HookAction::Http(t) = action(&http, &container(), "10.0.0.5").unwrap() else {
            panic!("not http")
        };
        assert_eq!(t.url(), "http://10.0.0.5:8080/hook");
        assert_eq!(t.headers, vec![("User-Agent".into(), USER_AGENT.into())]);
        // The user's own User-Agent and host win.
        let http = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                host: Some("127.0.0.1".into()),
                scheme: Some("HTTPS".into()),
                port: IntOrString::Int(9443),
                http_headers: Some(vec![HTTPHeader {
                    name: "user-agent".into(),
                    value: "mine".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let HookAction::Http(t) = action(&http, &container(), "10.0.0.5").unwrap() else {
            panic!("not http")
        };
        assert_eq!(t.url(), "https://127.0.0.1:9443/");
        assert_eq!(t.headers, vec![("user-agent".into(), "mine".into())]);
        let missing = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("nope".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            action(&missing, &container(), "10.0.0.5")
                .unwrap_err()
                .to_string()
                .starts_with("Cannot run handler")
        );
        let sleep = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 3 }),
            ..Default::default()
        };
        assert_eq!(
            action(&sleep, &container(), ""),
            Ok(HookAction::Sleep { seconds: 3 })
        );
        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(80),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(action(&tcp, &container(), "").is_err());
    }

    #[test]
    fn failure_messages_match_upstream() {
        let exec = HookAction::Exec {
            command: vec!["sh".into(), "-c".into(), "exit 1".into()],
        };
        assert_eq!(
            failure_message(
                &exec,
                "app",
                "web_default(u1)",
                "command 'sh -c exit 1' exited with 1: ",
                "boom\n"
            ),
            "Exec lifecycle hook ([sh -c exit 1]) for Container \"app\" in Pod \"web_default(u1)\" failed - error: command 'sh -c exit 1' exited with 1: , message: \"boom\\n\""
        );
        let sleep = HookAction::Sleep { seconds: 5 };
        assert_eq!(
            failure_message(&sleep, "app", "p_ns(u)", "context deadline exceeded", ""),
            "Sleep lifecycle hook (5) for Container \"app\" in Pod \"p_ns(u)\" failed - error: context deadline exceeded"
        );
    }
}
