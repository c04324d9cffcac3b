//! The kubelet API on `address:port` (default 0.0.0.0:10250), HTTPS only, with upstream's
//! authentication and authorization ([`auth`]): `/healthz`, `/containerLogs/...` ([`logs`]),
//! `/logs/` (node logs, [`node_logs`]),
//! `/pods`, `/runningpods/`, and the streaming endpoints `/exec`, `/attach`, `/portForward`
//! ([`streaming`], over SPDY/3.1 ([`spdy`]) or WebSocket ([`websocket`])). Plus the plain
//! healthz on `healthzBindAddress:healthzPort` (127.0.0.1:10248). The read-only port is not served.
//!
//! Routing is a match on the path's first segment calling one function per endpoint (see
//! [`route`]); new endpoints add a match arm.

pub mod auth;
pub mod logs;
pub mod node_logs;
pub mod spdy;
pub mod streaming;
pub mod websocket;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use auth::{Auth, AuthConfig, Denied, User};
pub use logs::{LogOptions, find_log_files, render_logs};
use streaming::{Action, Runtime, StreamOptions};

/// Server settings from the KubeletConfiguration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Where a self-signed serving certificate is kept when none is configured (`<root>/pki`).
    pub cert_dir: PathBuf,
    pub client_ca_file: String,
    pub anonymous: bool,
    /// `Webhook` or `AlwaysAllow`.
    pub authorization_mode: String,
    pub node_name: String,
    /// A serving certificate that rotates (`serverTLSBootstrap`); overrides the files above.
    pub serving: Option<Arc<crate::certs::serving::ServingCert>>,
    /// What `/configz` serves: `{"kubeletconfig": <the KubeletConfiguration in effect>}`.
    pub configz: serde_json::Value,
    pub pod_logs_dir: PathBuf,
    /// The directory `/logs/` serves (`/var/log` with `enableSystemLogHandler`; none: 404).
    pub node_log_dir: Option<PathBuf>,
    /// `authentication.webhook.enabled`: bearer tokens through TokenReview.
    pub webhook_authn: bool,
    /// `authentication.webhook.cacheTTL`.
    pub authn_cache_ttl: Duration,
    /// `authorization.webhook.cacheAuthorizedTTL` / `cacheUnauthorizedTTL`.
    pub authorized_ttl: Duration,
    pub unauthorized_ttl: Duration,
    /// The runtime for exec/attach/port-forward and container lookups (none: those answer 503).
    pub runtime: Option<Runtime>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("kubelet server TLS ({what}): {message}")]
    Tls { what: String, message: String },
    #[error("kubelet server: binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::Tls {
        what: what.into(),
        message: e.to_string(),
    }
}

/// The response body type.
pub type Body = BoxBody<Bytes, Infallible>;

fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())).boxed());
    *r.status_mut() = code;
    r
}

