//! The eviction manager with the real kubelet binary, control plane and containerd: an on-disk
//! emptyDir written past its sizeLimit gets its pod evicted with upstream's message while another
//! pod stays; on a kubelet whose root dir is a small test-made tmpfs, a pod filling an emptyDir
//! crosses `nodefs.available` — DiskPressure on the Node, the heaviest pod evicted with the
//! DisruptionTarget condition, new pods refused with reason Evicted, and the condition back to
//! False after the pressure-transition period. Memory: with `kubeReserved` leaving the pods
//! 600 MiB, the allocatable copy of `memory.available<400Mi` trips when a BestEffort pod holds
//! 300 MiB — MemoryPressure, that pod evicted, the Guaranteed pod kept, BestEffort pods refused.
//! Full disks: the pod log dir at 100 % (a 1 MiB tmpfs) and the root dir at 100 % (an emptyDir
//! written until ENOSPC) crash nothing; logging resumes once there is room, the filler is evicted
//! and the node takes pods again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Node;
use serde_json::Value;

/// A pod whose container writes `mib` MiB into the emptyDir `data` (with `size_limit`, if any) and
/// then sleeps.
fn writer_pod(name: &str, image: &str, mib: u32, size_limit: Option<&str>) -> String {
    let limit = size_limit.map(|l| format!("sizeLimit: {l}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: {image}\n    command: [\"sh\", \"-c\", \"dd if=/dev/zero of=/data/f bs=1M count={mib} && sleep 3600\"]\n    volumeMounts:\n    - {{name: data, mountPath: /data}}\n  volumes:\n  - name: data\n    emptyDir: {{{}}}\n",
        limit
    )
}

/// Waits until the Node's condition `ty` has `status` with `reason`.
fn wait_node_condition(node: &Node, ty: &str, status: &str, reason: &str) {
    node.eventually(&format!("{ty} {status}"), || {
        let out = node.kubectl(&[
            "get",
            "node",
            &node.name,
            "-o",
            &format!(
                "jsonpath={{.status.conditions[?(@.type==\"{ty}\")].status}} {{.status.conditions[?(@.type==\"{ty}\")].reason}}"
            ),
        ]);
        out == format!("{status} {reason}")
    });
}

fn condition<'a>(pod: &'a Value, ty: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == ty))
}

