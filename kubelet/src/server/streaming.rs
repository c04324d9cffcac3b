//! `/exec`, `/attach` and `/portForward`: the kubelet's streaming endpoints over SPDY/3.1 (what
//! kube-apiserver speaks to kubelets; streams named by their `streamType` header) and WebSocket
//! (`v5.channel.k8s.io` / `v4.channel.k8s.io`: the first byte of each message is the channel —
//! 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, and in v5 255 = "close this channel"), plus the
//! `SPDY/3.1+portforward.k8s.io` tunnel (a SPDY session carried in binary messages, what kubectl
//! 1.31+ uses for port-forward).
//!
//! The remote-command protocol is v4 (v5 on WebSocket): the error stream carries a `metav1.Status`
//! (`NonZeroExitCode` with an `ExitCode` cause for a failed command); the resize stream carries
//! `{"Width":..,"Height":..}` objects.
//!
//! Attach: containerd 1.6 has no way to join an existing task's stdio from another client, and the
//! kubelet owns the task's output FIFOs through its log writer. So attach streams the container's
//! output by following its CRI log file from the moment of attaching (records demultiplexed back
//! into stdout and stderr), and ends when the task exits. Input goes into the container's stdin
//! FIFO (`stdin: true`, see `crate::runtime::stdin`), and a TTY attach resizes the container's
//! terminal through Tasks.ResizePty.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use super::{spdy, websocket};
use crate::runtime::Containerd;
use crate::runtime::container::{ContainerService, ListedContainer, TaskState};
use crate::runtime::exec::{ExecStreams, TermSize, exec_stream};

/// Remote-command protocols, most preferred first.
pub const SPDY_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// WebSocket subprotocols for exec and attach, as upstream's kubelet serves them
/// (`remotecommand/websocket.go`): binary or base64 framing, v4+ or pre-v4 status.
pub const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// How a negotiated WebSocket channel protocol frames messages and reports the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsFraming {
    /// v5: channel 255 closes a channel (stdin's end of input).
    pub close_signal: bool,
    /// base64 variants: text messages, the channel as an ASCII digit, the data base64-encoded.
    pub base64: bool,
    /// v4+: the error channel carries a `metav1.Status`; before v4, only a failure's message.
    pub status_object: bool,
}

impl WsFraming {
    pub fn of(protocol: &str) -> WsFraming {
        let v4_or_later = protocol.starts_with("v4.") || protocol.starts_with("v5.");
        WsFraming {
            close_signal: protocol.starts_with("v5."),
            base64: protocol.contains("base64."),
            status_object: v4_or_later,
        }
    }
}
/// The SPDY port-forward protocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The port-forward tunnel subprotocol (SPDY inside WebSocket).
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// Native WebSocket port-forward (upstream's `portforward/websocket.go`, binary channels).
pub const PORT_FORWARD_WS: &str = "v4.channel.k8s.io";
/// How long the client has to open its streams (upstream's streamCreationTimeout default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the streaming endpoints reach: the runtime and where FIFOs and logs are.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub containerd: Containerd,
    pub fifo_dir: PathBuf,
}

/// Options of an exec or attach request (kubelet query `command`, `input`, `output`, `error`,
/// `tty`; the API's `stdin`/`stdout`/`stderr` names are accepted too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamOptions {
    /// From the query pairs (commands repeat).
    pub fn from_query(q: &[(String, String)]) -> Self {
        let flag = |names: &[&str]| {
            q.iter()
                .any(|(k, v)| names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True"))
        };
        let tty = flag(&["tty"]);
        StreamOptions {
            command: q
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdin: flag(&["input", "stdin"]),
            stdout: flag(&["output", "stdout"]),
            // A terminal has one output stream (upstream drops stderr with tty).
            stderr: flag(&["error", "stderr"]) && !tty,
            tty,
        }
    }
}

/// An output channel on either transport.
#[derive(Debug, Clone)]
pub enum Sink {
    Spdy(spdy::StreamWriter),
    Ws(websocket::WsWriter, u8),
    /// A channel of a base64 WebSocket protocol.
    Ws64(websocket::WsWriter, u8),
}

