//! knode's test images, built reproducibly from the project's own files and pushed to a registry.
//!
//! Layers are deterministic tars (sorted paths, mtime 0, uid/gid 0) compressed with a fixed gzip
//! header, so the same inputs give the same digests on every machine. Images:
//! - `knode/testimg:latest`: busybox-static (`/bin/sh` and applets), `/etc/passwd`+`group`, and the
//!   static `testimg` program as entrypoint;
//! - `knode/busybox:latest`: the first two layers with `sh` as command.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use crate::{HarnessError, Result};

/// One filesystem entry of a layer. Paths are relative to the image root, without a leading '/'.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    File { path: String, mode: u32, data: Vec<u8> },
    Symlink { path: String, target: String },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

/// A compressed layer with its two identities: the blob digest (of the gzip) and the diff ID
/// (of the uncompressed tar), which containerd's chain IDs are computed from.
#[derive(Clone, Debug)]
pub struct Layer {
    pub tar_gz: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

/// Image configuration fields the tests rely on.
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub exposed_ports: Vec<String>,
}

/// A built image, ready to push.
#[derive(Clone, Debug)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config_json: Vec<u8>,
}

/// What a push left in the registry.
#[derive(Clone, Debug)]
pub struct PushedImage {
    /// Full reference, e.g. `127.0.0.1:5000/knode/testimg:latest`.
    pub reference: String,
    /// Digest of the manifest as the registry serves it.
    pub manifest_digest: String,
    pub layers: Vec<Layer>,
    pub config_digest: String,
}

/// The test images in a registry.
#[derive(Clone, Debug)]
pub struct TestImages {
    pub testimg: PushedImage,
    pub busybox: PushedImage,
}

fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Builds one layer. Missing parent directories are added (mode 0755); entries are sorted.
pub fn build_layer(entries: &[Entry]) -> Result<Layer> {
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    for e in entries {
        let mut p = Path::new(e.path()).parent();
        while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
            let d = dir.to_string_lossy().to_string();
            all.entry(d.clone())
                .or_insert(Entry::Dir { path: d, mode: 0o755 });
            p = dir.parent();
        }
        all.insert(e.path().to_string(), e.clone());
    }
    let io = |what: &str| HarnessError::io(format!("building layer: {what}"));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in all.values() {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match entry {
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                builder
                    .append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(io(path))?;
            }
            Entry::File { path, mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                builder
                    .append_data(&mut h, path, data.as_slice())
                    .map_err(io(path))?;
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                builder.append_link(&mut h, path, target).map_err(io(path))?;
            }
        }
    }
    let tar = builder.into_inner().map_err(io("finishing tar"))?;
    // GzEncoder writes mtime 0 and a fixed OS byte: the blob is reproducible.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).map_err(io("gzip"))?;
    let tar_gz = gz.finish().map_err(io("gzip finish"))?;
    Ok(Layer {
        digest: sha256_hex(&tar_gz),
        diff_id: sha256_hex(&tar),
        tar_gz,
    })
}

/// Builds an image (layers + OCI config) for linux/amd64.
pub fn build_image(layers: Vec<Layer>, cfg: &ImageConfig) -> Image {
    let ports: serde_json::Map<String, serde_json::Value> = cfg
        .exposed_ports
        .iter()
        .map(|p| (p.clone(), serde_json::json!({})))
        .collect();
    let config = serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": cfg.entrypoint,
            "Cmd": cfg.cmd,
            "Env": cfg.env,
            "WorkingDir": cfg.working_dir,
            "User": cfg.user,
            "ExposedPorts": ports,
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "history": layers.iter().map(|_| serde_json::json!({"created": "1970-01-01T00:00:00Z", "created_by": "knode-harness"})).collect::<Vec<_>>(),
    });
    Image {
        layers,
        config_json: config.to_string().into_bytes(),
    }
}

