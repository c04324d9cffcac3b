//! Pod rows: bursts of pods created at once (image cached) → `Running` observed by a watch, p50 and
//! p99, with the concurrent `ctr run -d` floor; deleting them; a Deployment to all Ready and its
//! deletion; the kubelets' memory (and with containerd, which does part of upstream's work through
//! CRI) and CPU at 0 and N pods and during the burst.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use knode_harness::cluster::KnodeCluster;
use knode_harness::procstat::{cpu_percent, cpu_percent_between, cpu_ticks, rss_kib};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::Ctx;
use crate::report::{Both, Row, percentile};

const TIMEOUT: Duration = Duration::from_secs(600);

fn pod(name: &str, node: &str, image: &str, tag: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": tag}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
            "image": image, "imagePullPolicy": "IfNotPresent", "args": ["sleep", "infinity", "--exit-on-sigterm"]}]}
    }))?)
}

/// A watch of the pods labelled `bench=<tag>`, past its initial list (no later event is missed).
async fn watch_labelled(
    pods: &Api<Pod>,
    tag: &str,
) -> Result<impl futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + use<>> {
    let mut stream = Box::pin(
        watcher(
            pods.clone(),
            watcher::Config::default().labels(&format!("bench={tag}")),
        )
        .default_backoff(),
    );
    while let Some(ev) = stream.next().await {
        if matches!(ev?, watcher::Event::InitDone) {
            break;
        }
    }
    Ok(stream)
}

/// What one burst measured on one node.
struct Burst {
    latencies_ms: Vec<f64>,
    /// Kubelet CPU over the burst (create → last Running), % of one core.
    cpu: f64,
}

/// Creates `n` pods on `node` at once and waits until the watch has seen each `Running`.
async fn burst(
    client: &kube::Client,
    node: &str,
    image: &str,
    n: usize,
    tag: &str,
    pid: u32,
) -> Result<Burst> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut stream = watch_labelled(&pods, tag).await?;
    let ticks0 = cpu_ticks(pid);
    let start = Instant::now();
    let mut created = HashMap::new();
    let mut posts = Vec::new();
    for i in 0..n {
        let name = format!("{tag}-{i}");
        let p = pod(&name, node, image, tag)?;
        let api = pods.clone();
        created.insert(name, Instant::now());
        posts.push(async move { api.create(&PostParams::default(), &p).await });
    }
    for r in futures::future::join_all(posts).await {
        r.context("creating a burst pod")?;
    }
    let mut running: HashMap<String, Instant> = HashMap::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while running.len() < n {
        let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await else {
            bail!(
                "{}/{n} pods of burst {tag} on {node} Running after {TIMEOUT:?}",
                running.len()
            );
        };
        if let watcher::Event::Apply(p) = ev?
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        {
            running
                .entry(p.metadata.name.unwrap_or_default())
                .or_insert_with(Instant::now);
        }
    }
    let cpu = cpu_percent_between(ticks0, cpu_ticks(pid), start.elapsed());
    let latencies_ms = running
        .iter()
        .filter_map(|(name, t)| {
            created
                .get(name)
                .map(|c| t.duration_since(*c).as_secs_f64() * 1e3)
        })
        .collect();
    Ok(Burst { latencies_ms, cpu })
}

/// Deletes the pods labelled `bench=<tag>` and waits until the API has none; the time taken.
async fn delete_all(client: &kube::Client, tag: &str) -> Result<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("bench={tag}"));
    let start = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &lp).await?;
    wait_gone(&pods, &lp).await?;
    Ok(start.elapsed())
}

