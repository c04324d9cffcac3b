//! Containers and tasks through containerd 1.6: a container record (labels identify the pod and
//! container for relisting), a rootfs snapshot prepared on the image's top chain ID, a task whose
//! stdout/stderr go through FIFOs to a CRI-format log writer, start, stop (signal, grace, SIGKILL),
//! wait and delete (task, container, snapshot, leftover cgroup directories).
//!
//! Why FIFOs: with `file://` stdio containerd 1.6 merges stderr into stdout, and CRI logs need the
//! stream of each line (PLATFORM.md). Each FIFO is drained by a dedicated OS thread that blocks in
//! `open`/`read` until the shim closes its end when the container exits; the kubelet never shares
//! these blocking reads with tokio's worker threads.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest,
    KillRequest, StartRequest, WaitRequest,
};
use oci_spec::runtime::Spec;

use super::{Containerd, RuntimeError, SNAPSHOTTER};

/// The runtime containerd starts tasks with.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The type URL containerd expects for an OCI runtime spec in a container record.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Label keys on containerd containers, as upstream's CRI uses for pods and containers.
pub mod labels {
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    pub const SPEC_HASH: &str = "io.kubernetes.container.hash";
}

/// Errors running containers.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {id}: {source}")]
    Runtime {
        id: String,
        #[source]
        source: RuntimeError,
    },
    #[error("container {id}: {step}: {source}")]
    Io {
        id: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("container {id}: encoding the OCI spec: {message}")]
    Spec { id: String, message: String },
}

/// Who a container belongs to; becomes its containerd labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerMeta {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_name: String,
    pub restart_count: u32,
    pub spec_hash: String,
}

impl ContainerMeta {
    /// The containerd labels for this container.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (labels::POD_UID.into(), self.pod_uid.clone()),
            (labels::POD_NAMESPACE.into(), self.pod_namespace.clone()),
            (labels::POD_NAME.into(), self.pod_name.clone()),
            (labels::CONTAINER_NAME.into(), self.container_name.clone()),
            (labels::RESTART_COUNT.into(), self.restart_count.to_string()),
            (labels::SPEC_HASH.into(), self.spec_hash.clone()),
        ])
    }

    /// Reads the labels back (relisting); `None` if this is not a kubelet container.
    pub fn from_labels(l: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| l.get(k).cloned();
        Some(ContainerMeta {
            pod_uid: get(labels::POD_UID)?,
            pod_namespace: get(labels::POD_NAMESPACE)?,
            pod_name: get(labels::POD_NAME)?,
            container_name: get(labels::CONTAINER_NAME)?,
            restart_count: get(labels::RESTART_COUNT)?.parse().ok()?,
            spec_hash: get(labels::SPEC_HASH).unwrap_or_default(),
        })
    }
}

/// A request to create a container and its task.
#[derive(Debug, Clone)]
pub struct CreateContainer {
    /// containerd container ID (also the snapshot key and runc container ID).
    pub id: String,
    pub meta: ContainerMeta,
    /// Image name as recorded in containerd.
    pub image: String,
    /// The image's top chain ID: the snapshot the rootfs is prepared on.
    pub parent_snapshot: String,
    pub spec: Spec,
    /// Pod log directory; the log is `<log_dir>/<container name>/<restart count>.log`.
    pub log_dir: PathBuf,
    /// Where the stdio FIFOs are created (removed on delete).
    pub fifo_dir: PathBuf,
    /// When the log file is rotated (`containerLogMaxSize` / `containerLogMaxFiles`).
    pub log_rotation: LogRotation,
    /// The container's stdin (`stdin`, `stdinOnce`, `tty`); see [`super::stdin`].
    pub stdin: super::stdin::StdinConfig,
}

/// Log rotation as upstream's `containerLogMaxSize` / `containerLogMaxFiles` (10 MiB, 5 files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// A file reaching this size is rotated before the next record is written.
    pub max_size: u64,
    /// Files kept per container: the current one and `max_files - 1` rotated ones.
    pub max_files: usize,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// A container's CRI log file, rotated by size as it is written. Rotated files are named as upstream's
/// (`<restart>.log.<YYYYMMDD-HHMMSS>`), so `kubectl logs` readers find them in time order.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: fs::File,
    size: u64,
    rotation: LogRotation,
}

