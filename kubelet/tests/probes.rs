#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Probe executors and the probe manager against real local servers: the test image program
//! serving HTTP, TCP and gRPC health on free loopback ports, plus tiny in-test servers for
//! redirects and HTTPS.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, GRPCAction, HTTPGetAction, HTTPHeader, Pod, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelet::probes::{
    ProbeAction, ProbeEvent, ProbeKind, ProbeManager, ProbeOutcome, ProbeResults, grpc, http,
    probe_grace_period_seconds, tcp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TESTIMG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/x86_64-unknown-linux-gnu/testimg/testimg"
);
const T: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    knode_harness::free_port().unwrap()
}

/// The test image's servers on free ports, killed on drop.
struct Servers {
    child: Child,
    http: u16,
    tcp: u16,
    grpc: u16,
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn servers() -> Servers {
    let (http, tcp, grpc) = (free_port(), free_port(), free_port());
    let child = Command::new(TESTIMG)
        .args([
            "serve",
            "--http-port",
            &http.to_string(),
            "--tcp-port",
            &tcp.to_string(),
        ])
        .args(["--grpc-port", &grpc.to_string(), "--grpc-service", "svc"])
        .stdout(Stdio::null())
        .spawn()
        .expect("run testimg (scripts/build-testimg.sh builds it)");
    let s = Servers {
        child,
        http,
        tcp,
        grpc,
    };
    for port in [http, tcp, grpc] {
        for _ in 0..100 {
            if tcp::probe("127.0.0.1", port, T).await == ProbeOutcome::Success {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    s
}

fn target(port: u16, path: &str) -> http::HttpTarget {
    http::HttpTarget {
        https: false,
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
        headers: vec![],
    }
}

async fn get(port: u16, path: &str) {
    assert_eq!(http::probe(&target(port, path), T).await, ProbeOutcome::Success);
}

#[tokio::test]
async fn http_probe_success_failure_and_refused() {
    let s = servers().await;
    assert_eq!(
        http::probe(&target(s.http, "/healthz"), T).await,
        ProbeOutcome::Success
    );
    assert_eq!(
        http::probe(&target(s.http, "healthz"), T).await,
        ProbeOutcome::Success
    );
    get(s.http, "/healthz/set?code=500").await;
    assert_eq!(
        http::probe(&target(s.http, "/healthz"), T).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        http::probe(&target(s.http, "/nope"), T).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 404".into())
    );
    let dead = free_port();
    assert_eq!(
        http::probe(&target(dead, "/healthz"), T).await,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{dead}/healthz\": dial tcp 127.0.0.1:{dead}: connect: connection refused"
        ))
    );
}

/// A one-shot-per-connection HTTP server answering every request with `respond(request)`;
/// returns its port and the requests it saw.
async fn raw_server(
    respond: impl Fn(&str, u16) -> String + Send + Sync + 'static,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let reply = respond(&req, port);
            let _ = tx.send(req);
            let _ = sock.write_all(reply.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (port, rx)
}

fn redirect(location: &str) -> String {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}
const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

#[tokio::test]
async fn http_probe_headers_and_host_override() {
    let (port, mut seen) = raw_server(|_, _| OK.to_string()).await;
    let mut t = target(port, "/x");
    assert_eq!(http::probe(&t, T).await, ProbeOutcome::Success);
    let req = seen.recv().await.unwrap().to_lowercase();
    assert!(req.starts_with("get /x http/1.1\r\n"), "{req}");
    assert!(
        req.contains(&format!(
            "user-agent: kube-probe/{}\r\n",
            knode_config::version::MAJOR_MINOR
        )),
        "{req}"
    );
    assert!(req.contains("accept: */*\r\n"), "{req}");
    assert!(req.contains(&format!("host: 127.0.0.1:{port}\r\n")), "{req}");

    t.headers = vec![
        ("Host".into(), "example.test".into()),
        ("X-Custom".into(), "v1".into()),
        ("User-Agent".into(), "mine".into()),
    ];
    assert_eq!(http::probe(&t, T).await, ProbeOutcome::Success);
    let req = seen.recv().await.unwrap().to_lowercase();
    assert!(req.contains("host: example.test\r\n"), "{req}");
    assert!(req.contains("x-custom: v1\r\n"), "{req}");
    assert!(req.contains("user-agent: mine\r\n"), "{req}");
    assert!(!req.contains("kube-probe"), "{req}");
}

#[tokio::test]
async fn http_probe_follows_same_host_redirects() {
    // /a → /b → 200: followed.
    let (port, mut seen) = raw_server(|req, _| {
        if req.starts_with("GET /a ") {
            redirect("/b")
        } else {
            OK.to_string()
        }
    })
    .await;
    assert_eq!(http::probe(&target(port, "/a"), T).await, ProbeOutcome::Success);
    assert!(seen.recv().await.unwrap().starts_with("GET /a "));
    assert!(seen.recv().await.unwrap().starts_with("GET /b "));

    // Redirect to another host: not followed, the 302 counts as success.
    let (port, mut seen) = raw_server(|_, _| redirect("http://other.invalid/x")).await;
    assert_eq!(http::probe(&target(port, "/"), T).await, ProbeOutcome::Success);
    seen.recv().await.unwrap();
    assert!(seen.try_recv().is_err());

    // Same-host redirect loop: stops after 10 requests.
    let (port, mut seen) = raw_server(|_, port| redirect(&format!("http://127.0.0.1:{port}/loop"))).await;
    assert_eq!(
        http::probe(&target(port, "/loop"), T).await,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects"
        ))
    );
    let mut n = 0;
    while seen.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 10);

