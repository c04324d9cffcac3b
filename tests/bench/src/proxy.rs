//! kube-proxy rows: full sync and one-Service change at growing numbers of Services × 5 endpoints,
//! measured the same way for both — from the API request (or the daemon's start, for a full sync
//! into an empty table) to the Service's element in the node's `ip kube-proxy` table (both daemons
//! keep `service-ips`, keyed `address . protocol . port`); RSS at the largest size; TCP connect
//! latency through a ClusterIP to a pod on the same node at few and many Services; time from a new
//! Service to its first connection.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use knode_harness::cluster::{KnodeCluster, NodeKind};
use knode_harness::netns::in_netns;
use knode_harness::procstat::rss_kib;
use kube::api::{Api, PostParams};

use crate::report::{Both, Row};
use crate::{Ctx, Pair};

const TIMEOUT: Duration = Duration::from_secs(600);
const ENDPOINTS: usize = 5;

/// A selectorless Service and its EndpointSlice of [`ENDPOINTS`] addresses; returns the ClusterIP
/// and when the Service was created. The slice comes first and, with `gap`, that long before the
/// Service: then the Service's arrival is the one change a daemon programs (two objects in quick
/// succession would measure `minSyncPeriod`: each daemon syncs for the first at once and for the
/// second only a `minSyncPeriod` later).
async fn create_service(
    client: &kube::Client,
    name: &str,
    seq: usize,
    gap: Option<Duration>,
) -> Result<(String, Instant)> {
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            let n = seq * ENDPOINTS + e;
            serde_json::json!({"addresses": [format!("10.245.{}.{}", (n / 250) % 250, n % 250 + 1)],
                "conditions": {"ready": true}})
        })
        .collect();
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name, "bench": "svc"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"port": 8080, "protocol": "TCP"}]
    }))?;
    slices
        .create(&PostParams::default(), &slice)
        .await
        .with_context(|| format!("creating the EndpointSlice of {name}"))?;
    if let Some(gap) = gap {
        tokio::time::sleep(gap).await;
    }
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "svc"}},
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))?;
    let start = Instant::now();
    let created = svcs
        .create(&PostParams::default(), &svc)
        .await
        .with_context(|| format!("creating Service {name}"))?;
    let ip = created
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no clusterIP assigned")?;
    Ok((ip, start))
}