impl Sink {
    async fn send(&self, b: Bytes) -> bool {
        match self {
            Sink::Spdy(w) => w.send(b).await,
            Sink::Ws(w, ch) => w.send_channel(*ch, &b).await,
            Sink::Ws64(w, ch) => w.send_channel_base64(*ch, &b).await,
        }
    }
    async fn close(&self) {
        if let Sink::Spdy(w) = self {
            w.close().await;
        }
    }
}

/// The streams of one exec/attach, whatever the transport.
#[derive(Debug, Default)]
pub struct Channels {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<Sink>,
    pub stderr: Option<Sink>,
    pub error: Option<Sink>,
    /// Pre-v4 WebSocket protocols report only a failure, as its message text.
    pub plain_error: bool,
}

/// Collects the streams a SPDY client opens for exec/attach (by `streamtype`), until all that
/// `opts` calls for are there.
pub async fn spdy_channels(session: &mut spdy::Session, opts: &StreamOptions) -> Option<Channels> {
    let want = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(opts.tty);
    let mut ch = Channels::default();
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while got < want {
        let s = tokio::time::timeout_at(deadline, session.streams.recv())
            .await
            .ok()??;
        let kind = s.header("streamtype").unwrap_or("").to_string();
        let sink = Sink::Spdy(s.writer.clone());
        match kind.as_str() {
            "error" => ch.error = Some(sink),
            "stdin" => ch.stdin = Some(s.data),
            "stdout" => ch.stdout = Some(sink),
            "stderr" => ch.stderr = Some(sink),
            "resize" => ch.resize = Some(s.data),
            other => {
                tracing::debug!(stream_type = other, "unexpected stream type");
                s.writer.reset(spdy::RST_CANCEL).await;
                continue;
            }
        }
        got += 1;
    }
    Some(ch)
}

/// Maps a WebSocket session onto channels, framed as the negotiated protocol says.
pub fn ws_channels(
    mut incoming: mpsc::Receiver<websocket::Message>,
    out: &websocket::WsWriter,
    opts: &StreamOptions,
    framing: WsFraming,
) -> Channels {
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(m) = incoming.recv().await {
            let b = match (m, framing.base64) {
                (websocket::Message::Binary(b), false) => b,
                (websocket::Message::Text(t), true) => match decode_base64_message(&t) {
                    Some(b) => b,
                    None => continue,
                },
                _ => continue,
            };
            let Some((&ch, data)) = b.split_first() else {
                continue;
            };
            match ch {
                0 => {
                    if let Some(t) = &stdin_tx
                        && !data.is_empty()
                    {
                        let _ = t.send(b.slice(1..)).await;
                    }
                }
                4 => {
                    let _ = resize_tx.send(b.slice(1..)).await;
                }
                255 if framing.close_signal && data.first() == Some(&0) => stdin_tx = None,
                _ => {}
            }
        }
    });
    let sink = |ch: u8| {
        if framing.base64 {
            Sink::Ws64(out.clone(), ch)
        } else {
            Sink::Ws(out.clone(), ch)
        }
    };
    Channels {
        stdin: opts.stdin.then_some(stdin_rx),
        resize: opts.tty.then_some(resize_rx),
        stdout: opts.stdout.then(|| sink(1)),
        stderr: opts.stderr.then(|| sink(2)),
        error: Some(sink(3)),
        plain_error: !framing.status_object,
    }
}

/// A base64 protocol's message (`<channel digit><base64 data>`) as `[channel] ++ data`.
fn decode_base64_message(text: &[u8]) -> Option<Bytes> {
    use base64::Engine;
    let (&digit, rest) = text.split_first()?;
    let ch = digit.checked_sub(b'0').filter(|c| *c <= 9)?;
    let mut out = vec![ch];
    base64::engine::general_purpose::STANDARD
        .decode_vec(rest, &mut out)
        .ok()?;
    Some(Bytes::from(out))
}

/// The v4 status for a finished command.
pub fn exit_status(command: &[String], result: &Result<u32, String>) -> serde_json::Value {
    match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(msg) => json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "code": 500,
        }),
    }
}

/// Parses resize events (JSON objects, one after another) into terminal sizes.
fn resize_events(mut raw: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(b) = raw.recv().await {
            buf.extend_from_slice(&b);
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
            let mut consumed = 0;
            while let Some(Ok(sz)) = it.next() {
                consumed = it.byte_offset();
                if tx.send(sz).await.is_err() {
                    return;
                }
            }
            buf.drain(..consumed);
            if buf.len() > 64 * 1024 {
                buf.clear(); // garbage: not a stream of sizes
            }
        }
    });
    rx
}

