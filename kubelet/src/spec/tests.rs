//! Unit tests of the spec translation: each case is a pod fragment and what the OCI spec must say.

use super::*;
use k8s_openapi::api::core::v1::{Capabilities, PodSpec};

fn pod(psc: Option<PodSecurityContext>) -> Pod {
    Pod {
        spec: Some(PodSpec {
            security_context: psc,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some("img".into()),
        ..Default::default()
    }
}

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/testimg".into()],
        cmd: vec!["serve".into()],
        env: vec!["PATH=/bin".into(), "TESTIMG=1".into()],
        working_dir: "/srv".into(),
        user: String::new(),
    }
}

fn pinned() -> PodNamespaces {
    PodNamespaces {
        network: NamespaceSource::Path("/var/lib/kubelet/pods/u/ns/net".into()),
        ipc: NamespaceSource::Path("/var/lib/kubelet/pods/u/ns/ipc".into()),
        uts: NamespaceSource::Path("/var/lib/kubelet/pods/u/ns/uts".into()),
        pid: NamespaceSource::Own,
    }
}

fn input<'a>(pod: &'a Pod, c: &'a Container, img: &'a ImageConfig) -> SpecInput<'a> {
    SpecInput {
        pod,
        container: c,
        image: img,
        env: vec![],
        namespaces: pinned(),
        hostname: "web-0".into(),
        mounts: vec![],
        passwd: Some("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n".into()),
        group: Some("root:x:0:\nwheel:x:10:app\napp:x:1001:app\nstaff:x:50:\n".into()),
        cgroups_path: "/kubepods/besteffort/podu/c1".into(),
        oom_score_adj: 1000,
        resources: None,
        rootfs: "rootfs".into(),
    }
}

fn spec_of(i: &SpecInput) -> Spec {
    container_spec(i).unwrap()
}

#[test]
fn args_follow_upstreams_command_and_args_rules() {
    let img = image();
    let mut c = container("c");
    assert_eq!(
        process_args(&c, &img),
        ["/testimg", "serve"],
        "image ENTRYPOINT + CMD"
    );
    c.args = Some(vec!["sleep".into(), "1".into()]);
    assert_eq!(
        process_args(&c, &img),
        ["/testimg", "sleep", "1"],
        "args replace CMD only"
    );
    c.command = Some(vec!["/bin/sh".into(), "-c".into()]);
    assert_eq!(
        process_args(&c, &img),
        ["/bin/sh", "-c", "sleep", "1"],
        "command replaces ENTRYPOINT"
    );
    c.args = None;
    assert_eq!(
        process_args(&c, &img),
        ["/bin/sh", "-c"],
        "command drops the image CMD"
    );
    let empty = ImageConfig::default();
    let p = pod(None);
    let c = container("nocmd");
    assert_eq!(
        container_spec(&input(&p, &c, &empty)).unwrap_err(),
        SpecError::NoCommand {
            container: "nocmd".into()
        }
    );
}

#[test]
fn env_merges_with_container_winning_and_defaults_added() {
    assert_eq!(
        merge_env(
            &["A=1".into(), "B=2".into()],
            &[("B".into(), "x".into()), ("C".into(), "3".into())]
        ),
        ["A=1", "B=x", "C=3"]
    );
    let (p, c, img) = (pod(None), container("c"), image());
    let mut i = input(&p, &c, &img);
    i.env = vec![("TESTIMG".into(), "2".into())];
    let s = spec_of(&i);
    let env = s.process().as_ref().unwrap().env().clone().unwrap();
    assert!(env.contains(&"TESTIMG=2".to_string()));
    assert!(env.contains(&"PATH=/bin".to_string()), "image PATH kept");
    assert!(env.contains(&"HOSTNAME=web-0".to_string()));
}

#[test]
fn working_dir_from_container_then_image_then_root() {
    let (p, img) = (pod(None), image());
    let mut c = container("c");
    assert_eq!(
        spec_of(&input(&p, &c, &img)).process().as_ref().unwrap().cwd(),
        &PathBuf::from("/srv")
    );
    c.working_dir = Some("/work".into());
    assert_eq!(
        spec_of(&input(&p, &c, &img)).process().as_ref().unwrap().cwd(),
        &PathBuf::from("/work")
    );
    let bare = ImageConfig {
        entrypoint: vec!["x".into()],
        ..Default::default()
    };
    let c = container("c");
    assert_eq!(
        spec_of(&input(&p, &c, &bare)).process().as_ref().unwrap().cwd(),
        &PathBuf::from("/")
    );
}