/// Loads the configured serving certificate or makes (and keeps) a self-signed one, as upstream.
fn serving_cert(
    cfg: &ServerConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ServerError> {
    let (cert_pem, key_pem) = if !cfg.tls_cert_file.is_empty() {
        (
            std::fs::read(&cfg.tls_cert_file).map_err(|e| tls_err(&cfg.tls_cert_file, e))?,
            std::fs::read(&cfg.tls_key_file).map_err(|e| tls_err(&cfg.tls_key_file, e))?,
        )
    } else {
        let crt = cfg.cert_dir.join("kubelet.crt");
        let key = cfg.cert_dir.join("kubelet.key");
        if !crt.exists() || !key.exists() {
            std::fs::create_dir_all(&cfg.cert_dir).map_err(|e| tls_err("cert dir", e))?;
            let ck = rcgen::generate_simple_self_signed(vec![
                cfg.node_name.clone(),
                "localhost".into(),
                "127.0.0.1".into(),
            ])
            .map_err(|e| tls_err("self-signed certificate", e))?;
            std::fs::write(&crt, ck.cert.pem()).map_err(|e| tls_err("writing kubelet.crt", e))?;
            std::fs::write(&key, ck.signing_key.serialize_pem())
                .map_err(|e| tls_err("writing kubelet.key", e))?;
        }
        (
            std::fs::read(&crt).map_err(|e| tls_err("kubelet.crt", e))?,
            std::fs::read(&key).map_err(|e| tls_err("kubelet.key", e))?,
        )
    };
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("serving certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| tls_err("serving key", e))?;
    Ok((certs, key))
}

/// Go's `tls.RequestClientCert`, as upstream's kubelet sets it: a client certificate is asked for
/// and its signature over the handshake checked, but a chain the client CA does not vouch for
/// does not end the handshake; the request is then unauthenticated (401 unless anonymous access
/// is on), which is what upstream's x509 authenticator decides. The real chain check is
/// [`RequestClientCert::trusted`], run per connection.
#[derive(Debug)]
struct RequestClientCert(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl RequestClientCert {
    /// Whether the client CA vouches for the presented chain.
    fn trusted(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return false;
        };
        self.0
            .verify_client_cert(end_entity, intermediates, rustls::pki_types::UnixTime::now())
            .is_ok()
    }
}

impl rustls::server::danger::ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn tls_config(
    cfg: &ServerConfig,
) -> Result<(rustls::ServerConfig, Option<Arc<RequestClientCert>>), ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("versions", e))?;
    let mut clients = None;
    let builder = if cfg.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let pem = std::fs::read(&cfg.client_ca_file).map_err(|e| tls_err(&cfg.client_ca_file, e))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(c.map_err(|e| tls_err("client CA", e))?)
                .map_err(|e| tls_err("client CA", e))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_err("client verifier", e))?;
        let request = Arc::new(RequestClientCert(verifier));
        clients = Some(request.clone());
        builder.with_client_cert_verifier(request)
    };
    let mut c = match &cfg.serving {
        Some(rotating) => builder.with_cert_resolver(rotating.clone()),
        None => {
            let (certs, key) = serving_cert(cfg)?;
            builder
                .with_single_cert(certs, key)
                .map_err(|e| tls_err("serving certificate", e))?
        }
    };
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((c, clients))
}

/// The caller from a verified client certificate: (CN, O values).
fn identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let s = cert.subject();
    let cn = s.iter_common_name().next()?.as_str().ok()?.to_string();
    let orgs = s
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some((cn, orgs))
}

/// Shared by every request.
struct State {
    cfg: ServerConfig,
    client: kube::Client,
    auth: Auth,
}