impl LogFile {
    /// Opens (appending to) `path`.
    pub fn open(path: &Path, rotation: LogRotation) -> io::Result<Self> {
        let file = fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    /// Appends one record, rotating first if it would push the file past the size limit.
    pub fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.rotation.max_size {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(record) {
            // A record cut short (disk full) is dropped whole: the file stays whole CRI lines.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += record.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let stamp: String = rfc3339_nano(SystemTime::now())
            .chars()
            .take(19)
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .map(|c| if c == 'T' { '-' } else { c })
            .collect();
        let base = self.path.display().to_string();
        // Several rotations within one second get .001, .002 … after the newest one of that second
        // (even when older ones were pruned), so names stay unique and sort in time order.
        let same_second = format!("{base}.{stamp}");
        let last = (0..)
            .map(|n| {
                if n == 0 {
                    same_second.clone()
                } else {
                    format!("{same_second}.{n:03}")
                }
            })
            .take(1000)
            .enumerate()
            .filter(|(_, p)| Path::new(p).exists())
            .map(|(n, _)| n)
            .max();
        let rotated = match last {
            None => PathBuf::from(&same_second),
            Some(n) => PathBuf::from(format!("{same_second}.{:03}", n + 1)),
        };
        fs::rename(&self.path, &rotated)?;
        self.file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.prune()
    }

    /// Removes the oldest rotated files beyond `max_files - 1`.
    fn prune(&self) -> io::Result<()> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(());
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut rotated: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&prefix))
            })
            .collect();
        rotated.sort();
        let keep = self.rotation.max_files.saturating_sub(1);
        let excess = rotated.len().saturating_sub(keep);
        for old in &rotated[..excess] {
            fs::remove_file(old)?;
        }
        Ok(())
    }
}

/// How a container's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: u32,
    pub exited_at: Option<SystemTime>,
    /// The kernel OOM killer killed a process of the container (upstream's `OOMKilled` reason).
    /// Only [`ContainerService::wait_container`] finds this out; `wait` leaves it false.
    pub oom_killed: bool,
}

/// A created container: its ID, log path and the log writer threads.
#[derive(Debug)]
pub struct CreatedContainer {
    pub id: String,
    pub log_path: PathBuf,
    /// The spec's cgroup path, removed with the container.
    pub cgroups_path: String,
    fifo_dir: PathBuf,
    log_threads: Vec<std::thread::JoinHandle<()>>,
}

impl CreatedContainer {
    /// A created container without a log copy (a fake runtime's).
    pub fn without_logs(id: &str, log_path: PathBuf, cgroups_path: String, fifo_dir: PathBuf) -> Self {
        CreatedContainer {
            id: id.to_string(),
            log_path,
            cgroups_path,
            fifo_dir,
            log_threads: Vec::new(),
        }
    }

