//! The kubelet's API client identity: TLS bootstrap (`--bootstrap-kubeconfig` → a client CSR →
//! `<cert-dir>/kubelet-client-current.pem` and a kubeconfig at `--kubeconfig` that points at it) and,
//! with `rotateCertificates`, a client whose certificate is swapped in place when it is renewed
//! (new connections use the new certificate; the connection pool is replaced so no request goes
//! out on a connection made with the old one).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::config::{AuthInfo, Context as KubeContext, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::request::{CsrSpec, request, request_with_key};
use super::store::{Pair, Store};
use super::{CertError, Validity};

/// How long a CSR may wait for approval before the attempt is retried.
const APPROVAL_WAIT: Duration = Duration::from_secs(900);

/// Where the kubelet's client identity comes from.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub kubeconfig: PathBuf,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub node_name: String,
    pub rotate: bool,
}

fn read_kubeconfig(path: &Path, what: &'static str) -> Result<Kubeconfig, CertError> {
    Kubeconfig::read_from(path).map_err(|e| CertError::Invalid {
        what: format!("{what} {}", path.display()),
        message: e.to_string(),
    })
}

/// The client certificate file of the kubeconfig's current user, if it names one.
fn client_cert_file(kc: &Kubeconfig) -> Option<PathBuf> {
    let ctx = kc.current_context.as_ref()?;
    let user = kc
        .contexts
        .iter()
        .find(|c| &c.name == ctx)?
        .context
        .as_ref()?
        .user
        .clone()?;
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)?
        .auth_info
        .as_ref()?;
    auth.client_certificate.as_ref().map(PathBuf::from)
}

/// Whether `--kubeconfig` can be used as it is (upstream's `isClientConfigStillValid`): it exists,
/// and a client certificate it names is readable and not expired.
pub fn kubeconfig_usable(path: &Path) -> bool {
    let Ok(kc) = Kubeconfig::read_from(path) else {
        return false;
    };
    match client_cert_file(&kc) {
        Some(file) => std::fs::read(&file)
            .ok()
            .and_then(|pem| Validity::of_pem(&pem).ok())
            .is_some_and(|v| !v.expired(SystemTime::now())),
        None => true,
    }
}

