//! The securityContext parts of a container's OCI spec that [`super::container_spec`] leaves out,
//! applied by [`apply`] (pure): sysctls, seccomp (RuntimeDefault = containerd's default profile
//! shape, Unconfined, Localhost from `<root>/seccomp`), `procMount: Unmasked`, the device access of
//! privileged containers and the rootfs propagation HostToContainer mounts need. Also the sysctl
//! admission of pods (upstream's `SysctlForbidden`: the safe set plus `--allowed-unsafe-sysctls`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Container, Pod, SeccompProfile};
use oci_spec::runtime::{
    Arch, LinuxDeviceCgroupBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, Spec,
};

use super::SpecError;
use crate::pods::Rejection;

/// Upstream's admission reason for a pod with a sysctl that is not allowed.
pub const SYSCTL_FORBIDDEN: &str = "SysctlForbidden";

/// Upstream's safe sysctls (`pkg/kubelet/sysctl/safe_sysctls.go`): namespaced, isolated per pod,
/// allowed without `--allowed-unsafe-sysctls`.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The namespace a sysctl belongs to (only namespaced sysctls may be set for a pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Ipc,
    Net,
}

impl std::fmt::Display for SysctlNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SysctlNamespace::Ipc => "ipc",
            SysctlNamespace::Net => "net",
        })
    }
}

/// Upstream's `NamespacedBy`.
pub fn namespaced_by(name: &str) -> Option<SysctlNamespace> {
    if name == "kernel.sem" {
        return Some(SysctlNamespace::Ipc);
    }
    for (prefix, ns) in [
        ("kernel.shm", SysctlNamespace::Ipc),
        ("kernel.msg", SysctlNamespace::Ipc),
        ("fs.mqueue.", SysctlNamespace::Ipc),
        ("net.", SysctlNamespace::Net),
    ] {
        if name.starts_with(prefix) {
            return Some(ns);
        }
    }
    None
}

