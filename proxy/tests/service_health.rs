#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The service health server on real loopback sockets: a listener per `healthCheckNodePort`,
//! 200/503 from the local endpoint count and the proxy's health, closed when the Service goes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube_proxy::model::HealthCheck;
use kube_proxy::service_health::ServiceHealthServer;

fn get(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn get_when_up(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(port) {
            Ok(r) => return r,
            Err(e) => {
                assert!(Instant::now() < deadline, "port {port} never answered: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn free_port() -> u16 {
    knode_harness::free_port().unwrap()
}

#[test]
fn health_check_node_port_answers_like_upstream_and_closes_with_the_service() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let mut server = rt.block_on(async {
        ServiceHealthServer::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Arc::new(move || h.load(Ordering::SeqCst)),
        )
    });
    let port = free_port();
    let key = ("default".to_string(), "lb".to_string());
    let mut wanted = BTreeMap::from([(
        key.clone(),
        HealthCheck {
            port,
            local_endpoints: 2,
        },
    )]);
    rt.block_on(async { server.sync(&wanted) });
    let r = get_when_up(port);
    println!("{r}");
    assert!(
        r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"),
        "{r}"
    );
    assert!(r.contains("x-load-balancing-endpoint-weight: 2"), "{r}");
    assert!(r.contains("\"localEndpoints\": 2"), "{r}");
    assert!(r.contains("\"serviceProxyHealthy\": true"), "{r}");
    assert!(r.contains("\"namespace\": \"default\""), "{r}");

    // No local endpoint any more: 503.
    wanted.get_mut(&key).unwrap().local_endpoints = 0;
    rt.block_on(async { server.sync(&wanted) });
    let r = get(port).unwrap();
    assert!(r.contains(" 503 "), "{r}");
    assert!(r.contains("\"localEndpoints\": 0"), "{r}");

    // Local endpoints but the proxy itself unhealthy: 503 too.
    wanted.get_mut(&key).unwrap().local_endpoints = 1;
    rt.block_on(async { server.sync(&wanted) });
    healthy.store(false, Ordering::SeqCst);
    let r = get(port).unwrap();
    assert!(
        r.contains(" 503 ") && r.contains("\"serviceProxyHealthy\": false"),
        "{r}"
    );

    // The Service loses its health check: the port closes.
    rt.block_on(async { server.sync(&BTreeMap::new()) });
    assert!(server.ports().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(port).is_ok() {
        assert!(Instant::now() < deadline, "port {port} still open");
        std::thread::sleep(Duration::from_millis(20));
    }
}
