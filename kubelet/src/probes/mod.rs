//! Container probes (liveness, readiness, startup), after upstream's `pkg/kubelet/prober` and
//! `pkg/probe`: a pure per-container schedule with upstream's thresholds and startup gating
//! ([`schedule`]), thin async executors for the four handlers ([`http`], [`tcp`], [`exec`],
//! [`grpc`]) and a [`ProbeManager`] that runs one task per probed container and reports result
//! changes by pod UID.

pub mod exec;
pub mod grpc;
pub mod http;
pub mod manager;
pub mod schedule;
pub mod tcp;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use manager::{ProbeEvent, ProbeManager, ProbeResults};
pub use schedule::{ContainerProbes, ProbeTiming, ProbeWorker};

/// Upstream's User-Agent for HTTP probes (`kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = concat!(
    "kube-probe/",
    knode_config::k8s_version!(major),
    ".",
    knode_config::k8s_version!(minor)
);

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// The lower-case name upstream uses in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The container's probe of this kind.
    pub fn probe_of(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => container.liveness_probe.as_ref(),
            ProbeKind::Readiness => container.readiness_probe.as_ref(),
            ProbeKind::Startup => container.startup_probe.as_ref(),
        }
    }
}

/// The result of running one probe once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// Failed, with upstream's message (e.g. `HTTP probe failed with statuscode: 500`).
    Failure(String),
}

impl ProbeOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, ProbeOutcome::Success)
    }
}

/// A probe spec that cannot be run, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeSpecError {
    #[error("probe has no handler (exec, httpGet, tcpSocket or grpc)")]
    NoHandler,
    #[error("{field}: couldn't find port {port} in container {container}")]
    NamedPortNotFound {
        field: &'static str,
        port: String,
        container: String,
    },
    #[error("{field}: invalid port number {port}")]
    InvalidPort { field: &'static str, port: i64 },
}

/// Resolves a probe port (number or the container's named port), as upstream's
/// `probe.ResolveContainerPort`.
pub fn resolve_port(
    field: &'static str,
    port: &IntOrString,
    container: &Container,
) -> Result<u16, ProbeSpecError> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<i64>() {
                n
            } else {
                container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| i64::from(p.container_port))
                    .ok_or_else(|| ProbeSpecError::NamedPortNotFound {
                        field,
                        port: name.clone(),
                        container: container.name.clone(),
                    })?
            }
        }
    };
    if (1..=65535).contains(&number) {
        Ok(number as u16)
    } else {
        Err(ProbeSpecError::InvalidPort { field, port: number })
    }
}

/// A probe's handler resolved against its container and pod IP: what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Http(http::HttpTarget),
    Tcp {
        host: String,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
    Grpc {
        host: String,
        port: u16,
        service: Option<String>,
    },
}

impl ProbeAction {
    /// Resolves `probe`'s handler for `container` with the pod's IP as the default host.
    pub fn from_probe(probe: &Probe, container: &Container, pod_ip: &str) -> Result<Self, ProbeSpecError> {
        if let Some(e) = &probe.exec {
            return Ok(ProbeAction::Exec {
                command: e.command.clone().unwrap_or_default(),
            });
        }
        if let Some(h) = &probe.http_get {
            return Ok(ProbeAction::Http(http::HttpTarget::from_action(
                h, container, pod_ip,
            )?));
        }
        if let Some(t) = &probe.tcp_socket {
            let port = resolve_port("tcpSocket.port", &t.port, container)?;
            let host = t
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string());
            return Ok(ProbeAction::Tcp { host, port });
        }
        if let Some(g) = &probe.grpc {
            let port = resolve_port("grpc.port", &IntOrString::Int(g.port), container)?;
            return Ok(ProbeAction::Grpc {
                host: pod_ip.to_string(),
                port,
                service: g.service.clone(),
            });
        }
        Err(ProbeSpecError::NoHandler)
    }
}

/// The grace period for killing a container after its liveness (or startup) probe failed:
/// the probe's `terminationGracePeriodSeconds` overrides the pod's (upstream, GA in 1.27).
pub fn probe_grace_period_seconds(
    kind: ProbeKind,
    container: &Container,
    pod_grace: Option<i64>,
) -> Option<i64> {
    match kind {
        ProbeKind::Readiness => pod_grace,
        ProbeKind::Liveness | ProbeKind::Startup => kind
            .probe_of(container)
            .and_then(|p| p.termination_grace_period_seconds)
            .or(pod_grace),
    }
}

/// Seconds from an optional spec field, with a default and a minimum.
pub(crate) fn seconds(value: Option<i32>, default: u64, min: u64) -> Duration {
    let v = value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default);
    Duration::from_secs(v.max(min))
}