/// An oci-client speaking plain HTTP: only for the private loopback registry.
pub fn insecure_client() -> Client {
    crate::install_crypto_provider();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// Pushes `image` as `<registry>/<repository>:<tag>` over the OCI distribution API.
pub async fn push(
    registry: &str,
    repository: &str,
    tag: &str,
    image: &Image,
    auth: &RegistryAuth,
) -> Result<PushedImage> {
    let reference = Reference::with_tag(registry.to_string(), repository.to_string(), tag.to_string());
    let err = |e: oci_client::errors::OciDistributionError| HarnessError::Push {
        reference: reference.whole(),
        message: e.to_string(),
    };
    let client = insecure_client();
    let layers: Vec<ImageLayer> = image
        .layers
        .iter()
        .map(|l| ImageLayer::oci_v1_gzip(l.tar_gz.clone(), None))
        .collect();
    let config = Config::oci_v1(image.config_json.clone(), None);
    let manifest = OciImageManifest::build(&layers, &config, None);
    let config_digest = manifest.config.digest.clone();
    client
        .push(&reference, &layers, config, auth, Some(manifest))
        .await
        .map_err(err)?;
    let (_, manifest_digest) = client.pull_image_manifest(&reference, auth).await.map_err(err)?;
    Ok(PushedImage {
        reference: reference.whole(),
        manifest_digest,
        layers: image.layers.clone(),
        config_digest,
    })
}

/// Path of the static `testimg` binary: `$KNODE_TESTIMG_BIN`, else where `scripts/build-testimg.sh`
/// puts it.
pub fn testimg_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("KNODE_TESTIMG_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join("target"));
            target.join("x86_64-unknown-linux-gnu/testimg/testimg")
        }
    };
    let data = std::fs::read(&path).map_err(|_| {
        HarnessError::Missing(format!(
            "test image program not found at {}: build it with scripts/build-testimg.sh",
            path.display()
        ))
    })?;
    if has_interpreter(&data) {
        return Err(HarnessError::Missing(format!(
            "{} is dynamically linked; the test image needs it static (scripts/build-testimg.sh)",
            path.display()
        )));
    }
    Ok(path)
}

/// True if a 64-bit little-endian ELF has a PT_INTERP program header (i.e. is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).any(|i| u32_at(phoff as usize + i * phentsize) == Some(3))
}