/// Serves the kubelet API until the task is dropped.
pub async fn serve(cfg: ServerConfig, client: kube::Client) -> Result<(), ServerError> {
    let (tls, clients) = tls_config(&cfg)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    tracing::info!(address = %cfg.listen, "kubelet API serving");
    let auth = Auth::new(
        AuthConfig {
            anonymous: cfg.anonymous,
            webhook_authn: cfg.webhook_authn,
            authn_cache_ttl: cfg.authn_cache_ttl,
            authorization_mode: cfg.authorization_mode.clone(),
            authorized_ttl: cfg.authorized_ttl,
            unauthorized_ttl: cfg.unauthorized_ttl,
            node_name: cfg.node_name.clone(),
        },
        client.clone(),
    );
    let state = Arc::new(State { cfg, client, auth });
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, state, clients) = (acceptor.clone(), state.clone(), clients.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            // Only a chain the client CA vouches for names the caller.
            let who = tls
                .get_ref()
                .1
                .peer_certificates()
                .filter(|chain| clients.as_ref().is_some_and(|v| v.trusted(chain)))
                .and_then(|c| c.first())
                .and_then(|c| identity(c));
            let svc = service_fn(move |req| {
                let (state, who) = (state.clone(), who.clone());
                async move { Ok::<_, Infallible>(handle(&state, who, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// The plain healthz endpoint (`healthzBindAddress:healthzPort`, 127.0.0.1:10248 by default; port
/// 0 disables it). Binding failures are retried every 5 s, as upstream does.
pub async fn serve_healthz(addr: std::net::SocketAddr) {
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "starting the healthz server failed; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    tracing::info!(%addr, "healthz serving");
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(match req.uri().path() {
                    "/healthz" => text(StatusCode::OK, "ok"),
                    _ => text(StatusCode::NOT_FOUND, "404 page not found"),
                })
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn handle(
    st: &State,
    cert: Option<(String, Vec<String>)>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    let user = match st.auth.authenticate(cert.as_ref(), req.headers()).await {
        Ok(u) => u,
        Err(Denied::Failed(m)) => return text(StatusCode::INTERNAL_SERVER_ERROR, m),
        Err(_) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
    };
    let attrs = auth::attributes(req.method(), &path);
    match st.auth.authorize(&user, &attrs).await {
        Ok(()) => {}
        Err(Denied::Forbidden(m)) => return text(StatusCode::FORBIDDEN, m),
        Err(Denied::Failed(m)) => return text(StatusCode::INTERNAL_SERVER_ERROR, m),
        Err(Denied::Unauthenticated) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
    }
    tracing::debug!(user = user.name, method = %req.method(), path, "kubelet API request");
    route(st, req).await
}

/// What an authorized request asks for, from its method and path alone (pure, so the routing
/// can be tested and fuzzed without a connection). `/metrics*` and `/stats/*` are answered by
/// [`crate::metrics::respond`] before this is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /containerLogs/{ns}/{pod}/{container}`.
    ContainerLogs {
        namespace: String,
        pod: String,
        container: String,
    },
    /// `GET /logs/...`: the rest of the path (still percent-encoded, see [`node_logs`]).
    NodeLogs { rest: String },
    /// `GET /pods`.
    Pods,
    /// `GET /configz`.
    Configz,
    /// `GET /runningpods`.
    RunningPods,
    /// `/exec/{ns}/{pod}/{container}`, `/exec/{ns}/{pod}/{uid}/{container}` (and `/attach/...`).
    RemoteCommand {
        namespace: String,
        pod: String,
        container: String,
        attach: bool,
    },
    /// `/portForward/{ns}/{pod}[/{uid}]`.
    PortForward { namespace: String, pod: String },
    /// Anything else: 404.
    NotFound,
}

impl Route {
    /// Routes by the path's segments; new endpoints add a match arm here and one in [`route`].
    pub fn parse(method: &Method, path: &str) -> Route {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let get = method == Method::GET;
        let s = |v: &&str| v.to_string();
        match segs.as_slice() {
            ["containerLogs", ns, pod, container] if get => Route::ContainerLogs {
                namespace: s(ns),
                pod: s(pod),
                container: s(container),
            },
            ["logs", ..] if get => Route::NodeLogs {
                rest: path
                    .strip_prefix("/logs")
                    .unwrap_or("")
                    .trim_start_matches('/')
                    .to_string(),
            },
            ["pods"] if get => Route::Pods,
            ["configz"] if get => Route::Configz,
            ["runningpods"] if get => Route::RunningPods,
            [kind @ ("exec" | "attach"), ns, pod, .., container] if segs.len() <= 5 => Route::RemoteCommand {
                namespace: s(ns),
                pod: s(pod),
                container: s(container),
                attach: *kind == "attach",
            },
            ["portForward", ns, pod, ..] if segs.len() <= 4 => Route::PortForward {
                namespace: s(ns),
                pod: s(pod),
            },
            _ => Route::NotFound,
        }
    }
}

/// Dispatches an authorized request by its path.
async fn route(st: &State, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    // /stats/summary, /metrics, /metrics/resource (crate::metrics; authorized as nodes/stats|metrics).
    if req.method() == Method::GET
        && let Some((code, ctype, body)) = crate::metrics::respond(&path).await
    {
        let mut r = text(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        );
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
        return r;
    }
    match Route::parse(req.method(), &path) {
        Route::ContainerLogs {
            namespace,
            pod,
            container,
        } => container_logs(st, &req, &namespace, &pod, &container),
        Route::NodeLogs { rest } => match &st.cfg.node_log_dir {
            Some(dir) => node_logs::serve(dir, &rest, &path).await,
            None => text(StatusCode::NOT_FOUND, "404 page not found"),
        },
        Route::Pods => pods(st).await,
        Route::Configz => {
            let mut r = text(StatusCode::OK, st.cfg.configz.to_string());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Route::RunningPods => running_pods(st).await,
        Route::RemoteCommand {
            namespace,
            pod,
            container,
            attach,
        } => remote_command(st, req, &namespace, &pod, &container, attach).await,
        Route::PortForward { namespace, pod } => port_forward(st, req, &namespace, &pod).await,
        Route::NotFound => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn container_logs(
    st: &State,
    req: &Request<hyper::body::Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let opts = LogOptions::from_query(&q, std::time::SystemTime::now());
    let files = match find_log_files(&st.cfg.pod_logs_dir, ns, pod, container, opts.previous) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    if !opts.follow || opts.previous {
        return logs::finished_log_body(logs::render_files(&files, &opts));
    }
    // Follow until the container exits (its newest attempt is no longer running).
    let running: logs::StillRunning = match st.cfg.runtime.clone() {
        Some(rt) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            Box::new(move || {
                let (rt, ns, pod, container) = (rt.clone(), ns.clone(), pod.clone(), container.clone());
                Box::pin(async move {
                    match streaming::find_container(&rt, &ns, &pod, Some(&container)).await {
                        Ok(c) => matches!(
                            c.state,
                            crate::runtime::container::TaskState::Running { .. }
                                | crate::runtime::container::TaskState::Created
                                | crate::runtime::container::TaskState::Paused
                        ),
                        // A lookup failure is not an exit.
                        Err(e) => !e.starts_with("container not found"),
                    }
                })
            })
        }
        None => Box::new(|| Box::pin(async { true })),
    };
    logs::follow_logs(files, opts, running)
}

fn json_response(v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// `/pods`: the pods bound to this node, as a PodList.
async fn pods(st: &State) -> Response<Body> {
    let api: Api<Pod> = Api::all(st.client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", st.cfg.node_name));
    match api.list(&lp).await {
        Ok(list) => json_response(&serde_json::json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": list.items,
        })),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("listing pods: {e}")),
    }
}

/// `/runningpods/`: what runs in the runtime, grouped into pods (name, namespace, uid and the
/// running containers' names and images), as upstream.
async fn running_pods(st: &State) -> Response<Body> {
    let Some(rt) = &st.cfg.runtime else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the container runtime is not available",
        );
    };
    let all = match crate::runtime::container::ContainerService::new(rt.containerd.clone())
        .list()
        .await
    {
        Ok(a) => a,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("listing containers: {e}"),
            );
        }
    };
    let mut pods: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for c in all {
        if !matches!(c.state, crate::runtime::container::TaskState::Running { .. }) {
            continue;
        }
        let p = pods.entry(c.meta.pod_uid.clone()).or_insert_with(|| {
            serde_json::json!({
                "metadata": {"name": c.meta.pod_name, "namespace": c.meta.pod_namespace, "uid": c.meta.pod_uid},
                "spec": {"containers": []},
                "status": {},
            })
        });
        if let Some(cs) = p["spec"]["containers"].as_array_mut() {
            cs.push(serde_json::json!({"name": c.meta.container_name, "image": c.image}));
        }
    }
    json_response(&serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": pods.into_values().collect::<Vec<_>>(),
    }))
}

/// Header values, split at commas, across repeated headers.
fn header_values(req: &Request<hyper::body::Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The transport a streaming request asks to switch to.
enum Upgrade {
    Spdy { protocol: &'static str },
    WebSocket { protocol: &'static str, accept: String },
}

/// Negotiates the upgrade: SPDY with `X-Stream-Protocol-Version`, or WebSocket with
/// `Sec-WebSocket-Protocol`; errors are the response to send.
fn negotiate(
    req: &Request<hyper::body::Incoming>,
    spdy_protocols: &[&'static str],
    ws_protocols: &[&'static str],
) -> Result<Upgrade, Box<Response<Body>>> {
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let no_protocol = |offered: Vec<String>, supported: &[&str]| {
        Box::new(text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
            ),
        ))
    };
    if upgrade == "spdy/3.1" {
        let offered = header_values(req, "x-stream-protocol-version");
        let refs: Vec<&str> = offered.iter().map(String::as_str).collect();
        return websocket::select_protocol(&refs, spdy_protocols)
            .map(|protocol| Upgrade::Spdy { protocol })
            .ok_or_else(|| no_protocol(offered.clone(), spdy_protocols));
    }
    if upgrade == "websocket" {
        let Some(key) = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
        else {
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                "missing Sec-WebSocket-Key",
            )));
        };
        let offered = header_values(req, "sec-websocket-protocol");
        let refs: Vec<&str> = offered.iter().map(String::as_str).collect();
        return websocket::select_protocol(&refs, ws_protocols)
            .map(|protocol| Upgrade::WebSocket {
                protocol,
                accept: websocket::accept_key(key),
            })
            .ok_or_else(|| no_protocol(offered.clone(), ws_protocols));
    }
    Err(Box::new(text(
        StatusCode::BAD_REQUEST,
        "Upgrade request required",
    )))
}

impl Upgrade {
    /// For logs: `spdy/<protocol>` or `websocket/<protocol>`.
    fn describe(&self) -> String {
        match self {
            Upgrade::Spdy { protocol } => format!("spdy/{protocol}"),
            Upgrade::WebSocket { protocol, .. } => format!("websocket/{protocol}"),
        }
    }
}

fn switching(up: &Upgrade) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade");
    match up {
        Upgrade::Spdy { protocol } => {
            b = b
                .header(http::header::UPGRADE, "SPDY/3.1")
                .header("X-Stream-Protocol-Version", *protocol);
        }
        Upgrade::WebSocket { protocol, accept } => {
            b = b
                .header(http::header::UPGRADE, "websocket")
                .header("Sec-WebSocket-Accept", accept.as_str())
                .header("Sec-WebSocket-Protocol", *protocol);
        }
    }
    b.body(Full::new(Bytes::new()).boxed())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade response"))
}

