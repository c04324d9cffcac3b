//! Running a command in a running container (`kubectl exec`, exec probes): an extra process in the
//! container's task with the container's own process settings (user, env, cwd, capabilities) and
//! different args; stdout and stderr go through FIFOs (containerd 1.6 fails an exec without both —
//! PLATFORM.md) read by dedicated threads, the exit code comes through Tasks.Wait.
//!
//! Two shapes: [`exec`] collects the output (probes, hooks); [`exec_stream`] streams it as it is
//! written (the kubelet API's `/exec`), with live stdin through a third FIFO (end of input closes
//! it), an optional TTY (`terminal: true`: one stream, the shim's pty) and resizes through
//! Tasks.ResizePty.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use oci_spec::runtime::Spec;
use tokio::sync::mpsc;

use super::container::ContainerError;
use super::{Containerd, RuntimeError};

/// The type URL of an OCI process spec in an exec request.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Collected output of an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; `None` when the command was killed because the timeout expired.
    pub exit_code: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn rt(id: &str) -> impl FnOnce(RuntimeError) -> ContainerError {
    let id = id.to_string();
    move |source| ContainerError::Runtime { id, source }
}

fn io_err(id: &str, step: &'static str) -> impl FnOnce(io::Error) -> ContainerError {
    let id = id.to_string();
    move |source| ContainerError::Io { id, step, source }
}

fn reader_thread(fifo: PathBuf) -> io::Result<std::thread::JoinHandle<Vec<u8>>> {
    std::thread::Builder::new()
        .name("exec-output".into())
        .spawn(move || {
            let mut out = Vec::new();
            if let Ok(mut f) = fs::File::open(&fifo) {
                let _ = f.read_to_end(&mut out);
            }
            out
        })
}

fn release(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}

/// Runs `cmd` in the running container `id` and returns its output and exit code. With a
/// `timeout`, a command still running then is SIGKILLed and `exit_code` is `None` (upstream's exec
/// probe treats that as a failure). `fifo_dir` holds the FIFOs while the command runs.
pub async fn exec(
    containerd: &Containerd,
    id: &str,
    exec_id: &str,
    cmd: &[String],
    fifo_dir: &Path,
    timeout: Option<Duration>,
) -> Result<ExecOutput, ContainerError> {
    let (process, dir) = prepare(containerd, id, exec_id, cmd, fifo_dir, false).await?;
    let result = run(containerd, id, exec_id, process, &dir, timeout).await;
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Checks `cmd`, builds its process spec and creates the exec's FIFO directory.
async fn prepare(
    containerd: &Containerd,
    id: &str,
    exec_id: &str,
    cmd: &[String],
    fifo_dir: &Path,
    tty: bool,
) -> Result<(Vec<u8>, PathBuf), ContainerError> {
    if cmd.is_empty() {
        return Err(io_err(id, "exec")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command is empty",
        )));
    }
    let process = process_spec(containerd, id, cmd, tty).await?;
    let dir = fifo_dir.join(format!("{id}-{exec_id}"));
    fs::create_dir_all(&dir).map_err(io_err(id, "creating the exec FIFO directory"))?;
    Ok((process, dir))
}

/// Creates a FIFO in the exec's directory.
fn mkfifo(id: &str, dir: &Path, name: &str) -> Result<PathBuf, ContainerError> {
    let f = dir.join(name);
    nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io_err(id, "creating an exec FIFO")(e.into()))?;
    Ok(f)
}

/// The FIFOs an exec process is created with.
struct ProcessIo<'a> {
    stdin: Option<&'a Path>,
    stdout: &'a Path,
    stderr: Option<&'a Path>,
    tty: bool,
}

/// The pending Tasks.Wait of a started exec process.
type PendingWait = tokio::task::JoinHandle<
    Result<tonic::Response<containerd_client::services::v1::WaitResponse>, tonic::Status>,
>;