async fn wait_gone(pods: &Api<Pod>, lp: &ListParams) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = pods.list_metadata(lp).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{left} pods ({:?}) still in the API after {TIMEOUT:?}",
                lp.label_selector
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Deployment of `n` replicas pinned to `node`: create → `readyReplicas == n`, then delete →
/// every pod gone. Returns both durations.
async fn deployment(
    client: &kube::Client,
    node: &str,
    image: &str,
    n: usize,
    tag: &str,
) -> Result<(Duration, Duration)> {
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": tag},
        "spec": {"replicas": n, "selector": {"matchLabels": {"bench": tag}},
            "template": {"metadata": {"labels": {"bench": tag}},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                        "args": ["sleep", "infinity", "--exit-on-sigterm"]}]}}}
    }))?;
    let start = Instant::now();
    deploys.create(&PostParams::default(), &d).await?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ready = deploys
            .get_status(tag)
            .await?
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready as usize >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("Deployment {tag} on {node}: {ready}/{n} ready after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up = start.elapsed();
    let start = Instant::now();
    deploys.delete(tag, &DeleteParams::background()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_gone(&pods, &ListParams::default().labels(&format!("bench={tag}"))).await?;
    Ok((up, start.elapsed()))
}

/// `ctr run -d` of `n` containers at once on `cluster`'s knode containerd (its own namespace):
/// the per-container latencies in ms. The containers are removed afterwards.
fn ctr_floor(cluster: &KnodeCluster, knode: usize, image: &str, n: usize) -> Result<Vec<f64>> {
    let c = cluster.nodes[knode].containerd();
    let ns = c.unique_namespace("floor");
    let sock = c.socket().display().to_string();
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .args(["--address", &sock, "-n", &ns])
            .args(args)
            .output()
    };
    let o = ctr(&["images", "pull", "--plain-http", image]).context("running ctr")?;
    if !o.status.success() {
        bail!("ctr images pull {image}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let times = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let ctr = &ctr;
                s.spawn(move || {
                    let t = Instant::now();
                    let id = format!("floor-{i}");
                    let o = ctr(&["run", "-d", image, &id, "/testimg", "sleep", "infinity"]);
                    match o {
                        Ok(o) if o.status.success() => Ok(t.elapsed().as_secs_f64() * 1e3),
                        Ok(o) => Err(anyhow::anyhow!("ctr run: {}", String::from_utf8_lossy(&o.stderr))),
                        Err(e) => Err(e.into()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("ctr thread panicked"))?)
            .collect::<Result<Vec<f64>>>()
    })?;
    for i in 0..n {
        let id = format!("floor-{i}");
        let _ = ctr(&["tasks", "rm", "-f", &id]);
        let _ = ctr(&["containers", "rm", &id]);
    }
    Ok(times)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Resident memory of a node's kubelet and of kubelet + containerd, in MiB.
fn footprint(cluster: &KnodeCluster, node: usize) -> (f64, f64) {
    let n = &cluster.nodes[node];
    let kubelet = n.kubelet_pid().map(rss_kib).unwrap_or(0);
    let containerd = n.containerd().pid().map(rss_kib).unwrap_or(0);
    (mib(kubelet), mib(kubelet + containerd))
}

fn idle_cpu(cluster: &KnodeCluster, node: usize) -> f64 {
    cluster.nodes[node]
        .kubelet_pid()
        .map(|p| cpu_percent(p, Duration::from_secs(5)))
        .unwrap_or(0.0)
}

fn probed_pod(name: &str, node: &str, image: &str, tag: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": tag}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
            "image": image, "imagePullPolicy": "IfNotPresent", "args": ["serve"],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 5}}]}
    }))?)
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What a kubelet restart did to its pods.
struct Restart {
    /// Start of the new process → its first Lease renewal and every pod Ready in the API (the
    /// last time the set became all-Ready, when pods went NotReady in between).
    secs: f64,
    not_ready: usize,
    restarts: i32,
}