/// A new pod is refused (failed, `Evicted`) for the node's `condition`.
fn assert_new_pods_refused(node: &Node, image: &str, condition: &str) {
    node.apply(&common::pod_yaml("late", image, "Never", &["sleep", "60"]));
    let late = node.wait_phase("late", "Failed");
    assert_eq!(late["status"]["reason"], "Evicted", "{late}");
    assert_eq!(
        late["status"]["message"],
        format!("Pod was rejected: The node had condition: [{condition}]. ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_dir_over_its_size_limit_evicts_only_that_pod() {
    let node = Node::start("evict-ed").await;
    node.prepull().await;
    let image = node.image().to_string();
    node.apply(&writer_pod("bystander", &image, 1, Some("10Mi")));
    node.apply(&writer_pod("writer", &image, 3, Some("1Mi")));
    let writer = node.wait_phase("writer", "Failed");
    let message = "Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". ";
    assert_eq!(writer["status"]["reason"], "Evicted", "{writer}");
    assert_eq!(writer["status"]["message"], message);
    assert!(
        condition(&writer, "DisruptionTarget").is_none(),
        "local-storage evictions set no DisruptionTarget condition, as upstream: {writer}"
    );
    node.eventually("the Evicted event", || {
        node.event_messages("writer", "Evicted") == message
    });
    // The evicted pod's disk is given back; the other pod runs on, untouched.
    let uid = writer["metadata"]["uid"].as_str().unwrap().to_string();
    let vol = node.dir.path().join("root/pods").join(&uid).join("volumes");
    node.eventually("the evicted pod's volumes removed", || !vol.exists());
    let bystander = node.pod("bystander");
    assert_eq!(bystander["status"]["phase"], "Running", "{bystander}");
    assert!(node.event_messages("bystander", "Evicted").is_empty());
    assert_eq!(
        bystander["status"]["containerStatuses"][0]["restartCount"], 0,
        "{bystander}"
    );
}

/// Unmounts the test's tmpfs root even when the test fails (the Node's own cleanup also detaches
/// everything below its directory; this one runs first, after the kubelet is gone).
struct TmpfsRoot(std::path::PathBuf);

impl Drop for TmpfsRoot {
    fn drop(&mut self) {
        knode_harness::cleanup::unmount_under(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_pressure_on_a_small_root_fs_evicts_the_heaviest_pod() {
    let mut node = Node::start("evict-disk").await;
    node.prepull().await;
    let image = node.image().to_string();
    // The kubelet's root dir becomes a 64 MiB tmpfs: nodefs is small enough to fill on purpose.
    node.kill_kubelet();
    let _tmpfs = mount_tmpfs(&node.dir.path().join("root"), "64m");
    node.reconfigure(
        "evictionHard:\n  nodefs.available: 40Mi\nevictionPressureTransitionPeriod: 30s\nnodeStatusUpdateFrequency: 1s\n",
        &[],
    );
    wait_node_condition(&node, "DiskPressure", "False", "KubeletHasNoDiskPressure");
    node.apply(&writer_pod("light", &image, 1, None));
    node.wait_phase("light", "Running");
    // 30 MiB more leaves < 40Mi of the 64 MiB free.
    node.apply(&writer_pod("heavy", &image, 30, None));
    wait_node_condition(&node, "DiskPressure", "True", "KubeletHasDiskPressure");
    // New pods are refused while the node is under disk pressure.
    assert_new_pods_refused(&node, &image, "DiskPressure");

    let heavy = node.wait_phase("heavy", "Failed");
    assert_eq!(heavy["status"]["reason"], "Evicted", "{heavy}");
    let message = heavy["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 40Mi, available: "
        ),
        "{message}"
    );
    let dt = condition(&heavy, "DisruptionTarget").expect("DisruptionTarget condition");
    assert_eq!(dt["status"], "True");
    assert_eq!(dt["reason"], "TerminationByKubelet");
    assert_eq!(dt["message"], message);
    assert_eq!(node.event_messages("heavy", "Evicted"), message);
    // One pod per cycle, and the heaviest one: the light pod stays.
    let light = node.pod("light");
    assert_eq!(light["status"]["phase"], "Running", "{light}");
    // The evicted pod's emptyDir is freed, so the pressure ends after the transition period.
    wait_node_condition(&node, "DiskPressure", "False", "KubeletHasNoDiskPressure");
    assert_eq!(node.pod("light")["status"]["phase"], "Running");
    // Delete the pods before the tmpfs goes (their sandboxes pin mounts on it).
    node.kubectl(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_on_allocatable_evicts_the_best_effort_pod_first() {
    let mut node = Node::start("evict-mem").await;
    node.prepull().await;
    let image = node.image().to_string();
    let total_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    // The pods' cgroup gets 600 MiB; the hard threshold's allocatable copy wants 400 MiB free.
    let reserved_mib = total_kib / 1024 - 600;
    node.reconfigure(
        &format!(
            "kubeReserved:\n  memory: {reserved_mib}Mi\nevictionHard:\n  memory.available: 400Mi\nevictionPressureTransitionPeriod: 30s\nnodeStatusUpdateFrequency: 1s\n"
        ),
        &[],
    );
    wait_node_condition(&node, "MemoryPressure", "False", "KubeletHasSufficientMemory");
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: guaranteed}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: {image}\n    args: [\"sleep\", \"3600\"]\n    resources:\n      limits: {{cpu: 100m, memory: 64Mi}}\n"
    ));
    node.wait_phase("guaranteed", "Running");
    node.apply(&common::pod_yaml(
        "hog",
        &image,
        "Never",
        &["alloc-mem", "300", "--hold", "3600"],
    ));
    let hog = node.wait_phase("hog", "Failed");
    assert_eq!(hog["status"]["reason"], "Evicted", "{hog}");
    let message = hog["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: 400Mi, available: "),
        "{message}"
    );
    assert!(
        message.contains("Container main was using ")
            && message.ends_with(", request is 0, has larger consumption of memory. "),
        "{message}"
    );
    let dt = condition(&hog, "DisruptionTarget").expect("DisruptionTarget condition");
    assert_eq!(dt["reason"], "TerminationByKubelet");
    wait_node_condition(&node, "MemoryPressure", "True", "KubeletHasInsufficientMemory");
    // Under memory pressure alone only BestEffort pods are refused.
    assert_new_pods_refused(&node, &image, "MemoryPressure");
    let guaranteed = node.pod("guaranteed");
    assert_eq!(guaranteed["status"]["phase"], "Running", "{guaranteed}");
    wait_node_condition(&node, "MemoryPressure", "False", "KubeletHasSufficientMemory");
    assert_eq!(node.pod("guaranteed")["status"]["phase"], "Running");
}

/// Mounts a tmpfs of `size` at `dir` (created first).
fn mount_tmpfs(dir: &std::path::Path, size: &str) -> TmpfsRoot {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs at {}", dir.display());
    TmpfsRoot(dir.to_path_buf())
}

/// Free bytes on the filesystem of `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(dir).unwrap();
    s.blocks_available() * s.fragment_size()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_log_dir_and_full_root_fs_crash_nothing_and_recover() {
    let mut node = Node::start("evict-full").await;
    node.prepull().await;
    let image = node.image().to_string();
    node.kill_kubelet();
    let logs = node.dir.path().join("logs");
    let root = node.dir.path().join("root");
    let _logs_fs = mount_tmpfs(&logs, "1m");
    let _root_fs = mount_tmpfs(&root, "48m");
    node.reconfigure(
        "evictionHard:\n  nodefs.available: 4Mi\nevictionPressureTransitionPeriod: 10s\nnodeStatusUpdateFrequency: 1s\n",
        &[],
    );
    let pid = node.kubelet_pid();

    // The log dir fills up: ~1.5 MB of lines, then a numbered tick every 200 ms.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: chatty}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, 'i=0; while [ $i -lt 30000 ]; do echo fill-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done']\n"
    ));
    node.wait_phase("chatty", "Running");
    node.wait_for("the log dir full", 60, || (free_bytes(&logs) == 0).then_some(()));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let ticks = |node: &Node| {
        node.logs("chatty", "main")
            .lines()
            .filter(|l| l.starts_with("tick-"))
            .count()
    };
    let before = ticks(&node);
    // Room again: new lines reach the log, and the container was never blocked by its logger.
    let st = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&logs)
        .status()
        .unwrap();
    assert!(st.success());
    node.wait_for("logging resumed", 60, || {
        (ticks(&node) > before + 3).then_some(())
    });
    assert_eq!(node.kubelet_pid(), pid);
    assert!(
        node.kubelet.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the kubelet died"
    );
    node.kubectl(&["delete", "pod", "chatty", "--wait=true", "--timeout=60s"]);

    // The root dir fills up to ENOSPC.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: filler}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, 'dd if=/dev/zero of=/data/f bs=1M count=100; sleep 3600']\n    volumeMounts:\n    - {{name: data, mountPath: /data}}\n  volumes:\n  - {{name: data, emptyDir: {{}}}}\n"
    ));
    let filler = node.wait_phase("filler", "Failed");
    assert_eq!(filler["status"]["reason"], "Evicted", "{filler}");
    assert!(
        node.kubelet.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the kubelet died on a full root dir:\n{}",
        node.log()
    );
    wait_node_condition(&node, "DiskPressure", "False", "KubeletHasNoDiskPressure");
    node.apply(&common::pod_yaml(
        "after",
        &image,
        "Always",
        common::SLEEP_FOREVER,
    ));
    node.wait_phase("after", "Running");
    assert_eq!(node.kubelet_pid(), pid);
    node.kubectl(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}