async fn upgraded(req: Request<hyper::body::Incoming>) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    match hyper::upgrade::on(req).await {
        Ok(u) => Some(TokioIo::new(u)),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            None
        }
    }
}

/// `/exec/...` and `/attach/...`.
async fn remote_command(
    st: &State,
    req: Request<hyper::body::Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
    attach: bool,
) -> Response<Body> {
    let Some(rt) = st.cfg.runtime.clone() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the container runtime is not available",
        );
    };
    let q: Vec<(String, String)> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let opts = StreamOptions::from_query(&q);
    if !attach && opts.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 command");
    }
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let found = match streaming::find_container(&rt, ns, pod, Some(container)).await {
        Ok(c) => c,
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    if !matches!(found.state, crate::runtime::container::TaskState::Running { .. }) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "container {container} is not running, cannot {}",
                if attach { "attach" } else { "exec" }
            ),
        );
    }
    let action = if attach {
        let log_path = find_log_files(&st.cfg.pod_logs_dir, ns, pod, container, false)
            .ok()
            .and_then(|f| f.last().cloned());
        Action::Attach {
            container_id: found.id,
            log_path,
        }
    } else {
        Action::Exec {
            container_id: found.id,
        }
    };
    let up = match negotiate(&req, streaming::SPDY_PROTOCOLS, streaming::WS_PROTOCOLS) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let resp = switching(&up);
    tracing::info!(
        pod = %format!("{ns}/{pod}"),
        container,
        what = if attach { "attach" } else { "exec" },
        transport = %up.describe(),
        "streaming session"
    );
    tokio::spawn(async move {
        let Some(io) = upgraded(req).await else { return };
        match up {
            Upgrade::Spdy { .. } => {
                let Ok(mut session) = spdy::start(io) else { return };
                let Some(ch) = streaming::spdy_channels(&mut session, &opts).await else {
                    tracing::info!("exec/attach: the client did not open its streams in time");
                    session.closer.shutdown().await;
                    return;
                };
                streaming::run_remote_command(rt, ch, opts, action).await;
                session.closer.shutdown().await;
            }
            Upgrade::WebSocket { protocol, .. } => {
                let (incoming, out) = websocket::start(io);
                let ch = streaming::ws_channels(incoming, &out, &opts, streaming::WsFraming::of(protocol));
                streaming::run_remote_command(rt, ch, opts, action).await;
                out.close().await;
            }
        }
    });
    resp
}

