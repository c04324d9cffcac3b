//! Subresources served by the pod's kubelet, proxied as kube-apiserver does, with this server's
//! kubelet-client certificate: `pods/log` becomes `GET https://<node address>:<kubelet
//! port>/containerLogs/<ns>/<pod>/<container>` (the answer streamed back for `follow`);
//! `pods/exec`, `pods/attach` and `pods/portforward` become `/exec`, `/attach` and `/portForward`
//! on the kubelet, and `nodes/{name}/proxy/<path>` becomes `<path>` on that node's kubelet.
//!
//! Streaming requests are passed through at the byte level after the upgrade, as kube-apiserver's
//! UpgradeAwareHandler does: the kubelet answers `101 Switching Protocols` for SPDY/3.1 (kubectl
//! 1.27) and for WebSocket (`v5.channel.k8s.io` exec/attach of kubectl 1.30+, and the
//! `SPDY/3.1+portforward.k8s.io` tunnel of kubectl 1.31+ port-forward), so no translation is needed
//! here — where kube-apiserver translates WebSocket to SPDY towards older kubelets, this kubelet
//! speaks both.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use super::watch::ChannelBody;
use super::{ApiError, Body, ResourceRequest, error_response};
use crate::ControlPlane;

/// Accepts the kubelet's serving certificate without verifying it: upstream's default when
/// `--kubelet-certificate-authority` is not set (kubelets serve self-signed certificates).
#[derive(Debug)]
pub struct AnyKubeletCert(pub Arc<rustls::crypto::CryptoProvider>);

/// The `ServerCertVerifier` signature checks, each by the crypto provider's function of its name.
macro_rules! verify_signature_with_provider {
    ($($check:ident),*) => {$(
        fn $check(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::$check(m, c, d, &self.0.signature_verification_algorithms)
        }
    )*};
}

impl ServerCertVerifier for AnyKubeletCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    verify_signature_with_provider!(verify_tls12_signature, verify_tls13_signature);
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn node_endpoint(node: &Value) -> Option<(String, u16)> {
    let addrs = node["status"]["addresses"].as_array()?;
    let pick = |t: &str| {
        addrs
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
            .map(String::from)
    };
    let host = pick("InternalIP")
        .or_else(|| pick("Hostname"))
        .or_else(|| pick("ExternalIP"))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(10250);
    Some((host, u16::try_from(port).ok()?))
}

/// The container a request is for: the named one (which must exist), or the only one.
fn choose_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<String> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][*k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if names.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if pod["spec"]["containers"].as_array().is_some_and(|a| a.len() == 1) => Ok(names[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// A TLS connection to a kubelet's API (`unreachable` words a failure), its HTTP/1 connection
/// driven on a task of its own (upgrades allowed).
async fn dial_kubelet<B>(
    cp: &ControlPlane,
    host: &str,
    port: u16,
    unreachable: &impl Fn(String) -> ApiError,
) -> Result<hyper::client::conn::http1::SendRequest<B>, ApiError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(cp.kubelet_tls.clone());
    let sni = ServerName::try_from(host.to_string()).map_err(|e| unreachable(e.to_string()))?;
    let tls = connector
        .connect(sni, tcp)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(send)
}

/// A kubelet's response body, passed on as it arrives.
fn forward_body(mut body: hyper::body::Incoming) -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return };
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                return;
            }
        }
    });
    rx
}

