//! `kube-proxy`: knode's service proxy daemon.
//!
//! Thin I/O around the library: parses upstream's flags and KubeProxyConfiguration, watches
//! Services, EndpointSlices and the local Node through kube-rs watchers (relists on 410 are the
//! watcher's job), feeds the events to [`Tracker`] (which decides what changed and when to sync),
//! programs the `ip` and `ip6 kube-proxy` tables with [`DualStack`] (one netlink batch per table
//! and sync; stale UDP conntrack entries deleted after it), serves healthCheckNodePorts, and
//! serves `/healthz`, `/livez` and `/metrics`. READY=1 goes to systemd after the first successful
//! sync; WATCHDOG=1 from the sync loop. SIGTERM/SIGINT stop the daemon and leave the rules in
//! place (as upstream); `--cleanup` removes the table and exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use knode_systemd::{Notifier, Watchdog};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_proxy::compact::{self, ProjectedService, ProjectedSlice};
use kube_proxy::config::{ProxyFlags, Settings};
use kube_proxy::conntrack::{UdpTargets, clean_stale_udp};
use kube_proxy::health::Health;
use kube_proxy::http::{Reply, serve};
use kube_proxy::metrics::Metrics;
use kube_proxy::nft::{DualStack, TableConfig};
use kube_proxy::service_health::ServiceHealthServer;
use kube_proxy::sync::{NodePortAddresses, SERVICE_LABEL_SELECTOR, SyncKind, SyncPlan, Timing, Tracker};
use tokio::sync::mpsc;

/// A watch event of one of the three watched kinds (boxed: Node objects are large).
enum Update {
    Service(Box<watcher::Event<ProjectedService>>),
    Slice(Box<watcher::Event<ProjectedSlice>>),
    Node(Box<watcher::Event<Node>>),
    /// The interface addresses after an rtnetlink address event.
    LocalAddrs(Vec<std::net::IpAddr>),
}

/// State shared with the HTTP endpoints.
struct Shared {
    health: Health,
    metrics: Metrics,
}

fn main() {
    one_malloc_arena();
    let flags = ProxyFlags::parse();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let settings = match flags.resolve(hostname.trim()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-proxy: {e}");
            std::process::exit(1);
        }
    };
    init_logging(settings.verbosity);
    for field in &settings.ignored_fields {
        tracing::warn!(field = %field, "config field is accepted but not acted on by knode");
    }
    let result = if flags.cleanup == Some(true) {
        cleanup(&settings)
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(run(settings)))
    };
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("kube-proxy: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(verbosity: u8) {
    // klog's -v for kube-proxy's own logs: 0-1 info, 2-3 debug, 4+ trace; libraries (kube-rs,
    // hyper) stay at info below -v=5 and go to debug from there. RUST_LOG overrides.
    let own = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let libs = if verbosity >= 5 { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{libs},kube_proxy={own}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// The `ip` and `ip6 kube-proxy` programmers, each with its family's `--cluster-cidr`.
fn programmers(settings: &Settings) -> DualStack {
    let cidr = |v6: bool| {
        settings
            .cluster_cidrs
            .iter()
            .find(|c| c.addr.is_ipv6() == v6)
            .map(|c| (c.addr, c.prefix))
    };
    DualStack::new(
        TableConfig {
            masquerade_all: settings.config.nftables.masquerade_all,
            cluster_cidr: cidr(false),
            ..TableConfig::default()
        },
        cidr(true),
    )
}

/// `--cleanup`: removes the tables (absent is fine) and exits.
fn cleanup(settings: &Settings) -> anyhow::Result<()> {
    programmers(settings)
        .delete_tables()
        .context("removing the nftables tables ip/ip6 kube-proxy")?;
    tracing::info!("removed tables ip kube-proxy and ip6 kube-proxy");
    Ok(())
}

async fn kube_client(settings: &Settings) -> anyhow::Result<Client> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig given and no in-cluster or $KUBECONFIG configuration")?,
    };
    Client::try_from(config).context("building the API client")
}

/// Forwards a watcher's events into the sync loop; errors are logged (the watcher backs off and
/// retries, relisting when its resourceVersion expired).
fn forward<K, S>(
    kind: &'static str,
    stream: S,
    tx: mpsc::UnboundedSender<Update>,
    wrap: fn(watcher::Event<K>) -> Update,
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    if tx.send(wrap(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
            }
        }
    });
}

