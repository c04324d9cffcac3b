//! Loading the network configuration from a conf dir the way libcni and the runtimes do: files ending in
//! `.conflist`, `.conf` or `.json`, sorted lexicographically by name, the first one that parses and
//! validates wins. A single-plugin `.conf`/`.json` becomes a one-plugin list.

use std::path::{Path, PathBuf};

use crate::types::{CniError, ErrorCode, NetConf, NetConfList};

/// Why no network configuration could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The directory could not be read.
    #[error("reading CNI config dir {dir}: {source}")]
    ReadDir {
        /// The conf dir.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No file with a CNI extension parsed; `rejected` lists each file with its reason.
    #[error("no valid CNI network config in {dir}{}", fmt_rejected(rejected))]
    NoValidConfig {
        /// The conf dir.
        dir: PathBuf,
        /// Files that were tried and why each was rejected.
        rejected: Vec<(PathBuf, String)>,
    },
}

fn fmt_rejected(rejected: &[(PathBuf, String)]) -> String {
    rejected
        .iter()
        .map(|(p, why)| format!("; {}: {why}", p.display()))
        .collect()
}

/// Parses one config file by extension: `.conflist` as a list, `.conf`/`.json` as a single plugin config.
pub fn load_file(path: &Path) -> Result<NetConfList, CniError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CniError::new(
            ErrorCode::IoFailure,
            format!("reading {}", path.display()),
            e.to_string(),
        )
    })?;
    if path.extension().is_some_and(|e| e == "conflist") {
        return NetConfList::from_bytes(&bytes);
    }
    let conf: NetConf = serde_json::from_slice(&bytes).map_err(|e| {
        CniError::new(
            ErrorCode::DecodingFailure,
            format!("decoding {}", path.display()),
            e.to_string(),
        )
    })?;
    if conf.plugin_type.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "network config has an empty \"type\"",
            "",
        ));
    }
    if conf.name.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "network config has no \"name\"",
            "",
        ));
    }
    Ok(NetConfList::from_single(conf))
}

/// The config files in `dir` with a CNI extension, sorted by file name (libcni's `ConfFiles`).
pub fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ConfigError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "conf" | "conflist" | "json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The lexicographically first valid network configuration in `dir`, with the file it came from.
pub fn load_default_network(dir: &Path) -> Result<(PathBuf, NetConfList), ConfigError> {
    let mut rejected = Vec::new();
    for path in conf_files(dir)? {
        match load_file(&path) {
            Ok(list) => return Ok((path, list)),
            Err(e) => rejected.push((path, e.to_string())),
        }
    }
    Err(ConfigError::NoValidConfig {
        dir: dir.to_path_buf(),
        rejected,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_valid_file_wins_in_lexical_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("05-broken.conflist"), b"{nope").unwrap();
        std::fs::write(d.path().join("README"), b"ignored").unwrap();
        std::fs::write(
            d.path().join("20-later.conflist"),
            br#"{"cniVersion":"1.0.0","name":"later","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-single.conf"),
            br#"{"cniVersion":"1.0.0","name":"single","type":"bridge"}"#,
        )
        .unwrap();
        let (path, list) = load_default_network(d.path()).unwrap();
        assert!(path.ends_with("10-single.conf"));
        assert_eq!(list.name, "single");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type, "bridge");
    }

    #[test]
    fn no_valid_config_names_each_rejected_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("10-a.json"), br#"{"name":"a"}"#).unwrap();
        let e = load_default_network(d.path()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("10-a.json"), "{msg}");
        let e = load_default_network(&d.path().join("missing")).unwrap_err();
        assert!(matches!(e, ConfigError::ReadDir { .. }));
    }
}