/// Upstream's `NormalizeName`: `net/ipv4/conf/eth0.100/rp_filter` → `net.ipv4.conf.eth0/100.rp_filter`.
pub fn normalize_sysctl(name: &str) -> String {
    let first = name.find(['.', '/']);
    match first {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The sysctls a pod may set: the safe set plus the node's `allowedUnsafeSysctls` patterns
/// (exact names or `prefix*`).
#[derive(Debug, Clone)]
pub struct SysctlAllowlist {
    exact: HashMap<String, SysctlNamespace>,
    prefixes: Vec<(String, SysctlNamespace)>,
}

impl Default for SysctlAllowlist {
    fn default() -> Self {
        Self::new(&[]).unwrap_or(SysctlAllowlist {
            exact: HashMap::new(),
            prefixes: Vec::new(),
        })
    }
}

impl SysctlAllowlist {
    /// The safe set plus `unsafe_patterns`; a pattern that is not namespaced is refused with
    /// upstream's message.
    pub fn new(unsafe_patterns: &[String]) -> Result<Self, String> {
        let mut w = SysctlAllowlist {
            exact: HashMap::new(),
            prefixes: Vec::new(),
        };
        let all = SAFE_SYSCTLS
            .iter()
            .map(|s| s.to_string())
            .chain(unsafe_patterns.iter().map(|s| normalize_sysctl(s.trim())));
        for s in all {
            if let Some(prefix) = s.strip_suffix('*') {
                let ns = namespaced_by(prefix)
                    .ok_or_else(|| format!("the sysctls {s:?} are not known to be namespaced"))?;
                w.prefixes.push((prefix.to_string(), ns));
            } else {
                let ns = namespaced_by(&s)
                    .ok_or_else(|| format!("the sysctl {s:?} are not known to be namespaced"))?;
                w.exact.insert(s, ns);
            }
        }
        Ok(w)
    }

    /// Upstream's `validateSysctl`.
    pub fn validate(&self, name: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
        let name = normalize_sysctl(name);
        let check = |ns: SysctlNamespace| {
            if (ns == SysctlNamespace::Ipc && host_ipc) || (ns == SysctlNamespace::Net && host_net) {
                Err(format!("{name:?} not allowed with host {ns} enabled"))
            } else {
                Ok(())
            }
        };
        if let Some(ns) = self.exact.get(&name) {
            return check(*ns);
        }
        if let Some((_, ns)) = self.prefixes.iter().find(|(p, _)| name.starts_with(p.as_str())) {
            return check(*ns);
        }
        Err(format!("{name:?} not allowlisted"))
    }

    /// Pod admission: every sysctl of the pod must be allowed (upstream's `SysctlForbidden`).
    pub fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        let Some(spec) = &pod.spec else { return Ok(()) };
        let host_net = spec.host_network.unwrap_or(false);
        let host_ipc = spec.host_ipc.unwrap_or(false);
        for s in spec
            .security_context
            .iter()
            .flat_map(|sc| sc.sysctls.iter().flatten())
        {
            self.validate(&s.name, host_net, host_ipc)
                .map_err(|e| Rejection {
                    reason: SYSCTL_FORBIDDEN.into(),
                    message: format!("forbidden sysctl: {e}"),
                })?;
        }
        Ok(())
    }
}

/// The node-wide security settings (in the kubelet's node context).
#[derive(Debug, Default)]
pub struct NodeSecurity {
    sysctls: Mutex<SysctlAllowlist>,
}

impl NodeSecurity {
    /// Sets the allowed unsafe sysctls (`--allowed-unsafe-sysctls` / `allowedUnsafeSysctls`).
    pub fn configure(&self, allowed_unsafe_sysctls: &[String]) -> Result<(), String> {
        let w = SysctlAllowlist::new(allowed_unsafe_sysctls)?;
        *self.sysctls.lock().unwrap_or_else(|p| p.into_inner()) = w;
        Ok(())
    }

    /// Pod admission for sysctls.
    pub fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        self.sysctls.lock().unwrap_or_else(|p| p.into_inner()).admit(pod)
    }
}

/// The pod's sysctls for the OCI spec (dot-separated names).
pub fn pod_sysctls(pod: &Pod) -> HashMap<String, String> {
    pod.spec
        .iter()
        .flat_map(|s| s.security_context.iter())
        .flat_map(|sc| sc.sysctls.iter().flatten())
        .map(|s| (normalize_sysctl(&s.name), s.value.clone()))
        .collect()
}

/// The seccomp profile a container runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    Unconfined,
    RuntimeDefault,
    /// The profile file, relative to `<root>/seccomp`.
    Localhost(String),
}

fn privileged(c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
}

/// The container's seccomp profile: the container's `seccompProfile` wins over the pod's; none
/// means Unconfined (upstream without `--seccomp-default`); privileged containers are unconfined.
pub fn seccomp_choice(pod: &Pod, c: &Container) -> Result<Seccomp, SpecError> {
    if privileged(c) {
        return Ok(Seccomp::Unconfined);
    }
    let from_c = c
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref());
    let from_p = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.seccomp_profile.as_ref());
    let Some(p): Option<&SeccompProfile> = from_c.or(from_p) else {
        return Ok(Seccomp::Unconfined);
    };
    let bad = |message: String| SpecError::Build {
        container: c.name.clone(),
        message,
    };
    match p.type_.as_str() {
        "Unconfined" => Ok(Seccomp::Unconfined),
        "RuntimeDefault" => Ok(Seccomp::RuntimeDefault),
        "Localhost" => {
            let rel = p
                .localhost_profile
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(
                    || bad("seccompProfile.localhostProfile is required for type Localhost".into()),
                )?;
            if Path::new(&rel)
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(bad(format!(
                    "seccompProfile.localhostProfile {rel:?} must be a relative path without '..'"
                )));
            }
            Ok(Seccomp::Localhost(rel))
        }
        other => Err(bad(format!("unknown seccompProfile type {other:?}"))),
    }
}