fn uid_gid(i: &SpecInput) -> (u32, u32, Vec<u32>) {
    let s = spec_of(i);
    let u = s.process().as_ref().unwrap().user().clone();
    (u.uid(), u.gid(), u.additional_gids().clone().unwrap_or_default())
}

#[test]
fn users_resolve_like_kubelet_and_containerd_cri() {
    let c = container("c");
    let p = pod(None);
    let mut img = image();
    assert_eq!(
        uid_gid(&input(&p, &c, &img)),
        (0, 0, vec![0]),
        "no USER → root; the primary gid is always an additional gid"
    );
    img.user = "app".into();
    assert_eq!(
        uid_gid(&input(&p, &c, &img)),
        (1000, 1001, vec![10, 1001]),
        "named user from /etc/passwd, memberships from /etc/group"
    );
    img.user = "1000".into();
    assert_eq!(
        uid_gid(&input(&p, &c, &img)),
        (1000, 1001, vec![10, 1001]),
        "numeric user known to passwd"
    );
    img.user = "app:staff".into();
    assert_eq!(
        uid_gid(&input(&p, &c, &img)),
        (1000, 1001, vec![10, 1001]),
        "name:group — CRI's image status drops the group, so the passwd group applies"
    );
    img.user = "4242:staff".into();
    assert_eq!(
        uid_gid(&input(&p, &c, &img)),
        (4242, 0, vec![0]),
        "uid:name, uid unknown to passwd → gid 0 (WithUserID)"
    );
    img.user = "nobody-here".into();
    let e = container_spec(&input(&p, &c, &img)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "container c: user \"nobody-here\" of image img not found in the image's /etc/passwd"
    );
    assert_eq!(e.reason(), "CreateContainerError");
    let mut no_files = input(&p, &c, &img);
    no_files.passwd = None;
    no_files.group = None;
    assert!(matches!(
        container_spec(&no_files),
        Err(SpecError::UnknownUser { .. })
    ));
    img.user = "1234".into();
    let mut no_files = input(&p, &c, &img);
    no_files.passwd = None;
    no_files.group = None;
    assert_eq!(uid_gid(&no_files), (1234, 0, vec![0]), "no /etc/passwd");

    // runAsUser/runAsGroup: container wins over pod; supplemental groups and fsGroup merged.
    let p = pod(Some(PodSecurityContext {
        run_as_user: Some(2000),
        run_as_group: Some(3000),
        supplemental_groups: Some(vec![5, 6]),
        fs_group: Some(7),
        ..Default::default()
    }));
    let mut img = image();
    img.user = "app".into();
    assert_eq!(uid_gid(&input(&p, &c, &img)), (2000, 3000, vec![5, 6, 7, 3000]));
    let mut c2 = container("c2");
    c2.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        ..Default::default()
    });
    assert_eq!(
        uid_gid(&input(&p, &c2, &img)),
        (1000, 3000, vec![5, 6, 7, 10, 3000]),
        "runAsUser looked up in passwd for its memberships (not its own-named group), runAsGroup wins"
    );
    let p = pod(None);
    assert_eq!(
        uid_gid(&input(&p, &c2, &img)),
        (1000, 1001, vec![10, 1001]),
        "runAsUser without runAsGroup: the passwd gid of that uid"
    );
}

#[test]
fn run_as_non_root_cannot_verify_a_named_image_user() {
    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    let p = pod(None);
    let mut img = image();
    img.user = "app".into();
    let e = container_spec(&input(&p, &c, &img)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: \"_()\", container: c)"
    );
    assert_eq!(e.reason(), "CreateContainerConfigError");
    img.user = "1000:root".into();
    assert!(container_spec(&input(&p, &c, &img)).is_ok(), "numeric non-root");
    img.user = "app".into();
    c.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(1000),
        ..Default::default()
    });
    assert!(
        container_spec(&input(&p, &c, &img)).is_ok(),
        "runAsUser makes it verifiable"
    );
}

