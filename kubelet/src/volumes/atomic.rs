//! Upstream's atomic writer (`pkg/volume/util/atomic_writer.go`): a volume's files are written into
//! a fresh timestamped directory `..<ts>`, a `..data` symlink is swapped to it with one rename, and
//! the user-visible names are symlinks through `..data` (`key -> ..data/key`). A reader opening a
//! file therefore sees either the whole old set or the whole new set, never a mix or a
//! half-written file. Writing the same payload again changes nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// The `..data` symlink.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (`0o644` …).
    pub mode: u32,
}

/// Relative path (may contain `/`) → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// What went wrong writing a payload.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Upstream's payload path checks: relative, no `..` element, not starting with `..` (reserved
/// for the writer's own entries), at most 4096 bytes.
pub fn validate_path(p: &str) -> Result<(), WriteError> {
    let bad = |reason| {
        Err(WriteError::InvalidPath {
            path: p.to_string(),
            reason,
        })
    };
    if p.is_empty() {
        return bad("must not be empty");
    }
    if p.len() > 4096 {
        return bad("must be less than or equal to 4096 characters");
    }
    if p.starts_with('/') {
        return bad("must be relative path");
    }
    if p.split('/').any(|c| c == "..") {
        return bad("must not contain '..'");
    }
    if p.starts_with("..") {
        return bad("must not start with '..'");
    }
    Ok(())
}

/// The top-level names a payload makes visible (`a/b` → `a`).
fn visible_names(payload: &Payload) -> std::collections::BTreeSet<String> {
    payload
        .keys()
        .filter_map(|k| k.split('/').find(|c| !c.is_empty()).map(String::from))
        .collect()
}

/// Reads the payload currently published in `dir` (through `..data`); `None` when there is none.
pub fn current(dir: &Path) -> Option<(PathBuf, Payload)> {
    let target = std::fs::read_link(dir.join(DATA_DIR)).ok()?;
    let ts_dir = dir.join(&target);
    let mut out = Payload::new();
    fn walk(base: &Path, rel: &str, out: &mut Payload) -> Option<()> {
        for e in std::fs::read_dir(base.join(rel)).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                walk(base, &r, out)?;
            } else {
                let data = std::fs::read(e.path()).ok()?;
                out.insert(
                    r,
                    FileProjection {
                        data,
                        mode: meta.permissions().mode() & 0o7777,
                    },
                );
            }
        }
        Some(())
    }
    walk(&ts_dir, "", &mut out)?;
    Some((ts_dir, out))
}