/// The busybox-static layer: `/bin/busybox`, one symlink per applet, and the usual top-level dirs.
pub fn busybox_layer() -> Result<Layer> {
    let busybox = Path::new("/bin/busybox");
    let data = std::fs::read(busybox).map_err(|_| {
        HarnessError::Missing("/bin/busybox not found: install busybox-static (scripts/setup-host.sh)".into())
    })?;
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(HarnessError::io("running busybox --list"))?;
    let mut entries = vec![Entry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        data,
    }];
    for applet in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        entries.push(Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    for (dir, mode) in [
        ("tmp", 0o1777),
        ("root", 0o700),
        ("proc", 0o755),
        ("sys", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("var/run", 0o755),
    ] {
        entries.push(Entry::Dir {
            path: dir.into(),
            mode,
        });
    }
    build_layer(&entries)
}

/// Users and groups so numeric and named USERs resolve inside the image.
pub fn etc_layer() -> Result<Layer> {
    build_layer(&[
        Entry::File {
            path: "etc/passwd".into(),
            mode: 0o644,
            data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        },
        Entry::File {
            path: "etc/group".into(),
            mode: 0o644,
            data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        },
    ])
}

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds both test images and pushes them to `registry` (`127.0.0.1:<port>`).
pub async fn push_test_images(registry: &str) -> Result<TestImages> {
    push_test_images_as(registry, &RegistryAuth::Anonymous).await
}

/// Like [`push_test_images`], authenticating as `auth` (for registries started with auth).
pub async fn push_test_images_as(registry: &str, auth: &RegistryAuth) -> Result<TestImages> {
    let base = busybox_layer()?;
    let etc = etc_layer()?;
    let bin = std::fs::read(testimg_binary()?).map_err(HarnessError::io("reading testimg binary"))?;
    let app = build_layer(&[Entry::File {
        path: "testimg".into(),
        mode: 0o755,
        data: bin,
    }])?;
    let testimg = build_image(
        vec![base.clone(), etc.clone(), app],
        &ImageConfig {
            entrypoint: vec!["/testimg".into()],
            cmd: vec!["serve".into()],
            env: vec![PATH_ENV.into(), "TESTIMG=1".into()],
            working_dir: "/".into(),
            user: "0:0".into(),
            exposed_ports: vec!["8080/tcp".into()],
        },
    );
    let busybox = build_image(
        vec![base, etc],
        &ImageConfig {
            cmd: vec!["sh".into()],
            env: vec![PATH_ENV.into()],
            working_dir: "/".into(),
            ..Default::default()
        },
    );
    Ok(TestImages {
        testimg: push(registry, "knode/testimg", "latest", &testimg, auth).await?,
        busybox: push(registry, "knode/busybox", "latest", &busybox, auth).await?,
    })
}

/// Pushes `knode/pause:latest`, the sandbox image of CRI nodes (upstream's kubelet runs a pause
/// container per pod; knode does not): the static test program alone, sleeping until SIGTERM.
pub async fn push_pause_image(registry: &str) -> Result<PushedImage> {
    push(
        registry,
        "knode/pause",
        "latest",
        &pause_image()?,
        &RegistryAuth::Anonymous,
    )
    .await
}

/// knode's pause image (see [`push_pause_image`]); the conformance suites' `pause` too.
pub fn pause_image() -> Result<Image> {
    let bin = std::fs::read(testimg_binary()?).map_err(HarnessError::io("reading testimg binary"))?;
    let app = build_layer(&[Entry::File {
        path: "pause".into(),
        mode: 0o755,
        data: bin,
    }])?;
    Ok(build_image(
        vec![app],
        &ImageConfig {
            entrypoint: vec!["/pause".into()],
            cmd: vec!["sleep".into(), "infinity".into(), "--exit-on-sigterm".into()],
            working_dir: "/".into(),
            user: "65535:65535".into(),
            ..Default::default()
        },
    ))
}

/// User and group names of [`push_named_user_image`]'s image.
pub const NAMED_USER: &str = "app";
/// uid, primary gid and supplementary group (member `app` in /etc/group) of [`NAMED_USER`].
pub const NAMED_USER_IDS: (u32, u32, u32) = (1234, 2345, 3456);

/// Pushes `knode/named-user:latest`: busybox whose config says `USER app:app` (names only), with
/// `app` defined in its /etc/passwd (reached through an absolute symlink to /usr/lib/passwd, so
/// the file must be resolved inside the image root) and /etc/group (`app` and a supplementary
/// group `extra` listing `app`). Command `sh`.
pub async fn push_named_user_image(registry: &str) -> Result<PushedImage> {
    let (uid, gid, extra) = NAMED_USER_IDS;
    let users = build_layer(&[
        Entry::Symlink {
            path: "etc/passwd".into(),
            target: "/usr/lib/passwd".into(),
        },
        Entry::File {
            path: "usr/lib/passwd".into(),
            mode: 0o644,
            data: format!("root:x:0:0:root:/root:/bin/sh\n{NAMED_USER}:x:{uid}:{gid}:app:/tmp:/bin/sh\n")
                .into_bytes(),
        },
        Entry::File {
            path: "etc/group".into(),
            mode: 0o644,
            data: format!("root:x:0:\n{NAMED_USER}:x:{gid}:\nextra:x:{extra}:root,{NAMED_USER}\n")
                .into_bytes(),
        },
    ])?;
    let image = build_image(
        vec![busybox_layer()?, users],
        &ImageConfig {
            cmd: vec!["sh".into()],
            env: vec![PATH_ENV.into()],
            working_dir: "/".into(),
            user: format!("{NAMED_USER}:{NAMED_USER}"),
            ..Default::default()
        },
    );
    push(
        registry,
        "knode/named-user",
        "latest",
        &image,
        &RegistryAuth::Anonymous,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::File {
                path: "usr/bin/hello".into(),
                mode: 0o755,
                data: b"hi".to_vec(),
            },
            Entry::Symlink {
                path: "bin".into(),
                target: "usr/bin".into(),
            },
        ]
    }

    #[test]
    fn layers_are_reproducible() {
        let a = build_layer(&sample()).unwrap();
        let b = build_layer(&sample()).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(
            a.digest, a.diff_id,
            "blob digest is of the gzip, diff id of the tar"
        );
    }

    #[test]
    fn layer_adds_parents_and_keeps_modes() {
        let l = build_layer(&sample()).unwrap();
        let tar = flate2::read::GzDecoder::new(l.tar_gz.as_slice());
        let mut ar = tar::Archive::new(tar);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            seen.push((
                e.path().unwrap().to_string_lossy().to_string(),
                e.header().mode().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("bin".to_string(), 0o777),
                ("usr/".to_string(), 0o755),
                ("usr/bin/".to_string(), 0o755),
                ("usr/bin/hello".to_string(), 0o755)
            ]
        );
    }

    #[test]
    fn image_config_lists_diff_ids_in_order() {
        let l1 = build_layer(&sample()).unwrap();
        let l2 = build_layer(&[Entry::Dir {
            path: "x".into(),
            mode: 0o700,
        }])
        .unwrap();
        let img = build_image(
            vec![l1.clone(), l2.clone()],
            &ImageConfig {
                user: "0:0".into(),
                ..Default::default()
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&img.config_json).unwrap();
        assert_eq!(
            v["rootfs"]["diff_ids"],
            serde_json::json!([l1.diff_id, l2.diff_id])
        );
        assert_eq!(v["config"]["User"], "0:0");
        assert_eq!(v["architecture"], "amd64");
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // /bin/busybox from busybox-static has no interpreter; /bin/ls from coreutils has one.
        let st = std::fs::read("/bin/busybox").expect("busybox-static is installed by setup-host.sh");
        let dy = std::fs::read("/bin/ls").expect("/bin/ls");
        assert!(!has_interpreter(&st));
        assert!(has_interpreter(&dy));
        assert!(!has_interpreter(b"not an elf"));
    }
}