/// `GET pods/{name}/log`.
pub async fn pod_log(cp: &Arc<ControlPlane>, rr: &ResourceRequest) -> Response<Body> {
    match pod_log_inner(cp, rr).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn pod_log_inner(cp: &Arc<ControlPlane>, rr: &ResourceRequest) -> Result<Response<Body>, ApiError> {
    let pod = cp
        .store
        .get("pods", &rr.namespace, &rr.name)
        .ok_or_else(|| ApiError::not_found(rr.def, &rr.name))?;
    let container = choose_container(&pod, &rr.name, rr.q("container"))?;
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {} does not have a host assigned", rr.name)))?;
    let node = cp.store.get("nodes", "", node_name).ok_or_else(|| {
        ApiError::not_found(crate::resources::by_storage("nodes").unwrap_or(rr.def), node_name)
    })?;
    let (host, port) = node_endpoint(&node).ok_or_else(|| {
        ApiError::unavailable(format!("node {node_name} reports no address for its kubelet"))
    })?;
    let mut query: Vec<String> = Vec::new();
    for k in [
        "follow",
        "previous",
        "timestamps",
        "tailLines",
        "limitBytes",
        "sinceSeconds",
        "sinceTime",
    ] {
        if let Some(v) = rr.q(k) {
            query.push(format!(
                "{k}={}",
                form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            ));
        }
    }
    let path = format!(
        "/containerLogs/{}/{}/{container}?{}",
        rr.namespace,
        rr.name,
        query.join("&")
    );
    let unreachable = |e: String| ApiError::internal(format!("Get \"https://{host}:{port}{path}\": {e}"));
    let mut send = dial_kubelet(cp, &host, port, &unreachable).await?;
    let req = http::Request::get(&path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    if status != StatusCode::OK {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_string();
        return Err(match status.as_u16() {
            404 => ApiError::bad_request(msg),
            401 | 403 => ApiError::forbidden(msg),
            _ => ApiError::internal(msg),
        });
    }
    let rx = forward_body(resp.into_body());
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(ChannelBody::new(rx).boxed())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// What a kubelet-proxied request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletTarget {
    /// `pods/{exec,attach,portforward}`.
    Pod {
        namespace: String,
        name: String,
        subresource: String,
    },
    /// `nodes/{name}/proxy/<rest>`.
    Node { name: String, rest: String },
}

/// Recognizes the streaming pod subresources and node proxy paths (pods/log stays a plain
/// resource request).
pub fn kubelet_target(path: &str) -> Option<KubeletTarget> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "pods",
            name,
            sub @ ("exec" | "attach" | "portforward"),
        ] => Some(KubeletTarget::Pod {
            namespace: ns.to_string(),
            name: name.to_string(),
            subresource: sub.to_string(),
        }),
        ["api", "v1", "nodes", name, "proxy", rest @ ..] => Some(KubeletTarget::Node {
            name: name.to_string(),
            rest: rest.join("/"),
        }),
        _ => None,
    }
}