#[test]
fn run_as_non_root_refuses_a_root_image() {
    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    let (p, img) = (pod(None), image());
    let e = container_spec(&input(&p, &c, &img)).unwrap_err();
    assert_eq!(
        e,
        SpecError::RunAsRoot {
            pod: "_()".into(),
            container: "c".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "container has runAsNonRoot and image will run as root (pod: \"_()\", container: c)"
    );
    assert_eq!(e.reason(), "CreateContainerConfigError");
    c.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(10),
        ..Default::default()
    });
    assert!(container_spec(&input(&p, &c, &img)).is_ok());
    c.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(0),
        ..Default::default()
    });
    assert!(matches!(
        container_spec(&input(&p, &c, &img)),
        Err(SpecError::RunAsUserRoot { .. })
    ));
}

fn caps(c: &Container) -> Vec<String> {
    let mut v: Vec<String> = capabilities(c)
        .unwrap()
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn capabilities_default_add_drop_and_privileged() {
    let mut c = container("c");
    let mut want: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(caps(&c), want);
    c.security_context = Some(SecurityContext {
        capabilities: Some(Capabilities {
            add: Some(vec!["NET_ADMIN".into()]),
            drop: Some(vec!["CAP_KILL".into()]),
        }),
        ..Default::default()
    });
    let got = caps(&c);
    assert!(got.contains(&"NET_ADMIN".to_string()) && !got.contains(&"KILL".to_string()));
    c.security_context = Some(SecurityContext {
        capabilities: Some(Capabilities {
            add: Some(vec!["NET_BIND_SERVICE".into()]),
            drop: Some(vec!["ALL".into()]),
        }),
        ..Default::default()
    });
    assert_eq!(caps(&c), ["NET_BIND_SERVICE"]);
    c.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    assert!(caps(&c).len() >= 40 && caps(&c).contains(&"SYS_ADMIN".to_string()));
    c.security_context = Some(SecurityContext {
        capabilities: Some(Capabilities {
            add: Some(vec!["MAGIC".into()]),
            drop: None,
        }),
        ..Default::default()
    });
    assert!(matches!(capabilities(&c), Err(SpecError::BadCapability { .. })));
}

#[test]
fn security_flags_map_to_the_spec() {
    let (p, img) = (pod(None), image());
    let mut c = container("c");
    let s = spec_of(&input(&p, &c, &img));
    assert_eq!(
        s.process().as_ref().unwrap().no_new_privileges(),
        Some(false),
        "allowPrivilegeEscalation defaults true"
    );
    assert_eq!(s.root().as_ref().unwrap().readonly(), Some(false));
    let linux = s.linux().as_ref().unwrap();
    assert!(
        linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string())
    );
    assert!(
        linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string())
    );
    assert_eq!(s.process().as_ref().unwrap().oom_score_adj(), Some(1000));
    let caps = s.process().as_ref().unwrap().capabilities().clone().unwrap();
    assert!(
        caps.inheritable().iter().flatten().next().is_none(),
        "no inheritable capabilities"
    );
    assert!(
        caps.ambient().iter().flatten().next().is_none(),
        "no ambient capabilities"
    );
    let devices = linux.resources().as_ref().unwrap().devices().clone().unwrap();
    assert_eq!(
        (devices[0].allow(), devices[0].access().as_deref()),
        (false, Some("rwm")),
        "devices deny-all first"
    );
    assert_eq!(
        linux.cgroups_path().as_ref().unwrap(),
        &PathBuf::from("/kubepods/besteffort/podu/c1")
    );

    c.security_context = Some(SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        ..Default::default()
    });
    let s = spec_of(&input(&p, &c, &img));
    assert_eq!(s.process().as_ref().unwrap().no_new_privileges(), Some(true));
    assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));

    c.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    let s = spec_of(&input(&p, &c, &img));
    let linux = s.linux().as_ref().unwrap();
    assert!(
        linux.masked_paths().iter().flatten().next().is_none(),
        "privileged: nothing masked"
    );
    assert!(
        linux.readonly_paths().iter().flatten().next().is_none(),
        "privileged: nothing read-only"
    );
}