    // A redirect to a failing page fails.
    let (port, _seen) = raw_server(|req, _| {
        if req.starts_with("GET /a ") {
            redirect("/b")
        } else {
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
        }
    })
    .await;
    assert_eq!(
        http::probe(&target(port, "/a"), T).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
}

#[tokio::test]
async fn http_probe_times_out() {
    // Accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            socks.push(s);
        }
    });
    let out = http::probe(&target(port, "/slow"), Duration::from_millis(300)).await;
    assert_eq!(
        out,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    );
    holder.abort();
}

#[tokio::test]
async fn tcp_probe_open_and_refused() {
    let s = servers().await;
    assert_eq!(tcp::probe("127.0.0.1", s.tcp, T).await, ProbeOutcome::Success);
    let dead = free_port();
    assert_eq!(
        tcp::probe("127.0.0.1", dead, T).await,
        ProbeOutcome::Failure(format!("dial tcp 127.0.0.1:{dead}: connect: connection refused"))
    );
}

#[tokio::test]
async fn grpc_probe_serving_unknown_service_and_refused() {
    let s = servers().await;
    assert_eq!(
        grpc::probe("127.0.0.1", s.grpc, None, T).await,
        ProbeOutcome::Success
    );
    assert_eq!(
        grpc::probe("127.0.0.1", s.grpc, Some("svc"), T).await,
        ProbeOutcome::Success
    );
    match grpc::probe("127.0.0.1", s.grpc, Some("nope"), T).await {
        ProbeOutcome::Failure(m) => assert!(
            m.starts_with("error: health rpc probe failed: rpc error: code = NotFound desc = "),
            "{m}"
        ),
        other => panic!("unknown service must fail: {other:?}"),
    }
    // An HTTP/1 server is not a gRPC health server.
    assert!(!grpc::probe("127.0.0.1", s.http, None, T).await.is_success());
    let dead = free_port();
    assert_eq!(
        grpc::probe("127.0.0.1", dead, None, T).await,
        ProbeOutcome::Failure(format!(
            "timeout: failed to connect service \"127.0.0.1:{dead}\" within 2s: context deadline exceeded"
        ))
    );
}

fn probe_http(port: IntOrString, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port,
            path: Some(path.into()),
            http_headers: Some(vec![HTTPHeader {
                name: "X-A".into(),
                value: "b".into(),
            }]),
            ..Default::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    }
}

