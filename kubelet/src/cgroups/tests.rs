use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::json;

use super::*;

fn container(name: &str, requests: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
    json!({"name": name, "image": "img", "resources": {"requests": requests, "limits": limits}})
}

fn pod(uid: &str, containers: Vec<serde_json::Value>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "uid": uid},
        "spec": {"containers": containers}
    }))
    .unwrap()
}

fn guaranteed(uid: &str) -> Pod {
    pod(
        uid,
        vec![container(
            "a",
            json!({"cpu": "500m", "memory": "128Mi"}),
            json!({"cpu": "500m", "memory": "128Mi"}),
        )],
    )
}

fn burstable(uid: &str) -> Pod {
    pod(
        uid,
        vec![container(
            "a",
            json!({"cpu": "250m", "memory": "64Mi"}),
            json!({"cpu": "1", "memory": "256Mi"}),
        )],
    )
}

fn besteffort(uid: &str) -> Pod {
    pod(uid, vec![json!({"name": "a", "image": "img"})])
}

fn c0(p: &Pod) -> &Container {
    &p.spec.as_ref().unwrap().containers[0]
}

#[test]
fn shares_and_quota_as_upstream() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(100), 102);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(500_000), MAX_SHARES);
    assert_eq!(milli_cpu_to_quota(0, 100_000), 0);
    assert_eq!(milli_cpu_to_quota(5, 100_000), 1000, "at least 1 ms");
    assert_eq!(milli_cpu_to_quota(250, 100_000), 25_000);
    assert_eq!(milli_cpu_to_quota(1500, 100_000), 150_000);
}

#[test]
fn cgroupfs_names_by_qos() {
    let l = Layout::new(Driver::Cgroupfs, "/", true);
    assert_eq!(l.path(&l.node()), "/kubepods");
    assert_eq!(l.path(&l.qos(Qos::Guaranteed)), "/kubepods");
    assert_eq!(l.path(&l.qos(Qos::Burstable)), "/kubepods/burstable");
    assert_eq!(l.path(&l.pod(Qos::Guaranteed, "u-1")), "/kubepods/podu-1");
    assert_eq!(
        l.path(&l.pod(Qos::Burstable, "u-1")),
        "/kubepods/burstable/podu-1"
    );
    assert_eq!(
        l.container_path(Qos::BestEffort, "u-1", "abc"),
        "/kubepods/besteffort/podu-1/abc"
    );
    let t = Layout::new(Driver::Cgroupfs, "/knode-test/ns1/", true);
    assert_eq!(
        t.path(&t.pod(Qos::Burstable, "u")),
        "/knode-test/ns1/kubepods/burstable/podu"
    );
    // Without cgroupsPerQOS, containers sit under the root.
    let flat = Layout::new(Driver::Cgroupfs, "/", false);
    assert_eq!(flat.container_path(Qos::Burstable, "u", "c"), "/c");
}

#[test]
fn systemd_names_are_nested_slices_with_escaped_dashes() {
    let l = Layout::new(Driver::Systemd, "/", true);
    assert_eq!(l.path(&l.node()), "/kubepods.slice");
    assert_eq!(
        l.path(&l.qos(Qos::Burstable)),
        "/kubepods.slice/kubepods-burstable.slice"
    );
    assert_eq!(
        l.path(&l.pod(Qos::Burstable, "12-34")),
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice"
    );
    assert_eq!(
        l.path(&l.pod(Qos::Guaranteed, "12-34")),
        "/kubepods.slice/kubepods-pod12_34.slice"
    );
    assert_eq!(
        l.container_path(Qos::BestEffort, "u", "abc"),
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu.slice/cri-containerd-abc.scope"
    );
    assert_eq!(CgroupName::default().to_systemd(), "/");
    assert!(Driver::parse("systemd").is_ok());
    assert!(
        Driver::parse("magic")
            .unwrap_err()
            .to_string()
            .contains("--cgroup-driver")
    );
}