/// Whether `ip`:80/TCP is in node namespace `netns`'s `service-ips` (one `nft get element`).
fn programmed(netns: &str, ip: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["--", "nft", "get", "element", "ip", "kube-proxy", "service-ips"])
        .arg(format!("{{ {ip} . tcp . 80 }}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Polls each of `nodes` (netns names) until `ip` is programmed there; seconds since `start` each.
async fn wait_programmed(nodes: &[String], ips: &[String], start: Instant) -> Result<Vec<f64>> {
    let mut done: Vec<Option<f64>> = vec![None; nodes.len()];
    while done.iter().any(Option::is_none) {
        for (i, ns) in nodes.iter().enumerate() {
            if done[i].is_none() && ips.iter().all(|ip| programmed(ns, ip)) {
                done[i] = Some(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        if start.elapsed() > TIMEOUT {
            bail!("{ips:?} not programmed in {nodes:?} within {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(done.into_iter().flatten().collect())
}

/// Removes both families' `kube-proxy` tables of a node (its proxy stopped): the next start is a
/// full sync into an empty table, for either daemon.
fn flush_tables(netns: &str) {
    for family in ["ip", "ip6"] {
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["--", "nft", "delete", "table", family, "kube-proxy"])
            .output();
    }
}

/// `samples` TCP connects to `addr` from node namespace `netns`, each in microseconds.
fn connect_times(netns: &str, addr: SocketAddr, samples: usize) -> Result<Vec<f64>> {
    in_netns(netns, move || -> Result<Vec<f64>> {
        let mut v = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .with_context(|| format!("connecting to {addr}"))?;
            v.push(t.elapsed().as_secs_f64() * 1e6);
            drop(s);
        }
        Ok(v)
    })?
}

/// Creates Service `name` selecting pods labelled `app=<app>` (port 80 → 8080); its ClusterIP:80.
async fn create_selecting(client: &kube::Client, name: &str, app: &str) -> Result<SocketAddr> {
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    let ip = svcs
        .create(&PostParams::default(), &svc)
        .await
        .with_context(|| format!("creating Service {name}"))?
        .spec
        .and_then(|s| s.cluster_ip)
        .with_context(|| format!("Service {name} got no clusterIP"))?;
    Ok(format!("{ip}:80").parse()?)
}

/// Time from creating a Service (selecting the node's own backend pod) to the first successful
/// connection to it from that node, in ms.
async fn first_connection(client: &kube::Client, netns: &str, name: &str, app: &str) -> Result<f64> {
    let start = Instant::now();
    let addr = create_selecting(client, name, app).await?;
    let elapsed = in_netns(netns, move || -> Result<f64> {
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
                return Ok(start.elapsed().as_secs_f64() * 1e3);
            }
            if start.elapsed() > TIMEOUT {
                bail!("no connection to {addr} within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })??;
    Ok(elapsed)
}

/// A backend pod (`testimg serve`, port 8080) on each node and a Service for each; their
/// ClusterIPs, by node index.
async fn backends(
    cluster: &KnodeCluster,
    client: &kube::Client,
    pair: Pair,
) -> Result<Vec<(usize, SocketAddr)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let image = &cluster.images.testimg.reference;
    let mut out = Vec::new();
    for (_, i) in pair.order(0) {
        let app = format!("backend-{i}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": app, "labels": {"app": app}},
            "spec": {"nodeName": cluster.nodes[i].name, "containers": [{"name": "main", "image": image,
                "imagePullPolicy": "IfNotPresent", "args": ["serve"]}]}
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        out.push((i, create_selecting(client, &app, &app).await?));
    }
    for (i, addr) in &out {
        let ns = cluster.nodes[*i].netns.name.clone();
        let addr = *addr;
        let ok = in_netns(&ns, move || {
            let start = Instant::now();
            while start.elapsed() < TIMEOUT {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })?;
        if !ok {
            bail!(
                "backend Service {addr} never answered from node {}",
                cluster.nodes[*i].name
            );
        }
    }
    Ok(out)
}

pub async fn run(ctx: Ctx<'_>, rows: &mut Vec<Row>) -> Result<()> {
    let (cluster, client, pair, opts) = (ctx.cluster, ctx.client, ctx.pair, ctx.opts);
    let netns: Vec<String> = cluster.nodes.iter().map(|n| n.netns.name.clone()).collect();
    let both = [netns[pair.knode].clone(), netns[pair.upstream].clone()];
    eprintln!("knode-bench: a backend pod and Service per node");
    let backends = backends(cluster, client, pair).await?;
    // Rounds of 100 connects alternating between the nodes (after a warm-up), median of all.
    let latency = |label: String| -> Result<Row> {
        let mut per = Both::default();
        for round in 0..6 {
            for k in 0..backends.len() {
                let (i, addr) = backends[(k + round) % backends.len()];
                let times = connect_times(&netns[i], addr, 100)?;
                if round > 0 {
                    per.extend(pair.kind_of(i), &times);
                }
            }
        }
        Ok(per.row(label, "µs", 0.5))
    };
    let few = latency("connect via a ClusterIP, few Services (p50)".into())?;
    let sizes: &[usize] = if opts.quick {
        &[100, 1000]
    } else {
        &[100, 1000, 10_000]
    };
    let mut made = 0usize;
    let mut ips: Vec<String> = Vec::new();
    for &size in sizes {
        eprintln!("knode-bench: {size} Services × {ENDPOINTS} endpoints");
        let names: Vec<(String, usize)> = (made..size).map(|i| (format!("bench-svc-{i}"), i)).collect();
        let new: Vec<String> = futures::stream::iter(names)
            .map(|(name, i)| async move { Ok(create_service(client, &name, i, None).await?.0) })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        ips.extend(new);
        made = size;
        let (first, last) = (ips[0].clone(), ips[ips.len() - 1].clone());
        wait_programmed(&both, &[first.clone(), last.clone()], Instant::now()).await?;
        // Full sync: each daemon restarted into an empty table, alternating.
        let mut full = Both::default();
        for r in 0..opts.rounds() {
            for (kind, i) in pair.order(r) {
                cluster.nodes[i].stop_proxy();
                flush_tables(&netns[i]);
                let start = Instant::now();
                cluster.nodes[i].start_proxy()?;
                let t = wait_programmed(&netns[i..=i], &[first.clone(), last.clone()], start).await?;
                full.extend(kind, &t);
            }
        }
        rows.push(full.row(format!("kube-proxy full sync, {size} Services"), "ms", 0.5));
        // One change: a new Service, seen by both daemons at once.
        let mut change = Both::default();
        for r in 0..opts.rounds().max(3) {
            // Quiet for longer than minSyncPeriod before each object, so neither daemon is
            // still rate-limited when the Service arrives.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let name = format!("bench-change-{size}-{r}");
            let gap = Some(Duration::from_millis(2500));
            let (ip, start) = create_service(client, &name, 60_000 + size + r, gap).await?;
            let t = wait_programmed(&both, &[ip], start).await?;
            change.push(NodeKind::Knode, t[0]);
            change.push(NodeKind::Upstream, t[1]);
        }
        rows.push(change.row(
            format!("kube-proxy one Service added, {size} Services"),
            "ms",
            0.5,
        ));
    }
    let top = made;
    let rss = |i: usize| cluster.nodes[i].proxy_pid().map(rss_kib).unwrap_or(0) as f64 / 1024.0;
    rows.push(Row::new(
        format!("kube-proxy RSS, {top} Services"),
        "MiB",
        rss(pair.knode),
        rss(pair.upstream),
    ));
    rows.push(few);
    rows.push(latency(format!("connect via a ClusterIP, {top} Services (p50)"))?);
    let mut first = Both::default();
    for (kind, i) in pair.order(0) {
        let name = format!(
            "bench-first-{}",
            if kind == NodeKind::Knode {
                "knode"
            } else {
                "upstream"
            }
        );
        first.push(
            kind,
            first_connection(client, &netns[i], &name, &format!("backend-{i}")).await?,
        );
    }
    rows.push(first.row(
        format!("new Service → first connection, {top} Services"),
        "ms",
        0.5,
    ));
    Ok(())
}