/// Forwards a channel into a sink; returns when the channel ends.
fn forward(sink: Option<Sink>) -> (Option<mpsc::Sender<Bytes>>, tokio::task::JoinHandle<()>) {
    let Some(sink) = sink else {
        return (None, tokio::spawn(async {}));
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let h = tokio::spawn(async move {
        let mut alive = true;
        while let Some(b) = rx.recv().await {
            if alive {
                alive = sink.send(b).await;
            }
        }
        sink.close().await;
    });
    (Some(tx), h)
}

/// The newest attempt of a container of a pod (and its task state).
pub async fn find_container(
    rt: &Runtime,
    ns: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<ListedContainer, String> {
    let all = ContainerService::new(rt.containerd.clone())
        .list()
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    let mut mine: Vec<ListedContainer> = all
        .into_iter()
        .filter(|c| c.meta.pod_namespace == ns && c.meta.pod_name == pod)
        .filter(|c| container.is_none_or(|n| c.meta.container_name == n))
        .collect();
    // Running ones first, then the newest attempt.
    mine.sort_by_key(|c| (matches!(c.state, TaskState::Running { .. }), c.meta.restart_count));
    mine.pop().ok_or_else(|| match container {
        Some(c) => format!("container not found (\"{c}\")"),
        None => format!("pod {ns}/{pod} has no containers on this node"),
    })
}

fn exec_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "exec-{:x}-{}",
        t & 0xffff_ffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a remote-command session does.
#[derive(Debug, Clone)]
pub enum Action {
    Exec {
        container_id: String,
    },
    Attach {
        container_id: String,
        log_path: Option<PathBuf>,
    },
}

/// Runs an exec or attach over `ch`, then reports the outcome on the error stream.
pub async fn run_remote_command(rt: Runtime, ch: Channels, opts: StreamOptions, action: Action) {
    let Channels {
        stdin,
        resize,
        stdout,
        stderr,
        error,
        plain_error,
    } = ch;
    let (out_tx, out_done) = forward(stdout.clone());
    let (err_tx, err_done) = forward(stderr.clone());
    let result = match action {
        Action::Exec { container_id } => {
            let streams = ExecStreams {
                stdin,
                stdout: out_tx,
                stderr: err_tx,
                tty: opts.tty,
                resize: resize.map(resize_events),
            };
            exec_stream(
                &rt.containerd,
                &container_id,
                &exec_id(),
                &opts.command,
                &rt.fifo_dir,
                streams,
            )
            .await
            .map_err(|e| e.to_string())
        }
        Action::Attach {
            container_id,
            log_path,
        } => {
            if let Some(s) = stdin {
                tokio::spawn(attach_stdin(rt.containerd.clone(), container_id.clone(), s));
            }
            let resizer = match (opts.tty, resize) {
                (true, Some(r)) => Some(tokio::spawn(resize_task(
                    rt.containerd.clone(),
                    container_id.clone(),
                    resize_events(r),
                ))),
                _ => None,
            };
            let r = attach(&rt, &container_id, log_path, out_tx, err_tx).await;
            if let Some(h) = resizer {
                h.abort();
            }
            r
        }
    };
    let _ = out_done.await;
    let _ = err_done.await;
    if let Some(e) = error {
        let status = exit_status(&opts.command, &result);
        if !plain_error {
            e.send(Bytes::from(status.to_string())).await;
        } else if let Some(msg) = status["message"].as_str() {
            // Pre-v4: success says nothing, a failure its message.
            e.send(Bytes::from(msg.to_string())).await;
        }
        e.close().await;
    }
}

/// Feeds an attach session's input into the container's stdin FIFO; without one (no `stdin: true`,
/// or adopted after a kubelet restart) the input is read and dropped so the client never blocks.
/// With `stdinOnce` (no TTY) the end of the input closes the container's stdin, as CRI does.
async fn attach_stdin(c: Containerd, container_id: String, mut input: mpsc::Receiver<Bytes>) {
    let Some(pipe) = crate::runtime::stdin::get(&container_id) else {
        while input.recv().await.is_some() {}
        return;
    };
    while let Some(b) = input.recv().await {
        let p = pipe.clone();
        match tokio::task::spawn_blocking(move || p.write(&b)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::info!(container = %container_id, error = %e, "writing to the container's stdin failed");
                break;
            }
            Err(_) => break,
        }
    }
    if pipe.config().closes_after_first_attach() {
        drop(pipe);
        crate::runtime::stdin::close(&container_id);
        // Also tell the shim, which closes the process's end (CRI's CloseStdin does the same).
        if let Err(e) = crate::runtime::exec::close_task_stdin(&c, &container_id).await {
            tracing::debug!(container = %container_id, error = %e, "closing the task's stdin failed");
        }
    }
}

/// Resizes the container's terminal (an attach with `tty`) through Tasks.ResizePty.
async fn resize_task(c: Containerd, container_id: String, mut sizes: mpsc::Receiver<TermSize>) {
    while let Some(sz) = sizes.recv().await {
        let (width, height) = (u32::from(sz.width), u32::from(sz.height));
        if let Err(e) = crate::runtime::exec::resize_task_pty(&c, &container_id, width, height).await {
            tracing::debug!(container = %container_id, error = %e, "resizing the terminal failed");
        }
    }
}

/// Follows the container's log file from now on until its task exits.
async fn attach(
    rt: &Runtime,
    container_id: &str,
    log_path: Option<PathBuf>,
    stdout: Option<mpsc::Sender<Bytes>>,
    stderr: Option<mpsc::Sender<Bytes>>,
) -> Result<u32, String> {
    let mut wait = tokio::spawn(crate::runtime::exec::wait_task(
        rt.containerd.clone(),
        container_id.to_string(),
    ));
    let mut offset = log_path
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .unwrap_or(0);
    let mut exited: Option<u32> = None;
    loop {
        let sleep = tokio::time::sleep(Duration::from_millis(100));
        tokio::select! {
            r = &mut wait, if exited.is_none() => {
                exited = Some(match r {
                    Ok(Ok(code)) => code,
                    _ => 0,
                });
            }
            _ = sleep => {}
        }
        let mut data = Vec::new();
        if let Some(p) = &log_path
            && let Ok(mut h) = std::fs::File::open(p)
        {
            let len = h.seek(SeekFrom::End(0)).unwrap_or(0);
            if len < offset {
                offset = 0;
            }
            if h.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = h.read_to_end(&mut data);
            }
        }
        let end = data.iter().rposition(|b| *b == b'\n').map(|e| e + 1).unwrap_or(0);
        offset += end as u64;
        for rec in data[..end].split(|b| *b == b'\n') {
            let mut it = rec.splitn(4, |b| *b == b' ');
            let (Some(_), Some(stream), Some(tag)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let mut content = it.next().unwrap_or(b"").to_vec();
            if tag == b"F" {
                content.push(b'\n');
            }
            let tx = if stream == b"stderr" { &stderr } else { &stdout };
            if let Some(t) = tx {
                let _ = t.send(Bytes::from(content)).await;
            }
        }
        if exited.is_some() && end == 0 {
            // Exit status of an attach is not the container's (kubectl attach reports success).
            return Ok(0);
        }
        if stdout.as_ref().is_some_and(|t| t.is_closed()) && stderr.as_ref().is_none_or(|t| t.is_closed()) {
            return Ok(0);
        }
    }
}

/// Serves a port-forward session: each (error, data) stream pair with the same `requestid`
/// is one TCP connection to `port` on the pod's loopback.
pub async fn port_forward(mut session: spdy::Session, netns: PathBuf, pod: String) {
    let mut errors: HashMap<String, spdy::StreamWriter> = HashMap::new();
    while let Some(s) = session.streams.recv().await {
        let req = s.header("requestid").unwrap_or("").to_string();
        let port = s.header("port").and_then(|p| p.parse::<u16>().ok());
        tracing::debug!(%pod, headers = ?s.headers, "port-forward stream");
        match s.header("streamtype") {
            Some("error") => {
                errors.insert(req, s.writer.clone());
            }
            Some("data") => {
                let err = errors.remove(&req);
                let Some(port) = port.filter(|p| *p > 0) else {
                    if let Some(e) = err {
                        e.send(Bytes::from("invalid port")).await;
                        e.close().await;
                    }
                    s.writer.reset(spdy::RST_CANCEL).await;
                    continue;
                };
                let (netns, pod) = (netns.clone(), pod.clone());
                tokio::spawn(forward_connection(s, err, netns, port, pod));
            }
            _ => s.writer.reset(spdy::RST_CANCEL).await,
        }
    }
}

async fn forward_connection(
    s: spdy::Stream,
    err: Option<spdy::StreamWriter>,
    netns: PathBuf,
    port: u16,
    pod: String,
) {
    let spdy::Stream { data, writer, .. } = s;
    let sink = Sink::Spdy(writer);
    if let Err(e) = forward_tcp(&netns, port, data, &sink, true).await {
        let msg = format!("error forwarding port {port} to pod {pod}: {e}");
        tracing::info!(%pod, port, error = %e, "port-forward connect failed");
        if let Some(er) = &err {
            er.send(Bytes::from(msg)).await;
        }
    }
    sink.close().await;
    if let Some(e) = err {
        e.close().await;
    }
}

/// The ports of a WebSocket port-forward: every `port` query value (comma-separated lists too;
/// `ports` is accepted as well), each in 1..=65535, as upstream's `NewV4Options`.
pub fn forward_ports(q: &[(String, String)]) -> Result<Vec<u16>, String> {
    let values: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "port" || k == "ports")
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut ports = Vec::new();
    for v in values {
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|_| format!("unable to parse \"{p}\" as a port: not a number in 1-65535"))?;
            if port == 0 {
                return Err(format!("port \"{p}\" must be > 0"));
            }
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Native WebSocket port-forward: for the i-th requested port, channel 2i carries its data and
/// 2i+1 its errors; the first message the server sends on each is the port (2 bytes, little
/// endian). One TCP connection per port; the session ends when all of them have ended.
pub async fn port_forward_ws(
    mut incoming: mpsc::Receiver<websocket::Message>,
    out: websocket::WsWriter,
    netns: PathBuf,
    pod: String,
    ports: Vec<u16>,
) {
    let mut inputs = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        out.send_channel(data_ch, &port.to_le_bytes()).await;
        out.send_channel(err_ch, &port.to_le_bytes()).await;
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        inputs.push(tx);
        let (out, netns, pod) = (out.clone(), netns.clone(), pod.clone());
        tasks.push(tokio::spawn(async move {
            let data = Sink::Ws(out.clone(), data_ch);
            if let Err(e) = forward_tcp(&netns, port, rx, &data, false).await {
                let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                tracing::info!(%pod, port, error = %e, "port-forward failed");
                out.send_channel(err_ch, msg.as_bytes()).await;
            }
        }));
    }
    let dispatch = tokio::spawn(async move {
        while let Some(m) = incoming.recv().await {
            let websocket::Message::Binary(b) = m else {
                continue;
            };
            let Some((&ch, data)) = b.split_first() else {
                continue;
            };
            // Data channels are even; what a client writes on an error channel is ignored.
            if ch % 2 == 0
                && !data.is_empty()
                && let Some(tx) = inputs.get(usize::from(ch / 2))
            {
                let _ = tx.send(b.slice(1..)).await;
            }
        }
    });
    for t in tasks {
        let _ = t.await;
    }
    dispatch.abort();
    out.close().await;
}

