//! Decodes Kubernetes' protobuf wire format (`application/vnd.kubernetes.protobuf`) into JSON.
//!
//! kubectl's typed-client commands (`kubectl create configmap|secret|namespace|serviceaccount|
//! service|token`, `kubectl auth can-i|whoami`) send their request bodies in this encoding and
//! client-go never falls back to JSON, so a JSON-speaking API server has to understand it. A body
//! is the magic `k8s\0` followed by a `runtime.Unknown` envelope whose `raw` bytes hold the
//! object; [`decode`] turns it into the same JSON object that Go's `encoding/json` would produce
//! for the decoded Go struct (which is what a JSON client would have sent), with `apiVersion` and
//! `kind` filled in from the envelope.
//!
//! Only the kinds listed by [`supported_kinds`] are understood; anything else yields
//! [`ProtoError::UnsupportedKind`], which a server should answer with 415 so the client knows to
//! send JSON. Unknown fields inside known messages are skipped, as protobuf requires.
//! `metadata.managedFields` is decoded (with `fieldsV1` embedded as its raw JSON). One deliberate
//! difference from the 1.33 Go types: a zero `metadata.creationTimestamp` is left out rather than
//! `null`, as current upstream (`omitempty,omitzero`) does; servers treat both the same.

/// Declares message schemas ([`schema::Msg`]) as statics, each with its upstream name, then a field a
/// line as `number "jsonName" Type Card` (after any shared [`schema::Field`] constants), `Type` a [`schema::Ty`] variant (`Msg(&OTHER)` for an
/// embedded message) and `Card` a [`schema::Card`] variant.
macro_rules! msg {
    ($(
        $(#[$attr:meta])*
        $vis:vis $name:ident = $go:literal {
            $($shared:ident,)*
            $($number:literal $json:literal $ty:ident $(($of:expr))? $card:ident,)*
        }
    )*) => {$(
        $(#[$attr])*
        $vis static $name: crate::schema::Msg = crate::schema::Msg {
            name: $go,
            fields: &[$($shared,)* $(crate::schema::f(
                $number,
                $json,
                crate::schema::Ty::$ty $(($of))?,
                crate::schema::Card::$card,
            )),*],
        };
    )*};
}

mod authentication_v1;
mod authorization_v1;
mod core_v1;
mod meta_v1;
mod schema;
mod wire;

use serde_json::{Map, Value};

use crate::schema::{Failure, Msg};
use crate::wire::{Reader, WireType};

/// The media type of Kubernetes' protobuf encoding.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The body does not start with `k8s\0`.
    #[error(
        "request body is not Kubernetes protobuf: expected it to start with the magic bytes \"k8s\\0\", found {found:02x?}"
    )]
    BadMagic {
        /// The first (up to four) bytes of the body.
        found: Vec<u8>,
    },
    /// Nothing follows the magic.
    #[error("protobuf request body is empty after the \"k8s\\0\" magic")]
    Empty,
    /// The envelope names no kind or no apiVersion.
    #[error(
        "protobuf envelope does not name the object's {missing}; set typeMeta.apiVersion and typeMeta.kind"
    )]
    MissingTypeMeta {
        /// `"kind"` or `"apiVersion"`.
        missing: &'static str,
    },
    /// The envelope's `raw` is compressed or otherwise encoded.
    #[error(
        "protobuf envelope has contentEncoding {0:?}, which this server cannot decode; send JSON instead"
    )]
    UnsupportedEncoding(String),
    /// The kind is not one this crate has a schema for.
    #[error(
        "protobuf request bodies for {kind} ({api_version}) are not supported by this server; send JSON instead (Content-Type: application/json)"
    )]
    UnsupportedKind {
        /// The envelope's `typeMeta.apiVersion`.
        api_version: String,
        /// The envelope's `typeMeta.kind`.
        kind: String,
    },
    /// The bytes are not valid protobuf for the message they should hold.
    #[error("malformed protobuf body{}: {message} field {field}: {reason}", at(path))]
    Malformed {
        /// The JSON path of the offending value, e.g. `Service.spec.ports[0].targetPort`
        /// (just the kind, or `Unknown` for the envelope, when the failure is at the top level).
        path: String,
        /// The innermost protobuf message being decoded, e.g. `IntOrString`.
        message: &'static str,
        /// The protobuf field number (0 if the tag itself was unreadable).
        field: u32,
        /// What was wrong.
        reason: String,
    },
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at {path}")
    }
}

impl ProtoError {
    /// The HTTP status a server should answer with: 415 for what we cannot decode but the client
    /// could send as JSON, 400 for broken bodies.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::UnsupportedKind { .. } | Self::UnsupportedEncoding(_) => 415,
            _ => 400,
        }
    }

    fn malformed(root: &str, failure: Failure) -> Self {
        let inner = failure.path_string();
        let path = if inner.is_empty() {
            root.to_owned()
        } else {
            format!("{root}.{inner}")
        };
        Self::Malformed {
            path,
            message: failure.message,
            field: failure.field,
            reason: failure.reason,
        }
    }
}

/// The decoded `runtime.Unknown` envelope of a protobuf body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `typeMeta.apiVersion`, e.g. `v1` or `authentication.k8s.io/v1`.
    pub api_version: String,
    /// `typeMeta.kind`, e.g. `ConfigMap`.
    pub kind: String,
    /// The object's own protobuf bytes (without TypeMeta).
    pub raw: &'a [u8],
    /// `contentEncoding`; empty in everything client-go sends.
    pub content_encoding: String,
    /// `contentType`; empty in everything client-go sends.
    pub content_type: String,
}