#[test]
fn actions_resolve_named_ports_and_default_host() {
    let c = Container {
        name: "app".into(),
        ports: Some(vec![ContainerPort {
            name: Some("web".into()),
            container_port: 8080,
            ..Default::default()
        }]),
        ..Default::default()
    };
    let a = ProbeAction::from_probe(
        &probe_http(IntOrString::String("web".into()), "/h"),
        &c,
        "10.244.0.5",
    )
    .unwrap();
    let ProbeAction::Http(t) = a else { panic!("{a:?}") };
    assert_eq!(t.url(), "http://10.244.0.5:8080/h");
    assert_eq!(t.headers, vec![("X-A".to_string(), "b".to_string())]);
    let err = ProbeAction::from_probe(
        &probe_http(IntOrString::String("nope".into()), "/"),
        &c,
        "10.0.0.1",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "httpGet.port: couldn't find port nope in container app"
    );
    let tcp = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(99),
            host: Some("1.2.3.4".into()),
        }),
        ..Default::default()
    };
    assert_eq!(
        ProbeAction::from_probe(&tcp, &c, "10.0.0.1").unwrap(),
        ProbeAction::Tcp {
            host: "1.2.3.4".into(),
            port: 99
        }
    );
    let g = Probe {
        grpc: Some(GRPCAction {
            port: 70000,
            service: None,
        }),
        ..Default::default()
    };
    assert!(ProbeAction::from_probe(&g, &c, "10.0.0.1").is_err());
    assert!(ProbeAction::from_probe(&Probe::default(), &c, "10.0.0.1").is_err());
}

fn manager() -> (ProbeManager, tokio::sync::mpsc::UnboundedReceiver<String>) {
    // HTTP/TCP/gRPC probes never touch containerd; a lazy channel to nowhere is enough.
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    let containerd = kubelet::runtime::Containerd::new(channel, "knode-probes-test").unwrap();
    ProbeManager::new(containerd, std::env::temp_dir())
}