/// `/portForward/{ns}/{pod}`: SPDY, SPDY tunnelled in WebSocket, or native WebSocket channels
/// (`v4.channel.k8s.io`, ports in the `port` query parameter).
async fn port_forward(
    st: &State,
    req: Request<hyper::body::Incoming>,
    ns: &str,
    pod: &str,
) -> Response<Body> {
    let Some(rt) = st.cfg.runtime.clone() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the container runtime is not available",
        );
    };
    let pid = match streaming::find_container(&rt, ns, pod, None).await {
        Ok(c) => match c.state {
            crate::runtime::container::TaskState::Running { pid } => pid,
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("pod {ns}/{pod} has no running container to forward to"),
                );
            }
        },
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let up = match negotiate(
        &req,
        &[streaming::PORT_FORWARD_PROTOCOL],
        &[streaming::PORT_FORWARD_TUNNEL, streaming::PORT_FORWARD_WS],
    ) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    // Native WebSocket port-forward names its ports in the query.
    let native = matches!(up, Upgrade::WebSocket { protocol, .. } if protocol == streaming::PORT_FORWARD_WS);
    let ports = if native {
        let q: Vec<(String, String)> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        match streaming::forward_ports(&q) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        }
    } else {
        Vec::new()
    };
    let resp = switching(&up);
    let name = format!("{ns}/{pod}");
    tracing::info!(pod = %name, what = "portforward", transport = %up.describe(), "streaming session");
    tokio::spawn(async move {
        let Some(io) = upgraded(req).await else { return };
        let session = match up {
            Upgrade::Spdy { .. } => spdy::start(io),
            Upgrade::WebSocket { .. } if native => {
                let (incoming, out) = websocket::start(io);
                streaming::port_forward_ws(incoming, out, netns, name, ports).await;
                return;
            }
            Upgrade::WebSocket { .. } => {
                let (incoming, out) = websocket::start(io);
                spdy::start(websocket::byte_stream(incoming, out))
            }
        };
        if let Ok(session) = session {
            streaming::port_forward(session, netns, name).await;
        }
    });
    resp
}