    /// Waits until both log streams reached EOF (the container exited and the shim closed its ends),
    /// so the log file is complete. Blocking; call from `spawn_blocking` in async code.
    pub fn flush_logs(&mut self) {
        for t in self.log_threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Formats `t` as Go's `time.RFC3339Nano` in UTC (trailing zeros of the fraction trimmed).
pub fn rfc3339_nano(t: SystemTime) -> String {
    // jiff prints a timestamp as RFC 3339 in UTC, the fraction only when not zero and without its
    // trailing zeros: Go's RFC3339Nano. Times before the epoch are the epoch, as they always were here.
    k8s_openapi::jiff::Timestamp::try_from(t.max(UNIX_EPOCH))
        .unwrap_or_default()
        .to_string()
}

/// Upstream's maximum CRI log line payload; longer lines are split into `P` (partial) records.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Turns one chunk read from a stream into CRI log records: `<time> <stream> <P|F> <msg>\n`.
/// `complete` says whether the chunk ended with a newline (which is not part of the message).
pub fn cri_log_record(time: SystemTime, stream: &str, msg: &[u8], complete: bool) -> Vec<u8> {
    let tag = if complete { "F" } else { "P" };
    let mut out = format!("{} {stream} {tag} ", rfc3339_nano(time)).into_bytes();
    out.extend_from_slice(msg);
    out.push(b'\n');
    out
}

/// A thread copying `stream` from its FIFO into the container's log (a failure is logged).
fn spawn_log_writer(
    fifo: &Path,
    stream: &'static str,
    log: &Arc<Mutex<LogFile>>,
    id: &str,
) -> io::Result<std::thread::JoinHandle<()>> {
    let (f, l, cid) = (fifo.to_path_buf(), log.clone(), id.to_string());
    std::thread::Builder::new()
        .name(format!("log-{stream}"))
        .spawn(move || {
            if let Err(e) = copy_stream(&f, stream, &l, &cid) {
                tracing::warn!(container = %cid, stream, error = %e, "container log copy failed");
            }
        })
}

/// Copies one FIFO to the log file as CRI records until EOF. A record that cannot be written (disk
/// full) is dropped and the copy goes on, as containerd's CRI does: the container must never block
/// on its stdout because the node's disk is full.
fn copy_stream(fifo: &Path, stream: &'static str, log: &Mutex<LogFile>, id: &str) -> io::Result<()> {
    let reader = fs::File::open(fifo)?; // blocks until the shim opens the write end
    let mut reader = BufReader::with_capacity(MAX_LOG_LINE, reader);
    let mut buf = Vec::new();
    let mut dropped: u64 = 0;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LOG_LINE as u64)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let newline = buf.last() == Some(&b'\n');
        // As upstream (bufio.ReadLine): a line is partial only when it filled the buffer; the last
        // line before EOF without a newline is still a full line.
        let complete = newline || n < MAX_LOG_LINE;
        let msg = if newline { &buf[..buf.len() - 1] } else { &buf[..] };
        let record = cri_log_record(SystemTime::now(), stream, msg, complete);
        let mut f = log.lock().map_err(|_| io::Error::other("log lock poisoned"))?;
        match f.write_record(&record) {
            Ok(()) if dropped > 0 => {
                tracing::info!(container = %id, stream, dropped, "container log writes resumed");
                dropped = 0;
            }
            Ok(()) => {}
            Err(e) => {
                if dropped == 0 {
                    tracing::warn!(container = %id, stream, error = %e,
                        "container log write failed: dropping output until writes succeed");
                }
                dropped += 1;
            }
        }
    }
}

/// Lets go of the log copies of a task whose creation failed, without waiting for them. Threads
/// still blocked in `open` get EOF at once. A failure can also come after the shim opened the write
/// ends (containerd died mid-create and the shim lives on): those threads end when that task is
/// deleted by a later sync, so joining here would block the pod's worker until then — for ever if
/// nothing deletes it.
fn abandon_log_copy(fifos: &[PathBuf], threads: Vec<std::thread::JoinHandle<()>>) {
    for f in fifos {
        release_fifo(f);
    }
    drop(threads);
}

/// Unblocks a log thread still waiting in `open` for a writer that will never come (task creation
/// failed): opening the write end non-blocking succeeds while a reader waits, closing it gives EOF.
fn release_fifo(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}

/// A task's state from containerd's process record.
fn task_state(t: &containerd_client::types::v1::Process) -> TaskState {
    use containerd_client::types::v1::Status;
    match Status::try_from(t.status) {
        Ok(Status::Created) => TaskState::Created,
        Ok(Status::Running) => TaskState::Running { pid: t.pid },
        Ok(Status::Stopped) => TaskState::Exited { code: t.exit_status },
        Ok(Status::Paused | Status::Pausing) => TaskState::Paused,
        _ => TaskState::Unknown,
    }
}

/// State of a container's task as relisting sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// The container record exists without a task.
    NoTask,
    Created,
    Running {
        pid: u32,
    },
    Exited {
        code: u32,
    },
    Paused,
    Unknown,
}

/// A kubelet-created container found by relisting containerd (adoption after a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedContainer {
    pub id: String,
    pub meta: ContainerMeta,
    pub image: String,
    pub state: TaskState,
}

/// Any container of the namespace, as [`ContainerService::list_all`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceContainer {
    pub id: String,
    /// The kubelet's labels; None for containers the kubelet did not create.
    pub meta: Option<ContainerMeta>,
    pub image: String,
    pub state: TaskState,
    pub created: Option<std::time::SystemTime>,
}

/// Creates, starts, stops, waits for and deletes containers in one containerd namespace.
#[derive(Clone, Debug)]
pub struct ContainerService {
    containerd: Containerd,
}

