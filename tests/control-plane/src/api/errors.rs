//! API errors as `meta.k8s.io/v1` `Status` objects, with the codes, reasons and message shapes
//! kube-apiserver uses (clients branch on `reason`: kubectl prints `message`, kube-rs and client-go
//! map 409/410 to retries and relists).

use serde_json::{Value, json};

use crate::resources::ResourceDef;
use crate::store::StoreError;

/// A failed request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

fn details(def: &ResourceDef, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": def.plural});
    if !def.group.is_empty() {
        d["group"] = json!(def.group);
    }
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with a free-form message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 for a path that is not an API endpoint.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// An error about an object (`name`, empty for the resource) of `def`, with its details.
    fn about(def: &ResourceDef, name: &str, code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            details: Some(details(def, name)),
            ..Self::new(code, reason, message)
        }
    }

    /// 404 NotFound for an object.
    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::about(
            def,
            name,
            404,
            "NotFound",
            format!("{} \"{name}\" not found", def.qualified()),
        )
    }

    /// 405 for a verb a resource does not support.
    pub fn method_not_supported(def: &ResourceDef, verb: &str) -> Self {
        Self::about(
            def,
            "",
            405,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported on resources of kind \"{}\"",
                def.qualified()
            ),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self::about(
            def,
            name,
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", def.qualified()),
        )
    }

    /// 409 Conflict for a stale resourceVersion (or another precondition).
    pub fn conflict(def: &ResourceDef, name: &str, why: &str) -> Self {
        Self::about(
            def,
            name,
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                def.qualified()
            ),
        )
    }

    /// The standard optimistic-concurrency conflict.
    pub fn stale(def: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            def,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 410 Expired: a resourceVersion older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 422 Invalid with one cause per field error (`field`, `reason`, `message` as upstream).
    pub fn invalid(def: &ResourceDef, name: &str, message: String, causes: Vec<Value>) -> Self {
        let mut d = details(def, name);
        d["kind"] = json!(def.kind);
        d["causes"] = Value::Array(causes);
        ApiError {
            details: Some(d),
            ..Self::new(422, "Invalid", message)
        }
    }

    /// 415 for a body type the endpoint cannot read.
    pub fn unsupported_media(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"
            ),
        )
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 for a subresource whose backend (the node's kubelet) is not reachable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object sent as the response body (or in a watch ERROR event).
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// Maps a store error for an object of `def` named `name`.
    pub fn from_store(def: &ResourceDef, name: &str, e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists { .. } => Self::already_exists(def, name),
            StoreError::NotFound { .. } => Self::not_found(def, name),
            StoreError::Conflict { .. } => Self::stale(def, name),
            StoreError::Gone { .. } => Self::expired(e.to_string()),
            StoreError::Backend(m) => Self::internal(format!("storage: {m}")),
        }
    }
}

/// The `Status` a successful delete of a non-returning kind sends.
pub fn success_status(def: &ResourceDef, name: &str, uid: Option<&str>) -> Value {
    let mut d = details(def, name);
    if let Some(uid) = uid {
        d["uid"] = json!(uid);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d})
}
