//! HTTP(S) GET probes (upstream `pkg/probe/http`): GET `scheme://host:port/path` with the
//! probe's headers (a `Host` header overrides the request host), `User-Agent: kube-probe/<major.minor>`
//! and `Accept: */*` unless given; HTTPS without certificate verification; redirects followed
//! to the same host (max 10; a redirect elsewhere ends the chain and its 3xx counts); status
//! 200–399 is success.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ProbeOutcome;
use super::tcp::{dial_error, join_host_port};

/// What an HTTP probe requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `httpHeaders` in order (name, value).
    pub headers: Vec<(String, String)>,
}

impl HttpTarget {
    /// The URL as upstream formats it (path gets a leading `/`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let path = if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/{}", self.path)
        };
        format!("{scheme}://{}{path}", join_host_port(&self.host, self.port))
    }
}

impl HttpTarget {
    /// An `httpGet` action (probe or lifecycle hook) resolved against its container (named
    /// ports) with the pod's IP as the default host.
    pub fn from_action(
        h: &k8s_openapi::api::core::v1::HTTPGetAction,
        container: &k8s_openapi::api::core::v1::Container,
        pod_ip: &str,
    ) -> Result<Self, super::ProbeSpecError> {
        Ok(HttpTarget {
            https: h
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
            host: h
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: super::resolve_port("httpGet.port", &h.port, container)?,
            path: h.path.clone().unwrap_or_default(),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        })
    }
}

const MAX_REDIRECTS: usize = 10;

/// Runs the probe; the whole exchange (redirects included) is bounded by `timeout`.
pub async fn probe(target: &HttpTarget, timeout: Duration) -> ProbeOutcome {
    let url = target.url();
    match tokio::time::timeout(timeout, follow(target, &url)).await {
        Ok(Ok(status)) => outcome(status),
        Ok(Err(e)) => ProbeOutcome::Failure(format!("Get {url:?}: {e}")),
        Err(_) => ProbeOutcome::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// Performs the GET (same-host redirects followed) within `timeout` and returns the final
/// status, or the failed exchange's error — for callers with their own notion of success
/// (lifecycle hooks take any response).
pub async fn get(target: &HttpTarget, timeout: Duration) -> Result<StatusCode, HttpGetError> {
    let url = target.url();
    match tokio::time::timeout(timeout, follow(target, &url)).await {
        Ok(r) => r.map_err(|message| HttpGetError::Failed { url, message }),
        Err(_) => Err(HttpGetError::Timeout { url }),
    }
}

/// A GET with no response to show, worded as Go's `http.Client` errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpGetError {
    #[error("Get {url:?}: {message}")]
    Failed { url: String, message: String },
    #[error("Get {url:?}: context deadline exceeded")]
    Timeout { url: String },
}

/// Success for 200–399, as upstream's `DoHTTPProbe`.
pub fn outcome(status: StatusCode) -> ProbeOutcome {
    if (200..400).contains(&status.as_u16()) {
        ProbeOutcome::Success
    } else {
        ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {}", status.as_u16()))
    }
}

/// Performs the GET and same-host redirects; returns the final status.
async fn follow(target: &HttpTarget, url: &str) -> Result<StatusCode, String> {
    let mut uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let original_host = uri.host().unwrap_or_default().to_string();
    let mut requests = 0usize;
    loop {
        let (status, location) = get_once(target, &uri).await?;
        requests += 1;
        let Some(location) = location.filter(|_| status.is_redirection()) else {
            return Ok(status);
        };
        let next = resolve(&uri, &location)?;
        if next.host().unwrap_or_default() != original_host {
            // Go's CheckRedirect returns ErrUseLastResponse: the 3xx is the result.
            return Ok(status);
        }
        // Go's default policy: at most 10 requests in a chain.
        if requests >= MAX_REDIRECTS {
            return Err(format!("stopped after {MAX_REDIRECTS} redirects"));
        }
        uri = next;
    }
}

/// Resolves a `Location` against the current URL.
fn resolve(base: &Uri, location: &str) -> Result<Uri, String> {
    let loc: Uri = location
        .parse()
        .map_err(|e| format!("invalid redirect location {location:?}: {e}"))?;
    if loc.scheme().is_some() && loc.authority().is_some() {
        return Ok(loc);
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| format!("invalid redirect location {location:?}: {e}"))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn get_once(target: &HttpTarget, uri: &Uri) -> Result<(StatusCode, Option<String>), String> {
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = join_host_port(&host, port);
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| dial_error(&addr, &e))?;
    let stream: Box<dyn Io> = if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(insecure_tls()?)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);

    let default_port = if https { 443 } else { 80 };
    let mut host_header = if port == default_port {
        uri.host().unwrap_or_default().to_string()
    } else {
        uri.authority().map(|a| a.to_string()).unwrap_or_default()
    };
    let mut builder = Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut user_agent = true;
    let mut accept = true;
    for (name, value) in &target.headers {
        if name.eq_ignore_ascii_case("host") {
            host_header = value.clone();
            continue;
        }
        user_agent &= !name.eq_ignore_ascii_case("user-agent");
        accept &= !name.eq_ignore_ascii_case("accept");
        builder = builder.header(name.as_str(), value.as_str());
    }
    if user_agent {
        builder = builder.header(http::header::USER_AGENT, super::USER_AGENT);
    }
    if accept {
        builder = builder.header(http::header::ACCEPT, "*/*");
    }
    let request = builder
        .header(http::header::HOST, host_header)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("invalid probe request: {e}"))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Upstream reads (at most 10 KiB of) the body; draining lets the server finish cleanly.
        let mut body = response.into_body();
        let mut read = 0usize;
        while read < 10 * 1024 {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        Ok::<_, String>((status, location))
    }
    .await;
    driver.abort();
    result
}

/// A TLS client config that accepts any certificate, as upstream's `InsecureSkipVerify`.
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(outcome(StatusCode::OK), ProbeOutcome::Success);
        assert_eq!(outcome(StatusCode::FOUND), ProbeOutcome::Success);
        assert_eq!(
            outcome(StatusCode::INTERNAL_SERVER_ERROR),
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            outcome(StatusCode::from_u16(199).unwrap()),
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 199".into())
        );
    }

    #[test]
    fn url_and_redirect_resolution() {
        let t = HttpTarget {
            https: false,
            host: "10.0.0.1".into(),
            port: 8080,
            path: "healthz".into(),
            headers: vec![],
        };
        assert_eq!(t.url(), "http://10.0.0.1:8080/healthz");
        let base: Uri = "http://10.0.0.1:8080/a/b".parse().unwrap();
        assert_eq!(
            resolve(&base, "/c").unwrap().to_string(),
            "http://10.0.0.1:8080/c"
        );
        assert_eq!(
            resolve(&base, "c").unwrap().to_string(),
            "http://10.0.0.1:8080/a/c"
        );
        assert_eq!(resolve(&base, "http://other:1/x").unwrap().host(), Some("other"));
    }
}
