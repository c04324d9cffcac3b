//! The host side of volumes: tmpfs mounts (secrets, downward API, projected, `medium: Memory`
//! emptyDirs never touch the disk), unmounting everything of a pod, and fsGroup ownership
//! (upstream's `SetVolumeOwnership`). Thin adapters over mount(2), chown(2), chmod(2).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// The mount points listed in `/proc/self/mountinfo` (unescaped), in mount order.
pub fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` is itself a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Mounts a tmpfs at `dir` (created if missing) unless one is already there; `size` in bytes.
pub fn mount_tmpfs(dir: &Path, size: Option<u64>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir) {
        return Ok(());
    }
    let mut data = String::from("mode=0755");
    if let Some(s) = size {
        data.push_str(&format!(",size={s}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Unmounts every mount at or below `dir`, deepest first (lazily, so a busy mount does not keep
/// the pod's directory alive). Returns the paths that could not be unmounted.
pub fn unmount_under(dir: &Path) -> Vec<(PathBuf, std::io::Error)> {
    let mut mine: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    mine.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mine.dedup();
    let mut failed = Vec::new();
    for m in mine {
        if let Err(e) = nix::mount::umount2(&m, MntFlags::MNT_DETACH) {
            // Stacked mounts of the same path: EINVAL once the last one is gone.
            if e != nix::errno::Errno::EINVAL {
                failed.push((m, std::io::Error::from(e)));
            }
        }
    }
    failed
}

/// How a volume's files are treated by [`set_ownership`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// configMap, secret, downwardAPI, projected: group read (`0440`).
    ReadOnly,
    /// emptyDir: group read-write (`0660`).
    ReadWrite,
}

/// Upstream's `fsGroupChangePolicy: OnRootMismatch` test: the root already has the group, the
/// setgid bit and the group permissions, so the walk is skipped.
pub fn root_matches(root: &Path, gid: u32, access: Access) -> bool {
    let Ok(m) = std::fs::metadata(root) else {
        return false;
    };
    let mode = m.permissions().mode();
    let mask = match access {
        Access::ReadOnly => 0o440,
        Access::ReadWrite => 0o660,
    };
    m.gid() == gid && mode & 0o2000 != 0 && mode & mask == mask
}

/// Gives `root` and everything below it to group `gid`: group read (and write for read-write
/// volumes), and setgid + group search on directories so new files inherit the group. Symlinks
/// are re-grouped but not followed.
pub fn set_ownership(root: &Path, gid: u32, access: Access) -> std::io::Result<()> {
    let mask = match access {
        Access::ReadOnly => 0o440,
        Access::ReadWrite => 0o660,
    };
    fn walk(p: &Path, gid: u32, mask: u32) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(p)?;
        std::os::unix::fs::lchown(p, None, Some(gid))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mut mode = meta.permissions().mode() & 0o7777;
        mode |= mask;
        if meta.is_dir() {
            mode |= 0o2000 | 0o110;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
        if meta.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), gid, mask)?;
            }
        }
        Ok(())
    }
    walk(root, gid, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
    }

    #[test]
    fn ownership_adds_group_bits_and_setgid() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), b"x").unwrap();
        std::fs::set_permissions(d.path().join("sub/f"), std::fs::Permissions::from_mode(0o400)).unwrap();
        std::os::unix::fs::symlink("sub/f", d.path().join("l")).unwrap();
        let gid = 4242;
        assert!(!root_matches(d.path(), gid, Access::ReadOnly));
        set_ownership(d.path(), gid, Access::ReadOnly).unwrap();
        let f = std::fs::metadata(d.path().join("sub/f")).unwrap();
        assert_eq!((f.gid(), f.permissions().mode() & 0o7777), (gid, 0o440));
        let s = std::fs::metadata(d.path().join("sub")).unwrap();
        assert_eq!(s.permissions().mode() & 0o2000, 0o2000);
        assert_eq!(std::fs::symlink_metadata(d.path().join("l")).unwrap().gid(), gid);
        assert!(root_matches(d.path(), gid, Access::ReadOnly));
    }
}
