//! Garbage collection with the real kubelet, containerd and registry: with image GC thresholds that
//! the host's real disk usage crosses (`imageGCHighThresholdPercent: 1`, low 0, minimum age 0 s),
//! the images no container uses are removed (their records, content and the snapshots only they
//! used) while the image of a running pod stays, and the kubelet reports `FreeDiskSpaceFailed`
//! because the rest of the disk cannot be freed. The containers of a pod deleted while the kubelet
//! was down are removed with their log directory, and so are a stray pod log directory and pod
//! directory of an unknown pod; a pod directory with a mount below it is kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, pod_yaml};
use knode_harness::image::{Entry, ImageConfig, build_image, build_layer, push};
use kubelet::runtime::Containerd;
use kubelet::runtime::image::ImageService;
use oci_client::secrets::RegistryAuth;

fn ctr(node: &Node, args: &[&str]) -> String {
    let out = node.ctr().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unmounts the test's tmpfs even when an assertion fails first.
struct MountGuard(std::path::PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_and_leftovers_of_gone_pods_are_collected() {
    knode_harness::install_crypto_provider();
    // The harness's node has host-disk-independent eviction thresholds and image GC off.
    let mut node = Node::start("gc").await;
    node.prepull().await;
    let images = {
        let c = Containerd::new(node.containerd.channel().await.unwrap(), &node.ns).unwrap();
        ImageService::new(c, vec![node._registry.host()])
    };

    // An image of its own (one unique layer), so that removing it must remove a snapshot.
    let layer = build_layer(&[Entry::File {
        path: "gc-marker".into(),
        mode: 0o644,
        data: format!("unique to {}\n", node.ns).into_bytes(),
    }])
    .unwrap();
    let unique_diff_id = layer.diff_id.clone();
    let unique_digest = layer.digest.clone();
    let unique = build_image(
        vec![layer],
        &ImageConfig {
            cmd: vec!["/gc-marker".into()],
            ..Default::default()
        },
    );
    let pushed = push(
        &node._registry.host(),
        "knode/gc-unique",
        "latest",
        &unique,
        &RegistryAuth::Anonymous,
    )
    .await
    .unwrap();

    let img = node.image().to_string();
    node.apply(&pod_yaml("keeper", &img, "Always", &["sleep", "infinity"]));
    node.apply(&pod_yaml("doomed", &img, "Always", &["sleep", "infinity"]));
    node.wait_phase("keeper", "Running");
    let doomed = node.wait_phase("doomed", "Running");
    let doomed_uid = doomed["metadata"]["uid"].as_str().unwrap().to_string();
    let doomed_id = node.container_id("doomed", "main").unwrap();
    let doomed_logs = node
        .dir
        .path()
        .join("logs")
        .join(format!("default_doomed_{doomed_uid}"));
    assert!(doomed_logs.exists());

    for r in [&node.images.busybox.reference, &pushed.reference] {
        images.pull(r, &RegistryAuth::Anonymous, &|_| {}).await.unwrap();
    }
    let names = |list: Vec<kubelet::runtime::image::ImageInfo>| -> Vec<String> {
        list.into_iter().map(|i| i.name).collect()
    };
    let before = names(images.list().await.unwrap());
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(ctr(&node, &["snapshots", "ls"]).contains(&unique_diff_id));

    // Leftovers of a pod no source knows: a log directory, a pod directory, and a pod directory
    // with a mount below it (never removed).
    let ghost_logs = node.dir.path().join("logs").join("default_ghost_0000-ghost-uid");
    std::fs::create_dir_all(ghost_logs.join("main")).unwrap();
    std::fs::write(ghost_logs.join("main").join("0.log"), "old\n").unwrap();
    let pods_dir = node.dir.path().join("root").join("pods");
    let ghost_pod = pods_dir.join("0000-ghost-pod");
    std::fs::create_dir_all(
        ghost_pod
            .join("volumes")
            .join("kubernetes.io~empty-dir")
            .join("x"),
    )
    .unwrap();
    let mounted_pod = pods_dir.join("0000-mounted-pod");
    let mnt = mounted_pod
        .join("volumes")
        .join("kubernetes.io~empty-dir")
        .join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _mount = MountGuard(mnt.clone());

    // The pod goes while the kubelet is down; the kubelet comes back with GC thresholds the real
    // disk usage is above.
    node.kill_kubelet();
    node.kubectl(&[
        "delete",
        "pod",
        "doomed",
        "--force",
        "--grace-period=0",
        "--wait=false",
    ]);
    node.eventually("doomed deleted from the API", || {
        let (ok, out, _) = node.cp.kubectl(&["get", "pods", "-o", "name"], None);
        ok && !out.contains("pod/doomed")
    });
    node.reconfigure(
        "imageGCHighThresholdPercent: 1\nimageGCLowThresholdPercent: 0\nimageMinimumGCAge: 0s\n",
        &[],
    );

    let testimg = kubelet::runtime::image::ImageService::normalize(&img).unwrap();
    let mut after = Vec::new();
    for _ in 0..450 {
        after = names(images.list().await.unwrap());
        if after.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(after, vec![testimg.clone()], "kubelet log:\n{}", node.log());
    node.eventually("the unique image's snapshot and layer removed", || {
        !ctr(&node, &["snapshots", "ls"]).contains(&unique_diff_id)
            && !ctr(&node, &["content", "ls", "-q"]).contains(&unique_digest)
    });
    // The image in use keeps its layers.
    let snaps = ctr(&node, &["snapshots", "ls"]);
    assert!(snaps.contains(&node.images.testimg.layers[0].diff_id), "{snaps}");
    node.eventually("FreeDiskSpaceFailed on the node", || {
        node.event_reasons(&node.name).contains("FreeDiskSpaceFailed")
    });
    let msg = node.event_messages(&node.name, "FreeDiskSpaceFailed");
    assert!(
        msg.contains("Failed to garbage collect required amount of images"),
        "{msg}"
    );
    let log = std::fs::read_to_string(node.dir.path().join("kubelet.log")).unwrap();
    assert!(log.contains("removed unused image"), "{}", node.log());

    // Dead pods' leftovers.
    node.eventually("the deleted pod's container and logs removed", || {
        !ctr(&node, &["containers", "ls", "-q"]).contains(&doomed_id) && !doomed_logs.exists()
    });
    node.eventually("the stray log and pod directories removed", || {
        !ghost_logs.exists() && !ghost_pod.exists()
    });
    assert!(mnt.exists(), "a pod directory with a mount below it is kept");
    let log = std::fs::read_to_string(node.dir.path().join("kubelet.log")).unwrap();
    assert!(log.contains("volumes are still mounted"), "{}", node.log());
    // The running pod was left alone.
    assert_eq!(node.pod("keeper")["status"]["phase"], "Running");
    assert!(images.inspect(&testimg).await.unwrap().is_some());

    drop(_mount);
    let _ = std::fs::remove_dir_all(&mounted_pod);
    node.kubectl(&["delete", "pod", "keeper", "--wait=false"]);
}
