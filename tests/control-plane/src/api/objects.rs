//! Resource handlers: get, list, create, update, patch, delete (graceful, with finalizers) and the
//! subresources binding, eviction, status, finalize, token, plus the review resources.

use std::sync::Arc;

use base64::Engine;
use http::{Method, header};
use serde_json::{Map, Value, json};

use super::{ApiError, Body, ResourceRequest, error_response, json_response, watch};
use crate::auth::{self, Attributes, UserInfo};
use crate::resources::ResourceDef;
use crate::store::{StoreError, Update, object_rv};
use crate::{ControlPlane, admission, convert, machinery, now_rfc3339, now_unix, typed};

type Outcome = Result<(u16, Value), ApiError>;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => ApiError {
                code: 409,
                reason: if matches!(e, StoreError::Conflict { .. }) {
                    "Conflict"
                } else {
                    "AlreadyExists"
                },
                message: e.to_string(),
                details: None,
            },
            StoreError::NotFound { .. } => ApiError {
                code: 404,
                reason: "NotFound",
                message: e.to_string(),
                details: None,
            },
            StoreError::Gone { .. } => ApiError::expired(e.to_string()),
            StoreError::Backend(m) => ApiError::internal(format!("storage: {m}")),
        }
    }
}

/// Dispatches a resource request.
pub async fn serve(cp: &Arc<ControlPlane>, rr: ResourceRequest) -> http::Response<Body> {
    let verb = rr.verb();
    let verb_allowed = match rr.subresource.as_str() {
        "" => rr.def.verbs.contains(&verb),
        _ => true,
    };
    if !verb_allowed {
        return error_response(&ApiError::method_not_supported(rr.def, verb));
    }
    if verb == "watch" {
        return watch::serve(cp.clone(), rr);
    }
    if rr.subresource == "log" && rr.method == Method::GET {
        return super::kubelet::pod_log(cp, &rr).await;
    }
    let result = match (&rr.method, rr.name.is_empty(), rr.subresource.as_str()) {
        (&Method::GET, true, "") => list(cp, &rr),
        (&Method::GET, false, "" | "status" | "ephemeralcontainers") => get(cp, &rr),
        (&Method::POST, true, "") if !rr.def.stored() => review(cp, &rr),
        (&Method::POST, true, "") => create(cp, &rr),
        (&Method::PUT, false, "" | "status" | "finalize" | "ephemeralcontainers") => update(cp, &rr),
        (&Method::PATCH, false, "" | "status" | "ephemeralcontainers") => patch(cp, &rr),
        (&Method::DELETE, false, "") => delete(cp, &rr),
        (&Method::DELETE, true, "") => delete_collection(cp, &rr),
        (&Method::POST, false, "binding") => bind(cp, &rr),
        (&Method::POST, false, "eviction") => evict(cp, &rr),
        (&Method::POST, false, "token") => token_request(cp, &rr),
        (_, false, "log" | "exec" | "attach" | "portforward" | "proxy") => {
            Err(ApiError::unavailable(format!(
                "{}/{} is served by the node's kubelet API, which this control plane cannot reach yet",
                rr.def.plural, rr.subresource
            )))
        }
        _ => Err(ApiError::method_not_supported(rr.def, verb)),
    };
    match result {
        Ok((code, v)) => {
            let v = if rr.wants_table() && rr.method == Method::GET && v.get("kind").is_some() {
                as_table(&rr, v)
            } else {
                v
            };
            json_response(code, &v)
        }
        Err(e) => error_response(&e),
    }
}

fn as_table(rr: &ResourceRequest, v: Value) -> Value {
    let is_list = v["kind"].as_str().is_some_and(|k| k.ends_with("List"));
    let items: Vec<Value> = if is_list {
        v["items"].as_array().cloned().unwrap_or_default()
    } else {
        vec![v.clone()]
    };
    let mut t = machinery::table(rr.def.plural, &items, now_unix());
    if is_list {
        t["metadata"] = v["metadata"].clone();
    }
    t
}

/// The object as the requested API version shows it.
pub fn present(def: &ResourceDef, obj: &Value) -> Value {
    if def.group == "events.k8s.io" {
        convert::core_event_to_v1(obj)
    } else {
        obj.clone()
    }
}

