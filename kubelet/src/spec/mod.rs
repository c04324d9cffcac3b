//! Pod + container spec → OCI runtime spec (pure: no I/O, unit-tested).
//!
//! Follows what upstream's kubelet asks of containerd's CRI plugin, so containers behave the same:
//! args from image ENTRYPOINT/CMD overridden by `command`/`args`, image env merged with the container's
//! (container wins), working dir, user (image USER, `runAsUser`/`runAsGroup`, supplemental groups and
//! `fsGroup`), containerd CRI's default capability set with add/drop, default masked and read-only
//! paths, `no_new_privs` from `allowPrivilegeEscalation`, read-only rootfs, standard mounts, and the pod's
//! network/IPC/UTS namespaces joined by path (knode pins them instead of running a pause container).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// Why a spec could not be generated: the pod's container fails with `CreateContainerConfigError`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("container {container}: no command specified (neither the pod nor the image gives one)")]
    NoCommand { container: String },
    #[error("container {container}: unknown capability {capability:?}")]
    BadCapability { container: String, capability: String },
    /// containerd's `WithUsername` failing: upstream reports it from CreateContainer.
    #[error("container {container}: user {user:?} of image {image} not found in the image's /etc/passwd")]
    UnknownUser {
        container: String,
        image: String,
        user: String,
    },
    #[error("container {container}: invalid image user {user:?}")]
    BadUser { container: String, user: String },
    /// Upstream's `verifyRunAsNonRoot` message (`pod` is `name_namespace(uid)`).
    #[error("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")]
    RunAsRoot { pod: String, container: String },
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserRoot { pod: String, container: String },
    /// Upstream's `verifyRunAsNonRoot` for an image USER given by name.
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})"
    )]
    NonNumericUser {
        user: String,
        pod: String,
        container: String,
    },
    /// runc refuses a relative mount destination or working directory at create time; said here,
    /// before anything is created, with the field that holds it.
    #[error("container {container}: {field} {path:?} is not an absolute path")]
    NotAbsolute {
        container: String,
        field: &'static str,
        path: String,
    },
    #[error("container {container}: building the OCI spec: {message}")]
    Build { container: String, message: String },
}

impl SpecError {
    /// The container waiting reason upstream reports.
    pub fn reason(&self) -> &'static str {
        match self {
            // Upstream resolves user names inside containerd's CreateContainer.
            SpecError::UnknownUser { .. } => "CreateContainerError",
            _ => "CreateContainerConfigError",
        }
    }
}

/// The parts of an image config (`config` section) a container spec needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageConfig {
    /// From the image config JSON's `config` object (as stored by the image service).
    pub fn from_json(v: &serde_json::Value) -> Self {
        let strings = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(|a| a.as_array())
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let string = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or_default().to_string();
        ImageConfig {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: string("WorkingDir"),
            user: string("User"),
        }
    }
}

/// Where the container's namespaces come from: `Some(path)` joins a pinned namespace, `None` shares the
/// host's (hostNetwork/hostIPC/hostPID) — for PID, `None` means the host's and `Own` a new one.
#[derive(Debug, Clone, PartialEq)]
pub enum NamespaceSource {
    /// A new namespace for this container.
    Own,
    /// The host's namespace.
    Host,
    /// Join the namespace pinned at this path.
    Path(PathBuf),
}

/// The pod's namespaces.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNamespaces {
    pub network: NamespaceSource,
    pub ipc: NamespaceSource,
    pub uts: NamespaceSource,
    pub pid: NamespaceSource,
}

/// A bind mount the kubelet prepared (hosts, resolv.conf, volumes, termination log).
#[derive(Debug, Clone, PartialEq)]
pub struct BindMount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
    /// `mountPropagation: HostToContainer` → rslave, else rprivate.
    pub host_to_container: bool,
}

/// Everything besides the pod itself that a container spec is made from.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    /// Resolved container env (`$(VAR)` expansion, valueFrom, service links already applied), in order.
    pub env: Vec<(String, String)>,
    pub namespaces: PodNamespaces,
    pub hostname: String,
    pub mounts: Vec<BindMount>,
    /// The image's /etc/passwd and /etc/group, to resolve a named image USER.
    pub passwd: Option<String>,
    pub group: Option<String>,
    pub cgroups_path: String,
    pub oom_score_adj: i32,
    pub resources: Option<LinuxResources>,
    /// Path of the rootfs relative to the bundle (containerd mounts the snapshot there).
    pub rootfs: String,
}

