//! An image's /etc/passwd and /etc/group, for resolving named image users (`spec::user`).
//!
//! containerd's CRI reads them from the container's mounted rootfs at create time
//! (`oci.WithUser`/`WithAdditionalGIDs` via `mount.WithTempMount`). knode builds the spec before the
//! container snapshot exists, so it takes a read-only *view* snapshot of the image's top chain ID,
//! mounts it on a dedicated thread inside a private mount namespace of its own (nothing shows on the
//! host, and the mount disappears with the thread even if reading fails), reads both files with
//! symlinks resolved inside the rootfs (as `fs.RootPath` does), and removes the view. Image content
//! behind a chain ID never changes, so the result is cached per chain ID.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{RemoveSnapshotRequest, ViewSnapshotRequest};
use containerd_client::types::Mount;
use nix::mount::{MntFlags, MsFlags};

use super::{Containerd, RuntimeError, SNAPSHOTTER};

/// Larger files are not user databases; reading stops there.
const MAX_FILE: u64 = 4 << 20;
/// Symlinks followed while resolving a path inside the rootfs (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;
/// Chain IDs remembered; the cache is emptied when full (images on a node are few).
const CACHE_ENTRIES: usize = 256;

/// The two files, `None` where the image has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserDb {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

/// Why the files could not be read; the container fails to be created.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("reading /etc/passwd of image snapshot {chain_id}: {source}")]
    Runtime {
        chain_id: String,
        #[source]
        source: RuntimeError,
    },
    #[error("reading /etc/passwd of image snapshot {chain_id}: {message}")]
    Mount { chain_id: String, message: String },
}

fn cache() -> &'static Mutex<HashMap<String, Arc<UserDb>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<UserDb>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The /etc/passwd and /etc/group of the image whose top snapshot is `chain_id`.
pub async fn image_user_db(containerd: &Containerd, chain_id: &str) -> Result<Arc<UserDb>, PasswdError> {
    if let Some(db) = cache().lock().ok().and_then(|c| c.get(chain_id).cloned()) {
        return Ok(db);
    }
    let rt = |source| PasswdError::Runtime {
        chain_id: chain_id.to_string(),
        source,
    };
    // The view is unreferenced: the lease keeps the GC off it until it is removed again.
    let lease = containerd
        .create_lease("passwd", Duration::from_secs(120))
        .await
        .map_err(rt)?;
    let key = lease.id.clone();
    let read = view_and_read(containerd, &lease, &key, chain_id).await;
    if let Err(s) = SnapshotsClient::new(containerd.channel())
        .remove(containerd.request(
            RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
            },
            None,
        ))
        .await
        && s.code() != tonic::Code::NotFound
    {
        tracing::warn!(snapshot = %key, error = %s, "removing the passwd view snapshot failed; the GC takes it");
    }
    if let Err(e) = containerd.delete_lease(&lease).await {
        tracing::warn!(lease = %lease.id, error = %e, "deleting the lease failed; it expires by itself");
    }
    let db = Arc::new(read?);
    if let Ok(mut c) = cache().lock() {
        if c.len() >= CACHE_ENTRIES {
            c.clear();
        }
        c.insert(chain_id.to_string(), db.clone());
    }
    Ok(db)
}

async fn view_and_read(
    containerd: &Containerd,
    lease: &super::Lease,
    key: &str,
    chain_id: &str,
) -> Result<UserDb, PasswdError> {
    let mounts = SnapshotsClient::new(containerd.channel())
        .view(containerd.request(
            ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
                parent: chain_id.to_string(),
                labels: HashMap::new(),
            },
            Some(lease),
        ))
        .await
        .map_err(RuntimeError::grpc("Snapshots.View"))
        .map_err(|source| PasswdError::Runtime {
            chain_id: chain_id.to_string(),
            source,
        })?
        .into_inner()
        .mounts;
    let mount_err = |message: String| PasswdError::Mount {
        chain_id: chain_id.to_string(),
        message,
    };
    let [mount] = <[Mount; 1]>::try_from(mounts)
        .map_err(|m| mount_err(format!("expected one mount for the view, got {}", m.len())))?;
    let dir = std::env::temp_dir().join(format!("{key}-rootfs"));
    std::fs::create_dir_all(&dir).map_err(|e| mount_err(format!("creating {}: {e}", dir.display())))?;
    let target = dir.clone();
    let joined = tokio::task::spawn_blocking(move || {
        // A thread of its own: its private mount namespace dies with it.
        std::thread::spawn(move || read_in_private_namespace(&mount, &target))
            .join()
            .map_err(|_| "the reading thread panicked".to_string())?
    })
    .await;
    let _ = std::fs::remove_dir(&dir);
    joined.map_err(|e| mount_err(e.to_string()))?.map_err(mount_err)
}

