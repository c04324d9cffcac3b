//! The images upstream's conformance suites run (`e2e.test --list-images`), built here and pushed to
//! the local registry: nothing is pulled from a public registry.
//!
//! Each reference the suite lists (after `KUBE_TEST_REPO_LIST` points every upstream registry at the
//! local one) is matched by image name to a recipe:
//! - Go programs from the pinned k8s.io/kubernetes module (`scripts/build-upstream.sh --conformance`):
//!   `agnhost` (and `kitten`/`nautilus`, agnhost plus their pages), `sample-apiserver`, `nonewprivs`;
//! - `nonroot`: busybox with `USER 1234`;
//! - `etcd` from the control plane's own build; `pause` as knode's pause (the static test program);
//! - `busybox` from Debian's busybox-static, with bash as `/bin/sh` ([`sh_is_bash`] says why);
//! - images without Go source (`nginx`, `glibc-dns-testing`, agnhost's tools: curl, dig, nc, ip, …)
//!   from Debian packages unpacked into a root filesystem ([`debian_root`]).
//!
//! Layers are deterministic ([`crate::image::build_layer`]), so the same binaries and packages give
//! the same digests. References without a recipe are returned, with the reason, for RESULTS.md.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_client::secrets::RegistryAuth;

use crate::image::{
    Entry, Image, ImageConfig, Layer, PushedImage, build_image, build_layer, busybox_layer, pause_image, push,
};
use crate::{HarnessError, Result};

/// Where the recipes' inputs are.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// `scripts/build-upstream.sh --conformance`'s bin dir (agnhost, sample-apiserver).
    pub conformance_bin: PathBuf,
    /// `scripts/build-upstream.sh`'s bin dir (etcd, coredns).
    pub upstream_bin: PathBuf,
    /// The k8s.io/kubernetes module's source (`go list -m -f '{{.Dir}}' k8s.io/kubernetes`): agnhost's
    /// porter certificates, kitten's and nautilus' pages.
    pub kubernetes_src: PathBuf,
    /// Cache of downloaded `.deb`s and unpacked root filesystems.
    pub cache: PathBuf,
}

/// A reference split into registry host, repository and tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// Parses `host[:port]/path/name:tag`. A reference by digest or without a registry host is
    /// `None`: it cannot be reproduced here.
    pub fn parse(reference: &str) -> Option<ImageRef> {
        if reference.contains('@') {
            return None;
        }
        let (registry, rest) = reference.split_once('/')?;
        if !registry.contains('.') && !registry.contains(':') {
            return None;
        }
        let (repository, tag) = rest.rsplit_once(':')?;
        if tag.contains('/') || repository.is_empty() || tag.is_empty() {
            return None;
        }
        Some(ImageRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The image's own name: the repository's last component (`e2e-test-images/agnhost` → `agnhost`).
    pub fn name(&self) -> &str {
        self.repository.rsplit('/').next().unwrap_or(&self.repository)
    }
}

/// What [`push_all`] did with each listed reference.
#[derive(Debug, Default)]
pub struct Report {
    pub pushed: Vec<PushedImage>,
    /// Reference and why it has no image here.
    pub skipped: Vec<(String, String)>,
}

/// Builds and pushes every reference into `registry` that has a recipe. Images are built once per
/// name and pushed under each tag the suite asks for. References elsewhere (a test's hard-coded
/// image that `KUBE_TEST_REPO_LIST` does not remap) are skipped: nothing is pushed to a public
/// registry.
pub async fn push_all(references: &[String], registry: &str, inputs: &Inputs) -> Result<Report> {
    let mut report = Report::default();
    let mut built: std::collections::BTreeMap<&'static str, Image> = Default::default();
    for reference in references {
        let Some(r) = ImageRef::parse(reference) else {
            report.skipped.push((
                reference.clone(),
                "referenced by digest or without a registry: cannot be reproduced".into(),
            ));
            continue;
        };
        if r.registry != registry {
            report.skipped.push((
                reference.clone(),
                format!("not in {registry}: the test names it directly, KUBE_TEST_REPO_LIST cannot remap it"),
            ));
            continue;
        }
        let Some(recipe) = Recipe::for_name(r.name()) else {
            report.skipped.push((
                reference.clone(),
                "no local recipe (not used by the conformance suites)".into(),
            ));
            continue;
        };
        if !built.contains_key(recipe.key()) {
            built.insert(recipe.key(), recipe.build(inputs)?);
        }
        let image = &built[recipe.key()];
        report.pushed.push(
            push(
                &r.registry,
                &r.repository,
                &r.tag,
                image,
                &RegistryAuth::Anonymous,
            )
            .await?,
        );
    }
    Ok(report)
}

/// The images knode can build, by upstream image name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recipe {
    Agnhost,
    Kitten,
    Nautilus,
    BusyBox,
    Pause,
    Nginx,
    GlibcDnsTesting,
    Etcd,
    SampleApiserver,
    Nonewprivs,
    NonRoot,
}