/// containerd CRI's default capability set (pkg/cri/opts/spec_linux.go, same as Docker's).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability the kernel defines (linux/capability.h up to CAP_CHECKPOINT_RESTORE): what
/// `privileged` and `add: [ALL]` grant.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// containerd's default masked paths (oci-spec's list plus powercap, as containerd 1.6 masks it).
pub fn masked_paths() -> Vec<String> {
    let mut p = oci_spec::runtime::get_default_maskedpaths();
    p.push("/sys/devices/virtual/powercap".into());
    p
}

/// Process arguments as upstream: `command` replaces ENTRYPOINT (and drops CMD); `args` replaces CMD.
pub fn process_args(container: &Container, image: &ImageConfig) -> Vec<String> {
    match (&container.command, &container.args) {
        (Some(cmd), args) if !cmd.is_empty() => cmd
            .iter()
            .cloned()
            .chain(args.iter().flatten().cloned())
            .collect(),
        (_, Some(args)) if !args.is_empty() => image
            .entrypoint
            .iter()
            .cloned()
            .chain(args.iter().cloned())
            .collect(),
        _ => image
            .entrypoint
            .iter()
            .cloned()
            .chain(image.cmd.iter().cloned())
            .collect(),
    }
}

/// Image env overlaid with the container's (same name → container wins, order kept).
pub fn merge_env(image_env: &[String], container_env: &[(String, String)]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let entries = image_env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .chain(container_env.iter().cloned());
    for (k, v) in entries {
        if values.insert(k.clone(), v).is_none() {
            order.push(k);
        }
    }
    order.into_iter().map(|k| format!("{k}={}", values[&k])).collect()
}

/// The effective security context field: the container's wins over the pod's.
fn pick<T: Clone>(
    c: Option<&SecurityContext>,
    p: Option<&PodSecurityContext>,
    cf: impl Fn(&SecurityContext) -> Option<T>,
    pf: impl Fn(&PodSecurityContext) -> Option<T>,
) -> Option<T> {
    c.and_then(cf).or_else(|| p.and_then(pf))
}

pub use user::resolve_user;