/// Reads a Localhost profile (a Docker/OCI seccomp JSON) from `<root>/seccomp/<rel>`; the runtime
/// error upstream reports when it is missing or broken is `CreateContainerError`.
pub fn load_localhost(seccomp_root: &Path, rel: &str) -> Result<LinuxSeccomp, String> {
    let path: PathBuf = seccomp_root.join(rel);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot load seccomp profile {:?}: {e}",
            path.display().to_string()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| format!("decoding seccomp profile {:?}: {e}", path.display().to_string()))
}

/// Syscalls containerd's default profile allows unconditionally.
const DEFAULT_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed when the container has the capability (containerd's default profile).
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("SYS_BOOT", &["reboot"]),
    ("SYS_CHROOT", &["chroot"]),
    ("SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("SYS_PACCT", &["acct"]),
    (
        "SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("SYS_TTY_CONFIG", &["vhangup"]),
    (
        "SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("SYSLOG", &["syslog"]),
    ("BPF", &["bpf"]),
    ("PERFMON", &["perf_event_open"]),
];

/// The namespace flags `clone` may not get without CAP_SYS_ADMIN.
const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

fn syscalls(names: &[&str], action: LinuxSeccompAction) -> Result<oci_spec::runtime::LinuxSyscall, String> {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action)
        .build()
        .map_err(|e| e.to_string())
}

/// containerd's default seccomp profile (`contrib/seccomp`): deny with EPERM by default, allow the
/// common syscalls, `personality` only for the standard personas, more syscalls per granted
/// capability, namespace-creating `clone` only with CAP_SYS_ADMIN, and `clone3` answered with
/// ENOSYS without it (so libcs fall back to `clone`, whose flags can be checked).
pub fn default_profile(capabilities: &[String]) -> Result<LinuxSeccomp, String> {
    let has = |cap: &str| capabilities.iter().any(|c| c.trim_start_matches("CAP_") == cap);
    let mut list = vec![syscalls(DEFAULT_ALLOWED, LinuxSeccompAction::ScmpActAllow)?];
    for persona in [0x0u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(persona)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .map_err(|e| e.to_string())?;
        list.push(
            LinuxSyscallBuilder::default()
                .names(vec!["personality".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![arg])
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    if cfg!(target_arch = "x86_64") {
        list.push(syscalls(
            &["arch_prctl", "modify_ldt"],
            LinuxSeccompAction::ScmpActAllow,
        )?);
    }
    list.push(syscalls(&["socket"], LinuxSeccompAction::ScmpActAllow)?);
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            list.push(syscalls(names, LinuxSeccompAction::ScmpActAllow)?);
        }
    }
    if !has("SYS_ADMIN") {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(CLONE_NS_FLAGS)
            .value_two(0u64)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(|e| e.to_string())?;
        list.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![arg])
                .build()
                .map_err(|e| e.to_string())?,
        );
        list.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::ENOSYS as u32)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    let arches = if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64]
    } else {
        vec![]
    };
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(arches)
        .syscalls(list)
        .build()
        .map_err(|e| e.to_string())
}

