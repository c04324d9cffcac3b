//! Service-account tokens for projected volumes (upstream's token manager): tokens come from the
//! TokenRequest API, are cached per (service account, audience, lifetime, bound pod), and are
//! requested again once 80 % of their lifetime has passed (or 24 h, whichever comes first), so the
//! periodic volume resync rewrites the file with a fresh token well before the old one expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

/// Tokens older than this are refreshed whatever their lifetime (upstream's `maxTTL`).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Whether a token issued for `expiration_seconds` and expiring at `expires` must be requested
/// again at `now`: within the last 20 % of its lifetime, or older than [`MAX_TTL`]. `jitter`
/// (upstream: up to 10 s) spreads the refreshes of many pods.
pub fn needs_refresh(expires: Timestamp, expiration_seconds: i64, now: Timestamp, jitter: Duration) -> bool {
    let secs = expiration_seconds.max(0);
    let jitter = jitter.as_secs() as i64;
    let exp = expires.as_second();
    let issued = exp - secs;
    let now = now.as_second();
    now > issued + MAX_TTL.as_secs() as i64 - jitter || now > exp - secs * 20 / 100 - jitter
}

/// When a token with this expiry and lifetime will next need a refresh (without jitter).
pub fn refresh_at(expires: Timestamp, expiration_seconds: i64) -> Timestamp {
    let secs = expiration_seconds.max(0);
    let issued = expires.as_second() - secs;
    let at = (expires.as_second() - secs * 20 / 100).min(issued + MAX_TTL.as_secs() as i64);
    Timestamp::from_second(at).unwrap_or(expires)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    service_account: String,
    audience: String,
    expiration_seconds: i64,
    pod_uid: String,
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    expires: Timestamp,
    expiration_seconds: i64,
}

/// The node's token cache.
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<Key, Cached>>,
}

impl TokenCache {
    /// A token for the pod's service account: the cached one unless it needs a refresh.
    pub async fn get(
        &self,
        client: &kube::Client,
        pod: &Pod,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let key = Key {
            namespace: ns.clone(),
            service_account: sa.clone(),
            audience: audience.unwrap_or_default().to_string(),
            expiration_seconds,
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        let jitter = Duration::from_millis(u64::from(
            Timestamp::now().subsec_nanosecond().unsigned_abs() % 10_000,
        ));
        if let Some(c) = self.lock().get(&key)
            && !needs_refresh(c.expires, c.expiration_seconds, Timestamp::now(), jitter)
        {
            return Ok(c.token.clone());
        }
        let req: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                "expirationSeconds": expiration_seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                    "name": pod.metadata.name, "uid": pod.metadata.uid}}
        }))
        .map_err(|e| e.to_string())?;
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let resp: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &req)
            .await
            .map_err(|e| {
                format!("failed to fetch token: requesting a token for service account {ns}/{sa}: {e}")
            })?;
        let status = resp
            .status
            .ok_or_else(|| format!("failed to fetch token: the TokenRequest for {ns}/{sa} has no status"))?;
        // The server may grant another lifetime than asked for (upstream's extended tokens).
        let granted = resp.spec.expiration_seconds.unwrap_or(expiration_seconds);
        tracing::info!(
            service_account = format!("{ns}/{sa}"),
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            expires = %status.expiration_timestamp.0,
            refresh_at = %refresh_at(status.expiration_timestamp.0, granted),
            "service account token issued"
        );
        self.lock().insert(
            key,
            Cached {
                token: status.token.clone(),
                expires: status.expiration_timestamp.0,
                expiration_seconds: granted,
            },
        );
        Ok(status.token)
    }

    /// Drops the tokens bound to a pod (it is gone).
    pub fn forget_pod(&self, uid: &str) {
        self.lock().retain(|k, _| k.pod_uid != uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        crate::lock::lock(&self.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn refreshes_after_eighty_percent_of_the_lifetime() {
        // Issued at 1000 for 600 s: expires at 1600, refresh from 1480 on.
        let exp = ts(1600);
        assert!(!needs_refresh(exp, 600, ts(1000), Duration::ZERO));
        assert!(!needs_refresh(exp, 600, ts(1479), Duration::ZERO));
        assert!(!needs_refresh(exp, 600, ts(1480), Duration::ZERO));
        assert!(needs_refresh(exp, 600, ts(1481), Duration::ZERO));
        // Jitter moves the refresh earlier, never later.
        assert!(needs_refresh(exp, 600, ts(1475), Duration::from_secs(10)));
        assert_eq!(refresh_at(exp, 600), ts(1480));
        // The default projection's 3607 s token: refreshed after ~48 min.
        assert_eq!(refresh_at(ts(3607), 3607).as_second(), 3607 - 721);
    }

    #[test]
    fn long_lived_tokens_are_refreshed_after_a_day() {
        let year = 365 * 24 * 3600;
        let exp = ts(year);
        assert!(!needs_refresh(exp, year, ts(3600), Duration::ZERO));
        assert!(needs_refresh(exp, year, ts(24 * 3600 + 1), Duration::ZERO));
        assert_eq!(refresh_at(exp, year), ts(24 * 3600));
    }
}