impl ContainerService {
    pub fn new(containerd: Containerd) -> Self {
        ContainerService { containerd }
    }

    /// The containerd connection this service uses.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    fn err(id: &str) -> impl FnOnce(RuntimeError) -> ContainerError {
        let id = id.to_string();
        move |source| ContainerError::Runtime { id, source }
    }

    /// Creates the container record, its rootfs snapshot, the log writer and the task (not started).
    /// On failure whatever was created is removed again.
    pub async fn create(&self, req: CreateContainer) -> Result<CreatedContainer, ContainerError> {
        let id = req.id.clone();
        let c = &self.containerd;
        let spec = serde_json::to_vec(&req.spec).map_err(|e| ContainerError::Spec {
            id: id.clone(),
            message: e.to_string(),
        })?;

        // The rootfs snapshot is unreferenced until the container record names it: without a lease
        // a GC run in between would collect it (the task then fails mounting a missing lowerdir).
        let lease = c
            .create_lease("container", Duration::from_secs(600))
            .await
            .map_err(Self::err(&id))?;
        let created = self.create_record(&req, spec, &lease).await;
        if let Err(e) = c.delete_lease(&lease).await {
            tracing::warn!(container = %id, lease = %lease.id, error = %e, "deleting the lease failed; it expires by itself");
        }
        let mounts = created?;
        match self.create_task(&req, mounts).await {
            Ok(created) => Ok(created),
            Err(e) => {
                let _ = self.delete(&id).await;
                let _ = fs::remove_dir_all(req.fifo_dir.join(&id));
                // runc may have made the cgroup before failing.
                remove_cgroup_dirs(&cgroups_path(&req.spec));
                Err(e)
            }
        }
    }

    /// Prepares the rootfs snapshot and creates the container record, under `lease`.
    async fn create_record(
        &self,
        req: &CreateContainer,
        spec: Vec<u8>,
        lease: &super::Lease,
    ) -> Result<Vec<containerd_client::types::Mount>, ContainerError> {
        let id = &req.id;
        let c = &self.containerd;
        let mounts = SnapshotsClient::new(c.channel())
            .prepare(c.request(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                    parent: req.parent_snapshot.clone(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await
            .map_err(RuntimeError::grpc("Snapshots.Prepare"))
            .map_err(Self::err(id))?
            .into_inner()
            .mounts;
        let record = Container {
            id: id.clone(),
            labels: req.meta.labels(),
            image: req.image.clone(),
            runtime: Some(Runtime {
                name: RUNC_RUNTIME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: spec,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.clone(),
            ..Default::default()
        };
        if let Err(e) = ContainersClient::new(c.channel())
            .create(c.request(
                CreateContainerRequest {
                    container: Some(record),
                },
                Some(lease),
            ))
            .await
        {
            self.remove_snapshot(id).await;
            return Err(Self::err(id)(RuntimeError::grpc("Containers.Create")(e)));
        }
        Ok(mounts)
    }

    /// Resumes copying a running container's stdout/stderr FIFOs into its log file (append): what
    /// a restarted kubelet does for the containers it adopts, whose previous reader died with the
    /// old process. The FIFOs are `<fifo_root>/<id>/{stdout,stderr}`.
    pub fn reattach_logs(
        id: &str,
        fifo_root: &Path,
        log_path: &Path,
        rotation: LogRotation,
        cgroups_path: &str,
    ) -> Result<CreatedContainer, ContainerError> {
        let io_err = |step: &'static str| {
            let id = id.to_string();
            move |source| ContainerError::Io { id, step, source }
        };
        let fifo_dir = fifo_root.join(id);
        let log = Arc::new(Mutex::new(
            LogFile::open(log_path, rotation).map_err(io_err("opening the log file"))?,
        ));
        let mut threads = Vec::new();
        for stream in ["stdout", "stderr"] {
            let fifo = fifo_dir.join(stream);
            if !fifo.exists() {
                continue;
            }
            threads.push(spawn_log_writer(&fifo, stream, &log, id).map_err(io_err("starting a log writer"))?);
        }
        tracing::info!(container = %id, log = %log_path.display(), "log copy re-attached");
        Ok(CreatedContainer {
            id: id.to_string(),
            log_path: log_path.to_path_buf(),
            cgroups_path: cgroups_path.to_string(),
            fifo_dir,
            log_threads: threads,
        })
    }

    async fn create_task(
        &self,
        req: &CreateContainer,
        rootfs: Vec<containerd_client::types::Mount>,
    ) -> Result<CreatedContainer, ContainerError> {
        let id = &req.id;
        let io_err = |step: &'static str| {
            let id = id.clone();
            move |source| ContainerError::Io { id, step, source }
        };
        let fifo_dir = req.fifo_dir.join(id);
        fs::create_dir_all(&fifo_dir).map_err(io_err("creating the FIFO directory"))?;
        let log_path = req
            .log_dir
            .join(&req.meta.container_name)
            .join(format!("{}.log", req.meta.restart_count));
        if let Some(parent) = log_path.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating the log directory"))?;
        }
        let log = Arc::new(Mutex::new(
            LogFile::open(&log_path, req.log_rotation).map_err(io_err("opening the log file"))?,
        ));
        let mut threads = Vec::new();
        let mut fifos = Vec::new();
        // A terminal has one output stream (the shim copies the pty to stdout).
        let terminal = req
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let streams: &[&'static str] = if terminal {
            &["stdout"]
        } else {
            &["stdout", "stderr"]
        };
        for &stream in streams {
            let fifo = fifo_dir.join(stream);
            match nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(io_err("creating a stdio FIFO")(e.into())),
            }
            threads.push(spawn_log_writer(&fifo, stream, &log, id).map_err(io_err("starting a log writer"))?);
            fifos.push(fifo);
        }
        let stdin = fifo_dir.join("stdin");
        if req.stdin.open {
            super::stdin::open(id, &stdin, req.stdin).map_err(io_err("creating the stdin FIFO"))?;
        }
        let path_of = |i: usize| fifos.get(i).map(|f: &PathBuf| f.display().to_string());
        let c = &self.containerd;
        let res = TasksClient::new(c.channel())
            .create(c.request(
                CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs,
                    stdin: if req.stdin.open {
                        stdin.display().to_string()
                    } else {
                        String::new()
                    },
                    stdout: path_of(0).unwrap_or_default(),
                    stderr: path_of(1).unwrap_or_default(),
                    terminal,
                    ..Default::default()
                },
                None,
            ))
            .await;
        if let Err(e) = res {
            super::stdin::close(id);
            abandon_log_copy(&fifos, threads);
            return Err(Self::err(id)(RuntimeError::grpc("Tasks.Create")(e)));
        }
        tracing::info!(container = %id, log = %log_path.display(), "container created");
        Ok(CreatedContainer {
            id: id.clone(),
            log_path,
            cgroups_path: cgroups_path(&req.spec),
            fifo_dir,
            log_threads: threads,
        })
    }

    /// One Tasks call about a container's own task, its error as the container's.
    async fn task_call<Req, T>(
        &self,
        id: &str,
        op: &'static str,
        req: Req,
        call: impl AsyncFnOnce(
            TasksClient<tonic::transport::Channel>,
            tonic::Request<Req>,
        ) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, ContainerError> {
        let c = &self.containerd;
        call(TasksClient::new(c.channel()), c.request(req, None))
            .await
            .map(tonic::Response::into_inner)
            .map_err(RuntimeError::grpc(op))
            .map_err(Self::err(id))
    }

    /// Starts the container's task.
    pub async fn start(&self, id: &str) -> Result<u32, ContainerError> {
        let req = StartRequest {
            container_id: id.into(),
            ..Default::default()
        };
        let started = self.task_call(id, "Tasks.Start", req, async |mut t, r| t.start(r).await);
        Ok(started.await?.pid)
    }

    /// Waits for the task to exit.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus, ContainerError> {
        let req = WaitRequest {
            container_id: id.into(),
            ..Default::default()
        };
        let r = self
            .task_call(id, "Tasks.Wait", req, async |mut t, r| t.wait(r).await)
            .await?;
        Ok(ExitStatus {
            code: r.exit_status,
            exited_at: r.exited_at.and_then(|t| {
                UNIX_EPOCH.checked_add(Duration::new(
                    u64::try_from(t.seconds).ok()?,
                    u32::try_from(t.nanos).ok()?,
                ))
            }),
            oom_killed: false,
        })
    }

    /// Waits for the container's task to exit and reads whether the OOM killer struck from its
    /// memory cgroup, which stays until the task is deleted.
    pub async fn wait_container(&self, created: &CreatedContainer) -> Result<ExitStatus, ContainerError> {
        let mut status = self.wait(&created.id).await?;
        status.oom_killed = oom_killed(&created.cgroups_path);
        Ok(status)
    }

    /// Sends `signal` to the task's init process (`all` = every process of the container).
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), ContainerError> {
        let req = KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal,
            all,
        };
        self.task_call(id, "Tasks.Kill", req, async |mut t, r| t.kill(r).await)
            .await?;
        Ok(())
    }

    /// Stops the container as upstream does: SIGTERM (or the image's stop signal, `signal`), up to
    /// `grace` for it to exit, then SIGKILL to every process. Returns the exit status and whether the
    /// kill was needed.
    pub async fn stop(
        &self,
        id: &str,
        signal: u32,
        grace: Duration,
    ) -> Result<(ExitStatus, bool), ContainerError> {
        // Subscribe to the exit before signalling so a fast exit is not missed.
        let svc = self.clone();
        let wid = id.to_string();
        let mut waiter = tokio::spawn(async move { svc.wait(&wid).await });
        if let Err(e) = self.kill(id, signal, false).await {
            // Already exited: the waiter returns at once.
            if e_code(&e) != Some(tonic::Code::NotFound)
                && e_code(&e) != Some(tonic::Code::FailedPrecondition)
            {
                waiter.abort();
                return Err(e);
            }
        }
        match tokio::time::timeout(grace, &mut waiter).await {
            Ok(joined) => Ok((joined_status(id, joined)?, false)),
            Err(_) => {
                tracing::info!(container = %id, ?grace, "grace period over, sending SIGKILL");
                self.kill(id, libc::SIGKILL as u32, true).await?;
                Ok((joined_status(id, waiter.await)?, true))
            }
        }
    }

    /// Every kubelet-created container of the namespace with its task state.
    pub async fn list(&self) -> Result<Vec<ListedContainer>, RuntimeError> {
        let filter = format!("labels.\"{}\"", labels::POD_UID);
        Ok(self
            .list_filtered(vec![filter])
            .await?
            .into_iter()
            .filter_map(|c| {
                Some(ListedContainer {
                    meta: c.meta?,
                    id: c.id,
                    image: c.image,
                    state: c.state,
                })
            })
            .collect())
    }

    /// Every container of the namespace, the kubelet's or not (image GC counts the images of
    /// all of them), with task states and creation times.
    pub async fn list_all(&self) -> Result<Vec<NamespaceContainer>, RuntimeError> {
        self.list_filtered(Vec::new()).await
    }

    async fn list_filtered(&self, filters: Vec<String>) -> Result<Vec<NamespaceContainer>, RuntimeError> {
        use containerd_client::services::v1::{ListContainersRequest, ListTasksRequest};
        let c = &self.containerd;
        let containers = ContainersClient::new(c.channel())
            .list(c.request(ListContainersRequest { filters }, None))
            .await
            .map_err(RuntimeError::grpc("Containers.List"))?
            .into_inner()
            .containers;
        let tasks = TasksClient::new(c.channel())
            .list(c.request(ListTasksRequest::default(), None))
            .await
            .map_err(RuntimeError::grpc("Tasks.List"))?
            .into_inner()
            .tasks;
        let tasks: HashMap<String, _> = tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        Ok(containers
            .into_iter()
            .map(|ct| NamespaceContainer {
                meta: ContainerMeta::from_labels(&ct.labels),
                state: tasks.get(&ct.id).map_or(TaskState::NoTask, task_state),
                created: ct.created_at.map(|t| {
                    std::time::UNIX_EPOCH
                        + Duration::from_secs(t.seconds.max(0) as u64)
                        + Duration::from_nanos(t.nanos.max(0) as u64)
                }),
                id: ct.id,
                image: ct.image,
            })
            .collect())
    }

    /// The kubelet containers of one pod, with their task states. Cheaper than [`Self::list`] on a
    /// busy node: containerd filters by the pod-UID label and only this pod's tasks are asked for
    /// their state (listing all tasks queries every shim).
    pub async fn list_pod(&self, pod_uid: &str) -> Result<Vec<ListedContainer>, RuntimeError> {
        use containerd_client::services::v1::{GetRequest, ListContainersRequest};
        let c = &self.containerd;
        let containers = ContainersClient::new(c.channel())
            .list(c.request(
                ListContainersRequest {
                    filters: vec![format!("labels.\"{}\"=={pod_uid}", labels::POD_UID)],
                },
                None,
            ))
            .await
            .map_err(RuntimeError::grpc("Containers.List"))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(containers.len());
        for ct in containers {
            let Some(meta) = ContainerMeta::from_labels(&ct.labels) else {
                continue;
            };
            let state = match TasksClient::new(c.channel())
                .get(c.request(
                    GetRequest {
                        container_id: ct.id.clone(),
                        exec_id: String::new(),
                    },
                    None,
                ))
                .await
            {
                Err(s) if s.code() == tonic::Code::NotFound => TaskState::NoTask,
                Err(s) => return Err(RuntimeError::grpc("Tasks.Get")(s)),
                Ok(r) => r
                    .into_inner()
                    .process
                    .as_ref()
                    .map_or(TaskState::NoTask, task_state),
            };
            out.push(ListedContainer {
                id: ct.id,
                meta,
                image: ct.image,
                state,
            });
        }
        Ok(out)
    }

    /// Deletes the task (if any), the container record and its snapshot. Idempotent.
    pub async fn delete(&self, id: &str) -> Result<(), ContainerError> {
        let c = &self.containerd;
        match TasksClient::new(c.channel())
            .delete(c.request(
                DeleteTaskRequest {
                    container_id: id.into(),
                },
                None,
            ))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Self::err(id)(RuntimeError::grpc("Tasks.Delete")(s))),
        }
        match ContainersClient::new(c.channel())
            .delete(c.request(DeleteContainerRequest { id: id.into() }, None))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Self::err(id)(RuntimeError::grpc("Containers.Delete")(s))),
        }
        self.remove_snapshot(id).await;
        super::stdin::close(id);
        tracing::info!(container = %id, "container deleted");
        Ok(())
    }

    /// Deletes the container and then its FIFOs and leftover cgroup directories.
    pub async fn remove(&self, created: &CreatedContainer) -> Result<(), ContainerError> {
        self.delete(&created.id).await?;
        let _ = fs::remove_dir_all(&created.fifo_dir);
        remove_cgroup_dirs(&created.cgroups_path);
        Ok(())
    }

    async fn remove_snapshot(&self, id: &str) {
        let c = &self.containerd;
        if let Err(s) = SnapshotsClient::new(c.channel())
            .remove(c.request(
                RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.into(),
                },
                None,
            ))
            .await
            && s.code() != tonic::Code::NotFound
        {
            tracing::warn!(container = %id, error = %s, "removing the rootfs snapshot failed");
        }
    }
}