/// Mounts `m` read-only on `target` inside a new mount namespace of the calling thread and reads
/// the two files. Must run on a thread that is not reused afterwards.
fn read_in_private_namespace(m: &Mount, target: &Path) -> Result<UserDb, String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    // Nothing mounted here may propagate back to the host's namespace.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    mount_read_only(m, target)?;
    let read = |p: &str| read_in_root(target, p).map_err(|e| format!("reading /{p}: {e}"));
    let db = UserDb {
        passwd: read("etc/passwd")?,
        group: read("etc/group")?,
    };
    let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
    Ok(db)
}

/// Mounts a containerd mount (`bind` or `overlay`) read-only.
fn mount_read_only(m: &Mount, target: &Path) -> Result<(), String> {
    let mut flags = MsFlags::MS_RDONLY;
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" | "rw" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other),
        }
    }
    let data = data.join(",");
    let bind = flags.contains(MsFlags::MS_BIND);
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        Some(m.r#type.as_str()).filter(|_| !bind),
        flags,
        Some(data.as_str()).filter(|d| !d.is_empty()),
    )
    .map_err(|e| format!("mounting {} ({}) read-only: {e}", m.source, m.r#type))?;
    if bind {
        // A bind mount ignores MS_RDONLY until remounted.
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("remounting {} read-only: {e}", target.display()))?;
    }
    Ok(())
}

/// Reads `path` (relative) inside `root`, following symlinks as if `root` were `/` (an absolute or
/// `..`-escaping link stays inside). `Ok(None)` if it does not exist or is not a regular file.
pub fn read_in_root(root: &Path, path: &str) -> std::io::Result<Option<String>> {
    let Some(p) = resolve_in_root(root, path)? else {
        return Ok(None);
    };
    let f = match std::fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut buf)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The host path of `path` inside `root` with every symlink resolved within `root`; `None` when a
/// component is missing.
fn resolve_in_root(root: &Path, path: &str) -> std::io::Result<Option<PathBuf>> {
    let mut todo: Vec<String> = components(path);
    todo.reverse();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let here: PathBuf = done.iter().fold(root.to_path_buf(), |p, c| p.join(c)).join(&c);
        match std::fs::symlink_metadata(&here) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(std::io::Error::other("too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&here)?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(components(&target).into_iter().rev());
            }
            Ok(_) => done.push(c),
        }
    }
    Ok(Some(done.iter().fold(root.to_path_buf(), |p, c| p.join(c))))
}

/// Normal and `..` components of a path (`.` and the root dropped).
fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("usr/lib/passwd"), "app:x:1:1::/:/bin/sh\n").unwrap();
        // Absolute and escaping links are taken relative to the image root, never the host's.
        symlink("/usr/lib/passwd", r.join("etc/passwd")).unwrap();
        symlink("../../../../usr/lib/passwd", r.join("etc/group")).unwrap();
        assert_eq!(
            read_in_root(r, "etc/passwd").unwrap().as_deref(),
            Some("app:x:1:1::/:/bin/sh\n")
        );
        assert_eq!(
            read_in_root(r, "/etc/group").unwrap().as_deref(),
            Some("app:x:1:1::/:/bin/sh\n")
        );
        assert_eq!(read_in_root(r, "etc/shadow").unwrap(), None, "missing file");
        assert_eq!(
            read_in_root(r, "etc").unwrap(),
            None,
            "a directory is no database"
        );
        symlink("loop", r.join("loop")).unwrap();
        assert!(read_in_root(r, "loop").is_err(), "symlink loop");
    }
}