#[test]
fn pod_cgroup_settings_follow_qos() {
    let g = pod_config(&guaranteed("g"), -1);
    assert_eq!(
        g,
        ResourceConfig {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(128 << 20),
            pids_limit: None,
        }
    );
    let b = pod_config(&burstable("b"), 1024);
    assert_eq!(b.cpu_shares, Some(256));
    assert_eq!(b.cpu_quota, Some(100_000));
    assert_eq!(b.memory_limit, Some(256 << 20));
    assert_eq!(b.pids_limit, Some(1024));
    // A container without limits: no pod-level quota or memory limit.
    let partial = pod(
        "p",
        vec![
            container("a", json!({"cpu": "100m"}), json!({"cpu": "1", "memory": "1Gi"})),
            container("b", json!({"memory": "10Mi"}), json!({})),
        ],
    );
    let cfg = pod_config(&partial, -1);
    assert_eq!(cfg.cpu_shares, Some(102));
    assert_eq!((cfg.cpu_quota, cfg.memory_limit), (None, None));
    let be = pod_config(&besteffort("e"), -1);
    assert_eq!(
        be,
        ResourceConfig {
            cpu_shares: Some(2),
            ..Default::default()
        }
    );
}

#[test]
fn pod_limits_take_init_containers_and_overhead() {
    let mut p = guaranteed("g");
    let spec = p.spec.as_mut().unwrap();
    spec.init_containers = Some(vec![
        serde_json::from_value(container(
            "init",
            json!({"cpu": "2", "memory": "64Mi"}),
            json!({"cpu": "2", "memory": "64Mi"}),
        ))
        .unwrap(),
    ]);
    spec.overhead = Some(BTreeMap::from([("memory".to_string(), Quantity("16Mi".into()))]));
    let cfg = pod_config(&p, -1);
    assert_eq!(
        cfg.cpu_quota,
        Some(200_000),
        "the init container's 2 cpus dominate"
    );
    assert_eq!(cfg.memory_limit, Some((128 + 16) << 20));
}

#[test]
fn container_settings() {
    let b = burstable("b");
    let cfg = container_config(c0(&b));
    assert_eq!(cfg.cpu_shares, Some(256));
    assert_eq!(cfg.cpu_quota, Some(100_000));
    assert_eq!(cfg.cpu_period, Some(100_000));
    assert_eq!(cfg.memory_limit, Some(256 << 20));
    // Limit only: shares from the limit.
    let c: Container = serde_json::from_value(container("a", json!({}), json!({"cpu": "300m"}))).unwrap();
    assert_eq!(container_config(&c).cpu_shares, Some(307));
    assert_eq!(container_config(&c).memory_limit, None);
    let be = besteffort("e");
    let cfg = container_config(c0(&be));
    assert_eq!((cfg.cpu_shares, cfg.cpu_quota), (Some(2), None));
    let r = oci_resources(&container_config(c0(&b))).unwrap();
    assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(100_000));
    assert_eq!(r.memory().as_ref().unwrap().limit(), Some(256 << 20));
}

#[test]
fn oom_score_adj_as_upstream() {
    let cap = 1000 << 20;
    let g = guaranteed("g");
    assert_eq!(oom_score_adj(&g, c0(&g), cap), -997);
    let e = besteffort("e");
    assert_eq!(oom_score_adj(&e, c0(&e), cap), 1000);
    // 64Mi of 1000Mi: 1000 - 64 = 936.
    let b = burstable("b");
    assert_eq!(oom_score_adj(&b, c0(&b), cap), 936);
    // Tiny request: 1000 → 999, below BestEffort.
    let tiny = pod("t", vec![container("a", json!({"cpu": "1m"}), json!({}))]);
    assert_eq!(oom_score_adj(&tiny, c0(&tiny), cap), 999);
    // Request near capacity: kept above Guaranteed (3).
    let big = pod("big", vec![container("a", json!({"memory": "999Mi"}), json!({}))]);
    assert_eq!(oom_score_adj(&big, c0(&big), cap), 3);
    // Node-critical pods: -997 whatever their class.
    let mut crit = besteffort("c");
    crit.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
    assert_eq!(oom_score_adj(&crit, c0(&crit), cap), -997);
    // A sidecar never scores above the pod's smallest regular container.
    let mut side = pod("s", vec![container("a", json!({"memory": "500Mi"}), json!({}))]);
    let mut sc: Container =
        serde_json::from_value(container("sc", json!({"memory": "1Mi"}), json!({}))).unwrap();
    sc.restart_policy = Some("Always".into());
    side.spec.as_mut().unwrap().init_containers = Some(vec![sc.clone()]);
    assert_eq!(oom_score_adj(&side, &sc, cap), 500);
}

#[test]
fn qos_parents_follow_pods() {
    let pods = [burstable("a"), burstable("b"), guaranteed("g"), besteffort("e")];
    let (b, e) = qos_configs(pods.iter());
    assert_eq!(b.cpu_shares, Some(512), "2 × 250m");
    assert_eq!(e.cpu_shares, Some(2));
    let (b, _) = qos_configs(std::iter::empty());
    assert_eq!(b.cpu_shares, Some(2));
}

