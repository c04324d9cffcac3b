//! Who is calling the kubelet API and what they may do, as upstream's kubelet `server/auth.go`:
//! x509 client certificates (verified against `clientCAFile` by the TLS layer), bearer tokens
//! through a TokenReview to the API server (`authentication.webhook`, cached for `cacheTTL`),
//! anonymous only when enabled; authorization by a SubjectAccessReview (`authorization.mode:
//! Webhook`, allowed answers cached for `cacheAuthorizedTTL`, denials for `cacheUnauthorizedTTL`)
//! on `nodes/<subresource>` with the request's verb.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Api;
use kube::api::PostParams;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a request asks for, as a SubjectAccessReview's resource attributes on `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// Upstream's mapping: the verb from the method, the subresource from the path (`/stats` →
/// stats, `/metrics` → metrics, `/logs` → log, `/healthz` → healthz, `/pods` → pods with the
/// fine-grained authorization of 1.33, everything else — exec, attach, portForward, containerLogs,
/// runningpods — proxy; `/configz` → configz).
pub fn attributes(method: &Method, path: &str) -> Attributes {
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/healthz") {
        "healthz"
    } else if path == "/pods" || path == "/pods/" {
        "pods"
    } else if under("/configz") {
        "configz"
    } else {
        "proxy"
    };
    Attributes { verb, subresource }
}

/// Upstream's 403 body.
pub fn forbidden_message(user: &User, a: &Attributes) -> String {
    format!(
        "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
        user.name, a.verb, a.subresource
    )
}

/// Authentication and authorization settings (the KubeletConfiguration sections).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub anonymous: bool,
    pub webhook_authn: bool,
    pub authn_cache_ttl: Duration,
    /// `Webhook` or `AlwaysAllow`.
    pub authorization_mode: String,
    pub authorized_ttl: Duration,
    pub unauthorized_ttl: Duration,
    pub node_name: String,
}

/// Token reviews by the token's SHA-256: the user (or none: rejected) and until when.
type TokenCache = HashMap<[u8; 32], (Option<User>, Instant)>;
/// Authorization decisions and until when.
type DecisionCache = HashMap<(User, Attributes), (bool, Instant)>;

/// Authenticates and authorizes requests, caching the API server's answers.
pub struct Auth {
    cfg: AuthConfig,
    client: kube::Client,
    tokens: Mutex<TokenCache>,
    decisions: Mutex<DecisionCache>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401.
    Unauthenticated,
    /// 403 with the message.
    Forbidden(String),
    /// 500: the API server could not be asked.
    Failed(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn token_key(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

impl Auth {
    /// An authenticator/authorizer asking the API server through `client`.
    pub fn new(cfg: AuthConfig, client: kube::Client) -> Self {
        Auth {
            cfg,
            client,
            tokens: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
        }
    }

    /// The caller: the client certificate's subject, else a bearer token's TokenReview, else
    /// anonymous when enabled.
    pub async fn authenticate(
        &self,
        cert: Option<&(String, Vec<String>)>,
        headers: &http::HeaderMap,
    ) -> Result<User, Denied> {
        if let Some((cn, orgs)) = cert {
            return Ok(User {
                name: cn.clone(),
                groups: orgs.clone(),
            });
        }
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let (Some(token), true) = (token, self.cfg.webhook_authn) {
            return self.token_review(token).await;
        }
        if self.cfg.anonymous {
            return Ok(User {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
            });
        }
        Err(Denied::Unauthenticated)
    }

    async fn token_review(&self, token: &str) -> Result<User, Denied> {
        let key = token_key(token);
        let now = Instant::now();
        if let Ok(c) = self.tokens.lock()
            && let Some((u, until)) = c.get(&key)
            && *until > now
        {
            return u.clone().ok_or(Denied::Unauthenticated);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let r = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Denied::Failed(format!("token review failed: {e}")))?;
        let user = r
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(User {
                    name: u.username?,
                    groups: u.groups.unwrap_or_default(),
                })
            });
        // Failures are cached briefly (upstream: 10 s), successes for cacheTTL.
        let ttl = if user.is_some() {
            self.cfg.authn_cache_ttl
        } else {
            Duration::from_secs(10)
        };
        if let Ok(mut c) = self.tokens.lock() {
            c.retain(|_, (_, until)| *until > now);
            c.insert(key, (user.clone(), now + ttl));
        }
        user.ok_or(Denied::Unauthenticated)
    }

    /// Authorizes `a` for `user` (SubjectAccessReview on nodes/<subresource>).
    pub async fn authorize(&self, user: &User, a: &Attributes) -> Result<(), Denied> {
        if self.cfg.authorization_mode == "AlwaysAllow" {
            return Ok(());
        }
        let key = (user.clone(), a.clone());
        let now = Instant::now();
        if let Ok(c) = self.decisions.lock()
            && let Some((allowed, until)) = c.get(&key)
            && *until > now
        {
            return if *allowed {
                Ok(())
            } else {
                Err(Denied::Forbidden(forbidden_message(user, a)))
            };
        }
        let allowed = self.review(user, a, a.subresource).await?
            // Fine-grained subresources fall back to proxy, as upstream's KubeletFineGrainedAuthz.
            || (matches!(a.subresource, "healthz" | "pods" | "configz")
                && self.review(user, a, "proxy").await?);
        let ttl = if allowed {
            self.cfg.authorized_ttl
        } else {
            self.cfg.unauthorized_ttl
        };
        if let Ok(mut c) = self.decisions.lock() {
            c.retain(|_, (_, until)| *until > now);
            c.insert(key, (allowed, now + ttl));
        }
        if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden(forbidden_message(user, a)))
        }
    }

    async fn review(&self, user: &User, a: &Attributes, subresource: &str) -> Result<bool, Denied> {
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(a.verb.into()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.into()),
                    name: Some(self.cfg.node_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &sar)
            .await
            .map(|r| r.status.is_some_and(|s| s.allowed))
            .map_err(|e| Denied::Failed(format!("authorization webhook failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_upstream_subresources_and_verbs() {
        let cases = [
            (Method::POST, "/exec/ns/p/c", "create", "proxy"),
            (Method::GET, "/exec/ns/p/c", "get", "proxy"),
            (Method::POST, "/portForward/ns/p", "create", "proxy"),
            (Method::GET, "/containerLogs/ns/p/c", "get", "proxy"),
            (Method::GET, "/stats/summary", "get", "stats"),
            (Method::GET, "/metrics", "get", "metrics"),
            (Method::GET, "/metrics/resource", "get", "metrics"),
            (Method::GET, "/logs/syslog", "get", "log"),
            (Method::GET, "/healthz", "get", "healthz"),
            (Method::GET, "/pods", "get", "pods"),
            (Method::GET, "/configz", "get", "configz"),
            (Method::GET, "/runningpods/", "get", "proxy"),
            (Method::GET, "/metricsx", "get", "proxy"),
        ];
        for (m, p, verb, sub) in cases {
            assert_eq!(
                attributes(&m, p),
                Attributes {
                    verb,
                    subresource: sub
                },
                "{m} {p}"
            );
        }
    }

    #[test]
    fn forbidden_message_has_upstreams_shape() {
        let u = User {
            name: "alice".into(),
            groups: vec![],
        };
        assert_eq!(
            forbidden_message(&u, &attributes(&Method::POST, "/exec/a/b/c")),
            "Forbidden (user=alice, verb=create, resource=nodes, subresource=proxy)"
        );
    }
}