/// Debian packages behind agnhost's subcommands and the shell commands tests exec in it (upstream
/// installs the Alpine equivalents: bind-tools, curl, netcat-openbsd, iproute2, iperf, bash,
/// util-linux-misc, socat).
const AGNHOST_PACKAGES: &[&str] = &[
    "bash",
    "bind9-dnsutils",
    "curl",
    "iperf",
    "iproute2",
    "netcat-openbsd",
    "socat",
    "util-linux",
];

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Recipe {
    fn for_name(name: &str) -> Option<Recipe> {
        Some(match name {
            "agnhost" => Recipe::Agnhost,
            "kitten" => Recipe::Kitten,
            "nautilus" => Recipe::Nautilus,
            "busybox" => Recipe::BusyBox,
            "pause" => Recipe::Pause,
            "nginx" => Recipe::Nginx,
            "glibc-dns-testing" => Recipe::GlibcDnsTesting,
            "etcd" => Recipe::Etcd,
            "sample-apiserver" => Recipe::SampleApiserver,
            "nonewprivs" => Recipe::Nonewprivs,
            "nonroot" => Recipe::NonRoot,
            _ => return None,
        })
    }

    fn key(self) -> &'static str {
        match self {
            Recipe::Agnhost => "agnhost",
            Recipe::Kitten => "kitten",
            Recipe::Nautilus => "nautilus",
            Recipe::BusyBox => "busybox",
            Recipe::Pause => "pause",
            Recipe::Nginx => "nginx",
            Recipe::GlibcDnsTesting => "glibc-dns-testing",
            Recipe::Etcd => "etcd",
            Recipe::SampleApiserver => "sample-apiserver",
            Recipe::Nonewprivs => "nonewprivs",
            Recipe::NonRoot => "nonroot",
        }
    }

    fn build(self, inputs: &Inputs) -> Result<Image> {
        match self {
            Recipe::Agnhost => agnhost(inputs, None),
            Recipe::Kitten => agnhost(inputs, Some("kitten")),
            Recipe::Nautilus => agnhost(inputs, Some("nautilus")),
            Recipe::BusyBox => on_busybox(
                vec![
                    dir_layer(&debian_root("bash", &["bash"], &inputs.cache)?)?,
                    users_layer(&[], &[])?,
                    sh_is_bash()?,
                ],
                ImageConfig {
                    cmd: vec!["sh".into()],
                    ..Default::default()
                },
            ),
            Recipe::Pause => pause_image(),
            Recipe::Nginx => nginx(inputs),
            Recipe::GlibcDnsTesting => on_busybox(
                vec![
                    dir_layer(&debian_root(
                        "glibc-dns-testing",
                        &["bind9-dnsutils"],
                        &inputs.cache,
                    )?)?,
                    users_layer(&[], &[])?,
                    file_layer(&inputs.upstream_bin.join("coredns"), "coredns", 0o755)?,
                ],
                ImageConfig {
                    cmd: vec!["sh".into()],
                    ..Default::default()
                },
            ),
            Recipe::Etcd => on_busybox(
                vec![file_layer(
                    &inputs.upstream_bin.join("etcd"),
                    "usr/local/bin/etcd",
                    0o755,
                )?],
                ImageConfig {
                    cmd: vec!["/usr/local/bin/etcd".into()],
                    ..Default::default()
                },
            ),
            // nnp (Go, the pinned module) setuid root: it prints its effective UID, which stays the
            // caller's when no_new_privs is set.
            Recipe::Nonewprivs => on_busybox(
                vec![
                    users_layer(&[], &[])?,
                    file_layer(
                        &inputs.conformance_bin.join("nonewprivs"),
                        "usr/local/bin/nnp",
                        0o6755,
                    )?,
                ],
                ImageConfig {
                    cmd: vec!["nnp".into()],
                    ..Default::default()
                },
            ),
            Recipe::NonRoot => on_busybox(
                vec![users_layer(&[], &[])?],
                ImageConfig {
                    cmd: vec!["sh".into()],
                    user: "1234".into(),
                    ..Default::default()
                },
            ),
            Recipe::SampleApiserver => on_busybox(
                vec![file_layer(
                    &inputs.conformance_bin.join("sample-apiserver"),
                    "sample-apiserver",
                    0o755,
                )?],
                ImageConfig {
                    entrypoint: vec!["/sample-apiserver".into()],
                    ..Default::default()
                },
            ),
        }
    }
}

