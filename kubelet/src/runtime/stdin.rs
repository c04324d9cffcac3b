//! Container stdin (`stdin: true` in the pod spec), as containerd's CRI does it: the task is
//! created with a stdin FIFO whose write end the kubelet keeps open for the container's life, so
//! the container does not see EOF between attach sessions; `kubectl attach -i` writes into it.
//! With `stdinOnce` (and no TTY: upstream keeps a terminal's stdin open, kubectl#52686) the first
//! attach session that closes its stdin closes the container's stdin for good.
//!
//! The kubelet opens the FIFO read-write: that never blocks (no wait for the shim's reader) and
//! holds a write end; the kubelet never reads from it. The pipes live in a process-wide registry
//! keyed by container ID because the API server's attach and the pod workers that create
//! containers share nothing else.
//!
//! A kubelet restart closes the container's stdin: the kernel closes the write end with the old
//! process, the shim then reads EOF and closes the container's stdin, as a containerd restart does
//! under CRI. An adopted container therefore has no stdin pipe; attach input to it is discarded.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

/// How a container's stdin is set up (`stdin`, `stdinOnce`, `tty` of the container spec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdinConfig {
    /// `stdin: true`: the task gets a stdin FIFO.
    pub open: bool,
    /// `stdinOnce: true`.
    pub once: bool,
    /// `tty: true`.
    pub tty: bool,
}

impl StdinConfig {
    /// Whether the end of an attach session's input closes the container's stdin.
    pub fn closes_after_first_attach(&self) -> bool {
        self.open && self.once && !self.tty
    }
}

/// The kubelet's end of one container's stdin FIFO.
#[derive(Debug)]
pub struct StdinPipe {
    file: std::fs::File,
    path: PathBuf,
    config: StdinConfig,
}

impl StdinPipe {
    /// Writes `data` to the container's stdin. Blocking (a container that does not read fills the
    /// pipe): call from `spawn_blocking`.
    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        (&self.file).write_all(data)
    }

    /// The container's stdin settings.
    pub fn config(&self) -> StdinConfig {
        self.config
    }
}

static PIPES: LazyLock<Mutex<HashMap<String, Arc<StdinPipe>>>> = LazyLock::new(Default::default);

fn pipes() -> std::sync::MutexGuard<'static, HashMap<String, Arc<StdinPipe>>> {
    crate::lock::lock(&PIPES)
}

/// Makes the FIFO at `path` and registers the kubelet's end of it for container `id`.
pub fn open(id: &str, path: &Path, config: StdinConfig) -> io::Result<()> {
    match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    pipes().insert(
        id.to_string(),
        Arc::new(StdinPipe {
            file,
            path: path.to_path_buf(),
            config,
        }),
    );
    Ok(())
}

/// The stdin pipe of container `id`, if it has one that is still open.
pub fn get(id: &str) -> Option<Arc<StdinPipe>> {
    pipes().get(id).cloned()
}

/// Closes the container's stdin (once the last attach session holding it lets go) and removes
/// the FIFO. Idempotent.
pub fn close(id: &str) {
    if let Some(p) = pipes().remove(id) {
        let _ = std::fs::remove_file(&p.path);
        tracing::info!(container = id, "container stdin closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn stdin_once_closes_only_without_a_terminal() {
        let once = StdinConfig {
            open: true,
            once: true,
            tty: false,
        };
        assert!(once.closes_after_first_attach());
        assert!(!StdinConfig { tty: true, ..once }.closes_after_first_attach());
        assert!(!StdinConfig { once: false, ..once }.closes_after_first_attach());
    }

    #[test]
    fn the_pipe_carries_writes_and_close_gives_the_reader_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdin");
        let id = format!("stdin-test-{}", std::process::id());
        open(&id, &path, StdinConfig::default()).unwrap();
        // The shim's side: a reader opened after the kubelet's end.
        let mut reader = std::fs::File::open(&path).unwrap();
        get(&id).unwrap().write(b"hello\n").unwrap();
        let mut buf = [0u8; 6];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello\n");
        close(&id);
        assert!(get(&id).is_none());
        assert!(!path.exists());
        let mut rest = Vec::new();
        assert_eq!(
            reader.read_to_end(&mut rest).unwrap(),
            0,
            "EOF once the writer is gone"
        );
    }
}