/// Applies the pod's and container's remaining security settings to a generated spec (pure):
/// sysctls, seccomp (`localhost` is the already loaded Localhost profile), procMount, privileged
/// device access, and rslave rootfs propagation when a mount asks for HostToContainer.
pub fn apply(
    spec: &mut Spec,
    pod: &Pod,
    c: &Container,
    localhost: Option<LinuxSeccomp>,
    host_caps: Option<u64>,
) -> Result<(), SpecError> {
    let err = |message: String| SpecError::Build {
        container: c.name.clone(),
        message,
    };
    let choice = seccomp_choice(pod, c)?;
    if let Some(mask) = host_caps {
        limit_capabilities(spec, mask);
    }
    let caps: Vec<String> = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|b| b.iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    let seccomp = match choice {
        Seccomp::Unconfined => None,
        Seccomp::RuntimeDefault => Some(default_profile(&caps).map_err(err)?),
        Seccomp::Localhost(rel) => Some(
            localhost.ok_or_else(|| err(format!("the Localhost seccomp profile {rel:?} was not loaded")))?,
        ),
    };
    let rslave = spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.options().iter().flatten().any(|o| o == "rslave"));
    let proc_unmasked = c.security_context.as_ref().and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked");
    let sysctls = pod_sysctls(pod);
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    linux.set_sysctl((!sysctls.is_empty()).then_some(sysctls));
    linux.set_seccomp(seccomp);
    if proc_unmasked {
        linux.set_masked_paths(Some(Vec::new()));
        linux.set_readonly_paths(Some(Vec::new()));
    }
    if rslave {
        linux.set_rootfs_propagation(Some("rslave".into()));
    }
    if privileged(c) {
        // Privileged containers may use every device (containerd CRI allows all in the cgroup).
        let allow_all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut res = linux.resources().clone().unwrap_or_default();
        res.set_devices(Some(vec![allow_all]));
        linux.set_resources(Some(res));
    }
    Ok(())
}

/// Bit number of a capability (its position in the kernel's list).
fn cap_bit(cap: &oci_spec::runtime::Capability) -> Option<u32> {
    let name = cap.to_string();
    let name = name.trim_start_matches("CAP_");
    super::ALL_CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .map(|i| i as u32)
}

/// Keeps only the capabilities the host can grant (`mask`: the runtime's bounding set), as
/// containerd gives privileged containers "all current capabilities": a capability the host
/// lacks would make runc fail to start the container.
pub fn limit_capabilities(spec: &mut Spec, mask: u64) {
    let keep = |set: &Option<std::collections::HashSet<oci_spec::runtime::Capability>>| {
        set.as_ref().map(|s| {
            s.iter()
                .filter(|c| cap_bit(c).is_some_and(|b| b < 64 && mask & (1u64 << b) != 0))
                .copied()
                .collect::<std::collections::HashSet<_>>()
        })
    };
    let Some(process) = spec.process_mut().as_mut() else {
        return;
    };
    let Some(caps) = process.capabilities().clone() else {
        return;
    };
    let mut caps = caps;
    caps.set_bounding(keep(caps.bounding()));
    caps.set_effective(keep(caps.effective()));
    caps.set_permitted(keep(caps.permitted()));
    caps.set_inheritable(keep(caps.inheritable()));
    caps.set_ambient(keep(caps.ambient()));
    process.set_capabilities(Some(caps));
}

