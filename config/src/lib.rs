//! Decoding of the versioned config files knode's daemons share with upstream
//! (`KubeletConfiguration`, `KubeProxyConfiguration`): YAML or JSON, strict like upstream's decoder
//! (a misspelt field fails with a message naming it), `apiVersion`/`kind` checked, and fields that
//! upstream defines but knode does not act on accepted and reported, so upstream files keep working.

pub mod duration;
pub mod version;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serializer};

/// What can be wrong with a config file. Every message names the file and, where there is one, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("config file {path}: field {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("flag {flag}: {message}")]
    Flag { flag: String, message: String },
}

/// The identity of a config kind and the upstream fields knode tolerates without acting on them.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub upstream_not_implemented: &'static [&'static str],
}

/// A decoded file: the typed value plus the upstream fields that were ignored (sorted).
#[derive(Debug, Clone)]
pub struct Decoded<T> {
    pub value: T,
    pub ignored_fields: Vec<String>,
}

/// Reads and decodes `path` as `schema`.
pub fn load<T: DeserializeOwned>(path: &Path, schema: &Schema) -> Result<Decoded<T>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode(path, &text, schema)
}

/// Decodes YAML (or JSON) text strictly; `path` is only used in messages. `T` should use
/// `#[serde(deny_unknown_fields)]` so nested typos are caught too.
pub fn decode<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    schema: &Schema,
) -> Result<Decoded<T>, ConfigError> {
    let field_err = |field: &str, message: String| ConfigError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        message,
    };
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let serde_json::Value::Object(mut obj) = value else {
        return Err(ConfigError::Yaml {
            path: path.to_path_buf(),
            message: format!("expected a mapping (a {} object)", schema.kind),
        });
    };
    for (field, want) in [("apiVersion", schema.api_version), ("kind", schema.kind)] {
        match obj.get(field).and_then(|v| v.as_str()) {
            Some(got) if got == want => {}
            other => return Err(field_err(field, format!("must be {want:?}, got {other:?}"))),
        }
    }
    let mut ignored_fields: Vec<String> = obj
        .keys()
        .filter(|k| schema.upstream_not_implemented.contains(&k.as_str()))
        .cloned()
        .collect();
    ignored_fields.sort();
    for k in &ignored_fields {
        obj.remove(k);
    }
    let value = serde_path_to_error::deserialize(serde_json::Value::Object(obj)).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        match unknown_field_name(&inner) {
            // An unknown top-level field has the path "."; name it and spare the list of all fields.
            Some(name) if field == "." => field_err(
                &name,
                format!(
                    "unknown field (not part of {} {}; check its spelling)",
                    schema.kind, schema.api_version
                ),
            ),
            _ => field_err(&field, inner),
        }
    })?;
    Ok(Decoded {
        value,
        ignored_fields,
    })
}

fn unknown_field_name(serde_message: &str) -> Option<String> {
    let rest = serde_message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// serde adapter for `metav1.Duration` fields: `#[serde(with = "knode_config::go_duration")]`.
pub mod go_duration {
    use super::*;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&duration::format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        api_version: String,
        kind: String,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        name: String,
    }

    const SCHEMA: Schema = Schema {
        api_version: "example.io/v1",
        kind: "Sample",
        upstream_not_implemented: &["legacyField"],
    };
    const HEAD: &str = "apiVersion: example.io/v1\nkind: Sample\n";

    fn dec(body: &str) -> Result<Decoded<Sample>, ConfigError> {
        decode(Path::new("/etc/x.yaml"), &format!("{HEAD}{body}"), &SCHEMA)
    }

    #[test]
    fn decodes_and_reports_ignored_upstream_fields() {
        let d = dec("count: 3\nlegacyField: true\n").unwrap();
        assert_eq!(d.value.count, 3);
        assert_eq!(d.ignored_fields, vec!["legacyField"]);
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let e = dec("cuont: 3\n").unwrap_err().to_string();
        assert!(e.contains("field cuont: unknown field"), "{e}");
        let e = dec("count: many\n").unwrap_err().to_string();
        assert!(e.contains("field count:"), "{e}");
        let e = dec("inner:\n  nmae: x\n").unwrap_err().to_string();
        assert!(e.contains("field inner.nmae: unknown field"), "{e}");
    }

    #[test]
    fn identity_and_syntax_are_checked() {
        let decode_err = |text| decode::<Sample>(Path::new("/f"), text, &SCHEMA).unwrap_err();
        let e = decode_err("apiVersion: example.io/v2\nkind: Sample\n");
        assert!(e.to_string().contains("field apiVersion"), "{e}");
        let e = decode_err("apiVersion: example.io/v1\nkind: Other\n");
        assert!(e.to_string().contains("field kind"), "{e}");
        assert!(matches!(
            decode::<Sample>(Path::new("/f"), "a: [x\n", &SCHEMA),
            Err(ConfigError::Yaml { .. })
        ));
        assert!(matches!(
            decode::<Sample>(Path::new("/f"), "- 1\n", &SCHEMA),
            Err(ConfigError::Yaml { .. })
        ));
        let e = load::<Sample>(Path::new("/nonexistent/x.yaml"), &SCHEMA).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.yaml"));
    }
}