/// The kubelet query for exec/attach from the API's PodExecOptions/PodAttachOptions query, as
/// kube-apiserver's streamLocation builds it (`input`, `output`, `error`, `tty` = 1; `command`
/// repeated).
pub fn kubelet_stream_query(q: &[(String, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in q {
        match k.as_str() {
            "command" => {
                out.append_pair("command", v);
            }
            "stdin" | "stdout" | "stderr" | "tty" if super::truthy(v) && !v.is_empty() => {
                let name = match k.as_str() {
                    "stdin" => "input",
                    "stdout" => "output",
                    "stderr" => "error",
                    _ => "tty",
                };
                out.append_pair(name, "1");
            }
            _ => {}
        }
    }
    out.finish()
}

/// Proxies a pod streaming subresource or a node proxy request to the kubelet.
pub async fn proxy(
    cp: &Arc<ControlPlane>,
    target: KubeletTarget,
    mut req: http::Request<hyper::body::Incoming>,
    user: &crate::auth::UserInfo,
) -> Response<Body> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    match proxy_inner(cp, target, req, user, client_upgrade).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn authorize(
    cp: &ControlPlane,
    user: &crate::auth::UserInfo,
    verb: &str,
    resource: &str,
    subresource: &str,
    namespace: &str,
    name: &str,
) -> Result<(), ApiError> {
    let attrs = crate::auth::Attributes {
        verb,
        group: "",
        resource,
        subresource,
        namespace,
        name,
        field_name: None,
        body_node: None,
    };
    crate::auth::authorize(user, &attrs, &cp.store)
        .map_err(|why| ApiError::forbidden(crate::auth::forbidden_message(user, &attrs, &why)))
}

async fn proxy_inner(
    cp: &Arc<ControlPlane>,
    target: KubeletTarget,
    req: http::Request<hyper::body::Incoming>,
    user: &crate::auth::UserInfo,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Result<Response<Body>, ApiError> {
    let verb = match *req.method() {
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "unknown",
    };
    let query: Vec<(String, String)> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let (node_name, path) = match &target {
        KubeletTarget::Pod {
            namespace,
            name,
            subresource,
        } => {
            // Streaming into a pod needs `create` (kube-apiserver also requires it for the
            // WebSocket GET since 1.31).
            authorize(cp, user, "create", "pods", subresource, namespace, name)?;
            let pods_def = crate::resources::find("", "v1", "pods")
                .ok_or_else(|| ApiError::internal("pods are not served"))?;
            let pod = cp
                .store
                .get("pods", namespace, name)
                .ok_or_else(|| ApiError::not_found(pods_def, name))?;
            let node = pod["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
                .to_string();
            let path = if subresource == "portforward" {
                format!("/portForward/{namespace}/{name}")
            } else {
                let asked = query
                    .iter()
                    .find(|(k, _)| k == "container")
                    .map(|(_, v)| v.as_str());
                let container = choose_container(&pod, name, asked)?;
                let kubelet_path = if subresource == "exec" { "exec" } else { "attach" };
                format!(
                    "/{kubelet_path}/{namespace}/{name}/{container}?{}",
                    kubelet_stream_query(&query)
                )
            };
            (node, path)
        }
        KubeletTarget::Node { name, rest } => {
            authorize(cp, user, verb, "nodes", "proxy", "", name)?;
            let q = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            (name.clone(), format!("/{rest}{q}"))
        }
    };
    let node = cp.store.get("nodes", "", &node_name).ok_or_else(|| {
        crate::resources::find("", "v1", "nodes")
            .map(|d| ApiError::not_found(d, &node_name))
            .unwrap_or_else(|| ApiError::internal("nodes are not served"))
    })?;
    let (host, port) = node_endpoint(&node).ok_or_else(|| {
        ApiError::unavailable(format!("node {node_name} reports no address for its kubelet"))
    })?;
    let (parts, body) = req.into_parts();
    let unreachable = |e: String| {
        ApiError::internal(format!(
            "error dialing backend: {} \"https://{host}:{port}{}\": {e}",
            parts.method,
            path.split('?').next().unwrap_or("")
        ))
    };
    let mut send = dial_kubelet(cp, &host, port, &unreachable).await?;
    let mut out = http::Request::builder()
        .method(parts.method.clone())
        .uri(&path)
        .header(http::header::HOST, format!("{host}:{port}"));
    // The caller's credentials stay here: the kubelet sees this server's client certificate.
    for (k, v) in &parts.headers {
        let skip = matches!(
            k.as_str(),
            "host" | "authorization" | "content-length" | "transfer-encoding"
        ) || k.as_str().starts_with("impersonate-");
        if !skip {
            out = out.header(k, v);
        }
    }
    let upgrade_requested = parts.headers.contains_key(http::header::UPGRADE);
    let out = out.body(body).map_err(|e| unreachable(e.to_string()))?;
    let mut resp = send
        .send_request(out)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS && upgrade_requested {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        let mut ours = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            ours = ours.header(k, v);
        }
        tokio::spawn(async move {
            let (Ok(client), Ok(backend)) = tokio::join!(client_upgrade, backend_upgrade) else {
                return;
            };
            let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(backend));
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
        return ours
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    // Anything else (errors, plain proxied responses) is passed back as it is.
    let mut ours = Response::builder().status(status);
    for (k, v) in resp.headers() {
        if !matches!(k.as_str(), "content-length" | "transfer-encoding" | "connection") {
            ours = ours.header(k, v);
        }
    }
    let rx = forward_body(resp.into_body());
    ours.body(ChannelBody::new(rx).boxed())
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn streaming_paths_are_recognized() {
        assert_eq!(
            kubelet_target("/api/v1/namespaces/default/pods/web/exec"),
            Some(KubeletTarget::Pod {
                namespace: "default".into(),
                name: "web".into(),
                subresource: "exec".into()
            })
        );
        assert_eq!(
            kubelet_target("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(KubeletTarget::Node {
                name: "n1".into(),
                rest: "stats/summary".into()
            })
        );
        assert_eq!(
            kubelet_target("/api/v1/nodes/n1/proxy"),
            Some(KubeletTarget::Node {
                name: "n1".into(),
                rest: String::new()
            })
        );
        assert_eq!(kubelet_target("/api/v1/namespaces/default/pods/web/log"), None);
        assert_eq!(kubelet_target("/api/v1/namespaces/default/pods/web"), None);
    }

    #[test]
    fn exec_query_is_translated_for_the_kubelet() {
        let q: Vec<(String, String)> = [
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo a&b"),
            ("container", "main"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("stderr", "false"),
            ("tty", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            kubelet_stream_query(&q),
            "command=sh&command=-c&command=echo+a%26b&input=1&output=1"
        );
    }
}