#[cfg(test)]
mod route_tests {
    use super::*;

    fn r(method: Method, path: &str) -> Route {
        Route::parse(&method, path)
    }

    #[test]
    fn routes_by_method_and_segments_as_before() {
        assert_eq!(
            r(Method::GET, "/containerLogs/ns/p/c"),
            Route::ContainerLogs {
                namespace: "ns".into(),
                pod: "p".into(),
                container: "c".into()
            }
        );
        assert_eq!(r(Method::POST, "/containerLogs/ns/p/c"), Route::NotFound);
        assert_eq!(r(Method::GET, "/containerLogs/ns/p"), Route::NotFound);
        assert_eq!(
            r(Method::GET, "/logs/a%2Fb/c"),
            Route::NodeLogs {
                rest: "a%2Fb/c".into()
            }
        );
        assert_eq!(r(Method::GET, "/logs"), Route::NodeLogs { rest: String::new() });
        assert_eq!(r(Method::GET, "/pods/"), Route::Pods);
        assert_eq!(r(Method::GET, "/configz"), Route::Configz);
        assert_eq!(r(Method::GET, "/runningpods/"), Route::RunningPods);
        // The uid form and the short form name the same container; more segments are a 404.
        for path in ["/exec/ns/p/c", "/exec/ns/p/uid/c"] {
            assert_eq!(
                r(Method::POST, path),
                Route::RemoteCommand {
                    namespace: "ns".into(),
                    pod: "p".into(),
                    container: "c".into(),
                    attach: false
                },
                "{path}"
            );
        }
        assert_eq!(r(Method::GET, "/exec/ns/p/uid/x/c"), Route::NotFound);
        assert!(matches!(
            r(Method::GET, "/attach/ns/p/c"),
            Route::RemoteCommand { attach: true, .. }
        ));
        assert_eq!(
            r(Method::GET, "/portForward/ns/p/uid"),
            Route::PortForward {
                namespace: "ns".into(),
                pod: "p".into()
            }
        );
        assert_eq!(r(Method::GET, "/portForward/ns"), Route::NotFound);
        assert_eq!(r(Method::GET, "/"), Route::NotFound);
        assert_eq!(r(Method::GET, ""), Route::NotFound);
    }
}