/// Publishes `payload` in `dir` atomically; returns whether anything changed. Entries of an older
/// payload that the new one lacks disappear with the swap. `post_write` runs on the new timestamped
/// directory before it is published (the caller's ownership changes, e.g. fsGroup).
pub fn write(
    dir: &Path,
    payload: &Payload,
    post_write: &dyn Fn(&Path) -> std::io::Result<()>,
) -> Result<bool, WriteError> {
    for p in payload.keys() {
        validate_path(p)?;
    }
    let old = current(dir);
    if let Some((_, old_payload)) = &old {
        // A post-write hook may add group bits (fsGroup): the old file must carry at least the
        // bits asked for. (A pod's volume modes cannot change: the pod spec is immutable.)
        let same = old_payload.len() == payload.len()
            && payload.iter().all(|(k, v)| {
                old_payload
                    .get(k)
                    .is_some_and(|o| o.data == v.data && (o.mode & v.mode & 0o777) == (v.mode & 0o777))
            });
        if same {
            return Ok(false);
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ts = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let mut n = 0u32;
    let ts_dir = loop {
        let cand = dir.join(format!(
            "..{ts}{}",
            if n == 0 { String::new() } else { format!(".{n}") }
        ));
        match std::fs::create_dir(&cand) {
            Ok(()) => break cand,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => {
                return Err(WriteError::Io {
                    path: cand,
                    source: e,
                });
            }
        }
    };
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755)).map_err(io(&ts_dir))?;
    let fill = || -> Result<(), WriteError> {
        for (rel, f) in payload {
            let path = ts_dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, &f.data).map_err(io(&path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))
                .map_err(io(&path))?;
        }
        post_write(&ts_dir).map_err(io(&ts_dir))
    };
    if let Err(e) = fill() {
        let _ = std::fs::remove_dir_all(&ts_dir);
        return Err(e);
    }
    // User-visible names first (they dangle until the swap if new), then the swap itself.
    let names = visible_names(payload);
    for name in &names {
        let link = dir.join(name);
        let target = PathBuf::from(DATA_DIR).join(name);
        match std::fs::read_link(&link) {
            Ok(t) if t == target => {}
            Ok(_) => {
                std::fs::remove_file(&link).map_err(io(&link))?;
                symlink(&target, &link).map_err(io(&link))?;
            }
            Err(_) => {
                if link.symlink_metadata().is_ok() {
                    // A plain file or directory from an older (non-atomic) writer.
                    let _ = std::fs::remove_dir_all(&link).or_else(|_| std::fs::remove_file(&link));
                }
                symlink(&target, &link).map_err(io(&link))?;
            }
        }
    }
    let tmp = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    let ts_name = ts_dir.file_name().map(PathBuf::from).unwrap_or_default();
    symlink(&ts_name, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, dir.join(DATA_DIR)).map_err(io(dir))?;
    // Old names and the old timestamped directory go after the swap.
    if let Some((old_dir, old_payload)) = old {
        for name in visible_names(&old_payload).difference(&names) {
            let _ = std::fs::remove_file(dir.join(name));
        }
        if old_dir != ts_dir {
            let _ = std::fs::remove_dir_all(&old_dir);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn swaps_data_symlink_and_removes_stale_names() {
        let d = tempfile::tempdir().unwrap();
        let p1 = Payload::from([
            ("a".to_string(), file("1", 0o644)),
            ("sub/b".to_string(), file("2", 0o400)),
        ]);
        assert!(write(d.path(), &p1, &|_| Ok(())).unwrap());
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(d.path().join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(d.path().join("a")).unwrap(),
            PathBuf::from("..data/a")
        );
        let first = std::fs::read_link(d.path().join(DATA_DIR)).unwrap();
        assert!(first.to_string_lossy().starts_with(".."), "{first:?}");
        let mode = std::fs::metadata(d.path().join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        // Same payload: nothing changes.
        assert!(!write(d.path(), &p1, &|_| Ok(())).unwrap());
        assert_eq!(std::fs::read_link(d.path().join(DATA_DIR)).unwrap(), first);
        // New payload: new dir, old one gone, dropped names gone.
        let p2 = Payload::from([("a".to_string(), file("changed", 0o644))]);
        assert!(write(d.path(), &p2, &|_| Ok(())).unwrap());
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "changed");
        assert!(d.path().join("sub").symlink_metadata().is_err());
        assert!(!d.path().join(&first).exists());
        let entries: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 3, "{entries:?}"); // a, ..data, ..<ts>
    }

    #[test]
    fn rejects_escaping_and_reserved_paths() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x", "/abs", "a/../../b", "..data", ""] {
            let p = Payload::from([(bad.to_string(), file("x", 0o644))]);
            let e = write(d.path(), &p, &|_| Ok(())).unwrap_err();
            assert!(e.to_string().contains("invalid path"), "{bad}: {e}");
        }
        assert!(std::fs::read_dir(d.path()).unwrap().next().is_none());
    }

    #[test]
    fn failed_post_write_keeps_the_old_set() {
        let d = tempfile::tempdir().unwrap();
        let p1 = Payload::from([("a".to_string(), file("1", 0o644))]);
        write(d.path(), &p1, &|_| Ok(())).unwrap();
        let p2 = Payload::from([("a".to_string(), file("2", 0o644))]);
        assert!(write(d.path(), &p2, &|_| Err(std::io::Error::other("no"))).is_err());
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "1");
    }
}
