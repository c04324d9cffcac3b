//! Pod startup latency and kubelet footprint (issue 6's benchmark).
//!
//! A burst of 30 pods (image cached, `imagePullPolicy: IfNotPresent`) is created through the API at
//! once; each pod's latency is creation → `Running` observed through a watch (kube-rs, like any
//! client). Printed: p50/p99, the kubelet's RSS and CPU at 0 and 30 running pods, and the ratio of
//! p50 to the same run's baseline — `ctr run -d` of one container on the same containerd (no API
//! server, no sandbox, no status), measured 30 times concurrently.
//! `KNODE_BENCH=1` repeats the burst 3 times; the default is one burst (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Node;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use knode_harness::procstat::{cpu_percent, rss_kib};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "burst"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": image,
            "imagePullPolicy": "IfNotPresent", "args": ["sleep", "infinity", "--exit-on-sigterm"]}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_startup_latency_and_kubelet_footprint() {
    let node = Node::start("kl-bench").await;
    node.prepull().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(&node.cp.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pid = node.kubelet_pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = rss_kib(pid);
    let cpu0 = tokio::task::block_in_place(|| cpu_percent(pid, Duration::from_secs(3)));
    let rounds = if std::env::var("KNODE_BENCH").is_ok_and(|v| v == "1") {
        3
    } else {
        1
    };
    let n = 30;
    let mut latencies: Vec<f64> = Vec::new();
    let (mut rss30, mut cpu30) = (0, 0.0);
    for round in 0..rounds {
        let mut stream = Box::pin(
            watcher(pods.clone(), watcher::Config::default().labels("bench=burst")).default_backoff(),
        );
        // Wait for the initial (empty) list so no event is missed.
        while let Some(Ok(ev)) = stream.next().await {
            if matches!(ev, watcher::Event::InitDone) {
                break;
            }
        }
        let mut created: HashMap<String, Instant> = HashMap::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let name = format!("burst-{round}-{i}");
            let api = pods.clone();
            let p = pod(&name, node.image());
            created.insert(name, Instant::now());
            tasks.push(tokio::spawn(async move {
                api.create(&PostParams::default(), &p).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut running: HashMap<String, Instant> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while running.len() < n {
            let ev = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("pods did not all start")
                .unwrap();
            if let Ok(watcher::Event::Apply(p)) = ev {
                let name = p.metadata.name.clone().unwrap();
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    running.entry(name).or_insert_with(Instant::now);
                }
            }
        }
        for (name, t) in &running {
            latencies.push(t.duration_since(created[name]).as_secs_f64() * 1e3);
        }
        rss30 = rss_kib(pid);
        cpu30 = tokio::task::block_in_place(|| cpu_percent(pid, Duration::from_secs(3)));
        node.kubectl(&["delete", "pods", "-l", "bench=burst", "--wait=false"]);
        node.eventually("burst pods gone", || {
            node.kubectl(&["get", "pods", "-o", "name"]).trim().is_empty()
        });
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = percentile(&latencies, 0.5);
    let p99 = percentile(&latencies, 0.99);
    // Baseline: ctr run -d of the same image, 30 at once, on the same containerd.
    let sock = node.containerd.socket().display().to_string();
    let image = node.images.testimg.reference.clone();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (sock, image, ns) = (sock.clone(), image.clone(), node.ns.clone());
            std::thread::spawn(move || {
                let t = Instant::now();
                let o = Command::new("ctr")
                    .args([
                        "--address",
                        &sock,
                        "-n",
                        &ns,
                        "run",
                        "-d",
                        &image,
                        &format!("base-{i}"),
                        "/testimg",
                        "sleep",
                        "infinity",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "ctr run: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                t.elapsed().as_secs_f64() * 1e3
            })
        })
        .collect();
    let mut base: Vec<f64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    base.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let base_p50 = percentile(&base, 0.5);
    println!(
        "bench kubelet: {} pods in {rounds} burst(s) of {n}: startup p50 {p50:.0} ms, p99 {p99:.0} ms (goal p99 <= 1000 ms); baseline ctr run -d x{n} concurrent p50 {base_p50:.0} ms -> p50 ratio {:.2}x",
        latencies.len(),
        p50 / base_p50
    );
    println!(
        "bench kubelet: RSS {:.1} MiB at 0 pods, {:.1} MiB at {n} pods (goal <= 40 MiB); CPU {cpu0:.1}% at 0 pods, {cpu30:.1}% at {n} pods (of one core, 3 s idle window)",
        rss0 as f64 / 1024.0,
        rss30 as f64 / 1024.0
    );
    assert_eq!(latencies.len(), rounds * n);
}