/// (apiVersion, kind, schema) of every supported kind. `DeleteOptions` is matched on kind alone:
/// it is registered in every group version.
static KINDS: &[(&str, &str, &Msg)] = &[
    ("v1", "ConfigMap", &core_v1::CONFIG_MAP),
    ("v1", "Secret", &core_v1::SECRET),
    ("v1", "Namespace", &core_v1::NAMESPACE),
    ("v1", "ServiceAccount", &core_v1::SERVICE_ACCOUNT),
    ("v1", "Service", &core_v1::SERVICE),
    (
        "authentication.k8s.io/v1",
        "TokenRequest",
        &authentication_v1::TOKEN_REQUEST,
    ),
    (
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        &authentication_v1::SELF_SUBJECT_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &authorization_v1::SELF_SUBJECT_ACCESS_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        &authorization_v1::SELF_SUBJECT_RULES_REVIEW,
    ),
    ("meta.k8s.io/v1", "DeleteOptions", &meta_v1::DELETE_OPTIONS),
];

/// The (apiVersion, kind) pairs [`decode`] understands. `DeleteOptions` is accepted under any
/// apiVersion.
pub fn supported_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    KINDS.iter().map(|(v, k, _)| (*v, *k))
}

/// Whether [`decode`] has a schema for this apiVersion and kind.
pub fn is_supported(api_version: &str, kind: &str) -> bool {
    schema_for(api_version, kind).is_some()
}

fn schema_for(api_version: &str, kind: &str) -> Option<&'static Msg> {
    KINDS
        .iter()
        .find(|(v, k, _)| *k == kind && (*v == api_version || kind == "DeleteOptions"))
        .map(|(_, _, m)| *m)
}

/// Whether a body starts with the Kubernetes protobuf magic (to sniff bodies sent without a
/// Content-Type).
pub fn has_magic(body: &[u8]) -> bool {
    body.starts_with(&MAGIC)
}

/// Checks the magic and decodes the `runtime.Unknown` envelope (typeMeta = 1 {apiVersion = 1,
/// kind = 2}, raw = 2, contentEncoding = 3, contentType = 4).
pub fn decode_envelope(body: &[u8]) -> Result<Envelope<'_>, ProtoError> {
    let Some(data) = body.strip_prefix(&MAGIC) else {
        return Err(ProtoError::BadMagic {
            found: body.iter().take(4).copied().collect(),
        });
    };
    if data.is_empty() {
        return Err(ProtoError::Empty);
    }
    let bad = |field: u32, reason: String| ProtoError::Malformed {
        path: "Unknown".into(),
        message: "Unknown",
        field,
        reason,
    };
    let mut env = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
        content_type: String::new(),
    };
    let mut r = Reader::new(data);
    while !r.is_empty() {
        let (number, wire) = r.tag().map_err(|e| bad(0, e.to_string()))?;
        if !(1..=4).contains(&number) {
            r.skip(number, wire).map_err(|e| bad(number, e.to_string()))?;
            continue;
        }
        if wire != WireType::Len {
            return Err(bad(
                number,
                format!("wire type {wire}, expected length-delimited"),
            ));
        }
        let bytes = r.len_delimited().map_err(|e| bad(number, e.to_string()))?;
        let text = || String::from_utf8_lossy(bytes).into_owned();
        match number {
            1 => decode_type_meta(bytes, &mut env).map_err(|(field, reason)| ProtoError::Malformed {
                path: "Unknown.typeMeta".into(),
                message: "TypeMeta",
                field,
                reason,
            })?,
            2 => env.raw = bytes,
            3 => env.content_encoding = text(),
            _ => env.content_type = text(),
        }
    }
    Ok(env)
}

fn decode_type_meta(buf: &[u8], env: &mut Envelope<'_>) -> Result<(), (u32, String)> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (number, wire) = r.tag().map_err(|e| (0, e.to_string()))?;
        match (number, wire) {
            (1 | 2, WireType::Len) => {
                let bytes = r.len_delimited().map_err(|e| (number, e.to_string()))?;
                let text = String::from_utf8_lossy(bytes).into_owned();
                if number == 1 {
                    env.api_version = text;
                } else {
                    env.kind = text;
                }
            }
            (1 | 2, other) => return Err((number, format!("wire type {other}, expected length-delimited"))),
            _ => r.skip(number, wire).map_err(|e| (number, e.to_string()))?,
        }
    }
    Ok(())
}

/// Decodes a Kubernetes protobuf request body into the JSON object a JSON client would have sent:
/// camelCase names, `apiVersion`/`kind` set, empty fields left out as Go's `omitempty` does,
/// times as RFC 3339, `bytes` as base64, IntOrString as number or string.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let env = decode_envelope(body)?;
    if env.kind.is_empty() {
        return Err(ProtoError::MissingTypeMeta { missing: "kind" });
    }
    if env.api_version.is_empty() {
        return Err(ProtoError::MissingTypeMeta {
            missing: "apiVersion",
        });
    }
    if !env.content_encoding.is_empty() {
        return Err(ProtoError::UnsupportedEncoding(env.content_encoding));
    }
    let Some(msg) = schema_for(&env.api_version, &env.kind) else {
        return Err(ProtoError::UnsupportedKind {
            api_version: env.api_version,
            kind: env.kind,
        });
    };
    let fields = schema::decode_message(msg, env.raw).map_err(|f| ProtoError::malformed(&env.kind, f))?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(env.api_version));
    out.insert("kind".into(), Value::String(env.kind));
    out.extend(fields);
    Ok(Value::Object(out))
}
