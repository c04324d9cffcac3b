#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Benchmark (prints, asserts only correctness): heap the proxy's long-lived structures take at
//! 10k Services × 5 endpoints — the watch caches (Services and EndpointSlices as the tracker
//! keeps them) and the programmed ruleset — counted by a global allocator wrapper, so the numbers
//! are exact and repeatable (no root, no kernel, no timing). The same objects through the
//! daemon, with its RSS, are in `bench_daemon.rs`.
//!
//! Baseline in the same run: the same objects held as k8s-openapi structs (what the caches held
//! before they were projected, see `kube_proxy::compact`).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_proxy::model::Family;
use kube_proxy::sync::{NodePortAddresses, Timing, Tracker};

/// The system allocator, counting live bytes and their peak.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = LIVE.fetch_add(l.size() as isize, Relaxed) + l.size() as isize;
        PEAK.fetch_max(n, Relaxed);
        // SAFETY: as the caller guarantees for `l`.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Relaxed)
}

fn mib(n: isize) -> f64 {
    n as f64 / 1048576.0
}

/// `svc<i>` as the API server returns it: the benchmark object plus what the server fills in.
fn service(i: usize) -> Service {
    let mut s = support::numbered_service(i);
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32).to_string();
    s.metadata.uid = Some(format!("5d0c3f4e-1111-2222-3333-{i:012}"));
    s.metadata.resource_version = Some(format!("{}", 1000 + i));
    s.metadata.creation_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    if let Some(spec) = s.spec.as_mut() {
        spec.cluster_ip = Some(ip.clone());
        spec.cluster_ips = Some(vec![ip]);
        spec.ip_families = Some(vec!["IPv4".into()]);
        spec.ip_family_policy = Some("SingleStack".into());
        spec.session_affinity = Some("None".into());
        spec.internal_traffic_policy = Some("Cluster".into());
        spec.selector = Some([("app".to_string(), format!("svc{i}"))].into());
    }
    s
}

/// The slice of `svc<i>`, its endpoints spread over three nodes.
fn slice(i: usize) -> EndpointSlice {
    let mut s = support::numbered_slice(i);
    s.metadata.name = Some(format!("svc{i}-x7k2p"));
    for (e, ep) in s.endpoints.iter_mut().enumerate() {
        ep.node_name = Some(format!("node-{}", e % 3));
    }
    s
}

#[test]
fn bench_model_heap_at_10k_services() {
    let n = 10_000;
    // Baseline: the API objects themselves.
    let start = live();
    let raw: (Vec<Service>, Vec<EndpointSlice>) =
        ((0..n).map(service).collect(), (0..n).map(slice).collect());
    let raw_bytes = live() - start;
    drop(raw);

    let start = live();
    let mut t = Tracker::new(
        Timing {
            min_sync_period: Duration::ZERO,
            sync_period: Duration::from_secs(30),
        },
        NodePortAddresses::new(&[], Vec::new()),
        16,
    )
    .with_node_name("node-1");
    t.initial_lists((0..n).map(service), (0..n).map(slice));
    assert!(t.take_due(Instant::now()).is_some(), "the first sync is due");
    let caches = live() - start;

    let before = live();
    PEAK.store(before, Relaxed);
    let desired = t.desired();
    let model_peak = PEAK.load(Relaxed) - before;
    // What the programmer keeps of a full sync: this family's elements.
    let programmed = desired.family(Family::V4, None);
    drop(desired);
    let kept = live() - before;
    assert_eq!(
        programmed.len(),
        n * (16 + 5 + 2),
        "16 buckets, 5 hairpin, ClusterIP, service-ips"
    );

    println!(
        "bench: heap at {n} Services x 5 endpoints: watch caches {:.1} MiB (the API objects themselves: {:.1} MiB, ratio {:.2}); programmed ruleset {:.1} MiB ({} elements, {:.0} B each); building it peaks at +{:.1} MiB; total kept {:.1} MiB",
        mib(caches),
        mib(raw_bytes),
        caches as f64 / raw_bytes as f64,
        mib(kept),
        programmed.len(),
        kept as f64 / programmed.len() as f64,
        mib(model_peak),
        mib(caches + kept),
    );
}
