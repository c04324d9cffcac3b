//! cgroups by QoS class with the real kubelet, containerd and runc: Guaranteed, Burstable and
//! BestEffort pods land under `kubepods`, `kubepods/burstable`, `kubepods/besteffort` with upstream's
//! cpu shares, CFS quota, memory limits and `oom_score_adj`; a container allocating past its memory
//! limit is OOMKilled and restarted; nothing is left below `kubepods` once the pods are gone. Plus
//! the cgroup manager against the host's real cgroupfs (creation, runc-style leftovers, removal).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Node;
use kubelet::cgroups::{CgroupFs, CgroupManager, Driver, Layout, ResourceConfig};
use serde_json::Value;

/// The test's cgroup root below a controller's hierarchy (`--cgroup-root=/knode-test/<ns>`).
fn cgroup_dir(node: &Node, controller: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join("knode-test")
        .join(&node.ns)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn pod_yaml(name: &str, image: &str, restart: &str, args: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    args: {args}\n    resources: {resources}\n"
    )
}

fn container_id(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string()
}

/// The container's first process, from its memory cgroup.
fn container_pid(dir: &Path) -> u32 {
    read(&dir.join("cgroup.procs"))
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process in {}", dir.display()))
}

fn mem_total() -> i64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Directories below `kubepods` in every controller, other than the QoS parents.
fn leftovers(node: &Node) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let kp = ctl.path().join("knode-test").join(&node.ns).join("kubepods");
        let mut stack = vec![kp.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let p = e.path();
                    if p != kp.join("burstable") && p != kp.join("besteffort") {
                        out.push(p.clone());
                    }
                    stack.push(p);
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_pods_get_their_cgroups_shares_quota_and_oom_score_adj() {
    let node = Node::start("kl-cgqos").await;
    let img = node.image().to_string();
    let sleep = "[\"sleep\", \"infinity\"]";
    node.apply(&pod_yaml(
        "guaranteed",
        &img,
        "Always",
        sleep,
        "{requests: {cpu: 500m, memory: 64Mi}, limits: {cpu: 500m, memory: 64Mi}}",
    ));
    node.apply(&pod_yaml(
        "burstable",
        &img,
        "Always",
        sleep,
        "{requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 500m, memory: 128Mi}}",
    ));
    node.apply(&pod_yaml("besteffort", &img, "Always", sleep, "{}"));
    let cpu = cgroup_dir(&node, "cpu").join("kubepods");
    let mem = cgroup_dir(&node, "memory").join("kubepods");

    // Guaranteed: directly under kubepods; pod and container get shares, quota and memory limit.
    let g = node.wait_phase("guaranteed", "Running");
    assert_eq!(g["status"]["qosClass"], "Guaranteed");
    let uid = g["metadata"]["uid"].as_str().unwrap();
    let id = container_id(&g);
    let pod_cpu = cpu.join(format!("pod{uid}"));
    assert_eq!(read(&pod_cpu.join("cpu.shares")), "512");
    assert_eq!(read(&pod_cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&pod_cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(
        read(&mem.join(format!("pod{uid}")).join("memory.limit_in_bytes")),
        (64 << 20).to_string()
    );
    assert_eq!(read(&pod_cpu.join(&id).join("cpu.shares")), "512");
    assert_eq!(read(&pod_cpu.join(&id).join("cpu.cfs_quota_us")), "50000");
    let cmem = mem.join(format!("pod{uid}")).join(&id);
    assert_eq!(read(&cmem.join("memory.limit_in_bytes")), (64 << 20).to_string());
    let pid = container_pid(&cmem);
    // -997, unless this host refuses negative scores (then the kubelet's floor).
    let want = (-997).max(kubelet::cgroups::manager::oom_score_adj_floor());
    assert_eq!(
        read(Path::new(&format!("/proc/{pid}/oom_score_adj"))),
        want.to_string()
    );

    // Burstable: under kubepods/burstable; quota and memory limit because the container sets them.
    let b = node.wait_phase("burstable", "Running");
    assert_eq!(b["status"]["qosClass"], "Burstable");
    let uid = b["metadata"]["uid"].as_str().unwrap();
    let id = container_id(&b);
    let pod_cpu = cpu.join("burstable").join(format!("pod{uid}"));
    assert_eq!(read(&pod_cpu.join("cpu.shares")), "102");
    assert_eq!(read(&pod_cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(
        read(
            &mem.join("burstable")
                .join(format!("pod{uid}"))
                .join("memory.limit_in_bytes")
        ),
        (128 << 20).to_string()
    );
    assert_eq!(
        read(&cpu.join("burstable").join("cpu.shares")),
        "102",
        "the Burstable parent's shares are its pods' cpu requests"
    );
    let cmem = mem.join("burstable").join(format!("pod{uid}")).join(&id);
    let pid = container_pid(&cmem);
    let want = (1000 - (1000 * (32i64 << 20)) / mem_total()).clamp(3, 999);
    assert_eq!(
        read(Path::new(&format!("/proc/{pid}/oom_score_adj"))),
        want.to_string()
    );

    // BestEffort: under kubepods/besteffort with the minimum shares, no quota, oom_score_adj 1000.
    let e = node.wait_phase("besteffort", "Running");
    assert_eq!(e["status"]["qosClass"], "BestEffort");
    let uid = e["metadata"]["uid"].as_str().unwrap();
    let id = container_id(&e);
    let pod_cpu = cpu.join("besteffort").join(format!("pod{uid}"));
    assert_eq!(read(&pod_cpu.join("cpu.shares")), "2");
    assert_eq!(read(&pod_cpu.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(&cpu.join("besteffort").join("cpu.shares")), "2");
    let cmem = mem.join("besteffort").join(format!("pod{uid}")).join(&id);
    let pid = container_pid(&cmem);
    assert_eq!(read(Path::new(&format!("/proc/{pid}/oom_score_adj"))), "1000");

    // kubepods itself is sized to the node (allocatable with nothing reserved: all cpus).
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(read(&cpu.join("cpu.shares")), (cpus * 1024).to_string());

    node.kubectl(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
    node.eventually("no pod cgroups left below kubepods", || {
        leftovers(&node).is_empty()
    });
    assert_eq!(read(&cpu.join("burstable").join("cpu.shares")), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_oomkilled_and_restarted_and_cpu_limit_is_cfs_quota() {
    let node = Node::start("kl-cgoom").await;
    node.apply(&pod_yaml(
        "hog",
        node.image(),
        "Always",
        "[\"alloc-mem\", \"200\", \"--hold\", \"60\"]",
        "{requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 300m, memory: 48Mi}}",
    ));
    let mut p = Value::Null;
    node.eventually("hog OOMKilled and restarted", || {
        p = node.pod("hog");
        let cs = &p["status"]["containerStatuses"][0];
        cs["restartCount"].as_i64().unwrap_or(0) >= 1
            && cs["lastState"]["terminated"]["reason"] == "OOMKilled"
    });
    let t = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(t["exitCode"], 137, "{t}");
    // The cpu limit is the container's CFS quota (300m of a 100 ms period).
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let pod_cpu = cgroup_dir(&node, "cpu")
        .join("kubepods/burstable")
        .join(format!("pod{uid}"));
    assert_eq!(read(&pod_cpu.join("cpu.cfs_quota_us")), "30000");
    node.eventually("a running attempt with its quota", || {
        let p = node.pod("hog");
        let id = p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("containerd://")
            .to_string();
        !id.is_empty()
            && std::fs::read_to_string(pod_cpu.join(&id).join("cpu.cfs_quota_us"))
                .is_ok_and(|q| q.trim() == "30000")
    });
    node.kubectl(&["delete", "pod", "hog", "--wait=true", "--timeout=60s"]);
    node.eventually("no pod cgroups left below kubepods", || {
        leftovers(&node).is_empty()
    });
}

/// Removes a test root in every hierarchy, even when an assertion fails.
struct RootGuard(String);

impl Drop for RootGuard {
    fn drop(&mut self) {
        let _ = CgroupFs::detect().remove(&self.0);
    }
}

#[test]
fn manager_creates_and_removes_pod_cgroups_on_the_host() {
    knode_harness::require_root().unwrap();
    let root = format!("/knode-unit-{}", std::process::id());
    let _guard = RootGuard(root.clone());
    let fs = CgroupFs::detect();
    let m = CgroupManager::new(
        Layout::new(Driver::Cgroupfs, &root, true),
        fs.clone(),
        ResourceConfig {
            cpu_shares: Some(1024),
            ..Default::default()
        },
        100,
        8 << 30,
    );
    m.start().unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
        "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "32Mi"}}}]}
    }))
    .unwrap();
    let path = m.ensure_pod(&pod).unwrap();
    assert_eq!(path, format!("{root}/kubepods/burstable/podu-1"));
    assert_eq!(read(&fs.dir("cpu", &path).join("cpu.shares")), "256");
    assert_eq!(
        read(&fs.dir("memory", &path).join("memory.limit_in_bytes")),
        (32 << 20).to_string()
    );
    assert_eq!(read(&fs.dir("pids", &path).join("pids.max")), "100");
    // runc creates the container's cgroup in every hierarchy; simulate its leftovers.
    let leftover = format!("{path}/ctr-1");
    for ctl in ["freezer", "devices", "cpu", "memory"] {
        std::fs::create_dir_all(fs.dir(ctl, &leftover)).unwrap();
    }
    m.remove_pod("u-1").unwrap();
    for ctl in ["freezer", "devices", "cpu", "memory", "pids"] {
        assert!(!fs.dir(ctl, &path).exists(), "{ctl}: {path} left behind");
    }
    assert!(fs.dir("cpu", &format!("{root}/kubepods/burstable")).is_dir());
}