/// Copies `input` to a TCP connection to `port` in `netns` and the connection's data to `output`:
/// with `half_close` (SPDY streams) until both directions ended, else until the connection's
/// output ends (v4 WebSocket channels cannot be half-closed). Errors only when connecting fails.
async fn forward_tcp(
    netns: &std::path::Path,
    port: u16,
    mut input: mpsc::Receiver<Bytes>,
    output: &Sink,
    half_close: bool,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = connect_in_netns(netns.to_path_buf(), port).await?;
    let (mut rd, mut wr) = tcp.into_split();
    let upstream = async move {
        while let Some(b) = input.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !output.send(Bytes::copy_from_slice(&buf[..n])).await {
                        break;
                    }
                }
            }
        }
    };
    if half_close {
        tokio::join!(upstream, downstream);
    } else {
        tokio::select! {
            _ = downstream => {}
            _ = async { upstream.await; std::future::pending::<()>().await } => {}
        }
    }
    Ok(())
}

/// Connects to 127.0.0.1:`port` inside the network namespace at `netns`: the socket is created on
/// a dedicated thread that joins the namespace (sockets keep the namespace they were made in),
/// then handed to tokio.
pub async fn connect_in_netns(netns: PathBuf, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-connect".into())
        .spawn(move || {
            let r = (|| {
                let f = std::fs::File::open(&netns)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                let s = std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(10),
                )?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })();
            let _ = tx.send(r);
        })?;
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("connect thread died"))??;
    tokio::net::TcpStream::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_from_kubelet_and_api_queries() {
        let o = StreamOptions::from_query(&q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "exit 3"),
            ("input", "1"),
            ("output", "1"),
            ("error", "1"),
        ]));
        assert_eq!(o.command, ["sh", "-c", "exit 3"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        // A terminal drops stderr; the API's names work too.
        let t = StreamOptions::from_query(&q(&[("stdout", "true"), ("stderr", "true"), ("tty", "true")]));
        assert!(t.stdout && !t.stderr && t.tty && !t.stdin);
    }

    #[test]
    fn websocket_port_forward_ports_from_the_query() {
        assert_eq!(forward_ports(&q(&[("port", "8080")])), Ok(vec![8080]));
        assert_eq!(
            forward_ports(&q(&[("port", "80,443"), ("ports", "9000")])),
            Ok(vec![80, 443, 9000])
        );
        assert!(forward_ports(&q(&[])).unwrap_err().contains("is required"));
        assert!(forward_ports(&q(&[("port", "")])).is_err());
        assert!(
            forward_ports(&q(&[("port", "0")]))
                .unwrap_err()
                .contains("must be > 0")
        );
        assert!(forward_ports(&q(&[("port", "70000")])).is_err());
    }

    #[test]
    fn websocket_protocols_frame_as_upstream_kubelet() {
        let f = WsFraming::of;
        assert_eq!(
            f("v5.channel.k8s.io"),
            WsFraming {
                close_signal: true,
                base64: false,
                status_object: true
            }
        );
        assert_eq!(
            f("v4.base64.channel.k8s.io"),
            WsFraming {
                close_signal: false,
                base64: true,
                status_object: true
            }
        );
        // Pre-v4 (what the conformance websocket exec test offers): no status object.
        assert_eq!(
            f("channel.k8s.io"),
            WsFraming {
                close_signal: false,
                base64: false,
                status_object: false
            }
        );
        assert_eq!(
            f("base64.channel.k8s.io"),
            WsFraming {
                close_signal: false,
                base64: true,
                status_object: false
            }
        );
        for p in WS_PROTOCOLS {
            assert_eq!(websocket::select_protocol(&[p], WS_PROTOCOLS), Some(*p));
        }
    }

    #[test]
    fn base64_messages_decode_to_channel_and_data() {
        assert_eq!(decode_base64_message(b"0aGk=").as_deref(), Some(&b"\x00hi"[..]));
        assert_eq!(decode_base64_message(b"4").as_deref(), Some(&b"\x04"[..]));
        assert_eq!(decode_base64_message(b"x aGk="), None, "not a channel digit");
        assert_eq!(decode_base64_message(b"0!!"), None, "not base64");
        assert_eq!(decode_base64_message(b""), None);
    }

    #[test]
    fn exit_status_carries_the_exit_code_cause() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(exit_status(&cmd, &Ok(0))["status"], "Success");
        let s = exit_status(&cmd, &Ok(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert!(s["message"].as_str().unwrap().contains("exit code 3"));
        let e = exit_status(&cmd, &Err("container not found (\"x\")".into()));
        assert_eq!(e["status"], "Failure");
        assert_eq!(e["message"], "container not found (\"x\")");
    }

    #[tokio::test]
    async fn resize_events_parse_across_chunks() {
        let (tx, rx) = mpsc::channel(4);
        let mut sizes = resize_events(rx);
        tx.send(Bytes::from_static(b"{\"Width\":80,\"Hei")).await.unwrap();
        tx.send(Bytes::from_static(b"ght\":24}\n{\"Width\":100,\"Height\":40}\n"))
            .await
            .unwrap();
        assert_eq!(
            sizes.recv().await,
            Some(TermSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            sizes.recv().await,
            Some(TermSize {
                width: 100,
                height: 40
            })
        );
    }
}
