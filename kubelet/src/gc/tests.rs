//! Unit tests of the garbage collection decisions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::containers::{self, KnownPods, SweptContainer};
use super::images::{self, ImageGcPolicy, ImageRecords, StoredImage};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn policy() -> ImageGcPolicy {
    ImageGcPolicy {
        high_threshold_percent: 85,
        low_threshold_percent: 80,
        min_age: Duration::from_secs(120),
        max_age: Duration::ZERO,
    }
}

fn img(id: &str, size: u64) -> StoredImage {
    StoredImage {
        id: id.into(),
        names: vec![format!("registry.test/{id}:latest")],
        size,
    }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn detection_tracks_first_seen_last_used_and_forgets_removed_images() {
    let mut r = ImageRecords::new();
    images::detect(&mut r, &[img("a", 1), img("b", 2)], &set(&["a"]), t(0));
    assert_eq!(r["a"].first_detected, t(0));
    assert_eq!(r["a"].last_used, Some(t(0)));
    assert_eq!(r["b"].last_used, None);
    // Later: b in use, a no longer; first detection stays.
    images::detect(&mut r, &[img("a", 1), img("b", 2)], &set(&["b"]), t(60));
    assert_eq!(r["a"].first_detected, t(0));
    assert_eq!(r["a"].last_used, Some(t(0)));
    assert_eq!(r["b"].last_used, Some(t(60)));
    // a deleted behind the kubelet's back: its record goes.
    images::detect(&mut r, &[img("b", 2)], &set(&[]), t(90));
    assert!(!r.contains_key("a"));
}

#[test]
fn eviction_order_is_least_recently_used_then_first_detected_and_skips_used_images() {
    let mut r = ImageRecords::new();
    images::detect(&mut r, &[img("old-used", 1)], &set(&["old-used"]), t(0));
    images::detect(
        &mut r,
        &[img("old-used", 1), img("never-late", 1)],
        &set(&[]),
        t(10),
    );
    images::detect(
        &mut r,
        &[
            img("old-used", 1),
            img("never-late", 1),
            img("never-early", 1),
            img("busy", 1),
        ],
        &set(&["busy"]),
        t(20),
    );
    // never-early was detected at 20, never-late at 10: both never used, so by first detection.
    let order: Vec<String> = images::eviction_order(&r, &set(&["busy"]))
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(order, vec!["never-late", "never-early", "old-used"]);
}

#[test]
fn thresholds_give_bytes_to_free_down_to_the_low_mark() {
    let p = policy();
    // 84 % used: nothing.
    assert_eq!(images::bytes_to_free(&p, 1000, 160), None);
    // 85 % used: free until 20 % is available.
    assert_eq!(images::bytes_to_free(&p, 1000, 150), Some(50));
    // 100 % used.
    assert_eq!(images::bytes_to_free(&p, 1000, 0), Some(200));
    // Available above capacity is clamped, capacity 0 is the caller's error.
    assert_eq!(images::bytes_to_free(&p, 1000, 5000), None);
    assert_eq!(images::bytes_to_free(&p, 0, 0), None);
    // The e2e's setting: high 1, low 0 on a half-full disk frees everything used.
    let all = ImageGcPolicy {
        high_threshold_percent: 1,
        low_threshold_percent: 0,
        ..p
    };
    assert_eq!(images::bytes_to_free(&all, 1000, 500), Some(500));
}

#[test]
fn space_selection_honours_minimum_age_and_stops_when_enough() {
    let mut r = ImageRecords::new();
    images::detect(
        &mut r,
        &[img("a", 100), img("b", 100), img("c", 100)],
        &set(&[]),
        t(0),
    );
    images::detect(
        &mut r,
        &[img("a", 100), img("b", 100), img("c", 100), img("young", 100)],
        &set(&[]),
        t(200),
    );
    let cands = images::eviction_order(&r, &set(&[]));
    // young was first seen 0 s ago (< 2 m): never chosen; 150 bytes needs two images.
    let (chosen, freed) = images::select_for_space(&policy(), &cands, 150, t(200));
    assert_eq!(
        chosen.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(freed, 200);
    let (chosen, freed) = images::select_for_space(&policy(), &cands, u64::MAX, t(200));
    assert_eq!(chosen.len(), 3);
    assert_eq!(freed, 300);
    // With imageMinimumGCAge 0 the young one goes too.
    let p0 = ImageGcPolicy {
        min_age: Duration::ZERO,
        ..policy()
    };
    let (chosen, _) = images::select_for_space(&p0, &cands, u64::MAX, t(200));
    assert_eq!(chosen.len(), 4);
}

#[test]
fn an_image_used_at_this_very_detection_is_not_freed() {
    let mut r = ImageRecords::new();
    images::detect(&mut r, &[img("a", 100)], &set(&["a"]), t(0));
    images::detect(&mut r, &[img("a", 100)], &set(&["a"]), t(500));
    // Its container went away between detection and selection: not eligible in this run.
    let cands = images::eviction_order(&r, &set(&[]));
    let (chosen, _) = images::select_for_space(&policy(), &cands, 1, t(500));
    assert!(chosen.is_empty());
    let (chosen, _) = images::select_for_space(&policy(), &cands, 1, t(501));
    assert_eq!(chosen.len(), 1);
}

#[test]
fn maximum_age_removes_long_unused_images_only_after_the_kubelet_ran_that_long() {
    let p = ImageGcPolicy {
        max_age: Duration::from_secs(3600),
        ..policy()
    };
    let mut r = ImageRecords::new();
    images::detect(
        &mut r,
        &[img("stale", 1), img("fresh", 1), img("never", 1)],
        &set(&["stale", "fresh"]),
        t(0),
    );
    images::detect(
        &mut r,
        &[img("stale", 1), img("fresh", 1), img("never", 1)],
        &set(&["fresh"]),
        t(3000),
    );
    let cands = images::eviction_order(&r, &set(&[]));
    // The kubelet began at t(0): at t(3601) stale was last used 3601 s ago, fresh 601 s ago.
    let (old, rest) = images::split_too_old(&p, cands.clone(), t(3601), t(0));
    let mut old: Vec<&str> = old.iter().map(|c| c.id.as_str()).collect();
    old.sort();
    assert_eq!(old, vec!["never", "stale"]);
    assert_eq!(
        rest.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["fresh"]
    );
    // Not before the kubelet has run for imageMaximumGCAge.
    let (old, rest) = images::split_too_old(&p, cands.clone(), t(3601), t(100));
    assert!(old.is_empty());
    assert_eq!(rest.len(), 3);
    // Off by default.
    let (old, _) = images::split_too_old(&policy(), cands, t(1_000_000), t(0));
    assert!(old.is_empty());
}

#[test]
fn free_space_failed_message_is_upstreams() {
    assert_eq!(
        images::free_space_failed_message(10, 3),
        "Failed to garbage collect required amount of images. Attempted to free 10 bytes, but only found 3 bytes eligible to free."
    );
}

#[test]
fn log_dir_names_give_the_pod_uid() {
    assert_eq!(containers::log_dir_uid("default_web-1_0b7e-11"), Some("0b7e-11"));
    assert_eq!(containers::log_dir_uid("kube-system_a.b_uid"), Some("uid"));
    assert_eq!(containers::log_dir_uid("nouid"), None);
    assert_eq!(containers::log_dir_uid("ns_name"), None);
    assert_eq!(containers::log_dir_uid("_name_uid"), None);
    assert_eq!(containers::log_dir_uid("ns_name_"), None);
    assert_eq!(containers::log_dir_uid("ns_name_u_v"), None);
}

#[test]
fn orphan_dirs_are_those_of_unknown_pods_without_containers() {
    let names: Vec<String> = ["default_a_u1", "default_b_u2", "default_c_u3", "junk"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let orphans = containers::orphan_dirs(&names, containers::log_dir_uid, &set(&["u1"]), &set(&["u2"]));
    assert_eq!(orphans, vec!["default_c_u3"]);
    let pod_dirs: Vec<String> = vec!["u1".into(), "u9".into()];
    assert_eq!(
        containers::orphan_dirs(&pod_dirs, containers::pod_dir_uid, &set(&["u1"]), &set(&[])),
        vec!["u9"]
    );
}

#[test]
fn a_pod_dir_with_a_mount_below_is_detected() {
    let mounts = vec![
        PathBuf::from("/"),
        PathBuf::from("/var/lib/kubelet/pods/u1/volumes/x/tmp"),
    ];
    assert!(containers::has_mount_under(
        &mounts,
        Path::new("/var/lib/kubelet/pods/u1")
    ));
    assert!(!containers::has_mount_under(
        &mounts,
        Path::new("/var/lib/kubelet/pods/u10")
    ));
    assert!(!containers::has_mount_under(
        &mounts,
        Path::new("/var/lib/kubelet/pods/u2")
    ));
}

fn ctr(uid: &str, running: bool, created: u64) -> SweptContainer {
    SweptContainer {
        pod_uid: uid.into(),
        pod_namespace: "default".into(),
        pod_name: format!("pod-{uid}"),
        running,
        created: Some(t(created)),
    }
}

#[test]
fn disk_pressure_removes_only_dead_containers_of_pods_unknown_at_the_last_report() {
    let known = KnownPods {
        uids: set(&["known"]),
        at: t(100),
    };
    let cs = vec![
        ctr("known", false, 10),
        ctr("gone", false, 10),
        ctr("gone", false, 20),
        ctr("half", false, 10),
        ctr("half", true, 10),
        ctr("new", false, 150),
    ];
    let pods = containers::dead_orphan_pods(&cs, &known);
    assert_eq!(pods.keys().collect::<Vec<_>>(), vec!["gone"]);
    assert_eq!(pods["gone"], ("default".to_string(), "pod-gone".to_string()));
    // Unknown creation time counts as new.
    let mut odd = ctr("odd", false, 0);
    odd.created = None;
    assert!(containers::dead_orphan_pods(&[odd], &known).is_empty());
}

#[test]
fn maximum_gc_age_is_validated_and_flags_override() {
    use crate::config::KubeletConfiguration;
    let header = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
    let decode =
        |extra: &str| KubeletConfiguration::decode(Path::new("/k.yaml"), &format!("{header}{extra}"));
    let c = decode("imageMaximumGCAge: 1h\nimageMinimumGCAge: 0s\n")
        .unwrap()
        .config;
    assert_eq!(c.image_maximum_gc_age, Duration::from_secs(3600));
    assert_eq!(c.image_minimum_gc_age, Duration::ZERO);
    assert_eq!(
        ImageGcPolicy::from_config(&c),
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::ZERO,
            max_age: Duration::from_secs(3600),
        }
    );
    assert_eq!(
        KubeletConfiguration::default().image_maximum_gc_age,
        Duration::ZERO
    );
    let err = decode("imageMaximumGCAge: 1m\n").unwrap_err().to_string();
    assert!(err.contains("imageMaximumGCAge"), "{err}");
    let err = decode("imageGCHighThresholdPercent: 1\nimageGCLowThresholdPercent: 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("imageGCLowThresholdPercent"), "{err}");

    use clap::Parser;
    let flags = crate::config::KubeletFlags::parse_from([
        "kubelet",
        "--minimum-image-gc-age=30s",
        "--image-gc-high-threshold=70",
        "--image-gc-low-threshold=60",
    ]);
    let s = flags.resolve("host").unwrap();
    assert_eq!(s.config.image_minimum_gc_age, Duration::from_secs(30));
    assert_eq!(s.config.image_gc_high_threshold_percent, 70);
    assert_eq!(s.config.image_gc_low_threshold_percent, 60);
    let bad = crate::config::KubeletFlags::parse_from(["kubelet", "--image-gc-low-threshold=90"])
        .resolve("host")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("--image-gc-low-threshold"), "{bad}");
}
