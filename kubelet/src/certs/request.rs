//! One certificate signing request, as upstream's `csr.RequestCertificate` + `WaitForCertificate`:
//! a fresh ECDSA P-256 key, a PKCS#10 request for the subject, a `certificates.k8s.io/v1`
//! CertificateSigningRequest with the signer and usages, then the issued certificate once the
//! request is approved (a denied or failed request is an error naming its reason).

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use sha2::Digest;

use super::CertError;
use super::store::Pair;

/// What to ask for.
#[derive(Debug, Clone)]
pub struct CsrSpec {
    pub common_name: String,
    pub organization: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub signer: &'static str,
    pub usages: Vec<&'static str>,
    /// `node-csr-<digest>` (bootstrap, as upstream) or `csr-<random>` (renewals).
    pub bootstrap_name: bool,
}

impl CsrSpec {
    /// The node's client certificate request (`system:node:<name>` in `system:nodes`).
    pub fn client(node: &str, bootstrap: bool) -> CsrSpec {
        CsrSpec {
            common_name: format!("system:node:{node}"),
            organization: "system:nodes".into(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            signer: super::CLIENT_SIGNER,
            usages: vec!["digital signature", "client auth"],
            bootstrap_name: bootstrap,
        }
    }

    /// The node's serving certificate request, for its hostname and addresses.
    pub fn serving(node: &str, dns_names: Vec<String>, ips: Vec<IpAddr>) -> CsrSpec {
        CsrSpec {
            common_name: format!("system:node:{node}"),
            organization: "system:nodes".into(),
            dns_names,
            ips,
            signer: super::SERVING_SIGNER,
            usages: vec!["digital signature", "server auth"],
            bootstrap_name: false,
        }
    }
}

/// A new private key and the PKCS#10 request (PEM) for `spec`.
pub fn build_request(spec: &CsrSpec) -> Result<(rcgen::KeyPair, String), CertError> {
    let key = rcgen::KeyPair::generate().map_err(|e| CertError::Invalid {
        what: format!("private key for {}", spec.common_name),
        message: e.to_string(),
    })?;
    let pem = build_request_for(spec, &key)?;
    Ok((key, pem))
}

/// The PKCS#10 request (PEM) for `spec`, signed with `key`.
pub fn build_request_for(spec: &CsrSpec, key: &rcgen::KeyPair) -> Result<String, CertError> {
    let invalid = |e: rcgen::Error| CertError::Invalid {
        what: format!("certificate request for {}", spec.common_name),
        message: e.to_string(),
    };
    let mut params = rcgen::CertificateParams::new(spec.dns_names.clone()).map_err(invalid)?;
    params
        .subject_alt_names
        .extend(spec.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, spec.organization.clone());
    dn.push(rcgen::DnType::CommonName, spec.common_name.clone());
    params.distinguished_name = dn;
    let csr = params.serialize_request(key).map_err(invalid)?;
    csr.pem().map_err(invalid)
}

/// The CertificateSigningRequest object for a request PEM.
pub fn csr_object(spec: &CsrSpec, request_pem: &str, public_key: &[u8]) -> CertificateSigningRequest {
    let (name, generate_name) = if spec.bootstrap_name {
        let digest: String = sha2::Sha256::digest(public_key)
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        (Some(format!("node-csr-{digest}")), None)
    } else {
        (None, Some("csr-".to_string()))
    };
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name,
            generate_name,
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: spec.signer.to_string(),
            usages: Some(spec.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    }
}

/// Creates the request with a new key and waits (up to `wait`) for the signed certificate.
pub async fn request(client: &kube::Client, spec: &CsrSpec, wait: Duration) -> Result<Pair, CertError> {
    let key = rcgen::KeyPair::generate().map_err(|e| CertError::Invalid {
        what: format!("private key for {}", spec.common_name),
        message: e.to_string(),
    })?;
    request_with_key(client, spec, key, wait).await
}

/// As [`request`] with a given key: a bootstrap that retries keeps its key, so its request keeps
/// its `node-csr-<digest>` name and an existing request is waited on again (upstream keeps the key
/// in `kubelet-client.key.tmp` for the same reason).
pub async fn request_with_key(
    client: &kube::Client,
    spec: &CsrSpec,
    key: rcgen::KeyPair,
    wait: Duration,
) -> Result<Pair, CertError> {
    let request_pem = build_request_for(spec, &key)?;
    let obj = csr_object(spec, &request_pem, key.public_key_pem().as_bytes());
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let action = format!("creating a certificate signing request for {}", spec.common_name);
    let name = match api.create(&PostParams::default(), &obj).await {
        Ok(created) => created.metadata.name.clone().unwrap_or_default(),
        Err(kube::Error::Api(e)) if e.code == 409 && obj.metadata.name.is_some() => {
            obj.metadata.name.clone().unwrap_or_default()
        }
        Err(e) => return Err(CertError::api(action)(e)),
    };
    tracing::info!(
        csr = name,
        signer = spec.signer,
        "certificate signing request created; waiting for approval"
    );
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let csr = api.get(&name).await.map_err(CertError::api(format!(
            "reading certificate signing request {name}"
        )))?;
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            let outcome = match c.type_.as_str() {
                "Denied" => "denied",
                "Failed" => "failed",
                _ => continue,
            };
            return Err(CertError::Denied {
                name,
                outcome,
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            });
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert_pem = String::from_utf8(cert.0).map_err(|_| CertError::Invalid {
                what: format!("certificate of {name}"),
                message: "not PEM text".into(),
            })?;
            tracing::info!(csr = name, "certificate issued");
            return Ok(Pair {
                cert_pem,
                key_pem: key.serialize_pem(),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CertError::Invalid {
                what: format!("certificate signing request {name}"),
                message: format!(
                    "not approved within {wait:?}; approve it (kubectl certificate approve {name})"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_upstreams_subject_signer_and_usages() {
        let spec = CsrSpec::client("n1", true);
        let (key, pem) = build_request(&spec).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        use x509_parser::prelude::FromDer;
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents).unwrap();
        let subject = req.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        let obj = csr_object(&spec, &pem, key.public_key_pem().as_bytes());
        assert!(obj.metadata.name.unwrap().starts_with("node-csr-"));
        assert_eq!(
            obj.spec.signer_name,
            "kubernetes.io/kube-apiserver-client-kubelet"
        );
        assert_eq!(obj.spec.usages.unwrap(), ["digital signature", "client auth"]);
        let serving = CsrSpec::serving("n1", vec!["n1".into()], vec!["10.0.0.1".parse().unwrap()]);
        let (k, p) = build_request(&serving).unwrap();
        let obj = csr_object(&serving, &p, k.public_key_pem().as_bytes());
        assert_eq!(obj.metadata.generate_name.as_deref(), Some("csr-"));
        assert_eq!(obj.spec.signer_name, "kubernetes.io/kubelet-serving");
    }
}
