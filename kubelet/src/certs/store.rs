//! Certificate files as upstream's kubelet keeps them: `<cert-dir>/kubelet-<kind>-<date>.pem`
//! (certificate chain then private key, mode 0600) and `kubelet-<kind>-current.pem`, a symlink to the
//! newest, switched atomically so a reader never sees half a pair.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::CertError;

/// One kind of certificate in the cert dir (`client` or `server`).
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
    pub kind: &'static str,
}

/// A certificate chain and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Store {
    pub fn new(dir: &Path, kind: &'static str) -> Store {
        Store {
            dir: dir.to_path_buf(),
            kind,
        }
    }

    /// `kubelet-<kind>-current.pem`.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("kubelet-{}-current.pem", self.kind))
    }

    /// The current pair, `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Pair>, CertError> {
        let path = self.current_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CertError::Read {
                    what: "certificate",
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        split_pair(&text).map(Some).ok_or_else(|| CertError::Invalid {
            what: path.display().to_string(),
            message: "expected a certificate and a private key (PEM)".into(),
        })
    }

    /// Writes a new dated pair and points `-current` at it.
    pub fn save(&self, pair: &Pair) -> Result<PathBuf, CertError> {
        let werr = |p: &Path| {
            let path = p.display().to_string();
            move |source| CertError::Write { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(werr(&self.dir))?;
        let stamp = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%d-%H-%M-%S")
            .to_string();
        let file = self.dir.join(format!("kubelet-{}-{stamp}.pem", self.kind));
        write_private(&file, format!("{}{}", pair.cert_pem, pair.key_pem).as_bytes()).map_err(werr(&file))?;
        let tmp = self.dir.join(format!(".kubelet-{}-current.tmp", self.kind));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&file, &tmp).map_err(werr(&tmp))?;
        let current = self.current_path();
        std::fs::rename(&tmp, &current).map_err(werr(&current))?;
        Ok(file)
    }
}

/// Writes a file only its owner can read, created so (never readable by others in between).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

/// Splits a PEM bundle into its certificates and its private key.
pub fn split_pair(text: &str) -> Option<Pair> {
    let mut cert_pem = String::new();
    let mut key_pem = String::new();
    let mut block = String::new();
    for line in text.lines() {
        block.push_str(line);
        block.push('\n');
        if line.starts_with("-----END ") {
            if line.contains("PRIVATE KEY") {
                key_pem.push_str(&block);
            } else if line.contains("CERTIFICATE") {
                cert_pem.push_str(&block);
            }
            block.clear();
        }
    }
    (!cert_pem.is_empty() && !key_pem.is_empty()).then_some(Pair { cert_pem, key_pem })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_saved_dated_and_the_current_link_follows() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path(), "client");
        assert_eq!(s.load().unwrap(), None);
        let a = Pair {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nBB==\n-----END PRIVATE KEY-----\n".into(),
        };
        let file = s.save(&a).unwrap();
        assert_eq!(s.load().unwrap().as_ref(), Some(&a));
        assert_eq!(std::fs::read_link(s.current_path()).unwrap(), file);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(split_pair("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n").is_none());
    }
}