/// Creates the exec process and starts it, with its Tasks.Wait requested before Start so a
/// command that exits at once is not missed. On an error no process is left in the task (a
/// created one that failed to start is removed); the caller then only releases its FIFOs.
async fn start_process(
    c: &Containerd,
    id: &str,
    exec_id: &str,
    process: Vec<u8>,
    io: ProcessIo<'_>,
) -> Result<PendingWait, ContainerError> {
    let path = |p: Option<&Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let mut tasks = TasksClient::new(c.channel());
    tasks
        .exec(c.request(
            ExecProcessRequest {
                container_id: id.into(),
                stdin: path(io.stdin),
                stdout: path(Some(io.stdout)),
                stderr: path(io.stderr),
                terminal: io.tty,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.into(),
                    value: process,
                }),
                exec_id: exec_id.into(),
            },
            None,
        ))
        .await
        .map_err(RuntimeError::grpc("Tasks.Exec"))
        .map_err(rt(id))?;
    let mut waiter = TasksClient::new(c.channel());
    let wait_req = c.request(
        WaitRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        },
        None,
    );
    let wait = tokio::spawn(async move { waiter.wait(wait_req).await });
    let started = tasks
        .start(c.request(
            StartRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            },
            None,
        ))
        .await;
    match started {
        Ok(_) => Ok(wait),
        Err(s) => {
            wait.abort();
            remove_process(c, id, exec_id).await;
            Err(rt(id)(RuntimeError::grpc("Tasks.Start (exec)")(s)))
        }
    }
}

/// The exit code a pending Tasks.Wait reports.
async fn exit_status(id: &str, wait: PendingWait) -> Result<u32, ContainerError> {
    wait.await
        .map_err(|e| io_err(id, "waiting for the exec")(io::Error::other(e.to_string())))?
        .map_err(RuntimeError::grpc("Tasks.Wait (exec)"))
        .map_err(rt(id))
        .map(|r| r.into_inner().exit_status)
}

/// Removes the (exited) process from the task, which closes the FIFOs' write ends so the output
/// readers finish.
async fn remove_process(c: &Containerd, id: &str, exec_id: &str) {
    let _ = TasksClient::new(c.channel())
        .delete_process(c.request(
            DeleteProcessRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            },
            None,
        ))
        .await;
}

/// The container's own process settings with `cmd` as args, encoded for Tasks.Exec.
async fn process_spec(
    containerd: &Containerd,
    id: &str,
    cmd: &[String],
    tty: bool,
) -> Result<Vec<u8>, ContainerError> {
    let c = containerd;
    let record = ContainersClient::new(c.channel())
        .get(c.request(GetContainerRequest { id: id.into() }, None))
        .await
        .map_err(RuntimeError::grpc("Containers.Get"))
        .map_err(rt(id))?
        .into_inner()
        .container
        .and_then(|c| c.spec)
        .ok_or_else(|| io_err(id, "reading the container's spec")(io::Error::other("no spec")))?;
    let spec: Spec = serde_json::from_slice(&record.value).map_err(|e| ContainerError::Spec {
        id: id.into(),
        message: e.to_string(),
    })?;
    let mut process = spec.process().clone().ok_or_else(|| ContainerError::Spec {
        id: id.into(),
        message: "the container spec has no process".into(),
    })?;
    process.set_args(Some(cmd.to_vec()));
    process.set_terminal(Some(tty));
    serde_json::to_vec(&process).map_err(|e| ContainerError::Spec {
        id: id.into(),
        message: e.to_string(),
    })
}