fn e_code(e: &ContainerError) -> Option<tonic::Code> {
    match e {
        ContainerError::Runtime { source, .. } => source.code(),
        _ => None,
    }
}

fn joined_status(
    id: &str,
    joined: Result<Result<ExitStatus, ContainerError>, tokio::task::JoinError>,
) -> Result<ExitStatus, ContainerError> {
    joined.map_err(|e| ContainerError::Io {
        id: id.into(),
        step: "waiting for the exit",
        source: io::Error::other(e.to_string()),
    })?
}

fn cgroups_path(spec: &Spec) -> String {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

pub use crate::cgroups::fs::{oom_kill_count, oom_killed, remove_cgroup_dirs};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_that_cannot_be_written_is_still_drained() {
        // /dev/full answers every write with ENOSPC, as a full log disk does.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let log = Mutex::new(LogFile::open(Path::new("/dev/full"), LogRotation::default()).unwrap());
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                // Far more than a pipe holds: a copier that stopped reading would block this.
                for i in 0..20_000 {
                    writeln!(w, "line {i} of a container that logs a lot").unwrap();
                }
            })
        };
        copy_stream(&fifo, "stdout", &log, "c1").unwrap();
        writer.join().unwrap();
    }

    #[test]
    fn abandoning_a_failed_create_does_not_wait_for_a_shim_holding_a_fifo() {
        // containerd died mid-Tasks.Create: the shim opened stdout and lives on, stderr never got a
        // writer. The worker must get its error back at once, not when that shim goes away.
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Mutex::new(
            LogFile::open(&dir.path().join("0.log"), LogRotation::default()).unwrap(),
        ));
        let fifos: Vec<PathBuf> = ["stdout", "stderr"].iter().map(|s| dir.path().join(s)).collect();
        let mut threads = Vec::new();
        for (f, s) in fifos.iter().zip(["stdout", "stderr"]) {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::S_IRWXU).unwrap();
            threads.push(spawn_log_writer(f, s, &log, "c1").unwrap());
        }
        let mut shim = fs::OpenOptions::new().write(true).open(&fifos[0]).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            abandon_log_copy(&fifos, threads);
            done_tx.send(()).unwrap();
        });
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("abandoning the log copy blocked on the FIFO the shim holds");
        // The detached copy still records what the task writes until it is deleted.
        writeln!(shim, "late line").unwrap();
        drop(shim);
        let path = dir.path().join("0.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !fs::read_to_string(&path).unwrap().contains("stdout F late line") {
            assert!(
                std::time::Instant::now() < deadline,
                "the copy of the held stream stopped"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn log_files_rotate_by_size_and_keep_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let rotation = LogRotation {
            max_size: 100,
            max_files: 3,
        };
        let mut log = LogFile::open(&path, rotation).unwrap();
        for i in 0..50 {
            log.write_record(format!("record {i:03} padded to be longer\n").as_bytes())
                .unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "current + 2 rotated: {names:?}");
        assert!(names.contains(&"0.log".to_string()));
        assert!(
            names
                .iter()
                .filter(|n| n.starts_with("0.log."))
                .all(|n| n.len() >= "0.log.20230101-000000".len())
        );
        assert!(fs::metadata(&path).unwrap().len() <= 100);
        // The newest records are in the current file, the ones just before in the newest rotated one.
        let current = fs::read_to_string(&path).unwrap();
        assert!(current.contains("record 049"));
        let newest_rotated = fs::read_to_string(dir.path().join(&names[2])).unwrap();
        assert!(!newest_rotated.is_empty() && !newest_rotated.contains("record 049"));
        assert!(
            newest_rotated.contains("record 04"),
            "the last rotation holds the records before: {newest_rotated}"
        );
        // Reopening continues the same file and its size.
        drop(log);
        let log = LogFile::open(&path, rotation).unwrap();
        assert_eq!(log.size, current.len() as u64);
    }

    #[test]
    fn rfc3339_nano_matches_go() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_450_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.12345Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::new(951_782_400, 1); // 2000-02-29
        assert_eq!(rfc3339_nano(leap), "2000-02-29T00:00:00.000000001Z");
    }

    #[test]
    fn cri_records_mark_partial_lines() {
        let t = UNIX_EPOCH + Duration::from_secs(1);
        assert_eq!(
            cri_log_record(t, "stdout", b"hello", true),
            b"1970-01-01T00:00:01Z stdout F hello\n"
        );
        assert_eq!(
            cri_log_record(t, "stderr", b"part", false),
            b"1970-01-01T00:00:01Z stderr P part\n"
        );
    }

    #[test]
    fn oom_kill_counter_is_read() {
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2);
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
        assert!(!oom_killed("/../etc"));
        assert!(!oom_killed("/knode-no-such-cgroup/x"));
    }

    #[test]
    fn labels_round_trip() {
        let m = ContainerMeta {
            pod_uid: "u".into(),
            pod_namespace: "ns".into(),
            pod_name: "p".into(),
            container_name: "c".into(),
            restart_count: 3,
            spec_hash: "abc".into(),
        };
        assert_eq!(ContainerMeta::from_labels(&m.labels()), Some(m));
        assert_eq!(ContainerMeta::from_labels(&HashMap::new()), None);
    }

    #[test]
    fn cgroup_paths_that_escape_are_ignored() {
        // Must not touch anything: these would walk out of the hierarchy.
        remove_cgroup_dirs("/../etc");
        remove_cgroup_dirs("");
        remove_cgroup_dirs("/");
        assert!(Path::new("/etc").exists());
    }
}
