//! The securityContext parts of a container's OCI spec that [`super::container_spec`] leaves out,
//! applied by [`apply`] (pure): sysctls, seccomp (RuntimeDefault = containerd's default profile
//! shape, Unconfined, Localhost from `<root>/seccomp`), `procMount: Unmasked`, the device access of
//! privileged containers and the rootfs propagation HostToContainer mounts need. Also the sysctl
//! admission of pods (upstream's `SysctlForbidden`: the safe set plus `--allowed-unsafe-sysctls`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Container, Pod};
use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxSeccomp, Spec};

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

/// Why a sysctl is refused (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    #[error("the sysctls {0:?} are not known to be namespaced")]
    PatternNotNamespaced(String),
    #[error("the sysctl {0:?} are not known to be namespaced")]
    NotNamespaced(String),
    #[error("{name:?} not allowed with host {ns} enabled")]
    HostNamespace { name: String, ns: SysctlNamespace },
    #[error("{0:?} not allowlisted")]
    NotAllowlisted(String),
}

impl SysctlAllowlist {
    /// The safe set plus `unsafe_patterns`; a pattern that is not namespaced is refused with
    /// upstream's message.
    pub fn new(unsafe_patterns: &[String]) -> Result<Self, SysctlError> {
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
                let ns = namespaced_by(prefix).ok_or_else(|| SysctlError::PatternNotNamespaced(s.clone()))?;
                w.prefixes.push((prefix.to_string(), ns));
            } else {
                let ns = namespaced_by(&s).ok_or_else(|| SysctlError::NotNamespaced(s.clone()))?;
                w.exact.insert(s, ns);
            }
        }
        Ok(w)
    }

    /// Upstream's `validateSysctl`.
    pub fn validate(&self, name: &str, host_net: bool, host_ipc: bool) -> Result<(), SysctlError> {
        let name = normalize_sysctl(name);
        let check = |ns: SysctlNamespace| {
            if (ns == SysctlNamespace::Ipc && host_ipc) || (ns == SysctlNamespace::Net && host_net) {
                Err(SysctlError::HostNamespace {
                    name: name.clone(),
                    ns,
                })
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
        Err(SysctlError::NotAllowlisted(name))
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
    pub fn configure(&self, allowed_unsafe_sysctls: &[String]) -> Result<(), SysctlError> {
        let w = SysctlAllowlist::new(allowed_unsafe_sysctls)?;
        *crate::lock::lock(&self.sysctls) = w;
        Ok(())
    }

    /// Pod admission for sysctls.
    pub fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        crate::lock::lock(&self.sysctls).admit(pod)
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

pub use super::seccomp::{Seccomp, default_profile, load_localhost, seccomp_choice};

pub(super) fn privileged(c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
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
        Seccomp::RuntimeDefault => Some(default_profile(&caps).map_err(|e| err(e.to_string()))?),
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
    use oci_spec::runtime::LinuxSeccompAction;
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
        let e = SysctlAllowlist::new(&["vm.swappiness".into()])
            .unwrap_err()
            .to_string();
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
                .to_string()
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