/// Re-reads the interface addresses whenever rtnetlink reports an address added or removed (on a
/// thread of its own: the wait blocks), so NodePorts follow `--nodeport-addresses` CIDRs onto
/// addresses that appear after start-up. Subscribed before the first read, so no change between
/// the two is missed.
fn watch_local_addrs(tx: mpsc::UnboundedSender<Update>) {
    let events = match kube_proxy::netif::AddressEvents::subscribe() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to interface address changes; NodePort addresses stay as read at start-up");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("address-events".into())
        .spawn(move || {
            loop {
                if let Err(e) = events.wait(Duration::from_millis(50)) {
                    tracing::error!(error = %e, "reading interface address changes failed; NodePort addresses stay as they are");
                    return;
                }
                match kube_proxy::netif::local_addrs() {
                    Ok(addrs) => {
                        tracing::debug!(addresses = ?addrs, "interface addresses changed");
                        if tx.send(Update::LocalAddrs(addrs)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list interface addresses"),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the address watcher");
    }
}

/// Serves `handler` on `addr` (nothing when empty). A bind failure is logged and retried every
/// 5 s, as upstream's health and metrics servers do: the proxy itself keeps working.
fn spawn_server<F>(what: &'static str, addr: String, handler: Arc<F>)
where
    F: Fn(&str) -> Reply + Send + Sync + 'static,
{
    if addr.is_empty() {
        return;
    }
    tokio::spawn(async move {
        loop {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => {
                    tracing::info!(address = %addr, "serving {what}");
                    serve(l, handler).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(address = %addr, error = %e, "cannot serve {what}; retrying in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    });
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let cfg = &settings.config;
    let shared = Arc::new(Mutex::new(Shared {
        health: Health::new(cfg.nftables.sync_period, started),
        metrics: Metrics::default(),
    }));

    // Endpoints first, so probes see a starting proxy as such.
    {
        let s = shared.clone();
        spawn_server(
            "healthz",
            cfg.healthz_bind_address.clone(),
            Arc::new(move |path: &str| {
                let Ok(mut sh) = s.lock() else {
                    return Reply::not_found();
                };
                let (now, wall) = (Instant::now(), SystemTime::now());
                let (probe, livez) = match path {
                    "/healthz" => (sh.health.healthz(now, wall), false),
                    "/livez" => (sh.health.livez(now, wall), true),
                    _ => return Reply::not_found(),
                };
                let counts = if livez {
                    &mut sh.metrics.livez_total
                } else {
                    &mut sh.metrics.healthz_total
                };
                *counts.entry(probe.status).or_insert(0) += 1;
                Reply {
                    status: probe.status,
                    content_type: "application/json",
                    body: probe.body,
                    headers: Vec::new(),
                }
            }),
        );
    }
    {
        let s = shared.clone();
        spawn_server(
            "metrics",
            cfg.metrics_bind_address.clone(),
            Arc::new(move |path: &str| match (path, s.lock()) {
                ("/metrics", Ok(sh)) => Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: sh.metrics.render(),
                    headers: Vec::new(),
                },
                ("/healthz", _) => Reply {
                    status: 200,
                    content_type: "text/plain; charset=utf-8",
                    body: "ok".into(),
                    headers: Vec::new(),
                },
                _ => Reply::not_found(),
            }),
        );
    }

    let client = kube_client(&settings).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    watch_local_addrs(tx.clone());
    forward(
        "Service",
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default().labels(SERVICE_LABEL_SELECTOR),
        )
        .default_backoff(),
        tx.clone(),
        // Trimmed before queueing: the initial list may wait in the channel as a whole.
        |e| Update::Service(Box::new(compact::event(e, ProjectedService::from))),
    );
    forward(
        "EndpointSlice",
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
        tx.clone(),
        |e| Update::Slice(Box::new(compact::event(e, ProjectedSlice::from))),
    );
    forward(
        "Node",
        watcher(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={}", settings.node_name)),
        )
        .default_backoff(),
        tx,
        |e| Update::Node(Box::new(e)),
    );

    let local_addrs = kube_proxy::netif::local_addrs().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list interface addresses; --nodeport-addresses CIDRs match none");
        Vec::new()
    });
    let programmers = programmers(&settings);
    let mut tracker = Tracker::new(
        Timing {
            min_sync_period: cfg.nftables.min_sync_period,
            sync_period: cfg.nftables.sync_period,
        },
        NodePortAddresses::new(&cfg.node_port_addresses, local_addrs),
        programmers.v4.buckets(),
    )
    .with_node_name(settings.node_name.clone());
    let mut health_checks = BTreeMap::new();
    let mut service_health = {
        let s = shared.clone();
        ServiceHealthServer::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            Arc::new(move || s.lock().is_ok_and(|sh| sh.health.healthy(Instant::now()))),
        )
    };
    let mut programmer = Some(programmers);
    let notifier = Notifier::from_env();
    let mut watchdog = Watchdog::from_env(&notifier);
    let mut ready_sent = false;
    tracing::info!(node = %settings.node_name, "kube-proxy started; waiting for the initial Service and EndpointSlice lists");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        let now = Instant::now();
        // Wake at least every 10 s (or the watchdog period) so the watchdog sees a live loop.
        let tick = watchdog.as_ref().map_or(Duration::from_secs(10), |w| {
            w.period().min(Duration::from_secs(10))
        });
        let wake = tracker.next_sync(now).map_or(now + tick, |d| d.min(now + tick));
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            update = rx.recv() => {
                let Some(update) = update else { anyhow::bail!("all watches ended") };
                apply(&mut tracker, update);
                while let Ok(u) = rx.try_recv() {
                    apply(&mut tracker, u);
                }
                if let Ok(mut sh) = shared.lock() {
                    if tracker.pending() && tracker.ready() {
                        sh.health.queued(Instant::now());
                        sh.metrics.last_queued_timestamp = unix_seconds(SystemTime::now());
                    }
                    sh.health.set_node_eligible(tracker.node_eligible());
                    publish_counters(&tracker, &mut sh.metrics);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if let Some(plan) = tracker.take_due(Instant::now()) {
                    // The sync checks the pending changes out (upstream zeroes the gauges here).
                    if let Ok(mut sh) = shared.lock() {
                        publish_counters(&tracker, &mut sh.metrics);
                    }
                    // Health checks follow the endpoints the sync programs.
                    let keys = match &plan.kind {
                        SyncKind::Services(changed) => changed.clone(),
                        _ => {
                            health_checks.clear();
                            tracker.service_keys()
                        }
                    };
                    for key in keys {
                        match tracker.health_check(&key) {
                            Some(hc) => health_checks.insert(key, hc),
                            None => health_checks.remove(&key),
                        };
                    }
                    service_health.sync(&health_checks);
                    let p = programmer.take().context("programmer lost in a panicked sync")?;
                    let (p, ok) = sync_once(&tracker, p, plan, &shared).await?;
                    programmer = Some(p);
                    tracker.finished(Instant::now(), ok);
                    if ok && !ready_sent {
                        ready_sent = true;
                        let (services, slices) = tracker.sizes();
                        let status = format!("first sync done: {services} Services, {slices} EndpointSlices");
                        if let Err(e) = notifier.ready(&status) {
                            tracing::warn!(error = %e, "sd_notify READY failed");
                        }
                    }
                }
            }
        }
        if let Some(w) = watchdog.as_mut()
            && let Err(e) = w.alive()
        {
            tracing::warn!(error = %e, "sd_notify WATCHDOG failed");
        }
    }
    tracing::info!("stopping; the nftables rules stay in place");
    let _ = notifier.stopping();
    Ok(())
}

/// Change counters and pending-change gauges into the metrics.
fn publish_counters(tracker: &Tracker, metrics: &mut kube_proxy::metrics::Metrics) {
    let c = tracker.counters();
    metrics.service_changes_total = c.service_changes;
    metrics.endpoint_changes_total = c.endpoint_changes;
    metrics.service_changes_pending = c.service_changes_pending;
    metrics.endpoint_changes_pending = c.endpoint_changes_pending;
}

fn apply(tracker: &mut Tracker, update: Update) {
    match update {
        Update::Service(e) => tracker.service_event(*e),
        Update::Slice(e) => tracker.slice_event(*e),
        Update::Node(e) => tracker.node_event(*e),
        Update::LocalAddrs(a) => tracker.set_local_addrs(a),
    }
}

/// Makes every thread allocate from one glibc arena (unless `MALLOC_ARENA_MAX` says otherwise).
/// The watch tasks, the sync thread and the HTTP threads would each get their own arena, and
/// the long-lived caches end up spread over all of them with the transient buffers of the
/// initial lists in between: measured at 10k Services, VmRSS 44 MiB with per-thread arenas and
/// 39 MiB with one (bench_daemon). Allocation is not this daemon's bottleneck.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first in main, before any other thread exists; mallopt only changes an
        // allocator tunable.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Returns free heap pages to the kernel (glibc keeps freed memory of large, fragmented heaps
/// mapped; the daemon's RSS would stay at its peak).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory malloc no longer uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs one sync off the async threads (netlink is blocking); returns the programmer and whether
/// the sync succeeded. Failures are logged and counted, never fatal.
async fn sync_once(
    tracker: &Tracker,
    mut programmer: DualStack,
    plan: SyncPlan,
    shared: &Mutex<Shared>,
) -> anyhow::Result<(DualStack, bool)> {
    let start = Instant::now();
    let desired = match &plan.kind {
        SyncKind::Services(changed) => tracker.desired_for(changed),
        SyncKind::All | SyncKind::Rebuild => tracker.desired(),
    };
    // UDP destinations of the synced Services, for the conntrack cleanup after the sync.
    let udp_targets = UdpTargets::from_elements(desired.by_service.values().flatten());
    let model_time = start.elapsed();
    let kind = plan.kind;
    let full = !matches!(kind, SyncKind::Services(_));
    let (programmer, result, kind, elapsed, wall) = tokio::task::spawn_blocking(move || {
        let r = match &kind {
            // Start-up and the periodic resync: adopt the table in the kernel when it has this
            // layout (elements diffed, dynamic affinity state kept), else replace it atomically.
            SyncKind::Rebuild => programmer.resync(&desired),
            SyncKind::All => programmer.sync(&desired),
            SyncKind::Services(changed) => programmer.sync_services(&desired, changed),
        };
        let elapsed = start.elapsed();
        // The rules are in: the end of network programming (the conntrack cleanup below is not
        // part of it).
        let programmed_at = SystemTime::now();
        drop(desired);
        if full {
            // A full sync's transient copies of the whole ruleset are freed now; hand the pages
            // back to the kernel instead of keeping them in the heap until the next one.
            release_free_heap();
        }
        // As upstream: after the rules, delete UDP conntrack entries that still point at an
        // endpoint the Service no longer has (or at no endpoint at all). A failure is logged;
        // the next sync of the Service retries.
        if r.is_ok() && !udp_targets.is_empty() {
            let t = Instant::now();
            match clean_stale_udp(&udp_targets) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    deleted = n,
                    duration_ms = t.elapsed().as_secs_f64() * 1000.0,
                    "deleted stale UDP conntrack entries"
                ),
                Err(e) => tracing::warn!(error = %e, "conntrack cleanup failed"),
            }
        }
        (programmer, r, kind, elapsed, programmed_at)
    })
    .await
    .context("sync task panicked")?;
    let Ok(mut sh) = shared.lock() else {
        anyhow::bail!("shared state poisoned");
    };
    match result {
        Ok(stats) => {
            sh.metrics.sync_duration.observe(elapsed.as_secs_f64());
            if full {
                sh.metrics.full_sync_duration.observe(elapsed.as_secs_f64());
            } else {
                sh.metrics.partial_sync_duration.observe(elapsed.as_secs_f64());
            }
            sh.metrics.last_sync_timestamp = unix_seconds(wall);
            let now_ts = jiff::Timestamp::try_from(wall).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            for t in &plan.triggers {
                let secs = now_ts.duration_since(*t).as_secs_f64();
                if secs >= 0.0 {
                    sh.metrics.network_programming.observe(secs);
                }
            }
            sh.health.updated(wall);
            let changed = match &kind {
                SyncKind::Services(c) => c.len(),
                _ => tracker.sizes().0,
            };
            tracing::info!(
                kind = if matches!(kind, SyncKind::Rebuild) {
                    "rebuild"
                } else if full {
                    "all"
                } else {
                    "partial"
                },
                services = changed,
                added = stats.elements_added,
                deleted = stats.elements_deleted,
                bytes = stats.batch_bytes,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                model_ms = model_time.as_secs_f64() * 1000.0,
                "synced proxy rules"
            );
            Ok((programmer, true))
        }
        Err(e) => {
            sh.metrics.sync_failures_total += 1;
            tracing::error!(error = %e, "syncing proxy rules failed; retrying with a full rebuild");
            Ok((programmer, false))
        }
    }
}
