//! `testimg`: the program inside knode's test image (`knode/testimg`).
//!
//! Like upstream's agnhost it is one static binary with subcommands that e2e tests use as workloads:
//! servers to probe and load-balance to, processes that exit, sleep, allocate memory or write a
//! termination message. Every behaviour is observable from outside (HTTP answers, exit codes, files),
//! so tests assert on what really happened inside a container.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UdpSocket};

#[derive(Parser)]
#[command(
    name = "testimg",
    about = "knode test image: servers and behaviours for e2e tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run servers: HTTP (always), and optionally TCP echo, UDP echo and gRPC health.
    Serve(ServeArgs),
    /// Sleep for SECONDS ("infinity" for ever). As PID 1 it ignores SIGTERM unless --exit-on-sigterm.
    Sleep {
        seconds: String,
        /// Install a SIGTERM handler that exits 0 (a well-behaved app).
        #[arg(long)]
        exit_on_sigterm: bool,
    },
    /// Exit with CODE.
    Exit { code: i32 },
    /// Write MESSAGE to PATH (default /dev/termination-log), then exit with --code.
    TerminationMessage {
        message: String,
        #[arg(long, default_value = "/dev/termination-log")]
        path: String,
        #[arg(long, default_value_t = 0)]
        code: i32,
    },
    /// Print the environment, one KEY=VALUE per line, sorted.
    Env,
    /// Print the hostname.
    Hostname,
    /// Allocate and touch MIB mebibytes, then hold them for --hold seconds (for OOM tests).
    /// Measure TCP round trips to an echo server (`serve --tcp-port`): COUNT one-byte exchanges
    /// over one connection; prints `p50_us=… p99_us=… count=…`.
    TcpRtt {
        /// host:port of the echo server.
        addr: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    AllocMem {
        mib: usize,
        #[arg(long, default_value_t = 3600)]
        hold: u64,
        /// Milliseconds to wait before allocating (containerd 1.6's shim starts watching a
        /// container for OOM only after its process started; an earlier OOM sends no event).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// TCP echo port (0: off).
    #[arg(long, default_value_t = 0)]
    tcp_port: u16,
    /// UDP echo port (0: off). A datagram "hostname" is answered with the hostname.
    #[arg(long, default_value_t = 0)]
    udp_port: u16,
    /// gRPC health (grpc.health.v1) port (0: off).
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// Service name reported SERVING by the gRPC health server besides "".
    #[arg(long, default_value = "")]
    grpc_service: String,
    /// /healthz answers 500 once this many seconds have passed since start (0: never).
    #[arg(long, default_value_t = 0)]
    healthz_fail_after: u64,
    /// Initial /readyz status code.
    #[arg(long, default_value_t = 200)]
    readyz: u16,
}

/// Median and 99th percentile (µs) of `count` one-byte round trips to an echo server at `addr`.
fn tcp_rtt(addr: &str, count: usize) -> std::io::Result<(u128, u128)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut samples = Vec::with_capacity(count);
    let mut b = [0u8; 1];
    for i in 0..count + 10 {
        let t = Instant::now();
        s.write_all(b"x")?;
        s.read_exact(&mut b)?;
        // The first exchanges warm the path (ARP, conntrack, caches).
        if i >= 10 {
            samples.push(t.elapsed().as_micros());
        }
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Serve(args) => runtime().block_on(serve(args)),
        Cmd::Sleep {
            seconds,
            exit_on_sigterm,
        } => runtime().block_on(sleep(&seconds, exit_on_sigterm)),
        Cmd::Exit { code } => code,
        Cmd::TcpRtt { addr, count } => match tcp_rtt(&addr, count.max(1)) {
            Ok((p50, p99)) => {
                println!("p50_us={p50} p99_us={p99} count={count}");
                0
            }
            Err(e) => {
                eprintln!("testimg: tcp-rtt {addr}: {e}");
                1
            }
        },
        Cmd::TerminationMessage { message, path, code } => match std::fs::write(&path, message) {
            Ok(()) => code,
            Err(e) => {
                eprintln!("testimg: writing termination message to {path}: {e}");
                2
            }
        },
        Cmd::Env => {
            let env: BTreeMap<String, String> = std::env::vars().collect();
            for (k, v) in env {
                println!("{k}={v}");
            }
            0
        }
        Cmd::Hostname => {
            println!("{}", hostname());
            0
        }
        Cmd::AllocMem { mib, hold, delay_ms } => {
            std::thread::sleep(Duration::from_millis(delay_ms));
            alloc_mem(mib, hold)
        }
    };
    std::process::exit(code);
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("testimg: cannot start runtime: {e}");
            std::process::exit(2);
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

async fn sleep(seconds: &str, exit_on_sigterm: bool) -> i32 {
    let dur = if seconds == "infinity" {
        Duration::from_secs(u64::MAX / 4)
    } else {
        match seconds.parse::<f64>() {
            Ok(s) if s >= 0.0 => Duration::from_secs_f64(s),
            _ => {
                eprintln!("testimg: sleep: bad duration {seconds:?}");
                return 2;
            }
        }
    };
    if exit_on_sigterm {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("testimg: cannot handle SIGTERM: {e}");
                return 2;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(dur) => 0,
            _ = term.recv() => { println!("testimg: SIGTERM received, exiting"); 0 }
        }
    } else {
        tokio::time::sleep(dur).await;
        0
    }
}

