//! gRPC probes (upstream `pkg/probe/grpc`): `grpc.health.v1.Health/Check` on the pod IP and
//! port with the optional `service`, over plaintext HTTP/2; `SERVING` is success. The two
//! messages are declared by hand (one field each) instead of generating the health proto.

use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use super::ProbeOutcome;
use super::tcp::join_host_port;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (`status` is the `ServingStatus` enum).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `ServingStatus` names as upstream prints them.
fn status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// Checks `service` on `host:port` within `timeout`.
pub async fn probe(host: &str, port: u16, service: Option<&str>, timeout: Duration) -> ProbeOutcome {
    let addr = join_host_port(host, port);
    let service = service.unwrap_or_default();
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(super::USER_AGENT),
        Err(e) => return ProbeOutcome::Failure(format!("invalid gRPC probe address {addr}: {e}")),
    };
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(e) => return ProbeOutcome::Failure(e.to_string()),
    };
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            // Upstream dials with WithBlock: a refused or failing connection is retried until
            // the deadline, so it always reports the timeout; the real cause goes to the log.
            let cause = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            tracing::debug!(%addr, %cause, "gRPC probe could not connect");
            return connect_timeout(&addr, timeout);
        }
        Err(_) => return connect_timeout(&addr, timeout),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        grpc.unary(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            }),
            PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => ProbeOutcome::Failure(format!(
            "timeout: health rpc did not complete within {}",
            crate::pods::go_duration(timeout)
        )),
        Ok(Err(status)) => match status.code() {
            tonic::Code::Unimplemented => ProbeOutcome::Failure(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            )),
            tonic::Code::DeadlineExceeded => ProbeOutcome::Failure(format!(
                "timeout: health rpc did not complete within {}",
                crate::pods::go_duration(timeout)
            )),
            _ => ProbeOutcome::Failure(format!(
                "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
                status.code(),
                status.message()
            )),
        },
        Ok(Ok(response)) => {
            let status = response.into_inner().status;
            if status == 1 {
                ProbeOutcome::Success
            } else {
                ProbeOutcome::Failure(format!(
                    "service unhealthy (responded with {:?})",
                    status_name(status)
                ))
            }
        }
    }
}

fn connect_timeout(addr: &str, timeout: Duration) -> ProbeOutcome {
    ProbeOutcome::Failure(format!(
        "timeout: failed to connect service {addr:?} within {}: context deadline exceeded",
        crate::pods::go_duration(timeout)
    ))
}
