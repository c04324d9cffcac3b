//! The HTTP API: request parsing and routing onto discovery, OpenAPI, and the resource handlers
//! ([`objects`] for CRUD and subresources, [`watch`] for streams), with authentication and
//! authorization applied to every resource request.

pub mod errors;
pub mod kubelet;
pub mod objects;
pub mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::Value;

use crate::auth::{self, Attributes, UserInfo};
use crate::resources::{self, ResourceDef};
use crate::{ControlPlane, openapi};
pub use errors::ApiError;

/// The response body type: a full buffer or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (kube-apiserver's limit is 3 MiB per object; a bit more for
/// patches and lists).
const MAX_BODY: usize = 6 << 20;

/// A parsed resource request.
#[derive(Debug)]
pub struct ResourceRequest {
    pub def: &'static ResourceDef,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
    pub method: Method,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub user: UserInfo,
}

impl ResourceRequest {
    /// A query parameter.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// The authorization verb of this request.
    pub fn verb(&self) -> &'static str {
        let collection = self.name.is_empty();
        match self.method {
            Method::GET if collection && self.q("watch").is_some_and(truthy) => "watch",
            Method::GET if collection => "list",
            Method::GET => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if collection => "deletecollection",
            Method::DELETE => "delete",
            _ => "unknown",
        }
    }

    /// Whether the client asked for a `meta.k8s.io` Table (kubectl get).
    pub fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| {
                a.split(',')
                    .next()
                    .is_some_and(|first| first.contains("as=Table"))
            })
    }
}

/// Go's `strconv.ParseBool` truths (`1`, `t`, `T`, `TRUE`, `true`, `True`), plus the empty string
/// of a bare `?watch`.
pub fn truthy(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True" | "")
}

/// A JSON response.
pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// An error response.
pub fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

fn plain(code: u16, content_type: &str, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Parses a query string into a map (last value wins, as Go's `url.Values.Get` reads the first —
/// clients never repeat these parameters).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Who is calling: the verified client certificate's identity, or a bearer token.
pub fn authenticate(
    cp: &ControlPlane,
    cert: Option<&(String, Vec<String>)>,
    headers: &HeaderMap,
) -> Option<UserInfo> {
    if let Some((cn, orgs)) = cert {
        return Some(UserInfo::from_cert(cn.clone(), orgs.clone()));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?
        .trim();
    cp.tokens
        .authenticate(token, &[], &cp.store, crate::now_unix())
        .ok()
        .map(|(u, _)| u)
}

/// Serves one HTTP request.
pub async fn handle(
    cp: Arc<ControlPlane>,
    req: http::Request<hyper::body::Incoming>,
    cert: Option<(String, Vec<String>)>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());
    // Health endpoints are open, as upstream's are to anonymous users by default.
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") && parts.method == Method::GET {
        return plain(200, "text/plain; charset=utf-8", Bytes::from_static(b"ok"));
    }
    let Some(user) = authenticate(&cp, cert.as_ref(), &parts.headers) else {
        return error_response(&ApiError::unauthorized());
    };
    if let Some(target) = kubelet::kubelet_target(&path) {
        return kubelet::proxy(&cp, target, http::Request::from_parts(parts, body), &user).await;
    }
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_response(&ApiError::bad_request(format!("reading the request body: {e}")));
        }
    };
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let resp = route(&cp, parts.method, &path, query, parts.headers, body, user).await;
    tracing::debug!(%method, path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

async fn route(
    cp: &Arc<ControlPlane>,
    method: Method,
    path: &str,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    user: UserInfo,
) -> Response<Body> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = method == Method::GET;
    match segs.as_slice() {
        ["version"] if get => return json_response(200, &resources::version()),
        ["api"] if get => return json_response(200, &resources::core_versions(&cp.config.advertise())),
        ["apis"] if get => return json_response(200, &resources::group_list()),
        ["openapi", "v2"] if get => {
            return plain(200, openapi::V2_CONTENT_TYPE, Bytes::new());
        }
        ["openapi", "v3"] if get => return json_response(200, &openapi::v3_root()),
        ["openapi", "v3", rest @ ..] if get => {
            return match openapi::v3_group_version(&rest.join("/")) {
                Some(doc) => json_response(200, &doc),
                None => error_response(&ApiError::path_not_found()),
            };
        }
        ["apis", group] if get => {
            return match resources::group(group) {
                Some(g) => json_response(200, &g),
                None => error_response(&ApiError::path_not_found()),
            };
        }
        ["api", "v1"] if get => {
            return match resources::resource_list("", "v1") {
                Some(l) => json_response(200, &l),
                None => error_response(&ApiError::path_not_found()),
            };
        }
        ["apis", group, version] if get => {
            return match resources::resource_list(group, version) {
                Some(l) => json_response(200, &l),
                None => error_response(&ApiError::path_not_found()),
            };
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return error_response(&ApiError::path_not_found()),
    };
    let (namespace, rest): (&str, &[&str]) = match rest {
        ["namespaces", ns, r, ..] if !matches!(*r, "status" | "finalize") => (ns, &rest[2..]),
        _ => ("", rest),
    };
    let (plural, name, sub) = match rest {
        [r] => (*r, "", ""),
        [r, n] => (*r, *n, ""),
        [r, n, s] => (*r, *n, *s),
        _ => return error_response(&ApiError::path_not_found()),
    };
    let Some(def) = resources::find(group, version, plural) else {
        return error_response(&ApiError::path_not_found());
    };
    if !sub.is_empty() && !def.subresources.contains(&sub) {
        return error_response(&ApiError::path_not_found());
    }
    if def.namespaced && namespace.is_empty() && !name.is_empty() {
        return error_response(&ApiError::path_not_found());
    }
    if !def.namespaced && !namespace.is_empty() {
        return error_response(&ApiError::path_not_found());
    }
    let rr = ResourceRequest {
        def,
        namespace: namespace.to_string(),
        name: name.to_string(),
        subresource: sub.to_string(),
        method,
        query,
        headers,
        body,
        user,
    };
    if let Err(e) = check_access(cp, &rr) {
        return error_response(&e);
    }
    objects::serve(cp, rr).await
}

/// Authorization of a resource request.
fn check_access(cp: &ControlPlane, rr: &ResourceRequest) -> Result<(), ApiError> {
    let field_name = rr
        .q("fieldSelector")
        .and_then(|f| f.split(',').find_map(|t| t.trim().strip_prefix("metadata.name=")));
    let body_node: Option<String> = if rr.method == Method::POST && rr.def.plural == "pods" {
        serde_json::from_slice::<Value>(&rr.body).ok().and_then(|v| {
            v.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .map(String::from)
        })
    } else {
        None
    };
    let name = if rr.name.is_empty() && rr.method == Method::POST {
        ""
    } else {
        &rr.name
    };
    let attrs = Attributes {
        verb: rr.verb(),
        group: rr.def.group,
        resource: rr.def.plural,
        subresource: &rr.subresource,
        namespace: &rr.namespace,
        name,
        field_name,
        body_node: body_node.as_deref(),
    };
    auth::authorize(&rr.user, &attrs, &cp.store)
        .map_err(|why| ApiError::forbidden(auth::forbidden_message(&rr.user, &attrs, &why)))
}