/// The kubeconfig written after bootstrap: the bootstrap kubeconfig's cluster, and the node's
/// certificate pair file as its user (as upstream's `writeKubeconfigFromBootstrapping`).
pub fn node_kubeconfig(bootstrap: &Kubeconfig, cert_file: &Path) -> Result<Kubeconfig, CertError> {
    let cluster = bootstrap
        .current_context
        .as_ref()
        .and_then(|name| bootstrap.contexts.iter().find(|c| &c.name == name))
        .and_then(|c| c.context.as_ref())
        .and_then(|c| bootstrap.clusters.iter().find(|n| n.name == c.cluster))
        .or_else(|| bootstrap.clusters.first())
        .and_then(|n| n.cluster.clone())
        .ok_or_else(|| CertError::Invalid {
            what: "--bootstrap-kubeconfig".into(),
            message: "names no cluster".into(),
        })?;
    let file = cert_file.display().to_string();
    Ok(Kubeconfig {
        clusters: vec![NamedCluster {
            name: "default-cluster".into(),
            cluster: Some(cluster),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "default-auth".into(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(file.clone()),
                client_key: Some(file),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "default-context".into(),
            context: Some(KubeContext {
                cluster: "default-cluster".into(),
                user: Some("default-auth".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("default-context".into()),
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    })
}

async fn client_from(kc: Kubeconfig, what: &str) -> Result<kube::Client, CertError> {
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| CertError::Invalid {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    kube::Client::try_from(cfg).map_err(CertError::api(format!("building the API client from {what}")))
}

/// One TLS bootstrap attempt: request a client certificate with the bootstrap credentials, store
/// it and write `--kubeconfig`.
async fn bootstrap_once(opts: &ClientOptions, bootstrap: &Path) -> Result<(), CertError> {
    let bkc = read_kubeconfig(bootstrap, "--bootstrap-kubeconfig")?;
    let client = client_from(bkc.clone(), "--bootstrap-kubeconfig").await?;
    let key = bootstrap_key(&opts.cert_dir)?;
    let pair = request_with_key(
        &client,
        &CsrSpec::client(&opts.node_name, true),
        key,
        APPROVAL_WAIT,
    )
    .await?;
    let store = Store::new(&opts.cert_dir, "client");
    store.save(&pair)?;
    let _ = std::fs::remove_file(opts.cert_dir.join(BOOTSTRAP_KEY));
    let kc = node_kubeconfig(&bkc, &store.current_path())?;
    let text = serde_json::to_string_pretty(&kc).map_err(|e| CertError::Invalid {
        what: "kubeconfig".into(),
        message: e.to_string(),
    })?;
    if let Some(dir) = opts.kubeconfig.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    super::store::write_private(&opts.kubeconfig, text.as_bytes()).map_err(|source| CertError::Write {
        path: opts.kubeconfig.display().to_string(),
        source,
    })?;
    tracing::info!(kubeconfig = %opts.kubeconfig.display(), "TLS bootstrap done: client certificate issued");
    Ok(())
}

/// The key a bootstrap in progress uses, kept across attempts and restarts.
const BOOTSTRAP_KEY: &str = "kubelet-client.key.tmp";

fn bootstrap_key(cert_dir: &Path) -> Result<rcgen::KeyPair, CertError> {
    let path = cert_dir.join(BOOTSTRAP_KEY);
    if let Ok(pem) = std::fs::read_to_string(&path)
        && let Ok(key) = rcgen::KeyPair::from_pem(&pem)
    {
        return Ok(key);
    }
    let key = rcgen::KeyPair::generate().map_err(|e| CertError::Invalid {
        what: "bootstrap private key".into(),
        message: e.to_string(),
    })?;
    std::fs::create_dir_all(cert_dir).map_err(|source| CertError::Write {
        path: cert_dir.display().to_string(),
        source,
    })?;
    super::store::write_private(&path, key.serialize_pem().as_bytes()).map_err(|source| {
        CertError::Write {
            path: path.display().to_string(),
            source,
        }
    })?;
    Ok(key)
}

/// The kubelet's API client: bootstraps first when `--kubeconfig` is not usable and a bootstrap
/// kubeconfig is given (retrying with backoff, one error line per attempt), then connects; with
/// rotation on and a certificate from the cert dir, the client renews it in the background.
pub async fn connect(opts: &ClientOptions) -> Result<kube::Client, CertError> {
    if let Some(bootstrap) = &opts.bootstrap_kubeconfig
        && !kubeconfig_usable(&opts.kubeconfig)
    {
        let mut delay = Duration::from_secs(1);
        while let Err(e) = bootstrap_once(opts, bootstrap).await {
            tracing::error!(error = %e, retry_in = ?delay, "TLS bootstrap failed");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }
    let kc = read_kubeconfig(&opts.kubeconfig, "--kubeconfig")?;
    let store = Store::new(&opts.cert_dir, "client");
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let managed = client_cert_file(&kc).is_some_and(|f| absolute(f) == absolute(store.current_path()));
    if !(opts.rotate && managed) {
        return client_from(kc, "--kubeconfig").await;
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc.clone(), &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| CertError::Invalid {
            what: "--kubeconfig".into(),
            message: e.to_string(),
        })?;
    if cfg.accept_invalid_certs || cfg.tls_server_name.is_some() || cfg.proxy_url.is_some() {
        tracing::warn!(
            "--kubeconfig sets insecure-skip-tls-verify, tls-server-name or proxy-url: the client \
             certificate is not rotated in place (restart the kubelet after it is renewed)"
        );
        return client_from(kc, "--kubeconfig").await;
    }
    let pair = store.load()?.ok_or_else(|| CertError::Invalid {
        what: store.current_path().display().to_string(),
        message: "missing".into(),
    })?;
    let rotating = RotatingClient::new(&cfg, &pair)?;
    let client = kube::Client::new(
        tower::ServiceBuilder::new()
            .layer(cfg.base_uri_layer())
            .service(rotating.clone()),
        cfg.default_namespace.clone(),
    );
    tokio::spawn(rotate_client(
        client.clone(),
        rotating,
        store,
        opts.node_name.clone(),
    ));
    Ok(client)
}

/// Renews the client certificate at 70–90 % of its lifetime, with the node's own identity.
async fn rotate_client(client: kube::Client, rotating: RotatingClient, store: Store, node: String) {
    loop {
        let deadline = match store.load() {
            Ok(Some(p)) => Validity::of_pem(p.cert_pem.as_bytes())
                .map(|v| v.rotation_deadline(super::jitter()))
                .unwrap_or_else(|_| SystemTime::now()),
            _ => SystemTime::now(),
        };
        let wait = deadline.duration_since(SystemTime::now()).unwrap_or_default();
        tracing::info!(rotate_in = ?wait, "client certificate rotation scheduled");
        tokio::time::sleep(wait).await;
        let mut delay = Duration::from_secs(1);
        loop {
            let renewed = request(&client, &CsrSpec::client(&node, false), APPROVAL_WAIT)
                .await
                .and_then(|pair| store.save(&pair).map(|_| pair))
                .and_then(|pair| rotating.replace(&pair));
            match renewed {
                Ok(()) => {
                    tracing::info!(node, "client certificate rotated");
                    break;
                }
                Err(e) => {
                    let expired = store.load().ok().flatten().is_some_and(|p| {
                        Validity::of_pem(p.cert_pem.as_bytes()).is_ok_and(|v| v.expired(SystemTime::now()))
                    });
                    if expired {
                        // As upstream: exit so the next start bootstraps again (the kubeconfig
                        // then names an expired certificate, so it is not usable).
                        tracing::error!(error = %e, "the client certificate expired and could not be renewed; exiting");
                        std::process::exit(1);
                    }
                    tracing::error!(error = %e, retry_in = ?delay, "client certificate rotation failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// rustls' view of the current certificate pair.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl rustls::client::ResolvesClientCert for CurrentCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A certificate pair as rustls signs with it.
pub fn certified_key(pair: &Pair) -> Result<Arc<CertifiedKey>, CertError> {
    let invalid = |m: String| CertError::Invalid {
        what: "certificate pair".into(),
        message: m,
    };
    let certs = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| invalid(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The HTTP client under the kube client: a hyper client whose TLS identity is [`CurrentCert`],
/// replaced (with a fresh connection pool) when the certificate rotates.
#[derive(Clone)]
struct RotatingClient {
    cert: Arc<CurrentCert>,
    tls: Arc<rustls::ClientConfig>,
    http: Arc<RwLock<HyperClient<Https, kube::client::Body>>>,
}

impl RotatingClient {
    fn new(cfg: &kube::Config, pair: &Pair) -> Result<RotatingClient, CertError> {
        let cert = Arc::new(CurrentCert(RwLock::new(certified_key(pair)?)));
        let mut roots = rustls::RootCertStore::empty();
        for der in cfg.root_cert.iter().flatten() {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| CertError::Invalid {
                    what: "the cluster CA in --kubeconfig".into(),
                    message: e.to_string(),
                })?;
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| CertError::Invalid {
                    what: "TLS".into(),
                    message: e.to_string(),
                })?
                .with_root_certificates(roots)
                .with_client_cert_resolver(cert.clone());
        let tls = Arc::new(tls);
        let http = Arc::new(RwLock::new(hyper_client(&tls)));
        Ok(RotatingClient { cert, tls, http })
    }

    /// Uses `pair` from now on, for new connections only.
    fn replace(&self, pair: &Pair) -> Result<(), CertError> {
        let key = certified_key(pair)?;
        if let Ok(mut k) = self.cert.0.write() {
            *k = key;
        }
        if let Ok(mut h) = self.http.write() {
            *h = hyper_client(&self.tls);
        }
        Ok(())
    }
}

fn hyper_client(tls: &Arc<rustls::ClientConfig>) -> HyperClient<Https, kube::client::Body> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // kube's own client connects with a 30 s timeout too; without one a dead API host stalls calls.
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((**tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    HyperClient::builder(TokioExecutor::new()).build(https)
}

impl tower::Service<http::Request<kube::client::Body>> for RotatingClient {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let client = match self.http.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        client.request(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_kubeconfig_keeps_the_bootstrap_cluster_and_points_at_the_cert_dir() {
        let bootstrap: Kubeconfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kubernetes", "cluster": {"server": "https://10.0.0.1:6443",
                "certificate-authority-data": "Q0E="}}],
            "users": [{"name": "tls-bootstrap-token-user", "user": {"token": "abcdef.0123456789abcdef"}}],
            "contexts": [{"name": "tls-bootstrap-token-user@kubernetes",
                "context": {"cluster": "kubernetes", "user": "tls-bootstrap-token-user"}}],
            "current-context": "tls-bootstrap-token-user@kubernetes"
        }))
        .unwrap();
        let kc = node_kubeconfig(
            &bootstrap,
            Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        assert_eq!(
            client_cert_file(&kc).unwrap(),
            Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem")
        );
        let auth = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(auth.token.is_none(), "the bootstrap token is not carried over");
    }

    #[test]
    fn a_kubeconfig_with_an_expired_or_missing_cert_is_not_usable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!kubeconfig_usable(&dir.path().join("none")));
        let cert = dir.path().join("c.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["n".into()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        std::fs::write(&cert, p.self_signed(&key).unwrap().pem()).unwrap();
        let bootstrap: Kubeconfig = serde_json::from_value(serde_json::json!({
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x"
        }))
        .unwrap();
        let kc_path = dir.path().join("kubelet.conf");
        let kc = node_kubeconfig(&bootstrap, &cert).unwrap();
        std::fs::write(&kc_path, serde_json::to_string(&kc).unwrap()).unwrap();
        assert!(!kubeconfig_usable(&kc_path), "expired");
    }
}