async fn run(
    c: &Containerd,
    id: &str,
    exec_id: &str,
    process: Vec<u8>,
    dir: &Path,
    timeout: Option<Duration>,
) -> Result<ExecOutput, ContainerError> {
    let mut fifos = Vec::new();
    let mut readers = Vec::new();
    for name in ["stdout", "stderr"] {
        let f = mkfifo(id, dir, name)?;
        readers.push(reader_thread(f.clone()).map_err(io_err(id, "starting an output reader"))?);
        fifos.push(f);
    }
    let collect = |readers: Vec<std::thread::JoinHandle<Vec<u8>>>| async move {
        tokio::task::spawn_blocking(move || {
            readers
                .into_iter()
                .map(|r| r.join().unwrap_or_default())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default()
    };
    let io = ProcessIo {
        stdin: None,
        stdout: &fifos[0],
        stderr: Some(&fifos[1]),
        tty: false,
    };
    let outcome = match start_process(c, id, exec_id, process, io).await {
        Err(e) => Err(e),
        Ok(wait) => {
            let exited = match timeout {
                None => exit_status(id, wait).await.map(Some),
                Some(t) => match tokio::time::timeout(t, exit_status(id, wait)).await {
                    Ok(r) => r.map(Some),
                    Err(_) => {
                        let _ = TasksClient::new(c.channel())
                            .kill(c.request(
                                KillRequest {
                                    container_id: id.into(),
                                    exec_id: exec_id.into(),
                                    signal: libc::SIGKILL as u32,
                                    all: false,
                                },
                                None,
                            ))
                            .await;
                        Ok(None)
                    }
                },
            };
            remove_process(c, id, exec_id).await;
            exited
        }
    };
    fifos.iter().for_each(|f| release(f));
    let mut outputs = collect(readers).await.into_iter();
    let exit_code = outcome?;
    Ok(ExecOutput {
        exit_code,
        stdout: outputs.next().unwrap_or_default(),
        stderr: outputs.next().unwrap_or_default(),
    })
}

/// A terminal size from the client (`kubectl exec -t` sends one at start and on SIGWINCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The streams of a streaming exec. A closed `stdin` channel is end of input; output senders whose
/// receivers are gone are drained and discarded (the command must never block on its output).
#[derive(Debug, Default)]
pub struct ExecStreams {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    /// Ignored with `tty` (a terminal has one output stream).
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub tty: bool,
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// Copies one output FIFO into a channel, chunk by chunk, until the shim closes its end.
fn forward_thread(fifo: PathBuf, tx: Option<mpsc::Sender<Bytes>>) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("exec-stream".into())
        .spawn(move || {
            let Ok(mut f) = fs::File::open(&fifo) else { return };
            let mut buf = vec![0u8; 32 * 1024];
            let mut tx = tx;
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if let Some(t) = &tx
                            && t.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err()
                        {
                            tx = None; // the client went away: keep draining
                        }
                    }
                }
            }
        })
}

/// Runs `cmd` in the running container `id` with live streams and returns its exit code once the
/// command has exited and all of its output has been forwarded.
pub async fn exec_stream(
    containerd: &Containerd,
    id: &str,
    exec_id: &str,
    cmd: &[String],
    fifo_dir: &Path,
    streams: ExecStreams,
) -> Result<u32, ContainerError> {
    let (process, dir) = prepare(containerd, id, exec_id, cmd, fifo_dir, streams.tty).await?;
    let result = run_stream(containerd, id, exec_id, process, &dir, streams).await;
    let _ = fs::remove_dir_all(&dir);
    result
}