fn alloc_mem(mib: usize, hold: u64) -> i32 {
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for i in 0..mib {
        // Touch every page so the memory is really charged to the cgroup.
        blocks.push(vec![(i % 251) as u8 + 1; 1 << 20]);
    }
    println!("testimg: allocated {mib} MiB");
    std::thread::sleep(Duration::from_secs(hold));
    drop(blocks);
    0
}

/// Mutable state the HTTP handlers share.
struct HttpState {
    started: Instant,
    healthz_fail_after: u64,
    healthz: AtomicU16,
    readyz: AtomicU16,
}

async fn serve(args: ServeArgs) -> i32 {
    let state = Arc::new(HttpState {
        started: Instant::now(),
        healthz_fail_after: args.healthz_fail_after,
        healthz: AtomicU16::new(200),
        readyz: AtomicU16::new(args.readyz),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let http = match TcpListener::bind(("0.0.0.0", args.http_port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("testimg: bind http port {}: {e}", args.http_port);
            return 2;
        }
    };
    println!("testimg: http on :{}", args.http_port);
    tasks.spawn(http_server(http, state));
    if args.tcp_port != 0 {
        match TcpListener::bind(("0.0.0.0", args.tcp_port)).await {
            Ok(l) => {
                println!("testimg: tcp echo on :{}", args.tcp_port);
                tasks.spawn(tcp_echo(l));
            }
            Err(e) => {
                eprintln!("testimg: bind tcp port {}: {e}", args.tcp_port);
                return 2;
            }
        }
    }
    if args.udp_port != 0 {
        match UdpSocket::bind(("0.0.0.0", args.udp_port)).await {
            Ok(s) => {
                println!("testimg: udp echo on :{}", args.udp_port);
                tasks.spawn(udp_echo(s));
            }
            Err(e) => {
                eprintln!("testimg: bind udp port {}: {e}", args.udp_port);
                return 2;
            }
        }
    }
    if args.grpc_port != 0 {
        println!("testimg: grpc health on :{}", args.grpc_port);
        tasks.spawn(grpc_health(args.grpc_port, args.grpc_service.clone()));
    }
    // Any server ending is an error: servers run for ever.
    let _ = tasks.join_next().await;
    1
}

async fn http_server(listener: TcpListener, state: Arc<HttpState>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("testimg: accept: {e}");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle_http(&req, peer, &state)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn reply(code: u16, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

fn handle_http(req: &Request<Incoming>, peer: SocketAddr, state: &HttpState) -> Response<Full<Bytes>> {
    let set_code = |slot: &AtomicU16| match query_param(req, "code").and_then(|c| c.parse::<u16>().ok()) {
        Some(c) if (100..600).contains(&c) => {
            slot.store(c, Ordering::SeqCst);
            reply(200, format!("set to {c}\n"))
        }
        _ => reply(400, "need ?code=<100..599>\n".into()),
    };
    match req.uri().path() {
        "/" => reply(200, format!("testimg {}\n", hostname())),
        "/hostname" => reply(200, hostname()),
        "/clientip" => reply(200, peer.to_string()),
        "/echo" => reply(200, query_param(req, "msg").unwrap_or_default().to_string()),
        "/healthz" => {
            let expired = state.healthz_fail_after > 0
                && state.started.elapsed() >= Duration::from_secs(state.healthz_fail_after);
            let code = if expired {
                500
            } else {
                state.healthz.load(Ordering::SeqCst)
            };
            reply(code, format!("healthz {code}\n"))
        }
        "/healthz/set" => set_code(&state.healthz),
        "/readyz" => {
            let code = state.readyz.load(Ordering::SeqCst);
            reply(code, format!("readyz {code}\n"))
        }
        "/readyz/set" => set_code(&state.readyz),
        "/exit" => {
            let code = query_param(req, "code")
                .and_then(|c| c.parse::<i32>().ok())
                .unwrap_or(0);
            // Answer first, then exit: the caller sees the reply before the container dies.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::process::exit(code);
            });
            reply(200, format!("exiting {code}\n"))
        }
        _ => reply(404, "not found\n".into()),
    }
}

async fn tcp_echo(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn udp_echo(sock: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let msg = &buf[..n];
        let answer = if msg.trim_ascii() == b"hostname" {
            hostname().into_bytes()
        } else {
            msg.to_vec()
        };
        let _ = sock.send_to(&answer, peer).await;
    }
}

async fn grpc_health(port: u16, service: String) {
    let (reporter, health) = tonic_health::server::health_reporter();
    if !service.is_empty() {
        reporter
            .set_service_status(&service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(health)
        .serve(addr)
        .await
    {
        eprintln!("testimg: grpc server: {e}");
    }
}
