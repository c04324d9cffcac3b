//! Image garbage collection decisions, as upstream's `realImageGCManager`: which images are
//! candidates (not used by any container), in which order (least recently used, then first
//! detected), and how many bytes to free for the disk thresholds. Plain data in, image IDs out; the
//! collector in [`super`] lists, measures and deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// Upstream's `ImageGCPolicy` from the KubeletConfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// `imageGCHighThresholdPercent`: disk usage at which collection starts (100: never).
    pub high_threshold_percent: i32,
    /// `imageGCLowThresholdPercent`: disk usage collection frees down to.
    pub low_threshold_percent: i32,
    /// `imageMinimumGCAge`: an image detected more recently than this is never removed.
    pub min_age: Duration,
    /// `imageMaximumGCAge`: an image unused for longer is removed whatever the disk usage (0: off).
    pub max_age: Duration,
}

impl ImageGcPolicy {
    /// The policy of a kubelet configuration.
    pub fn from_config(c: &crate::config::KubeletConfiguration) -> Self {
        ImageGcPolicy {
            high_threshold_percent: c.image_gc_high_threshold_percent,
            low_threshold_percent: c.image_gc_low_threshold_percent,
            min_age: c.image_minimum_gc_age,
            max_age: c.image_maximum_gc_age,
        }
    }
}

/// A stored image as listing sees it: its ID (the config digest, upstream's image ID), every
/// containerd image name pointing at it, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub id: String,
    pub names: Vec<String>,
    pub size: u64,
}

/// What the collector remembers about an image between runs (in memory only, as upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub names: Vec<String>,
    pub size: u64,
    /// When the kubelet first saw the image.
    pub first_detected: SystemTime,
    /// The last detection that found a container using it (`None`: never seen in use).
    pub last_used: Option<SystemTime>,
}

/// Image records by image ID.
pub type ImageRecords = BTreeMap<String, ImageRecord>;

/// Upstream's `detectImages`: new images get `first_detected = now`, images in use get
/// `last_used = now`, records of images that are gone are dropped. `in_use` holds image IDs.
pub fn detect(
    records: &mut ImageRecords,
    images: &[StoredImage],
    in_use: &BTreeSet<String>,
    now: SystemTime,
) {
    let present: BTreeSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
    records.retain(|id, _| present.contains(id.as_str()));
    for image in images {
        let r = records.entry(image.id.clone()).or_insert_with(|| ImageRecord {
            names: Vec::new(),
            size: 0,
            first_detected: now,
            last_used: None,
        });
        r.names = image.names.clone();
        r.size = image.size;
        if in_use.contains(&image.id) {
            r.last_used = Some(now);
        }
    }
}

/// An image that may be removed, with what its order depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub names: Vec<String>,
    pub size: u64,
    pub first_detected: SystemTime,
    pub last_used: Option<SystemTime>,
}

/// Upstream's `imagesInEvictionOrder`: the images no container uses, least recently used first
/// (never used counts as oldest), ties broken by first detection.
pub fn eviction_order(records: &ImageRecords, in_use: &BTreeSet<String>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = records
        .iter()
        .filter(|(id, _)| !in_use.contains(*id))
        .map(|(id, r)| Candidate {
            id: id.clone(),
            names: r.names.clone(),
            size: r.size,
            first_detected: r.first_detected,
            last_used: r.last_used,
        })
        .collect();
    out.sort_by(|a, b| {
        a.last_used
            .cmp(&b.last_used)
            .then(a.first_detected.cmp(&b.first_detected))
            .then(a.id.cmp(&b.id))
    });
    out
}

/// Upstream's `freeOldImages`: with `imageMaximumGCAge` set, and only once the kubelet has run for
/// longer than it (`began`: when garbage collection started), the candidates unused for longer.
/// Returns (to remove now, the rest in order).
pub fn split_too_old(
    policy: &ImageGcPolicy,
    candidates: Vec<Candidate>,
    now: SystemTime,
    began: SystemTime,
) -> (Vec<Candidate>, Vec<Candidate>) {
    if policy.max_age.is_zero() || elapsed(began, now) <= policy.max_age {
        return (Vec::new(), candidates);
    }
    candidates.into_iter().partition(|c| {
        // Never used: it has been unused since the epoch, as upstream's zero time.
        c.last_used.map_or(Duration::MAX, |t| elapsed(t, now)) > policy.max_age
    })
}

/// Upstream's `GarbageCollect` threshold arithmetic: the bytes to free when usage of the image
/// filesystem reached the high threshold (`None`: below it). Capacity 0 is the caller's error.
pub fn bytes_to_free(policy: &ImageGcPolicy, capacity: u64, available: u64) -> Option<u64> {
    if capacity == 0 {
        return None;
    }
    let available = available.min(capacity);
    let usage_percent = 100 - (u128::from(available) * 100 / u128::from(capacity)) as i64;
    if usage_percent < i64::from(policy.high_threshold_percent) {
        return None;
    }
    let keep_free =
        u128::from(capacity) * (100 - i64::from(policy.low_threshold_percent).clamp(0, 100)) as u128 / 100;
    Some(
        keep_free
            .saturating_sub(u128::from(available))
            .min(u128::from(u64::MAX)) as u64,
    )
}

/// Upstream's `freeSpace` selection: candidates in order, skipping images used at this very
/// detection and images younger than `imageMinimumGCAge`, until `bytes` would be freed. Returns
/// the images to remove and the bytes they free.
pub fn select_for_space(
    policy: &ImageGcPolicy,
    candidates: &[Candidate],
    bytes: u64,
    now: SystemTime,
) -> (Vec<Candidate>, u64) {
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    for c in candidates {
        if freed >= bytes {
            break;
        }
        if c.last_used.is_some_and(|t| t >= now) {
            continue;
        }
        if elapsed(c.first_detected, now) < policy.min_age {
            continue;
        }
        freed = freed.saturating_add(c.size);
        chosen.push(c.clone());
    }
    (chosen, freed)
}

/// The message of upstream's `FreeDiskSpaceFailed` event.
pub fn free_space_failed_message(wanted: u64, freed: u64) -> String {
    format!(
        "Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {freed} bytes eligible to free."
    )
}

fn elapsed(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or(Duration::ZERO)
}
