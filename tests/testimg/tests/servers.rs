//! The test image's servers answer as the e2e suite expects: HTTP endpoints (including flipping
//! readiness and health), TCP and UDP echo, gRPC health, and the exit-code subcommands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server on {port} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn http_tcp_udp_and_grpc_servers_answer() {
    let (hp, tp, up, gp) = (free_port(), free_port(), free_port(), free_port());
    let _srv = Server(
        Command::new(env!("CARGO_BIN_EXE_testimg"))
            .args([
                "serve",
                "--http-port",
                &hp.to_string(),
                "--tcp-port",
                &tp.to_string(),
            ])
            .args([
                "--udp-port",
                &up.to_string(),
                "--grpc-port",
                &gp.to_string(),
                "--grpc-service",
                "svc",
            ])
            .spawn()
            .unwrap(),
    );
    wait_listening(hp);
    wait_listening(tp);
    wait_listening(gp);

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(http(hp, "/hostname"), (200, host.clone()));
    assert_eq!(http(hp, "/echo?msg=hello"), (200, "hello".into()));
    assert_eq!(http(hp, "/nope").0, 404);
    assert!(http(hp, "/clientip").1.starts_with("127.0.0.1:"));
    assert_eq!(http(hp, "/readyz").0, 200);
    assert_eq!(http(hp, "/readyz/set?code=503").0, 200);
    assert_eq!(http(hp, "/readyz").0, 503);
    assert_eq!(http(hp, "/healthz").0, 200);
    assert_eq!(http(hp, "/healthz/set?code=500").0, 200);
    assert_eq!(http(hp, "/healthz").0, 500);
    assert_eq!(http(hp, "/healthz/set?code=abc").0, 400);

    let mut t = TcpStream::connect(("127.0.0.1", tp)).unwrap();
    t.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    t.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.send_to(b"hostname", ("127.0.0.1", up)).unwrap();
    let mut buf = [0u8; 256];
    let n = u.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), host);
    u.send_to(b"echo me", ("127.0.0.1", up)).unwrap();
    let n = u.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"echo me");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{gp}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = HealthClient::new(ch);
        for (service, want) in [("", ServingStatus::Serving), ("svc", ServingStatus::Serving)] {
            let r = c
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.status, want as i32, "service {service:?}");
        }
        let unknown = c
            .check(HealthCheckRequest {
                service: "other".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    });

    // /exit answers, then the process ends with the requested code.
    assert_eq!(http(hp, "/exit?code=3").0, 200);
}

#[test]
fn exit_and_termination_message_subcommands() {
    let bin = env!("CARGO_BIN_EXE_testimg");
    assert_eq!(
        Command::new(bin).args(["exit", "7"]).status().unwrap().code(),
        Some(7)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("term");
    let st = Command::new(bin)
        .args(["termination-message", "bye now", "--code", "4", "--path"])
        .arg(&path)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(4));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "bye now");
    let env = Command::new(bin).arg("env").env("KNODE_X", "1").output().unwrap();
    assert!(
        String::from_utf8_lossy(&env.stdout)
            .lines()
            .any(|l| l == "KNODE_X=1")
    );
    let st = Command::new(bin).args(["sleep", "0.1"]).status().unwrap();
    assert_eq!(st.code(), Some(0));
}