/// busybox-static under `layers`, with the upstream images' PATH and `/` as working directory.
fn on_busybox(layers: Vec<Layer>, cfg: ImageConfig) -> Result<Image> {
    let mut all = vec![busybox_layer()?];
    all.extend(layers);
    Ok(build_image(
        all,
        &ImageConfig {
            env: vec![PATH_ENV.into()],
            working_dir: "/".into(),
            ..cfg
        },
    ))
}

/// agnhost as upstream's Dockerfile makes it; `pages` adds kitten's or nautilus' `html/` and makes
/// `test-webserver` the command, as those images (FROM agnhost) do.
fn agnhost(inputs: &Inputs, pages: Option<&str>) -> Result<Image> {
    let images = inputs.kubernetes_src.join("test/images");
    let read = |p: PathBuf| std::fs::read(&p).map_err(HarnessError::io(format!("reading {}", p.display())));
    let mut app = vec![
        Entry::File {
            path: "agnhost".into(),
            mode: 0o755,
            data: read(inputs.conformance_bin.join("agnhost"))?,
        },
        // entrypoint-tester tests override the entrypoint with this name.
        Entry::Symlink {
            path: "agnhost-2".into(),
            target: "agnhost".into(),
        },
        Entry::Dir {
            path: "uploads".into(),
            mode: 0o755,
        },
        Entry::File {
            path: "localhost.crt".into(),
            mode: 0o644,
            data: read(images.join("agnhost/porter/localhost.crt"))?,
        },
        Entry::File {
            path: "localhost.key".into(),
            mode: 0o644,
            data: read(images.join("agnhost/porter/localhost.key"))?,
        },
        Entry::File {
            path: "coredns".into(),
            mode: 0o755,
            data: read(inputs.upstream_bin.join("coredns"))?,
        },
        // Debian's netcat-openbsd installs `nc` through update-alternatives, which unpacking skips.
        Entry::Symlink {
            path: "bin/nc".into(),
            target: "nc.openbsd".into(),
        },
    ];
    let mut cmd = vec!["pause".to_string()];
    if let Some(name) = pages {
        for file in ["kitten.jpg", "nautilus.jpg", "data.json"] {
            let p = images.join(name).join("html").join(file);
            if p.exists() {
                app.push(Entry::File {
                    path: file.into(),
                    mode: 0o644,
                    data: read(p)?,
                });
            }
        }
        cmd = vec!["test-webserver".into()];
    }
    let ports = ["80", "8080", "8081", "9376", "5000"];
    on_busybox(
        vec![
            dir_layer(&debian_root("agnhost", AGNHOST_PACKAGES, &inputs.cache)?)?,
            // The SupplementalGroups test's user and group defined in the image.
            users_layer(
                &["user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh"],
                &[
                    "user-defined-in-image:x:1000:",
                    "group-defined-in-image:x:50000:user-defined-in-image",
                ],
            )?,
            build_layer(&app)?,
            sh_is_bash()?,
        ],
        ImageConfig {
            entrypoint: vec!["/agnhost".into()],
            cmd,
            exposed_ports: ports.iter().map(|p| format!("{p}/tcp")).collect(),
            ..Default::default()
        },
    )
}