/// The bounding capability set of this process (`CapBnd` in /proc/self/status): what a runtime
/// started by the same root user can grant.
pub fn host_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The I/O edge of [`apply`]: loads a Localhost seccomp profile from `<root_dir>/seccomp` (a
/// missing or broken profile is `CreateContainerError`, as the runtime reports it upstream), then
/// applies the rest (a bad setting is `CreateContainerConfigError`).
pub fn finish(
    spec: &mut Spec,
    pod: &Pod,
    c: &Container,
    root_dir: &Path,
) -> Result<(), crate::pods::StartError> {
    use crate::pods::StartError;
    let config_err = |e: SpecError| StartError::new(e.reason(), e.to_string());
    let localhost = match seccomp_choice(pod, c).map_err(config_err)? {
        Seccomp::Localhost(rel) => Some(load_localhost(&root_dir.join("seccomp"), &rel).map_err(|e| {
            StartError::new(
                "CreateContainerError",
                format!("failed to generate seccomp spec opts: {e}"),
            )
        })?),
        _ => None,
    };
    apply(spec, pod, c, localhost, host_capabilities()).map_err(config_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": v}))
            .unwrap()
    }

    #[test]
    fn safe_sysctls_pass_unsafe_need_the_allowlist() {
        let w = SysctlAllowlist::default();
        let p = pod(json!({"containers": [], "securityContext": {"sysctls": [
            {"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"},
            {"name": "kernel.shm_rmid_forced", "value": "1"}]}}));
        w.admit(&p).unwrap();
        let p = pod(json!({"containers": [], "securityContext": {"sysctls": [
            {"name": "kernel.msgmax", "value": "10000"}]}}));
        let r = w.admit(&p).unwrap_err();
        assert_eq!(r.reason, "SysctlForbidden");
        assert_eq!(r.message, "forbidden sysctl: \"kernel.msgmax\" not allowlisted");
        let w = SysctlAllowlist::new(&["kernel.msg*".into(), "net.core.somaxconn".into()]).unwrap();
        w.admit(&p).unwrap();
        // Namespaced by the host's IPC namespace: refused with hostIPC.
        let p = pod(
            json!({"hostIPC": true, "containers": [], "securityContext": {"sysctls": [
            {"name": "kernel.msgmax", "value": "10000"}]}}),
        );
        assert_eq!(
            w.admit(&p).unwrap_err().message,
            "forbidden sysctl: \"kernel.msgmax\" not allowed with host ipc enabled"
        );
        assert!(w.validate("net/core/somaxconn", false, false).is_ok());
        assert!(w.validate("net.core.somaxconn", true, false).is_err());
        let e = SysctlAllowlist::new(&["vm.swappiness".into()]).unwrap_err();
        assert_eq!(e, "the sysctl \"vm.swappiness\" are not known to be namespaced");
        assert!(SysctlAllowlist::new(&["kernel.*".into()]).is_err());
    }

    #[test]
    fn sysctl_names_normalize_like_upstream() {
        assert_eq!(
            normalize_sysctl("net/ipv4/conf/eth0.100/rp_filter"),
            "net.ipv4.conf.eth0/100.rp_filter"
        );
        assert_eq!(
            normalize_sysctl("net.ipv4.tcp_syncookies"),
            "net.ipv4.tcp_syncookies"
        );
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn seccomp_choice_container_wins_and_privileged_is_unconfined() {
        let p =
            pod(json!({"containers": [], "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}));
        assert_eq!(
            seccomp_choice(&p, &container(json!({"name": "c"}))).unwrap(),
            Seccomp::RuntimeDefault
        );
        let c =
            container(json!({"name": "c", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}));
        assert_eq!(seccomp_choice(&p, &c).unwrap(), Seccomp::Unconfined);
        let c = container(json!({"name": "c", "securityContext": {"privileged": true}}));
        assert_eq!(seccomp_choice(&p, &c).unwrap(), Seccomp::Unconfined);
        let c = container(
            json!({"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "prof/a.json"}}}),
        );
        assert_eq!(
            seccomp_choice(&p, &c).unwrap(),
            Seccomp::Localhost("prof/a.json".into())
        );
        let c = container(
            json!({"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "../etc/x"}}}),
        );
        assert!(seccomp_choice(&p, &c).is_err());
        assert_eq!(
            seccomp_choice(&pod(json!({"containers": []})), &container(json!({"name": "c"}))).unwrap(),
            Seccomp::Unconfined
        );
    }

    #[test]
    fn default_profile_has_containerd_shape() {
        let prof = default_profile(&["CAP_CHOWN".into(), "CAP_NET_RAW".into()]).unwrap();
        assert_eq!(prof.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(prof.default_errno_ret(), Some(1));
        let v = serde_json::to_value(&prof).unwrap();
        let rules = v["syscalls"].as_array().unwrap();
        let allowed = |name: &str| {
            rules.iter().any(|r| {
                r["action"] == "SCMP_ACT_ALLOW"
                    && r["args"].is_null()
                    && r["names"].as_array().unwrap().iter().any(|n| n == name)
            })
        };
        assert!(allowed("read") && allowed("openat") && allowed("socket"));
        assert!(!allowed("mount") && !allowed("reboot") && !allowed("ptrace"));
        assert!(
            rules
                .iter()
                .any(|r| r["names"][0] == "clone3" && r["errnoRet"] == 38)
        );
        assert!(
            rules
                .iter()
                .any(|r| r["names"][0] == "clone" && r["args"][0]["op"] == "SCMP_CMP_MASKED_EQ")
        );
        let admin = default_profile(&["CAP_SYS_ADMIN".into()]).unwrap();
        let v = serde_json::to_value(&admin).unwrap();
        assert!(
            v["syscalls"].as_array().unwrap().iter().any(|r| r["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "mount"))
        );
        // A Localhost profile in Docker's JSON shape decodes into the same type.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("deny-mkdir.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let l = load_localhost(d.path(), "deny-mkdir.json").unwrap();
        assert_eq!(l.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert!(
            load_localhost(d.path(), "missing.json")
                .unwrap_err()
                .contains("cannot load seccomp profile")
        );
    }

    fn spec_for(p: &Pod, c: &Container, mounts: Vec<super::super::BindMount>) -> Spec {
        let img = super::super::ImageConfig {
            entrypoint: vec!["/testimg".into()],
            ..Default::default()
        };
        let input = super::super::SpecInput {
            pod: p,
            container: c,
            image: &img,
            env: vec![],
            namespaces: super::super::PodNamespaces {
                network: super::super::NamespaceSource::Own,
                ipc: super::super::NamespaceSource::Own,
                uts: super::super::NamespaceSource::Own,
                pid: super::super::NamespaceSource::Own,
            },
            hostname: "h".into(),
            mounts,
            passwd: None,
            group: None,
            cgroups_path: "/kubepods/podu/c".into(),
            oom_score_adj: 0,
            resources: None,
            rootfs: "rootfs".into(),
        };
        super::super::container_spec(&input).unwrap()
    }

    #[test]
    fn apply_sets_sysctls_seccomp_proc_mount_and_privileged_devices() {
        let p = pod(json!({"containers": [], "securityContext": {
            "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"}]}}));
        let c = container(json!({"name": "c", "securityContext": {"procMount": "Unmasked",
            "capabilities": {"drop": ["ALL"]}}}));
        let mounts = vec![super::super::BindMount {
            host_path: "/mnt/x".into(),
            container_path: "/x".into(),
            read_only: false,
            host_to_container: true,
        }];
        let mut spec = spec_for(&p, &c, mounts);
        apply(&mut spec, &p, &c, None, None).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.sysctl().as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"],
            "80"
        );
        let sec = linux.seccomp().as_ref().unwrap();
        assert_eq!(sec.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(linux.masked_paths().as_ref().unwrap().len(), 0);
        assert_eq!(linux.rootfs_propagation().as_deref(), Some("rslave"));
        // Privileged: unconfined, every device.
        let c = container(json!({"name": "c", "securityContext": {"privileged": true}}));
        let mut spec = spec_for(&p, &c, vec![]);
        apply(&mut spec, &p, &c, None, None).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        let devs = linux.resources().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!((devs.len(), devs[0].allow()), (1, true));
        // Only what the host can grant.
        let mut spec = spec_for(&p, &c, vec![]);
        apply(&mut spec, &p, &c, None, Some(0x1fffeffffff)).unwrap();
        let bounding = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert_eq!(bounding.len(), 40);
        assert!(!bounding.iter().any(|c| c.to_string().ends_with("SYS_RESOURCE")));
        // Localhost without a loaded profile is an error, not a silent Unconfined.
        let c = container(json!({"name": "c", "securityContext": {"seccompProfile":
            {"type": "Localhost", "localhostProfile": "x.json"}}}));
        let mut spec = spec_for(&p, &c, vec![]);
        assert!(apply(&mut spec, &p, &c, None, None).is_err());
    }
}