/// The capability set after the container's add/drop ("ALL" allowed in both), or all for privileged.
pub fn capabilities(container: &Container) -> Result<Vec<Capability>, SpecError> {
    let parse = |c: &str| {
        Capability::from_str(c.trim_start_matches("CAP_")).map_err(|_| SpecError::BadCapability {
            container: container.name.clone(),
            capability: c.to_string(),
        })
    };
    let all = || -> Vec<Capability> {
        ALL_CAPABILITIES
            .iter()
            .filter_map(|c| Capability::from_str(c).ok())
            .collect()
    };
    let sc = container.security_context.as_ref();
    if sc.and_then(|s| s.privileged).unwrap_or(false) {
        return Ok(all());
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let add: Vec<String> = caps.and_then(|c| c.add.clone()).unwrap_or_default();
    let drop: Vec<String> = caps.and_then(|c| c.drop.clone()).unwrap_or_default();
    let mut set: Vec<Capability> = if add.iter().any(|a| a == "ALL") {
        all()
    } else {
        let mut s = DEFAULT_CAPABILITIES
            .iter()
            .map(|c| parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        for a in &add {
            let c = parse(a)?;
            if !s.contains(&c) {
                s.push(c);
            }
        }
        s
    };
    if drop.iter().any(|d| d == "ALL") {
        set.retain(|c| add.iter().any(|a| parse(a).ok() == Some(*c)));
    } else {
        for d in &drop {
            let c = parse(d)?;
            set.retain(|x| *x != c);
        }
    }
    Ok(set)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())
}

/// Standard mounts: what runc needs for a working /proc, /dev and /sys.
pub fn standard_mounts(read_only_sys: bool) -> Result<Vec<Mount>, String> {
    let sys_mode = if read_only_sys { "ro" } else { "rw" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", sys_mode])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ])
}

fn namespace(typ: LinuxNamespaceType, src: &NamespaceSource) -> Result<Option<LinuxNamespace>, String> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    match src {
        NamespaceSource::Host => Ok(None),
        NamespaceSource::Own => b.build().map(Some).map_err(|e| e.to_string()),
        NamespaceSource::Path(p) => b.path(p.clone()).build().map(Some).map_err(|e| e.to_string()),
    }
}

/// Builds the OCI runtime spec for one container of a pod.
pub fn container_spec(input: &SpecInput) -> Result<Spec, SpecError> {
    let c = input.container;
    let err = |m: String| SpecError::Build {
        container: c.name.clone(),
        message: m,
    };
    let args = process_args(c, input.image);
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            container: c.name.clone(),
        });
    }
    let (uid, gid, additional_gids) = resolve_user(input)?;
    let caps = capabilities(c)?;
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(input.image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let not_absolute = |field: &'static str, path: &str| SpecError::NotAbsolute {
        container: c.name.clone(),
        field,
        path: path.to_string(),
    };
    if !cwd.starts_with('/') {
        return Err(not_absolute("workingDir", &cwd));
    }
    let mut env = merge_env(&input.image.env, &input.env);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={}", input.hostname));
    }
    let cap_set: std::collections::HashSet<Capability> = caps.into_iter().collect();
    let linux_caps = LinuxCapabilitiesBuilder::default()
        .bounding(cap_set.clone())
        .effective(cap_set.clone())
        .permitted(cap_set)
        // No inheritable or ambient capabilities, as containerd since 1.6.18 (CVE-2022-24769).
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(|e| err(e.to_string()))?;
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .additional_gids(additional_gids)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let no_new_privs = !sc.and_then(|s| s.allow_privilege_escalation).unwrap_or(true) && !privileged;
    let process = ProcessBuilder::default()
        .terminal(c.tty.unwrap_or(false))
        .user(user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(linux_caps)
        // No rlimits: as with upstream's containerd (LimitNOFILE=infinity), the container inherits
        // the shim's limits; a fixed NOFILE above the shim's hard limit makes runc fail with EPERM.
        .rlimits(vec![])
        .no_new_privileges(no_new_privs)
        .oom_score_adj(input.oom_score_adj)
        .build()
        .map_err(|e| err(e.to_string()))?;

    let mut mounts = standard_mounts(!privileged).map_err(err)?;
    for m in &input.mounts {
        if !m.container_path.starts_with('/') {
            return Err(not_absolute("mount destination", &m.container_path));
        }
        let mut opts = vec!["rbind", if m.host_to_container { "rslave" } else { "rprivate" }];
        opts.push(if m.read_only { "ro" } else { "rw" });
        let source = m.host_path.display().to_string();
        // A bind over one of the standard mounts (e.g. /dev/shm) replaces it.
        mounts.retain(|x| x.destination().to_string_lossy() != m.container_path);
        mounts.push(mount(&m.container_path, "bind", &source, &opts).map_err(err)?);
    }

    let ns = &input.namespaces;
    let namespaces: Vec<LinuxNamespace> = [
        namespace(LinuxNamespaceType::Pid, &ns.pid),
        namespace(LinuxNamespaceType::Network, &ns.network),
        namespace(LinuxNamespaceType::Ipc, &ns.ipc),
        namespace(LinuxNamespaceType::Uts, &ns.uts),
        namespace(LinuxNamespaceType::Mount, &NamespaceSource::Own),
    ]
    .into_iter()
    .filter_map(|r| r.transpose())
    .collect::<Result<_, _>>()
    .map_err(err)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&input.cgroups_path));
    // Set explicitly either way: oci-spec's builder defaults would otherwise mask paths of a
    // privileged container too.
    linux = if privileged {
        linux
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new())
    } else {
        linux
            .masked_paths(masked_paths())
            .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
    };
    // Devices: deny all, then runc adds its default allow list (null, zero, tty, …), as containerd's
    // default spec does.
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut resources = input.resources.clone().unwrap_or_default();
    let mut devices = vec![deny_all];
    devices.extend(resources.devices().iter().flatten().cloned());
    resources.set_devices(Some(devices));
    linux = linux.resources(resources);
    let linux = linux.build().map_err(|e| err(e.to_string()))?;
    let root = RootBuilder::default()
        .path(&input.rootfs)
        .readonly(sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .process(process)
        .root(root)
        .mounts(mounts)
        .linux(linux);
    let mut spec = spec.build().map_err(|e| err(e.to_string()))?;
    // The pod's UTS namespace got its hostname when it was pinned; only a container with a UTS
    // namespace of its own takes the hostname from the spec (oci-spec's default would be "youki").
    spec.set_hostname((ns.uts == NamespaceSource::Own).then(|| input.hostname.clone()));
    Ok(spec)
}

pub mod seccomp;
pub mod security;
pub mod user;

#[cfg(test)]
mod tests;