#[test]
fn namespaces_join_the_pinned_pod_namespaces() {
    let (p, c, img) = (pod(None), container("c"), image());
    let s = spec_of(&input(&p, &c, &img));
    let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
    let find = |t: LinuxNamespaceType| ns.iter().find(|n| n.typ() == t).cloned();
    assert_eq!(
        find(LinuxNamespaceType::Network).unwrap().path().clone().unwrap(),
        PathBuf::from("/var/lib/kubelet/pods/u/ns/net")
    );
    assert_eq!(
        find(LinuxNamespaceType::Uts).unwrap().path().clone().unwrap(),
        PathBuf::from("/var/lib/kubelet/pods/u/ns/uts")
    );
    assert!(
        find(LinuxNamespaceType::Pid).unwrap().path().is_none(),
        "own PID namespace"
    );
    assert!(find(LinuxNamespaceType::Mount).is_some());
    assert!(
        s.hostname().is_none(),
        "hostname lives in the pinned UTS namespace"
    );

    // hostNetwork: no network namespace entry at all (the host's).
    let mut i = input(&p, &c, &img);
    i.namespaces.network = NamespaceSource::Host;
    i.namespaces.uts = NamespaceSource::Own;
    let s = spec_of(&i);
    let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    assert_eq!(s.hostname().as_deref(), Some("web-0"));
}

#[test]
fn bind_mounts_are_added_and_replace_standard_ones() {
    let (p, c, img) = (pod(None), container("c"), image());
    let mut i = input(&p, &c, &img);
    i.mounts = vec![
        BindMount {
            host_path: "/var/lib/kubelet/pods/u/etc-hosts".into(),
            container_path: "/etc/hosts".into(),
            read_only: false,
            host_to_container: false,
        },
        BindMount {
            host_path: "/var/lib/kubelet/pods/u/shm".into(),
            container_path: "/dev/shm".into(),
            read_only: false,
            host_to_container: false,
        },
        BindMount {
            host_path: "/data".into(),
            container_path: "/mnt/data".into(),
            read_only: true,
            host_to_container: true,
        },
    ];
    let s = spec_of(&i);
    let mounts = s.mounts().clone().unwrap();
    let find = |d: &str| {
        mounts
            .iter()
            .filter(|m| m.destination() == &PathBuf::from(d))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        find("/dev/shm").len(),
        1,
        "the pod's shm replaces the per-container one"
    );
    assert_eq!(find("/dev/shm")[0].typ().as_deref(), Some("bind"));
    let data = &find("/mnt/data")[0];
    let opts = data.options().clone().unwrap();
    assert!(opts.contains(&"ro".to_string()) && opts.contains(&"rslave".to_string()));
    for std in ["/proc", "/dev", "/dev/pts", "/sys", "/etc/hosts"] {
        assert_eq!(find(std).len(), 1, "{std}");
    }
}

#[test]
fn image_config_is_read_from_json() {
    let v = serde_json::json!({"Entrypoint": ["/a"], "Cmd": ["b"], "Env": ["X=1"], "WorkingDir": "/w", "User": "1:2"});
    assert_eq!(
        ImageConfig::from_json(&v),
        ImageConfig {
            entrypoint: vec!["/a".into()],
            cmd: vec!["b".into()],
            env: vec!["X=1".into()],
            working_dir: "/w".into(),
            user: "1:2".into()
        }
    );
    assert_eq!(
        ImageConfig::from_json(&serde_json::Value::Null),
        ImageConfig::default()
    );
}

#[test]
fn relative_mount_destinations_and_working_dirs_are_errors() {
    // Found by fuzzing (fuzz/fuzz_targets/pod_to_oci.rs): a volumeMount without `mountPath`
    // decodes as "" and became a mount with an empty destination, which runc refuses only at
    // create time; a relative workingDir likewise.
    let (p, img) = (pod(None), image());
    let c = container("c");
    for path in ["", "data", "./x"] {
        let mut i = input(&p, &c, &img);
        i.mounts = vec![BindMount {
            host_path: "/var/lib/kubelet/pods/u/volumes/cfg".into(),
            container_path: path.into(),
            read_only: false,
            host_to_container: true,
        }];
        assert_eq!(
            container_spec(&i),
            Err(SpecError::NotAbsolute {
                container: "c".into(),
                field: "mount destination",
                path: path.into()
            })
        );
    }
    let mut c = container("c");
    c.working_dir = Some("srv".into());
    let e = container_spec(&input(&p, &c, &img)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "container c: workingDir \"srv\" is not an absolute path"
    );
    assert_eq!(e.reason(), "CreateContainerConfigError");
    let img = ImageConfig {
        working_dir: "rel".into(),
        ..image()
    };
    assert!(matches!(
        container_spec(&input(&p, &container("c"), &img)),
        Err(SpecError::NotAbsolute {
            field: "workingDir",
            ..
        })
    ));
}