/// `n` pods with an HTTP readiness probe on node `i`, all Ready; the kubelet SIGKILLed and
/// started again; pods watched for `window`.
async fn restart(
    cluster: &mut KnodeCluster,
    client: &kube::Client,
    i: usize,
    image: &str,
    n: usize,
) -> Result<Restart> {
    let tag = format!("restart-{i}");
    let node = cluster.nodes[i].name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("bench={tag}"));
    for k in 0..n {
        pods.create(
            &PostParams::default(),
            &probed_pod(&format!("{tag}-{k}"), &node, image, &tag)?,
        )
        .await?;
    }
    let deadline = Instant::now() + TIMEOUT;
    while pods.list(&lp).await?.items.iter().filter(|p| is_ready(p)).count() < n {
        if Instant::now() > deadline {
            bail!("{n} probed pods on {node} not Ready within {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut stream = watch_labelled(&pods, &tag).await?;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    let renewed = |l: k8s_openapi::api::coordination::v1::Lease| {
        l.spec.and_then(|s| s.renew_time).map(|t| format!("{t:?}"))
    };
    cluster.nodes[i].stop_kubelet();
    let before = renewed(leases.get(&node).await?);
    let start = Instant::now();
    cluster.nodes[i].start_kubelet()?;
    let window = Duration::from_secs(40);
    let mut ready: HashMap<String, bool> = HashMap::new();
    let (mut lease_at, mut all_ready_at, mut not_ready) = (None, start, std::collections::HashSet::new());
    let mut last_lease_poll = Instant::now() - Duration::from_secs(1);
    while start.elapsed() < window {
        if lease_at.is_none() && last_lease_poll.elapsed() >= Duration::from_millis(200) {
            last_lease_poll = Instant::now();
            if renewed(leases.get(&node).await?) != before {
                lease_at = Some(start.elapsed());
            }
        }
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await else {
            continue;
        };
        if let watcher::Event::Apply(p) = ev? {
            let name = p.metadata.name.clone().unwrap_or_default();
            let was_all = ready.len() == n && ready.values().all(|r| *r);
            let r = is_ready(&p);
            if !r {
                not_ready.insert(name.clone());
            }
            ready.insert(name, r);
            if !was_all && ready.len() == n && ready.values().all(|r| *r) {
                all_ready_at = Instant::now();
            }
        }
    }
    let lease_at = lease_at.with_context(|| {
        format!("the restarted kubelet of {node} did not renew its Lease within {window:?}")
    })?;
    let list = pods.list(&lp).await?;
    if list.items.iter().filter(|p| is_ready(p)).count() < n {
        bail!("pods on {node} not all Ready {window:?} after the kubelet restart");
    }
    let restarts = list
        .items
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    let secs = lease_at.max(all_ready_at.duration_since(start)).as_secs_f64();
    delete_all(client, &tag).await?;
    Ok(Restart {
        secs,
        not_ready: not_ready.len(),
        restarts,
    })
}

pub async fn run(ctx: Ctx<'_>, rows: &mut Vec<Row>) -> Result<()> {
    let (cluster, client, pair, opts) = (ctx.cluster, ctx.client, ctx.pair, ctx.opts);
    let image = cluster.images.testimg.reference.clone();
    let name = |i: usize| cluster.nodes[i].name.clone();
    // Warm-up: the image pulled into both nodes' stores, first-pod costs paid.
    for (_, i) in pair.order(0) {
        let pid = cluster.nodes[i].kubelet_pid().context("kubelet not running")?;
        burst(client, &name(i), &image, 1, &format!("warm{i}"), pid).await?;
        delete_all(client, &format!("warm{i}")).await?;
    }
    let mut idle0 = Both::default();
    let mut rss0 = Both::default();
    for (kind, i) in pair.order(0) {
        idle0.push(kind, idle_cpu(cluster, i));
        rss0.push(kind, footprint(cluster, i).0);
    }
    rows.push(rss0.row("kubelet RSS, 0 pods".into(), "MiB", 0.5));
    rows.push(idle0.row("kubelet CPU idle, 0 pods".into(), "%", 0.5));
    let sizes: &[usize] = if opts.quick { &[30] } else { &[30, 100] };
    for &n in sizes {
        let (mut lat, mut del, mut cpu_burst, mut cpu_idle, mut rss, mut rss_all) = (
            Both::default(),
            Both::default(),
            Both::default(),
            Both::default(),
            Both::default(),
            Both::default(),
        );
        for r in 0..opts.rounds() {
            for (kind, i) in pair.order(r) {
                let tag = format!("b{n}-{r}-{i}");
                let pid = cluster.nodes[i].kubelet_pid().context("kubelet not running")?;
                eprintln!(
                    "knode-bench: burst of {n} pods on the {kind:?} node (round {})",
                    r + 1
                );
                let b = burst(client, &name(i), &image, n, &tag, pid).await?;
                lat.extend(kind, &b.latencies_ms);
                cpu_burst.push(kind, b.cpu);
                // Settled: the burst's status updates and first stats are done.
                tokio::time::sleep(Duration::from_secs(5)).await;
                cpu_idle.push(kind, idle_cpu(cluster, i));
                let (k, all) = footprint(cluster, i);
                rss.push(kind, k);
                rss_all.push(kind, all);
                del.push(kind, delete_all(client, &tag).await?.as_secs_f64());
            }
        }
        let mut floor = ctr_floor(cluster, pair.knode, &image, n)?;
        let (f50, f99) = (percentile(&mut floor, 0.5), percentile(&mut floor, 0.99));
        rows.push(
            lat.row(format!("pod startup p50, burst of {n}"), "ms", 0.5)
                .with_floor("ctr run -d", f50),
        );
        rows.push(
            lat.row(format!("pod startup p99, burst of {n}"), "ms", 0.99)
                .with_floor("ctr run -d", f99),
        );
        rows.push(del.row(format!("delete a burst of {n}: all gone from the API"), "s", 0.5));
        rows.push(rss.row(format!("kubelet RSS, {n} pods"), "MiB", 0.5));
        rows.push(rss_all.row(format!("kubelet + containerd RSS, {n} pods"), "MiB", 0.5));
        rows.push(cpu_idle.row(format!("kubelet CPU idle, {n} pods"), "%", 0.5));
        rows.push(cpu_burst.row(format!("kubelet CPU during the burst of {n}"), "%", 0.5));
    }
    let n = if opts.quick { 30 } else { 100 };
    let (mut up, mut down) = (Both::default(), Both::default());
    for (kind, i) in pair.order(1) {
        eprintln!("knode-bench: Deployment of {n} on the {kind:?} node");
        let (u, d) = deployment(client, &name(i), &image, n, &format!("deploy-{i}")).await?;
        up.push(kind, u.as_secs_f64());
        down.push(kind, d.as_secs_f64());
    }
    rows.push(up.row(format!("Deployment of {n}: create → all Ready"), "s", 0.5));
    rows.push(down.row(format!("Deployment of {n}: delete → all pods gone"), "s", 0.5));
    let n = if opts.quick { 20 } else { 50 };
    let (mut secs, mut flipped, mut restarted) = (Both::default(), Both::default(), Both::default());
    for (kind, i) in pair.order(0) {
        eprintln!("knode-bench: kubelet restart with {n} probed pods on the {kind:?} node");
        let r = restart(cluster, client, i, &image, n).await?;
        secs.push(kind, r.secs);
        flipped.push(kind, r.not_ready as f64);
        restarted.push(kind, f64::from(r.restarts));
    }
    rows.push(secs.row(
        format!("kubelet restart, {n} probed pods → all Ready in the API"),
        "s",
        0.5,
    ));
    rows.push(flipped.row(
        format!("kubelet restart, {n} probed pods: pods seen NotReady"),
        "pods",
        0.5,
    ));
    rows.push(restarted.row(
        format!("kubelet restart, {n} probed pods: containers restarted"),
        "",
        0.5,
    ));
    Ok(())
}
