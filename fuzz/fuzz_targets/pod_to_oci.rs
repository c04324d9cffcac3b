//! Pod spec → OCI runtime spec: the pure steps the kubelet runs to start a container (env with
//! `valueFrom`/`envFrom`, `$(VAR)` expansion, volume mounts, hostname, the spec itself and the
//! security settings applied over it), driven by a JSON document holding a pod and what the
//! kubelet would have fetched for it (ConfigMaps, Secrets, Services, the image config, passwd).
#![no_main]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kubelet::inputs::{self, PodFacts, PodRefs};
use kubelet::spec::{self, BindMount, ImageConfig, NamespaceSource, PodNamespaces, SpecInput};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    pod: Pod,
    /// Which container (init containers first, then containers), modulo their count.
    #[serde(default)]
    container: usize,
    #[serde(default)]
    configmaps: Vec<ConfigMap>,
    #[serde(default)]
    secrets: Vec<Secret>,
    #[serde(default)]
    services: Vec<Service>,
    /// The image config's `config` object (Entrypoint, Cmd, Env, WorkingDir, User).
    #[serde(default)]
    image: serde_json::Value,
    passwd: Option<String>,
    group: Option<String>,
    /// A Localhost seccomp profile's text, decoded as the kubelet decodes the file.
    seccomp: Option<String>,
    host_caps: Option<u64>,
    #[serde(default)]
    own_uts: bool,
}

/// A path runc accepts: absolute (it refuses relative mount destinations and cwd), no NUL.
fn clean_absolute(p: &str) -> bool {
    let path = Path::new(p);
    path.is_absolute() && !p.contains('\0')
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Input>(data) else {
        return;
    };
    let pod = &input.pod;
    let Some(pod_spec) = pod.spec.as_ref() else {
        return;
    };
    let all: Vec<_> = pod_spec
        .init_containers
        .iter()
        .flatten()
        .chain(pod_spec.containers.iter())
        .collect();
    if all.is_empty() {
        return;
    }
    let c = all[input.container % all.len()];
    let refs = PodRefs {
        configmaps: input
            .configmaps
            .iter()
            .map(|m| (m.metadata.name.clone().unwrap_or_default(), Some(m.clone())))
            .collect(),
        secrets: input
            .secrets
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), Some(s.clone())))
            .collect(),
        services: input.services.clone(),
    };
    let facts = PodFacts {
        node_name: "node-1".into(),
        host_ip: "10.0.0.1".into(),
        pod_ip: "10.244.0.5".into(),
        node_cpu_millis: 2000,
        node_memory: 4 << 30,
    };
    let Ok(env) = inputs::container_env(pod, c, &refs, &facts) else {
        return;
    };
    let expanded = k8s_openapi::api::core::v1::Container {
        command: inputs::expand_args(c.command.as_ref(), &env),
        args: inputs::expand_args(c.args.as_ref(), &env),
        ..c.clone()
    };
    // Volumes set up under a fixed root. subPath is resolved on the filesystem (it creates
    // directories), so it is left out here: fuzz input must not write to the host.
    let root = PathBuf::from("/var/lib/kubelet/pods/uid/volumes");
    let vols: HashMap<String, PathBuf> = pod_spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), root.join(&v.name)))
        .collect();
    let mut no_sub = expanded.clone();
    for m in no_sub.volume_mounts.iter_mut().flatten() {
        m.sub_path = None;
        m.sub_path_expr = None;
    }
    let Ok(mut mounts) = kubelet::volumes::mounts_for(&no_sub, &vols, &env) else {
        return;
    };
    let Ok((hostname, _domain)) = kubelet::pods::dns::hostname_and_domain(pod, "cluster.local") else {
        return;
    };
    let _ = inputs::hosts_file(pod, "10.244.0.5", None, &hostname, _domain.as_deref());
    mounts.push(BindMount {
        host_path: "/var/lib/kubelet/pods/uid/etc-hosts".into(),
        container_path: "/etc/hosts".into(),
        read_only: false,
        host_to_container: false,
    });
    let image = ImageConfig::from_json(&input.image);
    let pinned = |n: &str| NamespaceSource::Path(format!("/run/knode/ns/{n}").into());
    let si = SpecInput {
        pod,
        container: &expanded,
        image: &image,
        env,
        namespaces: PodNamespaces {
            network: pinned("net"),
            ipc: pinned("ipc"),
            uts: if input.own_uts {
                NamespaceSource::Own
            } else {
                pinned("uts")
            },
            pid: NamespaceSource::Own,
        },
        hostname,
        mounts,
        passwd: input.passwd.clone(),
        group: input.group.clone(),
        cgroups_path: "/kubepods/besteffort/poduid/c".into(),
        oom_score_adj: 1000,
        resources: None,
        rootfs: "rootfs".into(),
    };
    let Ok(mut oci) = spec::container_spec(&si) else {
        return;
    };
    let localhost = input
        .seccomp
        .as_deref()
        .and_then(|t| serde_json::from_str::<oci_spec::runtime::LinuxSeccomp>(t).ok());
    if spec::security::apply(&mut oci, pod, &expanded, localhost, input.host_caps).is_err() {
        return;
    }
    // A spec the kubelet hands to containerd must be one runc can act on.
    for m in oci.mounts().iter().flatten() {
        let d = m.destination().to_string_lossy();
        assert!(
            clean_absolute(&d),
            "mount destination {d:?} is not a clean absolute path"
        );
    }
    let process = oci.process().as_ref().expect("a container spec has a process");
    let cwd = process.cwd().to_string_lossy();
    assert!(clean_absolute(&cwd), "cwd {cwd:?} is not a clean absolute path");
    assert!(
        !process.args().iter().flatten().any(|a| a.contains('\0')),
        "NUL in args"
    );
    assert!(
        !process.env().iter().flatten().any(|e| e.contains('\0')),
        "NUL in env"
    );
    // What containerd receives is JSON: it must survive the trip unchanged.
    let json = serde_json::to_string(&oci).expect("spec serializes");
    let back: oci_spec::runtime::Spec = serde_json::from_str(&json).expect("spec decodes");
    assert_eq!(back, oci, "spec JSON round trip");
});
