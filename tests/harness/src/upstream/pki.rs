//! The upstream plane's own PKI, laid out as kubeadm's `/etc/kubernetes/pki`: a cluster CA (which
//! also signs the kubelets' CSRs through the controller-manager), the apiserver's serving and
//! kubelet-client certificates, a front-proxy CA and client, the ServiceAccount key pair, and client
//! certificates for the admin, the controller-manager, the scheduler and any other identity asked for.
//!
//! Keys are ECDSA P-256 (what rcgen generates with ring); every Kubernetes component accepts them,
//! including for ServiceAccount token signing (ES256).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::{HarnessError, Result};

/// The first address of `--service-cluster-ip-range=10.96.0.0/12`: the `kubernetes` Service.
pub const SERVICE_IP: &str = "10.96.0.1";

/// A certificate and its key, both PEM, and where they were written.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster's CAs and key material, written under one directory.
pub struct Pki {
    dir: PathBuf,
    ca_issuer: CertifiedIssuer<'static, KeyPair>,
    front_proxy_issuer: CertifiedIssuer<'static, KeyPair>,
    /// `ca.crt` / `ca.key`: the cluster CA (client CA of every component, CSR signing CA).
    pub ca: CertFiles,
    /// `front-proxy-ca.crt` / `.key`: the aggregation layer's request-header CA.
    pub front_proxy_ca: CertFiles,
    /// `sa.key` (PKCS#8) and `sa.pub`: the ServiceAccount token signing key pair.
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn crypto(what: &str) -> impl FnOnce(rcgen::Error) -> HarnessError + '_ {
    move |e| HarnessError::NotReady(format!("PKI: {what}: {e}"))
}

/// Writes `data` to `path`; keys are readable by root only.
fn write(path: &Path, data: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(HarnessError::io(format!("writing {}", path.display())))?;
    f.write_all(data.as_bytes())
        .map_err(HarnessError::io(format!("writing {}", path.display())))
}

fn ca_params(cn: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto("CA parameters"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

impl Pki {
    /// Creates a fresh PKI in `dir` (created if missing).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(HarnessError::io(format!("creating {}", dir.display())))?;
        let ca_key = KeyPair::generate().map_err(crypto("generating the CA key"))?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params("kubernetes")?, ca_key)
            .map_err(crypto("self-signing the cluster CA"))?;
        let fp_key = KeyPair::generate().map_err(crypto("generating the front-proxy CA key"))?;
        let fp_key_pem = fp_key.serialize_pem();
        let front_proxy_ca = CertifiedIssuer::self_signed(ca_params("front-proxy-ca")?, fp_key)
            .map_err(crypto("self-signing the front-proxy CA"))?;
        let ca_files = CertFiles {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
            cert_pem: ca.pem(),
            key_pem: ca_key_pem,
        };
        let fp_files = CertFiles {
            cert: dir.join("front-proxy-ca.crt"),
            key: dir.join("front-proxy-ca.key"),
            cert_pem: front_proxy_ca.pem(),
            key_pem: fp_key_pem,
        };
        for f in [&ca_files, &fp_files] {
            write(&f.cert, &f.cert_pem, false)?;
            write(&f.key, &f.key_pem, true)?;
        }
        let sa = KeyPair::generate().map_err(crypto("generating the ServiceAccount key"))?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        write(&sa_key, &sa.serialize_pem(), true)?;
        write(&sa_pub, &sa.public_key_pem(), false)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_issuer: ca,
            front_proxy_issuer: front_proxy_ca,
            ca: ca_files,
            front_proxy_ca: fp_files,
            sa_key,
            sa_pub,
        })
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A certificate signed by the cluster CA, written as `<file>.crt` / `<file>.key`.
    /// `cn` is the user (or server) name, `orgs` its groups, `sans` DNS names and IP addresses.
    pub fn issue(
        &self,
        file: &str,
        cn: &str,
        orgs: &[&str],
        sans: &[String],
        usage: Usage,
    ) -> Result<CertFiles> {
        let subject = Subject {
            file,
            cn,
            orgs,
            sans,
            usage,
        };
        self.issue_with(&self.ca_issuer, subject)
    }

    /// A client certificate signed by the front-proxy CA (the apiserver's `--proxy-client-cert-file`).
    pub fn issue_front_proxy_client(&self) -> Result<CertFiles> {
        let subject = Subject {
            file: "front-proxy-client",
            cn: "front-proxy-client",
            orgs: &[],
            sans: &[],
            usage: Usage::Client,
        };
        self.issue_with(&self.front_proxy_issuer, subject)
    }

    fn issue_with(
        &self,
        issuer: &CertifiedIssuer<'static, KeyPair>,
        subject: Subject<'_>,
    ) -> Result<CertFiles> {
        let Subject {
            file,
            cn,
            orgs,
            sans,
            usage,
        } = subject;
        let key = KeyPair::generate().map_err(crypto("generating a key"))?;
        let mut params = CertificateParams::new(sans.to_vec()).map_err(crypto("certificate SANs"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        let what = format!("signing the certificate of {cn}");
        let cert = params.signed_by(&key, issuer).map_err(crypto(&what))?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        write(&files.cert, &files.cert_pem, false)?;
        write(&files.key, &files.key_pem, true)?;
        Ok(files)
    }
}

/// A PKCS#10 request as a kubelet makes for its client certificate (`CN=system:node:<node>`,
/// `O=system:nodes`, no SANs) and its key: `(csr_pem, key_pem)`.
pub fn node_client_csr(node: &str) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(crypto("generating a node key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto("CSR parameters"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{node}"));
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(crypto("serializing the node CSR"))?;
    Ok((csr, key.serialize_pem()))
}

/// The apiserver's serving SANs: the `kubernetes` Service's IP and names, localhost, and `extra`
/// (the advertise address, a node-facing IP).
pub fn apiserver_sans(extra: &[IpAddr]) -> Vec<String> {
    let mut sans: Vec<String> = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        SERVICE_IP,
        "127.0.0.1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for ip in extra {
        let s = ip.to_string();
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    sans
}

/// Who a certificate is for: its files' name, common name, organizations, SANs and usage.
struct Subject<'a> {
    file: &'a str,
    cn: &'a str,
    orgs: &'a [&'a str],
    sans: &'a [String],
    usage: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_sans_hold_the_service_names_and_each_address_once() {
        let sans = apiserver_sans(&["127.0.0.1".parse().unwrap(), "10.1.2.3".parse().unwrap()]);
        assert!(sans.iter().any(|s| s == "kubernetes.default.svc.cluster.local"));
        assert!(sans.iter().any(|s| s == SERVICE_IP));
        assert_eq!(sans.iter().filter(|s| *s == "127.0.0.1").count(), 1);
        assert!(sans.iter().any(|s| s == "10.1.2.3"));
    }

    #[test]
    fn pki_files_are_written_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path()).unwrap();
        let admin = pki
            .issue(
                "admin",
                "kubernetes-admin",
                &["system:masters"],
                &[],
                Usage::Client,
            )
            .unwrap();
        assert!(admin.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = std::fs::metadata(&admin.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        assert!(pki.sa_pub.exists() && pki.sa_key.exists());
        assert!(pki.issue_front_proxy_client().unwrap().cert.exists());
    }
}