fn caps() -> BTreeMap<String, i128> {
    [
        ("cpu", 2 * NANO),
        ("memory", (8i128 << 30) * NANO),
        ("ephemeral-storage", (100i128 << 30) * NANO),
        ("pods", 110 * NANO),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn allocatable_subtracts_reservations_and_hard_eviction() {
    let a = allocatable(
        &caps(),
        &map(&[("cpu", "500m"), ("memory", "1Gi")]),
        &map(&[("memory", "512Mi")]),
        &map(&[("memory.available", "100Mi"), ("nodefs.available", "10%")]),
    )
    .unwrap();
    assert_eq!(a.enforced["cpu"], 1500 * NANO / 1000);
    assert_eq!(a.enforced["memory"], ((8i128 << 30) - (1536 << 20)) * NANO);
    assert_eq!(a.reported["memory"], ((8i128 << 30) - (1636i128 << 20)) * NANO);
    assert_eq!(a.reported["ephemeral-storage"], (90i128 << 30) * NANO);
    assert_eq!(a.reported["pods"], 110 * NANO);
    assert_eq!(format_quantity("cpu", a.reported["cpu"]), "1500m");
    assert_eq!(format_quantity("cpu", 2 * NANO), "2");
    assert_eq!(format_quantity("memory", (8i128 << 30) * NANO), "8388608Ki");
    let n = node_config(&a.enforced);
    assert_eq!(n.cpu_shares, Some(1536));
    assert_eq!(n.memory_limit, Some((8i64 << 30) - (1536 << 20)));
    // Reservations larger than capacity floor at 0.
    let a = allocatable(&caps(), &map(&[("cpu", "5")]), &BTreeMap::new(), &BTreeMap::new()).unwrap();
    assert_eq!(a.reported["cpu"], 0);
    // Bad values name the field.
    let e = allocatable(
        &caps(),
        &map(&[("memory", "lots")]),
        &BTreeMap::new(),
        &BTreeMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("systemReserved.memory"), "{e}");
    let e = allocatable(
        &caps(),
        &BTreeMap::new(),
        &BTreeMap::new(),
        &map(&[("nodefs.available", "x%")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("evictionHard.nodefs.available"), "{e}");
    assert_eq!(
        parse_map_flag("cpu=100m, memory=1Gi", '=').unwrap(),
        map(&[("cpu", "100m"), ("memory", "1Gi")])
    );
    assert_eq!(
        parse_map_flag("memory.available<1Gi,nodefs.available<10%", '<').unwrap(),
        map(&[("memory.available", "1Gi"), ("nodefs.available", "10%")])
    );
    assert!(parse_map_flag("cpu", '=').is_err());
}

#[test]
fn files_for_v1_and_v2() {
    let cfg = ResourceConfig {
        cpu_shares: Some(1024),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_limit: Some(1 << 20),
        pids_limit: Some(100),
    };
    let v1: Vec<(&str, &str, String)> = files(&cfg, Version::V1)
        .into_iter()
        .map(|f| (f.controller, f.file, f.value))
        .collect();
    assert_eq!(
        v1,
        vec![
            ("cpu", "cpu.shares", "1024".to_string()),
            ("cpu", "cpu.cfs_period_us", "100000".to_string()),
            ("cpu", "cpu.cfs_quota_us", "50000".to_string()),
            ("memory", "memory.limit_in_bytes", "1048576".to_string()),
            ("pids", "pids.max", "100".to_string()),
        ]
    );
    let v2: Vec<(&str, String)> = files(&cfg, Version::V2)
        .into_iter()
        .map(|f| (f.file, f.value))
        .collect();
    assert_eq!(
        v2,
        vec![
            ("cpu.weight", "39".to_string()),
            ("cpu.max", "50000 100000".to_string()),
            ("memory.max", "1048576".to_string()),
            ("pids.max", "100".to_string()),
        ]
    );
    let none = ResourceConfig {
        cpu_quota: Some(0),
        cpu_period: Some(100_000),
        ..Default::default()
    };
    assert_eq!(files(&none, Version::V2)[0].value, "max 100000");
    assert_eq!(files(&none, Version::V1)[1].value, "-1");
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(262_144), 10_000);
}

#[test]
fn fs_writes_v1_layout() {
    let dir = tempfile::tempdir().unwrap();
    for c in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
        std::fs::create_dir(dir.path().join(c)).unwrap();
    }
    let fs = CgroupFs::at(dir.path(), Version::V1);
    let m = CgroupManager::new(
        Layout::new(Driver::Cgroupfs, "/t", true),
        fs,
        ResourceConfig {
            cpu_shares: Some(2048),
            memory_limit: Some(1 << 30),
            ..Default::default()
        },
        512,
        1 << 30,
    );
    m.start().unwrap();
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    assert_eq!(read("cpu/t/kubepods/cpu.shares"), "2048");
    assert_eq!(read("memory/t/kubepods/memory.limit_in_bytes"), "1073741824");
    assert_eq!(read("cpu/t/kubepods/besteffort/cpu.shares"), "2");
    assert_eq!(read("cpu/t/kubepods/burstable/cpu.shares"), "2");
    let b = burstable("u1");
    assert_eq!(m.ensure_pod(&b).unwrap(), "/t/kubepods/burstable/podu1");
    assert_eq!(read("cpu/t/kubepods/burstable/cpu.shares"), "256");
    assert_eq!(read("cpu/t/kubepods/burstable/podu1/cpu.cfs_quota_us"), "100000");
    assert_eq!(read("pids/t/kubepods/burstable/podu1/pids.max"), "512");
    assert!(dir.path().join("cpuacct/t/kubepods/burstable/podu1").is_dir());
    assert!(
        !dir.path().join("freezer/t").exists(),
        "only the managed controllers"
    );
    m.ensure_pod(&burstable("u2")).unwrap();
    assert_eq!(read("cpu/t/kubepods/burstable/cpu.shares"), "512");
    assert_eq!(m.pod_uids_present().len(), 2);
    // Removal updates the parent even when the directories cannot go (plain files here).
    let _ = m.remove_pod("u2");
    assert_eq!(read("cpu/t/kubepods/burstable/cpu.shares"), "256");
    assert_eq!(m.container_path(&b, "c1"), "/t/kubepods/burstable/podu1/c1");
}

#[test]
fn fs_writes_v2_layout() {
    let dir = tempfile::tempdir().unwrap();
    let fs = CgroupFs::at(dir.path(), Version::V2);
    let m = CgroupManager::new(
        Layout::new(Driver::Systemd, "/", true),
        fs,
        ResourceConfig::default(),
        -1,
        1 << 30,
    );
    let g = guaranteed("g-1");
    // The kernel creates cpu.max with a cgroup; cgroups-rs reads it before writing.
    let pod_dir = dir.path().join("kubepods.slice/kubepods-podg_1.slice");
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::write(pod_dir.join("cpu.max"), "max 100000").unwrap();
    let path = m.ensure_pod(&g).unwrap();
    assert_eq!(path, "/kubepods.slice/kubepods-podg_1.slice");
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    assert_eq!(
        read("kubepods.slice/kubepods-podg_1.slice/cpu.max"),
        "50000 100000"
    );
    assert_eq!(
        read("kubepods.slice/kubepods-podg_1.slice/memory.max"),
        "134217728"
    );
    assert_eq!(read("kubepods.slice/kubepods-podg_1.slice/cpu.weight"), "20");
    // cgroups-rs delegates the controllers the host's root offers on the way down (which ones
    // depends on the host, so only that it wrote there).
    assert!(dir.path().join("cgroup.subtree_control").is_file());
    assert!(dir.path().join("kubepods.slice/cgroup.subtree_control").is_file());
    assert_eq!(read("kubepods.slice/kubepods-besteffort.slice/cpu.weight"), "1");
    assert_eq!(m.pod_uids_present(), vec!["g-1".to_string()]);
    // Paths climbing out are refused.
    assert!(m.fs().ensure("/../x", &ResourceConfig::default()).is_err());
}

#[test]
fn fs_removes_empty_trees_deepest_first() {
    let dir = tempfile::tempdir().unwrap();
    for p in [
        "cpu/k/pod1/c1",
        "cpu/k/pod1/c2",
        "freezer/k/pod1/c1",
        "memory/k/pod1",
    ] {
        std::fs::create_dir_all(dir.path().join(p)).unwrap();
    }
    let fs = CgroupFs::at(dir.path(), Version::V1);
    fs.remove("/k/pod1").unwrap();
    for c in ["cpu", "freezer", "memory"] {
        assert!(!dir.path().join(c).join("k/pod1").exists(), "{c}");
        assert!(dir.path().join(c).join("k").is_dir(), "the parent stays");
    }
    // Gone already, or the root itself: nothing to do.
    fs.remove("/k/pod1").unwrap();
    fs.remove("/").unwrap();
    assert!(dir.path().join("cpu").is_dir());
}

/// The files under `dir` (relative path → content), cgroups-rs's bookkeeping files left out.
fn written(dir: &std::path::Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with("cgroup.subtree_control") {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn adapter_writes_exactly_the_modelled_files_on_v1_and_v2() {
    let full = ResourceConfig {
        cpu_shares: Some(1024),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_limit: Some(1 << 20),
        pids_limit: Some(100),
    };
    let unlimited = ResourceConfig {
        cpu_shares: Some(2),
        cpu_quota: Some(0),
        cpu_period: Some(100_000),
        memory_limit: Some(0),
        pids_limit: None,
    };
    for cfg in [full, unlimited] {
        // v1: a hierarchy per controller, the cgroup in the kubelet's four only.
        let dir = tempfile::tempdir().unwrap();
        for c in ["cpu", "cpuacct", "memory", "pids", "devices"] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
        }
        CgroupFs::at(dir.path(), Version::V1)
            .ensure("/a/b", &cfg)
            .unwrap();
        let want: BTreeMap<String, String> = files(&cfg, Version::V1)
            .into_iter()
            .map(|f| (format!("{}/a/b/{}", f.controller, f.file), f.value))
            .collect();
        assert_eq!(written(dir.path()), want, "v1 {cfg:?}");
        assert!(dir.path().join("cpuacct/a/b").is_dir());
        assert!(!dir.path().join("devices/a").exists());

        // v2: one hierarchy; cpu.max exists from the kernel's side.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/cpu.max"), "max 100000").unwrap();
        CgroupFs::at(dir.path(), Version::V2)
            .ensure("/a/b", &cfg)
            .unwrap();
        let want: BTreeMap<String, String> = files(&cfg, Version::V2)
            .into_iter()
            .map(|f| (format!("a/b/{}", f.file), f.value))
            .collect();
        assert_eq!(written(dir.path()), want, "v2 {cfg:?}");
    }
}

#[test]
fn adapter_reads_stats_on_v1_and_v2() {
    let put = |dir: &std::path::Path, files: &[(&str, &str)]| {
        for (p, v) in files {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        }
    };
    let v1 = tempfile::tempdir().unwrap();
    put(
        v1.path(),
        &[
            ("cpuacct/k/p/cpuacct.usage", "123456789\n"),
            ("memory/k/p/memory.usage_in_bytes", "4096\n"),
            ("memory/k/p/memory.limit_in_bytes", "9223372036854771712\n"),
            (
                "memory/k/p/memory.stat",
                "total_inactive_file 1024\ntotal_rss 2048\n",
            ),
            ("pids/k/p/pids.current", "3\n"),
        ],
    );
    let fs = CgroupFs::at(v1.path(), Version::V1);
    assert_eq!(fs.cpu_usage_ns("/k/p"), Some(123_456_789));
    let m = fs.memory("/k/p").unwrap();
    assert_eq!(m.usage, 4096);
    assert!(m.stat.contains("total_inactive_file 1024\n"), "{}", m.stat);
    assert_eq!(fs.pids_current("/k/p"), Some(3));
    assert_eq!(fs.cpu_usage_ns("/k/gone"), None, "a missing cgroup is no reading");
    assert_eq!(fs.memory("/k/gone"), None);

    let v2 = tempfile::tempdir().unwrap();
    put(
        v2.path(),
        &[
            ("k/p/cpu.stat", "usage_usec 1500\nuser_usec 1000\n"),
            ("k/p/memory.current", "8192\n"),
            ("k/p/memory.max", "65536\n"),
            ("k/p/memory.high", "max\n"),
            ("k/p/memory.low", "0\n"),
            ("k/p/memory.min", "0\n"),
            ("k/p/memory.stat", "anon 4096\ninactive_file 512\n"),
            ("k/p/pids.current", "2\n"),
        ],
    );
    let fs = CgroupFs::at(v2.path(), Version::V2);
    assert_eq!(fs.cpu_usage_ns("/k/p"), Some(1_500_000));
    // The stat text is rebuilt from the adapter's parsed map: its line order is not fixed.
    let m = fs.memory("/k/p").unwrap();
    assert_eq!((m.usage, m.limit), (8192, Some(65536)));
    assert!(
        m.stat.contains("inactive_file 512\n") && m.stat.contains("anon 4096\n"),
        "{}",
        m.stat
    );
    assert_eq!(fs.pids_current("/k/p"), Some(2));
    assert_eq!(fs.memory("/k/gone"), None, "no panic on a missing v2 cgroup");
    assert_eq!(fs.cpu_usage_ns("/k/gone"), None);
}
