//! `knode-control-plane`: a compact Kubernetes API server plus the controllers a node depends on
//! (scheduler, service IP / node port allocation, EndpointSlices and Endpoints, node lifecycle and
//! pod CIDRs, namespaces and their default service accounts). It is knode's test oracle and the
//! single-node cluster of the README, so it follows kube-apiserver's wire behaviour closely.
//!
//! Layout: [`store`] (objects, resourceVersions, watch history, SQLite persistence), [`api`]
//! (HTTP routing, handlers, watch), [`admission`] (defaults, allocation, graceful deletion),
//! [`auth`] (PKI, authentication, authorization), [`controllers`], [`machinery`] (selectors,
//! patches, validation and tables over JSON), [`typed`] (schema decoding), [`openapi`].

pub mod admission;
pub mod api;
pub mod auth;
pub mod controllers;
pub mod convert;
pub mod machinery;
pub mod net;
pub mod openapi;
pub mod resources;
pub mod server;
pub mod store;
pub mod typed;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth::pki::Pki;
use auth::tokens::Tokens;
use net::Ipv4Cidr;
use store::Store;

/// Server settings (flags of the binary; upstream's names where kube-apiserver has them).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The address clients and the `kubernetes` Service's endpoints use.
    pub advertise_address: Ipv4Addr,
    pub data_dir: PathBuf,
    /// `--service-cluster-ip-range`.
    pub service_cidr: Ipv4Cidr,
    /// `--cluster-cidr` (node IPAM).
    pub cluster_cidr: Ipv4Cidr,
    /// `--node-cidr-mask-size`.
    pub node_cidr_mask: u8,
    /// `--service-node-port-range`.
    pub node_port_range: (i64, i64),
    /// `--disable-admission-plugins`.
    pub disabled_admission: Vec<String>,
    /// `--node-monitor-grace-period`: a node whose lease is older is marked Unknown.
    pub node_monitor_grace: Duration,
    /// Changes retained for resuming watches.
    pub watch_history: usize,
    /// `--service-account-min-token-expiration` (test-only, knode's): the shortest
    /// `expirationSeconds` a TokenRequest may ask for. kube-apiserver hard-codes 10 minutes.
    pub min_token_expiration: Duration,
}

impl Config {
    /// Defaults as upstream's components have them, listening on `listen`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        let advertise = match listen.ip() {
            std::net::IpAddr::V4(a) if !a.is_unspecified() => a,
            _ => Ipv4Addr::LOCALHOST,
        };
        Config {
            listen,
            advertise_address: advertise,
            data_dir,
            service_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 16),
            cluster_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16),
            node_cidr_mask: 24,
            node_port_range: (30000, 32767),
            disabled_admission: Vec::new(),
            node_monitor_grace: Duration::from_secs(40),
            watch_history: store::DEFAULT_HISTORY,
            min_token_expiration: Duration::from_secs(600),
        }
    }

    /// `host:port` clients reach the server at.
    pub fn advertise(&self) -> String {
        format!("{}:{}", self.advertise_address, self.listen.port())
    }

    /// Whether an admission plugin is on.
    pub fn admission_enabled(&self, plugin: &str) -> bool {
        !self.disabled_admission.iter().any(|p| p == plugin)
    }
}

/// Everything a request handler or controller needs.
pub struct ControlPlane {
    pub store: Store,
    pub pki: Pki,
    pub tokens: Tokens,
    pub config: Config,
    /// Serialises ClusterIP / NodePort allocation with the create that records it.
    pub alloc_lock: Mutex<()>,
    /// TLS to kubelets (`pods/log`), with this server's kubelet-client certificate.
    pub kubelet_tls: std::sync::Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage in {path}: {source}")]
    Store {
        path: PathBuf,
        source: store::StoreError,
    },
    #[error("certificates in {path}: {source}")]
    Pki {
        path: PathBuf,
        source: auth::pki::PkiError,
    },
    #[error("service account signing key: {0}")]
    Tokens(#[from] auth::tokens::TokenError),
}

impl ControlPlane {
    /// Opens the data dir (SQLite store, PKI) and builds the shared state.
    pub fn open(config: Config) -> Result<Arc<Self>, StartError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StartError::Store {
            path: dir.clone(),
            source: store::StoreError::Backend(e.to_string()),
        })?;
        let db = dir.join("state.db");
        let backend = store::sqlite::SqliteBackend::open(&db).map_err(|source| StartError::Store {
            path: db.clone(),
            source,
        })?;
        let store = Store::open(Box::new(backend), config.watch_history)
            .map_err(|source| StartError::Store { path: db, source })?;
        let mut sans = vec![
            "localhost".to_string(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            "127.0.0.1".into(),
            config.advertise_address.to_string(),
            config.service_cidr.nth(1).to_string(),
        ];
        if let Ok(h) = nix_hostname() {
            sans.push(h);
        }
        sans.sort();
        sans.dedup();
        let pki_dir = dir.join("pki");
        let pki = Pki::load_or_create(&pki_dir, Some(&sans)).map_err(|source| StartError::Pki {
            path: pki_dir,
            source,
        })?;
        let tokens = Tokens::new(&pki.sa_key_der)?;
        let kubelet_tls = kubelet_client_tls(&pki).map_err(|source| StartError::Pki {
            path: dir.join("pki"),
            source,
        })?;
        Ok(Arc::new(ControlPlane {
            store,
            pki,
            tokens,
            config,
            alloc_lock: Mutex::new(()),
            kubelet_tls,
        }))
    }
}

/// The client side of kubelet connections: a `kube-apiserver-kubelet-client` certificate in
/// `system:masters` (as kubeadm issues), the kubelet's serving certificate accepted as is.
fn kubelet_client_tls(pki: &Pki) -> Result<Arc<rustls::ClientConfig>, auth::pki::PkiError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let crypto = |e: &dyn std::fmt::Display| auth::pki::PkiError::Crypto {
        what: "kubelet client TLS".into(),
        message: e.to_string(),
    };
    let (cert, key) = pki.issue_client("kube-apiserver-kubelet-client", &["system:masters"])?;
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crypto(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| crypto(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| crypto(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(api::kubelet::AnyKubeletCert(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| crypto(&e))?;
    Ok(Arc::new(cfg))
}

fn nix_hostname() -> std::io::Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(h.trim().to_string())
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// RFC 3339 in UTC with second precision, as metav1.Time serialises.
pub fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Now as RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339(now_unix())
}

/// Now with microseconds, as metav1.MicroTime serialises (leases, events' eventTime).
pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Parses an RFC 3339 time into seconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    // The system RNG failing is not recoverable in any useful way; fall back to time-derived bytes
    // rather than panic so a request never crashes the server.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = jiff::Timestamp::now().as_nanosecond().to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % t.len()];
        }
    }
    b
}

/// A random u64.
pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

/// Upstream's name suffix alphabet (no vowels, no confusable digits).
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<16>()
        .iter()
        .take(n)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A random (v4) UID.
pub fn new_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