/// nginx from Debian with a configuration like the official image's: port 80, the welcome page,
/// logs to the container's stdout/stderr, in the foreground.
fn nginx(inputs: &Inputs) -> Result<Image> {
    let conf = "user www-data;\nworker_processes 1;\npid /run/nginx.pid;\nerror_log /dev/stderr notice;\n\
events { worker_connections 1024; }\n\
http {\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  access_log /dev/stdout;\n\
  sendfile on;\n  keepalive_timeout 65;\n\
  server {\n    listen 80;\n    listen [::]:80;\n    server_name localhost;\n\
    location / { root /usr/share/nginx/html; index index.html; }\n  }\n}\n";
    let page = "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n\
<h1>Welcome to nginx!</h1>\n</body>\n</html>\n";
    let app = build_layer(&[
        Entry::File {
            path: "etc/nginx/nginx.conf".into(),
            mode: 0o644,
            data: conf.as_bytes().to_vec(),
        },
        Entry::File {
            path: "usr/share/nginx/html/index.html".into(),
            mode: 0o644,
            data: page.as_bytes().to_vec(),
        },
        Entry::Dir {
            path: "var/lib/nginx".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "var/log/nginx".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "run".into(),
            mode: 0o755,
        },
    ])?;
    on_busybox(
        vec![
            dir_layer(&debian_root("nginx", &["nginx"], &inputs.cache)?)?,
            users_layer(
                &["www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin"],
                &["www-data:x:33:"],
            )?,
            app,
        ],
        ImageConfig {
            cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            exposed_ports: vec!["80/tcp".into()],
            ..Default::default()
        },
    )
}

/// `/bin/sh` → bash. Debian's busybox 1.35 shell differs from the upstream images' shells where
/// tests notice: it runs its own applets before searching PATH (`sh -c 'nc -v …'` would get
/// busybox's nc, not the image's netcat), and it drops environment variables whose names are not
/// shell identifiers (`data-1`, which the Secrets/ConfigMap envFrom tests print with `sh -c env`);
/// busybox 1.37's and Alpine's shells do neither. bash does neither either.
fn sh_is_bash() -> Result<Layer> {
    build_layer(&[Entry::Symlink {
        path: "bin/sh".into(),
        target: "bash".into(),
    }])
}

/// `/etc/passwd` and `/etc/group` with root and nobody, plus `users`/`groups` lines.
fn users_layer(users: &[&str], groups: &[&str]) -> Result<Layer> {
    let mut passwd =
        String::from("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
    let mut group = String::from("root:x:0:\nnogroup:x:65534:\n");
    for u in users {
        passwd.push_str(u);
        passwd.push('\n');
    }
    for g in groups {
        group.push_str(g);
        group.push('\n');
    }
    build_layer(&[
        Entry::File {
            path: "etc/passwd".into(),
            mode: 0o644,
            data: passwd.into_bytes(),
        },
        Entry::File {
            path: "etc/group".into(),
            mode: 0o644,
            data: group.into_bytes(),
        },
    ])
}

/// A layer holding one file of the host at `dest` with `mode`.
fn file_layer(src: &Path, dest: &str, mode: u32) -> Result<Layer> {
    let data = std::fs::read(src).map_err(|_| {
        HarnessError::Missing(format!(
            "{} not found: build it with scripts/build-upstream.sh (--conformance)",
            src.display()
        ))
    })?;
    build_layer(&[Entry::File {
        path: dest.into(),
        mode,
        data,
    }])
}

/// A layer of everything under `root` (regular files, directories, symlinks; hard links become
/// copies; device nodes and sockets are left out: the runtime provides /dev).
pub fn dir_layer(root: &Path) -> Result<Layer> {
    let mut entries = Vec::new();
    collect(root, root, &mut entries)?;
    build_layer(&entries)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let io = |p: &Path| HarnessError::io(format!("reading {}", p.display()));
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(|_| HarnessError::Missing(format!("{} is outside {}", path.display(), root.display())))?
            .to_string_lossy()
            .to_string();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            out.push(Entry::Symlink {
                path: rel,
                target: target.to_string_lossy().to_string(),
            });
        } else if ft.is_dir() {
            out.push(Entry::Dir { path: rel, mode });
            collect(root, &path, out)?;
        } else if ft.is_file() {
            out.push(Entry::File {
                path: rel,
                mode,
                data: std::fs::read(&path).map_err(io(&path))?,
            });
        }
    }
    Ok(())
}

