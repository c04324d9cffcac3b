//! The serving certificate with `serverTLSBootstrap: true`: a `kubernetes.io/kubelet-serving` CSR
//! for the node's hostname and addresses, made with the node's client identity. As upstream,
//! nothing is served on the kubelet port until it is approved (upstream does not auto-approve
//! these; an operator or a tool does), and it is renewed at 70–90 % of its lifetime.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use super::client::certified_key;
use super::request::{CsrSpec, request};
use super::store::Store;
use super::{CertError, Validity};

/// The current serving certificate, as rustls asks for it.
#[derive(Debug)]
pub struct ServingCert(RwLock<Arc<CertifiedKey>>);

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}

/// What the serving certificate is for.
#[derive(Debug, Clone)]
pub struct ServingOptions {
    pub cert_dir: std::path::PathBuf,
    pub node_name: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

async fn obtain(client: &kube::Client, o: &ServingOptions) -> Result<(), CertError> {
    let spec = CsrSpec::serving(&o.node_name, o.dns_names.clone(), o.ips.clone());
    // Waits as long as it takes an operator to approve, checking the request every half second.
    let pair = request(client, &spec, Duration::from_secs(3600)).await?;
    Store::new(&o.cert_dir, "server").save(&pair)?;
    Ok(())
}

fn current_valid(store: &Store) -> Option<(Arc<CertifiedKey>, Validity)> {
    let pair = store.load().ok()??;
    let v = Validity::of_pem(pair.cert_pem.as_bytes()).ok()?;
    if v.expired(SystemTime::now()) {
        return None;
    }
    Some((certified_key(&pair).ok()?, v))
}

/// Returns once a serving certificate is there (from the cert dir or a newly approved request),
/// and keeps renewing it in the background.
pub async fn serving_cert(client: kube::Client, o: ServingOptions) -> Arc<ServingCert> {
    let store = Store::new(&o.cert_dir, "server");
    let mut delay = Duration::from_secs(1);
    let (key, _) = loop {
        if let Some(c) = current_valid(&store) {
            break c;
        }
        if let Err(e) = obtain(&client, &o).await {
            tracing::error!(error = %e, retry_in = ?delay, "serving certificate request failed");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    };
    let cert = Arc::new(ServingCert(RwLock::new(key)));
    let rotating = cert.clone();
    tokio::spawn(async move {
        loop {
            let deadline = current_valid(&store)
                .map(|(_, v)| v.rotation_deadline(super::jitter()))
                .unwrap_or_else(SystemTime::now);
            tokio::time::sleep(deadline.duration_since(SystemTime::now()).unwrap_or_default()).await;
            match obtain(&client, &o).await {
                Ok(()) => {
                    if let (Some((k, _)), Ok(mut cur)) = (current_valid(&store), rotating.0.write()) {
                        *cur = k;
                        tracing::info!(node = o.node_name, "serving certificate rotated");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "serving certificate rotation failed; retrying in 60s");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        }
    });
    cert
}