fn decode_body(rr: &ResourceRequest) -> Result<Value, ApiError> {
    let ct = rr
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    decode(ct, &rr.body)
}

/// Decodes a request body by its `Content-Type` (JSON, YAML or Kubernetes protobuf); public as
/// the seam the request-body fuzz target drives.
pub fn decode(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    let base = ct.split(';').next().unwrap_or("").trim();
    let v: Value = if base.ends_with("yaml") {
        let text =
            std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
        serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else if base.contains("json") || base.is_empty() {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    } else if base == knode_k8s_protobuf::CONTENT_TYPE {
        // kubectl's typed-client commands (create configmap/secret/namespace/service/token …)
        // send protobuf and client-go does not fall back to JSON.
        knode_k8s_protobuf::decode(body).map_err(|e| match e.http_status() {
            415 => ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: e.to_string(),
                details: None,
            },
            _ => ApiError::bad_request(format!("error decoding protobuf: {e}")),
        })?
    } else {
        return Err(ApiError::unsupported_media(ct));
    };
    Ok(v)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    let m = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    match m.and_then(Value::as_object_mut) {
        Some(m) => Ok(m),
        None => Err(ApiError::bad_request("metadata must be an object")),
    }
}

fn get(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let obj = cp
        .store
        .get(rr.def.storage, &rr.namespace, &rr.name)
        .ok_or_else(|| ApiError::not_found(rr.def, &rr.name))?;
    Ok((200, present(rr.def, &obj)))
}

/// Label and field selectors of a list or watch, compiled once.
pub struct Filter {
    label: Option<machinery::LabelSelector>,
    field: Option<machinery::FieldSelector>,
    resource: &'static str,
}

impl Filter {
    /// Parses `labelSelector` / `fieldSelector`; a bad one is a 400 with the parser's message.
    pub fn from_request(rr: &ResourceRequest) -> Result<Self, ApiError> {
        let label = match rr.q("labelSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(machinery::LabelSelector::parse(s).map_err(ApiError::bad_request)?),
            None => None,
        };
        let field = match rr.q("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(machinery::FieldSelector::parse(s).map_err(ApiError::bad_request)?),
            None => None,
        };
        let f = Filter {
            label,
            field,
            resource: rr.def.plural,
        };
        // Reject unsupported fields up front, as upstream does, rather than matching nothing.
        f.matches(&json!({"metadata": {}}))?;
        Ok(f)
    }

    /// Whether an object passes both selectors.
    pub fn matches(&self, obj: &Value) -> Result<bool, ApiError> {
        if let Some(l) = &self.label
            && !l.matches(obj.pointer("/metadata/labels").unwrap_or(&Value::Null))
        {
            return Ok(false);
        }
        if let Some(f) = &self.field {
            return f.matches(obj, self.resource).map_err(ApiError::bad_request);
        }
        Ok(true)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    start: String,
}

fn list(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let filter = Filter::from_request(rr)?;
    let ns = (!rr.namespace.is_empty()).then_some(rr.namespace.as_str());
    let (rv, items) = cp.store.list(rr.def.storage, ns);
    let limit: usize = match rr.q("limit") {
        Some(l) if !l.is_empty() => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0) as usize,
        _ => 0,
    };
    let (list_rv, start) = match rr.q("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let tok: Continue = base64::engine::general_purpose::STANDARD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: illegal base64 data"))?;
            (tok.rv, Some(tok.start))
        }
        None => (rv, None),
    };
    let mut out = Vec::new();
    let mut next = None;
    let mut remaining = 0usize;
    for obj in items {
        let key = format!("{}/{}", meta_str(&obj, "namespace"), meta_str(&obj, "name"));
        if start.as_ref().is_some_and(|s| key.as_str() <= s.as_str()) {
            continue;
        }
        if !filter.matches(&obj)? {
            continue;
        }
        if limit > 0 && out.len() == limit {
            if next.is_none() {
                next = Some(
                    out.last()
                        .map(|o: &Value| format!("{}/{}", meta_str(o, "namespace"), meta_str(o, "name"))),
                );
            }
            remaining += 1;
            continue;
        }
        out.push(present(rr.def, &obj));
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(Some(start)) = next {
        let tok = serde_json::to_vec(&Continue { rv: list_rv, start }).unwrap_or_default();
        metadata["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(tok));
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok((
        200,
        json!({
            "kind": format!("{}List", rr.def.kind),
            "apiVersion": rr.def.api_version(),
            "metadata": metadata,
            "items": out,
        }),
    ))
}

/// Checks kind/apiVersion and converts a request object into its stored form (public for the
/// request-body fuzz target).
pub fn ingest(def: &ResourceDef, mut obj: Value) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    let want = def.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != want => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )));
        }
        _ => obj["apiVersion"] = json!(want),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != def.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
        _ => obj["kind"] = json!(def.kind),
    }
    if def.group == "events.k8s.io" {
        return Ok(convert::v1_event_to_core(&obj));
    }
    Ok(obj)
}