async fn wait_for(
    m: &ProbeManager,
    id: &str,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    want: ProbeResults,
) {
    for _ in 0..30 {
        if m.results(id) == want {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    }
    panic!("results of {id}: {:?}, want {want:?}", m.results(id));
}

#[tokio::test]
async fn manager_tracks_readiness_liveness_and_notifies() {
    let s = servers().await;
    let (m, mut rx) = manager();
    let pod = Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let c = Container {
        name: "app".into(),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(s.http),
            ..Default::default()
        }]),
        readiness_probe: Some(probe_http(IntOrString::String("http".into()), "/readyz")),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(s.tcp)),
                host: None,
            }),
            period_seconds: Some(1),
            ..Default::default()
        }),
        startup_probe: Some(Probe {
            grpc: Some(GRPCAction {
                port: i32::from(s.grpc),
                service: None,
            }),
            period_seconds: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    m.add_container(
        &pod,
        &c,
        "cid-1",
        "127.0.0.1".into(),
        k8s_openapi::jiff::Timestamp::now(),
    );
    assert_eq!(m.pod_of("cid-1").as_deref(), Some("uid-1"));
    let ready = ProbeResults {
        ready: Some(true),
        started: Some(true),
        live: Some(true),
    };
    wait_for(&m, "cid-1", &mut rx, ready).await;

    get(s.http, "/readyz/set?code=500").await;
    wait_for(
        &m,
        "cid-1",
        &mut rx,
        ProbeResults {
            ready: Some(false),
            ..ready
        },
    )
    .await;
    get(s.http, "/readyz/set?code=200").await;
    wait_for(&m, "cid-1", &mut rx, ready).await;

    m.remove_container("cid-1");
    assert_eq!(m.results("cid-1"), ProbeResults::default());
    assert!(m.container_ids().is_empty());

    // A container without probes is not tracked.
    m.add_container(
        &pod,
        &Container::default(),
        "cid-2",
        "127.0.0.1".into(),
        k8s_openapi::jiff::Timestamp::now(),
    );
    assert!(m.container_ids().is_empty());
}

#[tokio::test]
async fn manager_liveness_failure_reports_dead() {
    let s = servers().await;
    let (m, mut rx) = manager();
    let pod = Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            uid: Some("uid-2".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let c = Container {
        name: "app".into(),
        liveness_probe: Some(Probe {
            failure_threshold: Some(2),
            ..probe_http(IntOrString::Int(i32::from(s.http)), "/healthz")
        }),
        ..Default::default()
    };
    let mut events = m.events();
    m.add_container(
        &pod,
        &c,
        "cid-3",
        "127.0.0.1".into(),
        k8s_openapi::jiff::Timestamp::now(),
    );
    assert_eq!(m.results("cid-3").live, Some(true));
    get(s.http, "/healthz/set?code=500").await;
    let uid = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap();
    assert_eq!(uid.as_deref(), Some("uid-2"));
    assert_eq!(
        m.results("cid-3"),
        ProbeResults {
            ready: None,
            started: None,
            live: Some(false)
        }
    );
    // Each failed run is an Unhealthy event (threshold 2: two of them).
    for _ in 0..2 {
        let e = events.recv().await.unwrap();
        assert_eq!(
            (e.pod_uid.as_str(), e.container.as_str(), e.container_id.as_str()),
            ("uid-2", "app", "cid-3")
        );
        assert_eq!(
            e.event_message(),
            "Liveness probe failed: HTTP probe failed with statuscode: 500"
        );
        assert_eq!(ProbeEvent::REASON, "Unhealthy");
    }
}

#[test]
fn liveness_grace_period_overrides_the_pods() {
    let c = Container {
        liveness_probe: Some(Probe {
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            termination_grace_period_seconds: Some(7),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        probe_grace_period_seconds(ProbeKind::Liveness, &c, Some(30)),
        Some(5)
    );
    assert_eq!(
        probe_grace_period_seconds(ProbeKind::Readiness, &c, Some(30)),
        Some(30)
    );
    assert_eq!(
        probe_grace_period_seconds(ProbeKind::Startup, &c, Some(30)),
        Some(30)
    );
    assert_eq!(probe_grace_period_seconds(ProbeKind::Startup, &c, None), None);
}

#[tokio::test]
async fn https_probe_skips_certificate_verification() {
    use std::sync::Arc;
    let key = rcgen::generate_simple_self_signed(vec!["not-this-host.invalid".to_string()]).unwrap();
    let cert = key.cert.der().clone();
    let pkey = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], pkey)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut paths = Vec::new();
        for _ in 0..2 {
            let (sock, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(sock).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tls.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let reply = if req.starts_with("GET /bad ") {
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                OK
            };
            tls.write_all(reply.as_bytes()).await.unwrap();
            let _ = tls.shutdown().await;
            paths.push(req.lines().next().unwrap_or_default().to_string());
        }
        paths
    });
    let mut t = target(port, "/good");
    t.https = true;
    assert_eq!(http::probe(&t, T).await, ProbeOutcome::Success);
    t.path = "/bad".into();
    assert_eq!(
        http::probe(&t, T).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        server.await.unwrap(),
        vec!["GET /good HTTP/1.1", "GET /bad HTTP/1.1"]
    );
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Benchmark: 100 containers × 3 probes at period 1 s (TCP startup, then HTTP readiness and
/// HTTP liveness: 200 HTTP probes per second once started), all on one single-threaded runtime so the thread's CPU
/// time is the probing cost. Prints cores used; 3 s window by default, 20 s with KNODE_BENCH=1.
#[test]
fn bench_300_probes_at_1s_period() {
    let window = if std::env::var_os("KNODE_BENCH").is_some() {
        20
    } else {
        3
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = servers().await;
            let (m, _rx) = manager();
            let c = Container {
                name: "app".into(),
                readiness_probe: Some(probe_http(IntOrString::Int(i32::from(s.http)), "/readyz")),
                liveness_probe: Some(probe_http(IntOrString::Int(i32::from(s.http)), "/healthz")),
                startup_probe: Some(Probe {
                    tcp_socket: Some(TCPSocketAction {
                        port: IntOrString::Int(i32::from(s.tcp)),
                        host: None,
                    }),
                    period_seconds: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let pod = Pod::default();
            for i in 0..100 {
                m.add_container(&pod, &c, &format!("bench-{i}"), "127.0.0.1".into(), k8s_openapi::jiff::Timestamp::now());
            }
            // Let every container pass its startup probe and become ready.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let cpu0 = thread_cpu();
            let t0 = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(window)).await;
            let cores = (thread_cpu() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
            let ready = (0..100).filter(|i| m.results(&format!("bench-{i}")).ready == Some(true)).count();
            println!("probes: 100 containers x 3 probes at 1s period: {cores:.4} cores (probing thread, {window}s window), {ready}/100 ready");
            assert_eq!(ready, 100);
        });
    })
    .join()
    .unwrap();
}