async fn run_stream(
    c: &Containerd,
    id: &str,
    exec_id: &str,
    process: Vec<u8>,
    dir: &Path,
    streams: ExecStreams,
) -> Result<u32, ContainerError> {
    let ExecStreams {
        stdin,
        stdout,
        stderr,
        tty,
        resize,
    } = streams;
    // Output: stdout always (containerd needs it), stderr unless a terminal merges it.
    let mut outputs = vec![(mkfifo(id, dir, "stdout")?, stdout)];
    if !tty {
        outputs.push((mkfifo(id, dir, "stderr")?, stderr));
    }
    let fifos: Vec<PathBuf> = outputs.iter().map(|(f, _)| f.clone()).collect();
    let mut readers = Vec::new();
    for (f, tx) in outputs {
        readers.push(forward_thread(f, tx).map_err(io_err(id, "starting an output reader"))?);
    }
    // Input: opened read-write so the open never blocks and the FIFO has a writer until the client
    // ends its input; dropping it then gives the command end-of-file.
    let stdin_fifo = match &stdin {
        Some(_) => Some(mkfifo(id, dir, "stdin")?),
        None => None,
    };
    let stdin_writer = match &stdin_fifo {
        Some(f) => Some(
            tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(f)
                .map_err(io_err(id, "opening the stdin FIFO"))?,
        ),
        None => None,
    };
    let io = ProcessIo {
        stdin: stdin_fifo.as_deref(),
        stdout: &fifos[0],
        stderr: fifos.get(1).map(PathBuf::as_path),
        tty,
    };
    let outcome = match start_process(c, id, exec_id, process, io).await {
        Err(e) => Err(e),
        Ok(wait) => {
            let mut helpers = Vec::new();
            if let (Some(mut rx), Some(mut w)) = (stdin, stdin_writer) {
                let (c2, id2, exec2) = (c.clone(), id.to_string(), exec_id.to_string());
                helpers.push(tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    while let Some(b) = rx.recv().await {
                        if w.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    drop(w);
                    // End of input: also tell the shim, which closes the command's stdin.
                    let _ = TasksClient::new(c2.channel())
                        .close_io(c2.request(
                            CloseIoRequest {
                                container_id: id2,
                                exec_id: exec2,
                                stdin: true,
                            },
                            None,
                        ))
                        .await;
                }));
            }
            if let (true, Some(mut rx)) = (tty, resize) {
                let (c2, id2, exec2) = (c.clone(), id.to_string(), exec_id.to_string());
                helpers.push(tokio::spawn(async move {
                    while let Some(sz) = rx.recv().await {
                        let _ = TasksClient::new(c2.channel())
                            .resize_pty(c2.request(
                                ResizePtyRequest {
                                    container_id: id2.clone(),
                                    exec_id: exec2.clone(),
                                    width: u32::from(sz.width),
                                    height: u32::from(sz.height),
                                },
                                None,
                            ))
                            .await;
                    }
                }));
            }
            let exited = exit_status(id, wait).await;
            for h in helpers {
                h.abort();
            }
            remove_process(c, id, exec_id).await;
            exited
        }
    };
    // The process is gone: the readers forward what is left and finish.
    fifos.iter().for_each(|f| release(f));
    let _ = tokio::task::spawn_blocking(move || {
        for r in readers {
            let _ = r.join();
        }
    })
    .await;
    outcome
}

/// Closes the stdin of a container's task (CRI's CloseStdin), so its process sees EOF.
pub async fn close_task_stdin(c: &Containerd, container_id: &str) -> Result<(), RuntimeError> {
    let req = CloseIoRequest {
        container_id: container_id.to_string(),
        exec_id: String::new(),
        stdin: true,
    };
    TasksClient::new(c.channel())
        .close_io(c.request(req, None))
        .await
        .map_err(RuntimeError::grpc("close task stdin"))?;
    Ok(())
}

/// Resizes the terminal of a container's task.
pub async fn resize_task_pty(
    c: &Containerd,
    container_id: &str,
    width: u32,
    height: u32,
) -> Result<(), RuntimeError> {
    let req = ResizePtyRequest {
        container_id: container_id.to_string(),
        exec_id: String::new(),
        width,
        height,
    };
    TasksClient::new(c.channel())
        .resize_pty(c.request(req, None))
        .await
        .map_err(RuntimeError::grpc("resize task pty"))?;
    Ok(())
}

/// Waits until a container's task exits; returns its exit status.
pub async fn wait_task(c: Containerd, container_id: String) -> Result<u32, RuntimeError> {
    let req = c.request(
        WaitRequest {
            container_id,
            exec_id: String::new(),
        },
        None,
    );
    let w = TasksClient::new(c.channel())
        .wait(req)
        .await
        .map_err(RuntimeError::grpc("wait task"))?;
    Ok(w.into_inner().exit_status)
}