/// Decodes through the typed schema; unknown fields fail (Strict), warn or are dropped (Ignore).
fn normalize(def: &ResourceDef, rr: &ResourceRequest, obj: Value) -> Result<Value, ApiError> {
    let (obj, unknown) = typed::normalize(def, obj)?;
    if !unknown.is_empty() && rr.q("fieldValidation") == Some("Strict") {
        let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            list.join(", "),
            kind = def.kind,
            v = def.version
        )));
    }
    Ok(obj)
}

fn dry_run(rr: &ResourceRequest) -> bool {
    rr.q("dryRun") == Some("All")
}

fn create(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let obj = ingest(rr.def, decode_body(rr)?)?;
    let obj = normalize(rr.def, rr, obj)?;
    create_object(cp, rr.def, &rr.namespace, obj, dry_run(rr))
}

/// Creation: naming, namespace checks, admission (defaults and allocations), validation, store.
pub fn create_object(
    cp: &ControlPlane,
    def: &ResourceDef,
    namespace: &str,
    mut obj: Value,
    dry: bool,
) -> Outcome {
    let meta = meta_mut(&mut obj)?;
    if def.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(namespace));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let name = if name.is_empty() {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", crate::random_suffix(5)),
            _ => {
                return Err(ApiError::invalid(
                    def,
                    "",
                    format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        def.kind
                    ),
                    vec![
                        json!({"reason": "FieldValueRequired", "message": "Required value: name or generateName is required", "field": "metadata.name"}),
                    ],
                ));
            }
        }
    } else {
        name
    };
    meta.insert("name".into(), json!(name));
    meta.insert("uid".into(), json!(crate::new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if def.namespaced {
        match cp.store.get("namespaces", "", namespace) {
            None => {
                return Err(ApiError::not_found(
                    crate::resources::by_storage("namespaces").unwrap_or(def),
                    namespace,
                ));
            }
            Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    def.qualified()
                )));
            }
            Some(_) => {}
        }
    }
    let _alloc = cp.alloc_lock.lock().unwrap_or_else(|p| p.into_inner());
    admission::on_create(cp, def, &mut obj)?;
    validate(def, &name, &obj)?;
    if dry {
        return Ok((201, present(def, &obj)));
    }
    let stored = cp
        .store
        .create(def.storage, namespace, &name, obj)
        .map_err(|e| ApiError::from_store(def, &name, e))?;
    Ok((201, present(def, &stored)))
}

fn validate(def: &ResourceDef, name: &str, obj: &Value) -> Result<(), ApiError> {
    let errs = machinery::validate(def.plural, obj);
    if errs.is_empty() {
        return Ok(());
    }
    Err(machinery::invalid(def, name, &errs))
}

fn check_name(rr: &ResourceRequest, obj: &Value) -> Result<(), ApiError> {
    let n = meta_str(obj, "name");
    if !n.is_empty() && n != rr.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            rr.name
        )));
    }
    Ok(())
}

