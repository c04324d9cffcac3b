//! The kubelet's certificates, as upstream's `kubeadm join` flow gives them: TLS bootstrap with a
//! bootstrap token (`--bootstrap-kubeconfig` → a `kubernetes.io/kube-apiserver-client-kubelet` CSR
//! for `system:node:<name>` → `kubelet-client-current.pem` and a kubeconfig pointing at it), client
//! certificate rotation with the node's own identity at 70–90 % of the lifetime
//! (`rotateCertificates`), and the serving certificate from a `kubernetes.io/kubelet-serving` CSR
//! (`serverTLSBootstrap`).
//!
//! Module map: [`store`] (the `<cert-dir>/kubelet-{client,server}-<date>.pem` files and their
//! `-current.pem` symlinks), [`request`] (one CSR: create, wait for approval, typed errors),
//! [`client`] (bootstrap, the rotating API client, the rotation loop), [`serving`] (the rotating
//! serving certificate). The pure parts — validity, the rotation deadline, the CSR's subject and
//! usages — are here and unit-tested.

pub mod client;
pub mod request;
pub mod serving;
pub mod store;

use std::time::{Duration, SystemTime};

/// Signer of the kubelet's client certificate (auto-approved by the controller-manager).
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Signer of the kubelet's serving certificate (approved by an operator or a tool, not upstream).
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// What can go wrong with the kubelet's certificates; each says which step failed and what to check.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error(
        "the API server refused {action} (HTTP {code}: {message}); while joining, check the bootstrap \
         token in --bootstrap-kubeconfig and its RBAC (system:node-bootstrapper); after, the node's \
         client certificate"
    )]
    Refused {
        action: String,
        code: u16,
        message: String,
    },
    #[error(
        "certificate signing request {name} was {outcome} (reason {reason:?}, message {message:?}); \
         the same request is read again on every retry until it is deleted: find out why it was \
         {outcome}, then `kubectl delete csr {name}`"
    )]
    Denied {
        name: String,
        outcome: &'static str,
        reason: String,
        message: String,
    },
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl CertError {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> CertError {
        let action = action.into();
        move |e| match e {
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => CertError::Refused {
                action,
                code: s.code,
                message: s.message.clone(),
            },
            other => CertError::Api {
                action,
                source: other,
            },
        }
    }
}

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// The validity of the first certificate in `pem`.
    pub fn of_pem(pem: &[u8]) -> Result<Validity, CertError> {
        let invalid = |message: String| CertError::Invalid {
            what: "certificate".into(),
            message,
        };
        let (_, p) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| invalid(format!("not PEM: {e}")))?;
        let cert = p
            .parse_x509()
            .map_err(|e| invalid(format!("not an X.509 certificate: {e}")))?;
        let to_time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        Ok(Validity {
            not_before: to_time(cert.validity().not_before),
            not_after: to_time(cert.validity().not_after),
        })
    }

    /// When to rotate: at a point between 70 % and 90 % of the lifetime (`jitter` in 0..1 picks
    /// it), as upstream's certificate manager (`nextRotationDeadline`).
    pub fn rotation_deadline(&self, jitter: f64) -> SystemTime {
        let total = self.not_after.duration_since(self.not_before).unwrap_or_default();
        let fraction = 0.7 + 0.2 * jitter.clamp(0.0, 1.0);
        self.not_before + total.mul_f64(fraction)
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// A jitter in 0..1 from the clock (rotation times only need to spread across nodes).
pub fn jitter() -> f64 {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(n % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_falls_between_70_and_90_percent_of_the_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v = Validity {
            not_before: t0,
            not_after: t0 + Duration::from_secs(1000),
        };
        assert_eq!(v.rotation_deadline(0.0), t0 + Duration::from_secs(700));
        assert_eq!(v.rotation_deadline(1.0), t0 + Duration::from_secs(900));
        assert_eq!(v.rotation_deadline(0.5), t0 + Duration::from_secs(800));
        assert!(!v.expired(t0 + Duration::from_secs(999)));
        assert!(v.expired(t0 + Duration::from_secs(1000)));
    }

    #[test]
    fn validity_is_read_from_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["n1".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let v = Validity::of_pem(cert.pem().as_bytes()).unwrap();
        assert!(v.not_after > v.not_before);
        assert!(Validity::of_pem(b"garbage").is_err());
    }
}