/// A root filesystem of Debian `packages` and everything they depend on (no recommends), unpacked
/// with `dpkg-deb -x` under `cache/rootfs/<name>` (maintainer scripts are not run). The `.deb`s are
/// downloaded once into `cache/debs` by `apt-get download` from the host's configured mirror.
pub fn debian_root(name: &str, packages: &[&str], cache: &Path) -> Result<PathBuf> {
    let debs = cache.join("debs");
    let root = cache.join("rootfs").join(name);
    let stamp = cache.join("rootfs").join(format!("{name}.packages"));
    let wanted = packages.join(" ");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && root.is_dir() {
        return Ok(root);
    }
    std::fs::create_dir_all(&debs).map_err(HarnessError::io(format!("creating {}", debs.display())))?;
    let closure = dependency_closure(packages)?;
    let run = |cmd: &mut Command, what: &str| -> Result<()> {
        let out = cmd.output().map_err(HarnessError::io(what.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HarnessError::Missing(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    let have: BTreeSet<String> = std::fs::read_dir(&debs)
        .map_err(HarnessError::io("listing the .deb cache"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|f| f.split('_').next())
                .map(str::to_string)
        })
        .collect();
    let missing: Vec<&String> = closure.iter().filter(|p| !have.contains(*p)).collect();
    if !missing.is_empty() {
        run(
            Command::new("apt-get")
                .arg("download")
                .args(&missing)
                .current_dir(&debs),
            &format!(
                "apt-get download {} package(s) for the {name} image",
                missing.len()
            ),
        )?;
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(HarnessError::io(format!("creating {}", root.display())))?;
    for entry in std::fs::read_dir(&debs).map_err(HarnessError::io("listing the .deb cache"))? {
        let path = entry.map_err(HarnessError::io("listing the .deb cache"))?.path();
        let Some(pkg) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.split('_').next())
        else {
            continue;
        };
        if closure.contains(pkg) {
            run(
                Command::new("dpkg-deb").arg("-x").arg(&path).arg(&root),
                &format!("dpkg-deb -x {}", path.display()),
            )?;
        }
    }
    // Documentation is most of the bytes and none of the use.
    for dir in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ] {
        let _ = std::fs::remove_dir_all(root.join(dir));
    }
    std::fs::write(&stamp, wanted).map_err(HarnessError::io(format!("writing {}", stamp.display())))?;
    Ok(root)
}

/// `packages` and their recursive Depends/Pre-Depends, as real package names.
fn dependency_closure(packages: &[&str]) -> Result<BTreeSet<String>> {
    let out = Command::new("apt-cache")
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(packages)
        .output()
        .map_err(HarnessError::io("running apt-cache depends"))?;
    if !out.status.success() {
        return Err(HarnessError::Missing(format!(
            "apt-cache depends {}: {}",
            packages.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(parse_closure(&String::from_utf8_lossy(&out.stdout)))
}

/// Package names of `apt-cache depends --recurse` output: its unindented lines, without virtual
/// packages (`<name>`) and without the `:any`/`:amd64` qualifiers.
fn parse_closure(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
        .map(|l| l.split(':').next().unwrap_or(l).trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_registry_repository_tag() {
        let r = ImageRef::parse("10.210.0.1:5000/e2e-test-images/agnhost:2.66.1").expect("parses");
        assert_eq!(r.registry, "10.210.0.1:5000");
        assert_eq!(r.repository, "e2e-test-images/agnhost");
        assert_eq!(r.tag, "2.66.1");
        assert_eq!(r.name(), "agnhost");
        assert_eq!(
            ImageRef::parse("registry.k8s.io/pause:3.10.2").map(|r| r.repository),
            Some("pause".into())
        );
        assert_eq!(
            ImageRef::parse("x.io/a/b@sha256:00"),
            None,
            "digests cannot be rebuilt"
        );
        assert_eq!(ImageRef::parse("busybox:1.0"), None, "no registry host");
        assert_eq!(ImageRef::parse("x.io/a/b"), None, "no tag");
    }

    #[test]
    fn recipes_cover_the_conformance_images() {
        for name in [
            "agnhost",
            "busybox",
            "pause",
            "nginx",
            "glibc-dns-testing",
            "etcd",
            "sample-apiserver",
            "kitten",
            "nautilus",
        ] {
            assert!(Recipe::for_name(name).is_some_and(|r| r.key() == name), "{name}");
        }
        assert_eq!(Recipe::for_name("perl"), None);
    }

    #[test]
    fn closure_keeps_real_packages_only() {
        let text = "curl\n  Depends: libc6\n  Depends: <libcurl-virtual>\nlibc6\n  Depends: libgcc-s1\n<libcurl-virtual>\nlibgcc-s1:amd64\n";
        let got: Vec<String> = parse_closure(text).into_iter().collect();
        assert_eq!(got, ["curl", "libc6", "libgcc-s1"]);
    }
}