fn update(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let new = ingest(rr.def, decode_body(rr)?)?;
    check_name(rr, &new)?;
    let new = normalize(rr.def, rr, new)?;
    let exists = cp.store.get(rr.def.storage, &rr.namespace, &rr.name).is_some();
    if !exists {
        if rr.subresource.is_empty() && admission::create_on_update(rr.def) {
            return create_object(cp, rr.def, &rr.namespace, new, dry_run(rr));
        }
        return Err(ApiError::not_found(rr.def, &rr.name));
    }
    let want_rv = object_rv(&new);
    apply_update(cp, rr, |_| Ok(new), want_rv)
}

/// The shared tail of update and patch: precondition, admission, validation, finalizer-driven
/// removal, all under the store lock so the result is computed from the latest object.
fn apply_update(
    cp: &ControlPlane,
    rr: &ResourceRequest,
    make: impl FnOnce(&Value) -> Result<Value, ApiError>,
    want_rv: Option<u64>,
) -> Outcome {
    let def = rr.def;
    let dry = dry_run(rr);
    let mut code = 200;
    let mut preview = None;
    let _alloc = cp.alloc_lock.lock().unwrap_or_else(|p| p.into_inner());
    // Read outside the store lock: the update closure below runs under it.
    let services = if def.plural == "services" {
        cp.store.list("services", None).1
    } else {
        Vec::new()
    };
    let out = cp.store.update(def.storage, &rr.namespace, &rr.name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(def, &rr.name));
        };
        let mut new = make(cur)?;
        if let Some(want) = want_rv
            && Some(want) != object_rv(cur)
        {
            return Err(ApiError::stale(def, &rr.name));
        }
        admission::on_update(cp, def, &rr.subresource, cur, &mut new, &services)?;
        validate(def, &rr.name, &new)?;
        if def.plural == "pods" && rr.subresource.is_empty() {
            let errs = machinery::validate_pod_update(cur, &new);
            if !errs.is_empty() {
                return Err(machinery::invalid(def, &rr.name, &errs));
            }
        }
        if dry {
            preview = Some(new);
            return Ok(Update::Keep);
        }
        if admission::finalized(def, &new) {
            code = 200;
            return Ok(Update::Delete);
        }
        if new == *cur {
            return Ok(Update::Keep);
        }
        Ok(Update::Put(new))
    })?;
    if let Some(p) = preview {
        return Ok((200, present(def, &p)));
    }
    let out = out.ok_or_else(|| ApiError::not_found(def, &rr.name))?;
    Ok((code, present(def, &out)))
}

fn patch_type(rr: &ResourceRequest) -> &str {
    rr.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
}

fn patch(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let ct = patch_type(rr).to_string();
    let def = rr.def;
    let is_apply = ct == "application/apply-patch+yaml";
    let body: Value = if is_apply {
        decode("application/yaml", &rr.body)?
    } else {
        decode("application/json", &rr.body)?
    };
    if !matches!(
        ct.as_str(),
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml"
    ) {
        return Err(ApiError::unsupported_media(&ct));
    }
    if is_apply && cp.store.get(def.storage, &rr.namespace, &rr.name).is_none() {
        // Server-side apply of a missing object creates it.
        let obj = ingest(def, body)?;
        check_name(rr, &obj)?;
        let obj = normalize(def, rr, obj)?;
        return create_object(cp, def, &rr.namespace, obj, dry_run(rr));
    }
    apply_update(
        cp,
        rr,
        |cur| {
            let shown = present(def, cur);
            let patched = match ct.as_str() {
                "application/json-patch+json" => machinery::json_patch(&shown, &body),
                "application/merge-patch+json" => machinery::merge_patch(&shown, &body),
                "application/strategic-merge-patch+json" => {
                    machinery::strategic_merge_patch(&shown, &body, def.kind)
                }
                _ => machinery::apply_patch(&shown, &body, def.kind),
            }
            .map_err(|m| ApiError::invalid(def, &rr.name, m.clone(), vec![json!({"message": m})]))?;
            // A patch that names a resourceVersion is a precondition on it.
            let rv_in_patch = object_rv(&patched);
            let want_rv = (rv_in_patch != object_rv(&shown))
                .then_some(rv_in_patch)
                .flatten();
            let obj = ingest(def, patched)?;
            check_name(rr, &obj)?;
            let (obj, _) = typed::normalize(def, obj)?;
            let mut obj = obj;
            // A patch that names a stale resourceVersion conflicts; otherwise it applies to the
            // current object.
            if let Some(w) = want_rv
                && Some(w) != object_rv(cur)
            {
                return Err(ApiError::stale(def, &rr.name));
            }
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert(
                    "resourceVersion".into(),
                    cur["metadata"]["resourceVersion"].clone(),
                );
            }
            Ok(obj)
        },
        None,
    )
}

