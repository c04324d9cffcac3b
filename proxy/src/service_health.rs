//! The service health server (upstream pkg/proxy/healthcheck/service_health.go): for every
//! Service with `externalTrafficPolicy: Local` and a `healthCheckNodePort`, an HTTP listener on
//! that port telling load balancers whether this node has local endpoints for it.
//!
//! Any path answers `200` when the node has at least one ready local endpoint and the proxy is
//! healthy, else `503`, with upstream's JSON body and `X-Load-Balancing-Endpoint-Weight` header.
//! [`reply`] is the pure part; [`ServiceHealthServer`] keeps one listener task per port.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::{Reply, serve};
use crate::model::{HealthCheck, ServiceKey};

/// The answer for one Service, exactly as upstream formats it.
pub fn reply(service: &ServiceKey, local_endpoints: usize, proxy_healthy: bool) -> Reply {
    let status = if local_endpoints != 0 && proxy_healthy {
        200
    } else {
        503
    };
    Reply {
        status,
        content_type: "application/json",
        body: format!(
            "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
            service.0, service.1
        ),
        headers: vec![("X-Load-Balancing-Endpoint-Weight", local_endpoints.to_string())],
    }
}

/// What each port currently reports.
type Entries = BTreeMap<u16, (ServiceKey, usize)>;

/// Listeners for the health check node ports; [`Self::sync`] opens and closes them.
pub struct ServiceHealthServer {
    bind_ip: IpAddr,
    entries: Arc<Mutex<Entries>>,
    tasks: BTreeMap<u16, tokio::task::JoinHandle<()>>,
    proxy_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl ServiceHealthServer {
    /// Listens on `bind_ip` (upstream: the node's addresses; `0.0.0.0` serves them all);
    /// `proxy_healthy` is the proxy's own `/healthz` state.
    pub fn new(bind_ip: IpAddr, proxy_healthy: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        ServiceHealthServer {
            bind_ip,
            entries: Arc::new(Mutex::new(BTreeMap::new())),
            tasks: BTreeMap::new(),
            proxy_healthy,
        }
    }

    /// Brings the listeners to `wanted` (every Service with a health check). Must run inside a
    /// tokio runtime. A port that cannot be bound is retried every 5 s (logged).
    pub fn sync(&mut self, wanted: &BTreeMap<ServiceKey, HealthCheck>) {
        let mut entries: Entries = BTreeMap::new();
        for (key, hc) in wanted {
            if let Some((other, _)) = entries.get(&hc.port) {
                tracing::warn!(port = hc.port, service = %format!("{}/{}", key.0, key.1), other = %format!("{}/{}", other.0, other.1), "healthCheckNodePort already used by another Service");
                continue;
            }
            entries.insert(hc.port, (key.clone(), hc.local_endpoints));
        }
        self.tasks.retain(|port, task| {
            let keep = entries.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in entries.keys() {
            if self.tasks.contains_key(port) {
                continue;
            }
            let addr = SocketAddr::new(self.bind_ip, *port);
            let shared = self.entries.clone();
            let healthy = self.proxy_healthy.clone();
            let port = *port;
            let handler = Arc::new(move |_path: &str| {
                let entry = shared.lock().ok().and_then(|e| e.get(&port).cloned());
                match entry {
                    Some((key, count)) => reply(&key, count, healthy()),
                    None => Reply::not_found(),
                }
            });
            let task = tokio::spawn(async move {
                loop {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => {
                            tracing::info!(address = %addr, "serving a service health check");
                            serve(l, handler).await;
                            return;
                        }
                        Err(e) => {
                            tracing::error!(address = %addr, error = %e, "cannot serve a service health check; retrying in 5 s");
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                    }
                }
            });
            self.tasks.insert(port, task);
        }
        if let Ok(mut e) = self.entries.lock() {
            *e = entries;
        }
    }

    /// Ports currently served.
    pub fn ports(&self) -> Vec<u16> {
        self.tasks.keys().copied().collect()
    }
}

impl Drop for ServiceHealthServer {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_matches_upstream() {
        let key = ("default".to_string(), "web".to_string());
        let r = reply(&key, 2, true);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        assert_eq!(
            r.headers,
            vec![("X-Load-Balancing-Endpoint-Weight", "2".to_string())]
        );
        assert_eq!(reply(&key, 0, true).status, 503);
        assert_eq!(reply(&key, 3, false).status, 503);
    }
}