#[derive(Default)]
struct DeleteOptions {
    grace: Option<i64>,
    uid: Option<String>,
    rv: Option<String>,
    dry: bool,
}

fn delete_options(rr: &ResourceRequest) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions::default();
    if !rr.body.is_empty() {
        let v = decode_body(rr)?;
        o.grace = v["gracePeriodSeconds"].as_i64();
        o.uid = v["preconditions"]["uid"].as_str().map(String::from);
        o.rv = v["preconditions"]["resourceVersion"].as_str().map(String::from);
        o.dry = v["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    }
    if let Some(g) = rr.q("gracePeriodSeconds") {
        o.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    o.dry |= dry_run(rr);
    Ok(o)
}

fn delete(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let opts = delete_options(rr)?;
    delete_one(cp, rr.def, &rr.namespace, &rr.name, &opts).map(|v| (200, present(rr.def, &v)))
}

fn delete_one(
    cp: &ControlPlane,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let mut preview = None;
    let out = cp.store.update(def.storage, ns, name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(def, name));
        };
        if let Some(uid) = &opts.uid
            && uid != meta_str(cur, "uid")
        {
            return Err(ApiError::conflict(
                def,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(cur, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.rv
            && rv != meta_str(cur, "resourceVersion")
        {
            return Err(ApiError::conflict(
                def,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(cur, "resourceVersion")
                ),
            ));
        }
        let decision = admission::on_delete(def, cur, opts.grace);
        if opts.dry {
            preview = Some(cur.clone());
            return Ok(Update::Keep);
        }
        Ok(decision)
    })?;
    if let Some(p) = preview {
        return Ok(p);
    }
    out.map(|o| (*o).clone())
        .ok_or_else(|| ApiError::not_found(def, name))
}

fn delete_collection(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let opts = delete_options(rr)?;
    let filter = Filter::from_request(rr)?;
    let ns = (!rr.namespace.is_empty()).then_some(rr.namespace.as_str());
    let (rv, items) = cp.store.list(rr.def.storage, ns);
    let mut deleted = Vec::new();
    for obj in items {
        if !filter.matches(&obj)? {
            continue;
        }
        match delete_one(
            cp,
            rr.def,
            meta_str(&obj, "namespace"),
            meta_str(&obj, "name"),
            &opts,
        ) {
            Ok(v) => deleted.push(present(rr.def, &v)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok((
        200,
        json!({"kind": format!("{}List", rr.def.kind), "apiVersion": rr.def.api_version(),
               "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    ))
}

fn bind(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let b = decode_body(rr)?;
    let node = b["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request("binding target name is required"));
    }
    cp.store.update(rr.def.storage, &rr.namespace, &rr.name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(rr.def, &rr.name));
        };
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                rr.def,
                &rr.name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(existing) = cur
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Err(ApiError::conflict(
                rr.def,
                &rr.name,
                &format!("pod {} is already assigned to node \"{existing}\"", rr.name),
            ));
        }
        let mut new = cur.clone();
        new["spec"]["nodeName"] = json!(node);
        Ok(Update::Put(new))
    })?;
    Ok((
        201,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

fn evict(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let e = decode_body(rr)?;
    let opts = DeleteOptions {
        grace: e["deleteOptions"]["gracePeriodSeconds"].as_i64(),
        uid: e["deleteOptions"]["preconditions"]["uid"]
            .as_str()
            .map(String::from),
        ..Default::default()
    };
    delete_one(cp, rr.def, &rr.namespace, &rr.name, &opts)?;
    Ok((
        201,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

fn token_request(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let req = decode_body(rr)?;
    let sa = cp
        .store
        .get("serviceaccounts", &rr.namespace, &rr.name)
        .ok_or_else(|| ApiError::not_found(rr.def, &rr.name))?;
    let audiences: Vec<String> = req["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let exp = req["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
    // Upstream's minimum is fixed at 10 minutes; only a test-started server lowers it.
    if exp < 600 && exp < cp.config.min_token_expiration.as_secs() as i64 {
        return Err(ApiError::bad_request(
            "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        ));
    }
    let bound = &req["spec"]["boundObjectRef"];
    let pod = match bound["kind"].as_str() {
        Some("Pod") => {
            let name = bound["name"].as_str().unwrap_or("");
            let pod = cp.store.get("pods", &rr.namespace, name).ok_or_else(|| {
                ApiError::not_found(crate::resources::by_storage("pods").unwrap_or(rr.def), name)
            })?;
            if let Some(uid) = bound["uid"].as_str()
                && uid != meta_str(&pod, "uid")
            {
                return Err(ApiError::conflict(
                    rr.def,
                    &rr.name,
                    &format!(
                        "the UID in the bound object reference ({uid}) does not match the UID in record"
                    ),
                ));
            }
            Some(pod)
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of kind {other}"
            )));
        }
        None => None,
    };
    let now = now_unix();
    let (token, exp_at) = cp
        .tokens
        .issue(&sa, &audiences, exp, pod.as_deref(), now)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut out = req.clone();
    out["kind"] = json!("TokenRequest");
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["metadata"] = json!({"name": rr.name, "namespace": rr.namespace, "creationTimestamp": null});
    out["spec"]["expirationSeconds"] = json!(exp);
    out["status"] = json!({"token": token, "expirationTimestamp": crate::rfc3339(exp_at)});
    Ok((201, out))
}

fn review(cp: &ControlPlane, rr: &ResourceRequest) -> Outcome {
    let mut obj = ingest(rr.def, decode_body(rr)?)?;
    let status = match rr.def.plural {
        "selfsubjectreviews" => json!({"userInfo": rr.user.to_json()}),
        "tokenreviews" => {
            let token = obj["spec"]["token"].as_str().unwrap_or("");
            let aud: Vec<String> = obj["spec"]["audiences"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            match cp.tokens.authenticate(token, &aud, &cp.store, now_unix()) {
                Ok((user, audiences)) => {
                    json!({"authenticated": true, "user": user.to_json(), "audiences": audiences})
                }
                Err(e) => json!({"authenticated": false, "error": e.to_string(), "user": {}}),
            }
        }
        _ => {
            let user = if rr.def.plural == "selfsubjectaccessreviews" {
                rr.user.clone()
            } else {
                UserInfo {
                    username: obj["spec"]["user"].as_str().unwrap_or("").to_string(),
                    uid: obj["spec"]["uid"].as_str().unwrap_or("").to_string(),
                    groups: obj["spec"]["groups"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                        .unwrap_or_default(),
                }
            };
            let ra = &obj["spec"]["resourceAttributes"];
            let s = |k: &str| ra[k].as_str().unwrap_or("").to_string();
            let (verb, group, resource, sub, ns, name) = (
                s("verb"),
                s("group"),
                s("resource"),
                s("subresource"),
                s("namespace"),
                s("name"),
            );
            if ra.is_null() {
                // Non-resource URLs (/healthz, /metrics …): every authenticated user may read.
                json!({"allowed": obj["spec"]["nonResourceAttributes"]["verb"] == "get"})
            } else {
                let attrs = Attributes {
                    verb: &verb,
                    group: &group,
                    resource: &resource,
                    subresource: &sub,
                    namespace: &ns,
                    name: &name,
                    field_name: None,
                    body_node: None,
                };
                match auth::authorize(&user, &attrs, &cp.store) {
                    Ok(()) => json!({"allowed": true}),
                    Err(why) => {
                        json!({"allowed": false, "reason": auth::forbidden_message(&user, &attrs, &why)})
                    }
                }
            }
        }
    };
    obj["status"] = status;
    if obj.get("metadata").is_none() {
        obj["metadata"] = json!({});
    }
    Ok((201, present(rr.def, &obj)))
}
