//! The kubelet daemon: wires the node (registration, status, lease), the pod sources (API watch with
//! `spec.nodeName=<node>`, static pod manifests with mirror pods), the pod manager (one worker per
//! pod UID, admission) and the runtime (containerd events routed to the worker of the pod).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::node::{self, Health, MachineInfo, NodeAgent};
use crate::pods::executor::{self, CniSetup, NodeContext, WorkerMsg};
use crate::pods::{self, BackoffBook, BackoffConfig, NodeCapacity, WorkerState};
use crate::runtime::container::LogRotation;
use crate::runtime::events::{self, TaskEvent};
use crate::runtime::{Containerd, ContainerdRuntime};

/// A message to the pod manager.
#[derive(Debug)]
pub enum ManagerMsg {
    /// A pod from a source (API or file), new or changed.
    Apply(Box<Pod>, Source),
    /// A pod left its source.
    Gone(String),
    /// Something happened to one of the pod's containers.
    Poke(String),
    /// Containerd events may have been missed: every worker observes again.
    PokeAll,
    /// A worker ended.
    Done(String),
    /// A probe run failed (an `Unhealthy` event about the pod).
    ProbeFailed(crate::probes::ProbeEvent),
    /// The node is shutting down: hand the running workers to [`crate::shutdown`] and admit no
    /// new pods from now on.
    Shutdown(crate::shutdown::WorkersRequest),
    /// The eviction manager asks for the pod workers (nothing else changes).
    Workers(crate::shutdown::WorkersRequest),
}

/// Where a pod comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    File,
}

struct WorkerHandle {
    tx: mpsc::Sender<WorkerMsg>,
    pod: Pod,
}

fn parse_quantity_milli(q: &str) -> i64 {
    pods::resources::parse_quantity(q).map(|v| v as i64).unwrap_or(0)
}

/// Runs the kubelet until SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let Some(kubeconfig) = settings.kubeconfig.clone() else {
        bail!("--kubeconfig is required: knode's kubelet runs against an API server");
    };
    let c = &settings.config;
    let client = crate::certs::client::connect(&crate::certs::client::ClientOptions {
        kubeconfig,
        bootstrap_kubeconfig: settings.bootstrap_kubeconfig.clone(),
        cert_dir: settings.cert_dir.clone(),
        node_name: settings.node_name.clone(),
        rotate: c.rotate_certificates,
    })
    .await
    .context("connecting to the API server")?;
    // Bad eviction thresholds fail the start, naming the field.
    let eviction = crate::eviction::EvictionConfig::from_kubelet(c)?;
    let endpoint = c
        .container_runtime_endpoint
        .trim_start_matches("unix://")
        .to_string();
    // STATUS= lines for `systemctl status` while starting (no-ops outside systemd).
    let notifier = knode_systemd::Notifier::from_env();
    let _ = notifier.status(&format!("connecting to containerd at {endpoint}"));
    let containerd = Containerd::connect(&endpoint, &settings.containerd_namespace)
        .await
        .with_context(|| format!("connecting to containerd at {endpoint}"))?;
    let runtime_version = containerd_version(&containerd).await;
    let root = settings.root_dir.clone();
    std::fs::create_dir_all(&root).with_context(|| format!("creating --root-dir {}", root.display()))?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let node_ips: Vec<std::net::IpAddr> = if settings.node_ips.is_empty() {
        vec![default_ip()]
    } else {
        settings.node_ips.clone()
    };
    let mut info = MachineInfo::read(
        &root,
        i64::from(c.max_pods),
        &runtime_version,
        &node_ips,
        &hostname,
    );
    info.kubelet_port = c.port;
    // Allocatable = capacity − system/kube reserved − hard eviction thresholds; the QoS cgroups.
    let (alloc, cgroups) =
        crate::cgroups::manager::for_node(c, &info).context("setting up the node's cgroups")?;
    info.allocatable = alloc
        .reported
        .iter()
        .map(|(k, v)| (k.clone(), crate::cgroups::format_quantity(k, *v)))
        .collect();
    let allocatable: NodeCapacity = info
        .allocatable
        .iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect();
    let crash = BackoffConfig {
        max: c.crash_loop_back_off.max_container_restart_period,
        ..BackoffConfig::default()
    };
    let rotation = LogRotation {
        max_size: parse_quantity_milli(&c.container_log_max_size).max(1000) as u64 / 1000,
        max_files: c.container_log_max_files.max(2) as usize,
    };
    let cni = pod_network(&settings);
    let (probes, mut probe_pokes) =
        crate::probes::ProbeManager::new(containerd.clone(), root.join("probe-fifo"));
    let mut probe_events = probes.events();
    let mut ctx = NodeContext::new(
        client.clone(),
        settings.node_name.clone(),
        node_ips[0].to_string(),
        root.clone(),
        PathBuf::from(&c.pod_logs_dir),
        Arc::new(ContainerdRuntime::new(
            containerd.clone(),
            settings.insecure_registries.clone(),
        )),
        Arc::new(cgroups),
        rotation,
        BackoffBook::new(crash, BackoffConfig::default()),
        cni,
        info.cpus as i64 * 1000,
        info.memory_bytes as i64,
        probes,
    );
    ctx.dns = crate::pods::dns::DnsSettings {
        cluster_dns: c.cluster_dns.clone(),
        cluster_domain: c.cluster_domain.clone(),
        resolv_conf: c.resolv_conf.clone(),
        node_ipv6_only: node_ips.iter().all(|ip| ip.is_ipv6()),
    };
    let ctx = Arc::new(ctx);
    ctx.volumes.configure(c.sync_frequency);
    ctx.security
        .configure(&c.allowed_unsafe_sysctls)
        .map_err(|e| anyhow::anyhow!("--allowed-unsafe-sysctls: {e}"))?;
    // Stats for the kubelet API (/stats/summary, /metrics/resource) and eviction, sampled every 10 s.
    let stats = Arc::new(crate::stats::collect::StatsProvider::new(ctx.clone()));
    crate::stats::collect::install(stats.clone());
    crate::stats::collect::spawn_sampler(stats.clone(), Duration::from_secs(10));
    // Image GC every 5 min; dead-pod leftovers after each orphan cleanup; reclaim_disk for eviction.
    let gc = crate::gc::start(ctx.clone(), c);
    tracing::info!(
        node = settings.node_name,
        runtime = runtime_version,
        cni = ctx.cni.is_some(),
        "kubelet starting"
    );

    // The kubelet API (logs for `kubectl logs`), when enabled.
    if c.enable_server {
        let listen: std::net::SocketAddr = format!("{}:{}", c.address, c.port)
            .parse()
            .with_context(|| format!("address/port {}:{} is not a socket address", c.address, c.port))?;
        let mut scfg = crate::server::ServerConfig {
            listen,
            tls_cert_file: c.tls_cert_file.clone(),
            tls_key_file: c.tls_private_key_file.clone(),
            cert_dir: settings.cert_dir.clone(),
            serving: None,
            client_ca_file: c.authentication.x509.client_ca_file.clone(),
            anonymous: c.authentication.anonymous.enabled,
            authorization_mode: c.authorization.mode.clone(),
            node_name: settings.node_name.clone(),
            configz: serde_json::json!({ "kubeletconfig": c }),
            pod_logs_dir: PathBuf::from(&c.pod_logs_dir),
            node_log_dir: c.enable_system_log_handler.then(|| PathBuf::from("/var/log")),
            webhook_authn: c.authentication.webhook.enabled,
            authn_cache_ttl: c.authentication.webhook.cache_ttl,
            authorized_ttl: c.authorization.webhook.cache_authorized_ttl,
            unauthorized_ttl: c.authorization.webhook.cache_unauthorized_ttl,
            runtime: Some(crate::server::streaming::Runtime {
                containerd: containerd.clone(),
                fifo_dir: root.join("exec-fifo"),
            }),
        };
        let client = client.clone();
        let serving = (c.server_tls_bootstrap && c.tls_cert_file.is_empty()).then(|| {
            crate::certs::serving::ServingOptions {
                cert_dir: settings.cert_dir.clone(),
                node_name: settings.node_name.clone(),
                dns_names: vec![settings.node_name.clone()],
                ips: node_ips.clone(),
            }
        });
        tokio::spawn(async move {
            // As upstream: with serverTLSBootstrap nothing is served until the certificate is issued.
            if let Some(o) = serving {
                scfg.serving = Some(crate::certs::serving::serving_cert(client.clone(), o).await);
            }
            if let Err(e) = crate::server::serve(scfg, client).await {
                tracing::error!(error = %e, "kubelet API server stopped");
            }
        });
    }
    if c.healthz_port > 0
        && let Ok(addr) = format!("{}:{}", c.healthz_bind_address, c.healthz_port).parse()
    {
        tokio::spawn(crate::server::serve_healthz(addr));
    }
    // Node registration, then status and lease loops.
    let agent = Arc::new(NodeAgent {
        nodes: Api::all(client.clone()),
        leases: Api::namespaced(client.clone(), "kube-node-lease"),
        name: settings.node_name.clone(),
        labels: settings.node_labels.clone(),
        taints: Vec::new(),
    });
    let _ = notifier.status(&format!("registering node {}", settings.node_name));
    let node_uid = if c.register_node {
        let mut delay = Duration::from_millis(200);
        loop {
            match agent.register().await {
                Ok(uid) => break uid,
                Err(e) => {
                    tracing::warn!(error = %e, "registering the node failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(7));
                }
            }
        }
    } else {
        None
    };
    // The eviction manager (a NodeReclaimer frees node-level resources before disk evictions).
    let eviction =
        crate::eviction::EvictionManager::new(eviction, Arc::new(crate::gc::DiskReclaimer(gc.clone())));
    let pressure = eviction.pressure();
    spawn_node_loops(
        agent.clone(),
        node_uid.clone(),
        info.clone(),
        settings.config.node_status_update_frequency,
        settings.config.node_status_report_frequency,
        settings.config.node_lease_duration_seconds,
        containerd.clone(),
        ctx.cni.clone(),
        pressure.clone(),
    );
    if let Some(net) = &ctx.cni {
        tokio::spawn(
            net.clone()
                .run(Api::all(client.clone()), settings.node_name.clone()),
        );
    }

    let (mtx, mrx) = mpsc::channel::<ManagerMsg>(1024);
    {
        let host = crate::eviction::manager::NodeHost {
            ctx: ctx.clone(),
            stats: stats.clone(),
            manager: mtx.clone(),
            image_fs: ctx.runtime.snapshotter_root().await,
            memory_capacity: info.memory_bytes,
        };
        tokio::spawn(eviction.run(Arc::new(host)));
    }
    // Container exits → the pod's worker.
    {
        let mtx = mtx.clone();
        let ctx = ctx.clone();
        let mut ev = events::subscribe(containerd.clone());
        tokio::spawn(async move {
            while let Some(e) = ev.recv().await {
                let msg = match e {
                    TaskEvent::Exit { container_id, .. } | TaskEvent::Oom { container_id } => {
                        match ctx.pod_of(&container_id) {
                            Some(uid) => ManagerMsg::Poke(uid),
                            None => continue,
                        }
                    }
                    // Exits before the subscription was live were not delivered: resync.
                    TaskEvent::Subscribed | TaskEvent::Resubscribed => ManagerMsg::PokeAll,
                };
                if mtx.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
    // Probe results → the pod's worker; failed runs → Unhealthy events.
    {
        let poke_tx = mtx.clone();
        tokio::spawn(async move {
            while let Some(uid) = probe_pokes.recv().await {
                if poke_tx.send(ManagerMsg::Poke(uid)).await.is_err() {
                    return;
                }
            }
        });
        let mtx = mtx.clone();
        tokio::spawn(async move {
            loop {
                match probe_events.recv().await {
                    Ok(ev) => {
                        if mtx.send(ManagerMsg::ProbeFailed(ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
    }
    // API pods bound to this node.
    {
        let mtx = mtx.clone();
        let pods: Api<Pod> = Api::all(client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", settings.node_name));
        tokio::spawn(async move {
            let mut stream = Box::pin(watcher(pods, cfg).default_backoff());
            let mut seen: Vec<String> = Vec::new();
            let mut init: Vec<String> = Vec::new();
            while let Some(ev) = stream.next().await {
                let msgs: Vec<ManagerMsg> = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        init.push(uid.clone());
                        if !seen.contains(&uid) {
                            seen.push(uid);
                        }
                        vec![ManagerMsg::Apply(Box::new(p), Source::Api)]
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        seen.retain(|u| *u != uid);
                        vec![ManagerMsg::Gone(uid)]
                    }
                    Ok(watcher::Event::Init) => {
                        init.clear();
                        vec![]
                    }
                    Ok(watcher::Event::InitDone) => {
                        // After a relist, pods that vanished meanwhile are gone.
                        let gone: Vec<String> = seen.iter().filter(|u| !init.contains(u)).cloned().collect();
                        seen.retain(|u| init.contains(u));
                        gone.into_iter().map(ManagerMsg::Gone).collect()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch error (retrying)");
                        vec![]
                    }
                };
                for m in msgs {
                    if mtx.send(m).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    // Static pods.
    if !c.static_pod_path.is_empty() {
        let mtx = mtx.clone();
        let dir = PathBuf::from(&c.static_pod_path);
        let node = settings.node_name.clone();
        let client = client.clone();
        let node_uid = node_uid.clone();
        tokio::spawn(async move { static_pods(dir, node, node_uid, client, mtx).await });
    }
    // Orphans: containers of pods no source knows, cleaned up periodically (and once at start,
    // after the sources had a moment to report).
    let _ = notifier.ready(&format!("node {} registered", settings.node_name));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = crate::shutdown::ShutdownPlan::from_config(
        c.shutdown_grace_period,
        c.shutdown_grace_period_critical_pods,
    );
    let manager = manager(
        ctx.clone(),
        mrx,
        mtx.clone(),
        allocatable,
        knode_systemd::Watchdog::from_env(&notifier),
        pressure,
        gc,
    );
    tokio::pin!(manager);
    tokio::select! {
        _ = &mut manager => return Ok(()),
        _ = tokio::signal::ctrl_c() => { let _ = notifier.stopping(); return Ok(()) }
        _ = term.recv() => {}
    }
    let _ = notifier.stopping();
    if !shutdown.enabled() {
        // Containers keep running: a restarted kubelet adopts them.
        tracing::info!("SIGTERM: stopping; pods keep running (shutdownGracePeriod is 0)");
        return Ok(());
    }
    tracing::info!(period = ?shutdown.total(), "SIGTERM: graceful node shutdown");
    let _ = notifier.status("graceful node shutdown: terminating pods");
    // The manager keeps running meanwhile: it routes container exits to the stopping workers.
    let (wtx, wrx) = tokio::sync::oneshot::channel();
    let workers = if mtx.send(ManagerMsg::Shutdown(wtx)).await.is_ok() {
        tokio::select! { w = wrx => w.unwrap_or_default(), _ = &mut manager => Vec::new() }
    } else {
        Vec::new()
    };
    tokio::select! {
        (asked, late) = crate::shutdown::run(&shutdown, workers) => {
            tracing::info!(pods = asked, late, "graceful node shutdown done");
        }
        _ = &mut manager => {}
        _ = term.recv() => tracing::warn!("second SIGTERM: exiting before the pods are stopped"),
    }
    Ok(())
}

fn default_ip() -> std::net::IpAddr {
    // The address of the default route's interface, as upstream picks when --node-ip is unset.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0");
    sock.ok()
        .and_then(|s| s.connect("192.0.2.1:9").ok().and(s.local_addr().ok()))
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

async fn containerd_version(c: &Containerd) -> String {
    crate::runtime::pod_runtime::version(c)
        .await
        .unwrap_or_else(|_| "containerd://unknown".into())
}

/// Pod networking from `--cni-conf-dir` (see `network`): off when the directory does not exist;
/// else `net.ipv4.ip_forward` is turned on and readiness follows the directory.
fn pod_network(settings: &Settings) -> Option<CniSetup> {
    let dir = &settings.cni_conf_dir;
    if !dir.is_dir() {
        tracing::warn!(
            conf_dir = %dir.display(),
            "--cni-conf-dir does not exist: pod networking is off (pods get loopback only); \
             create it to get the default network"
        );
        return None;
    }
    match crate::network::enable_ip_forward() {
        Ok(true) => tracing::info!("enabled net.ipv4.ip_forward for pod networking"),
        Ok(false) => tracing::info!("net.ipv4.ip_forward is already enabled"),
        Err(e) => tracing::warn!(
            error = %e,
            "enabling net.ipv4.ip_forward failed: pods may not reach beyond the node"
        ),
    }
    let net = crate::network::PodNetwork::new(
        dir.clone(),
        settings.cni_bin_dirs.clone(),
        settings.root_dir.join("cni").join("networks"),
    );
    // A config already in place makes the node network-ready before it first reports.
    net.sync(None);
    Some(Arc::new(net))
}

#[allow(clippy::too_many_arguments)]
fn spawn_node_loops(
    agent: Arc<NodeAgent>,
    node_uid: Option<String>,
    info: MachineInfo,
    update_every: Duration,
    report_every: Duration,
    lease_seconds: i32,
    containerd: Containerd,
    network: Option<CniSetup>,
    pressure: Arc<crate::eviction::Pressure>,
) {
    let status_agent = agent.clone();
    tokio::spawn(async move {
        let mut last_post: Option<Instant> = None;
        let mut api_failing = false;
        loop {
            let runtime_ready = crate::runtime::pod_runtime::version(&containerd).await.is_ok();
            let health = Health {
                runtime_ready,
                network_ready: network.as_ref().is_none_or(|n| n.is_ready()),
                memory_pressure: pressure.conditions().memory,
                disk_pressure: pressure.conditions().disk,
                pid_pressure: pressure.conditions().pid,
            };
            // As upstream's tryUpdateNodeStatus: read the Node back and compare with it, so a status
            // someone else changed (Ready=Unknown after an outage) is corrected within one period.
            let posted = match status_agent.current_status().await {
                Ok(in_api) => {
                    let status = node::node_status(&info, health, in_api.as_ref(), Timestamp::now());
                    let changed = in_api.as_ref().is_none_or(|a| node::status_changed(a, &status));
                    let due = last_post
                        .is_none_or(|t| node::status_due(changed, t.elapsed(), update_every, report_every));
                    if due {
                        status_agent.post_status(&status).await.map(|_| true)
                    } else {
                        Ok(false)
                    }
                }
                Err(e) => Err(e),
            };
            match posted {
                Ok(posted) => {
                    if api_failing {
                        tracing::info!(node = status_agent.name, "node status reachable again");
                        api_failing = false;
                    }
                    if posted {
                        last_post = Some(Instant::now());
                    }
                }
                Err(e) if !api_failing => {
                    tracing::warn!(node = status_agent.name, error = %e, "updating node status failed; retrying every period");
                    api_failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(update_every.min(Duration::from_secs(10))).await;
        }
    });
    tokio::spawn(async move {
        let renew = Duration::from_secs((lease_seconds.max(4) as u64) / 4);
        let mut delay = Duration::from_millis(200);
        loop {
            match agent.renew_lease(node_uid.as_deref(), lease_seconds).await {
                Ok(()) => {
                    delay = Duration::from_millis(200);
                    tokio::time::sleep(renew).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the node lease failed; backing off");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(7));
                }
            }
        }
    });
}

/// The pod manager is the kubelet's main loop: it also feeds the systemd watchdog, so a stuck
/// manager stops the pings and systemd restarts the kubelet (containers keep running).
async fn manager(
    ctx: Arc<NodeContext>,
    mut rx: mpsc::Receiver<ManagerMsg>,
    tx: mpsc::Sender<ManagerMsg>,
    allocatable: NodeCapacity,
    mut watchdog: Option<knode_systemd::Watchdog>,
    pressure: Arc<crate::eviction::Pressure>,
    gc: Arc<crate::gc::GarbageCollector>,
) {
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    // Mirror pods seen in the API (by their API UID), to delete those whose static pod is gone.
    let mut mirrors: HashMap<String, MirrorRef> = HashMap::new();
    // Static pods whose manifest is gone: their mirror pods go when their workers end (not those
    // stopped by a node shutdown, which keep their terminal status).
    let mut static_removed: std::collections::HashSet<String> = Default::default();
    let mut shutting_down = false;
    let mut orphan_check = tokio::time::interval(Duration::from_secs(20));
    orphan_check.tick().await;
    let started = Instant::now();
    let mut wd_tick = tokio::time::interval(
        watchdog
            .as_ref()
            .map(|w| w.period())
            .unwrap_or(Duration::from_secs(3600)),
    );
    loop {
        if let Some(w) = watchdog.as_mut()
            && let Err(e) = w.alive()
        {
            tracing::warn!(error = %e, "watchdog ping failed");
        }
        let msg = tokio::select! {
            _ = wd_tick.tick() => continue,
            m = rx.recv() => match m { Some(m) => m, None => return },
            _ = orphan_check.tick() => {
                // Pods stopped by a node shutdown keep their containers and logs.
                if started.elapsed() > Duration::from_secs(15) && !shutting_down {
                    cleanup_orphans(&ctx, &workers).await;
                    // Mirror pods of static pods removed while the kubelet was down (upstream's
                    // HandlePodCleanups deletes orphaned mirror pods the same way).
                    for m in mirrors.values().filter(|m| !workers.contains_key(&m.hash)) {
                        tokio::spawn(delete_mirror(ctx.client.clone(), m.clone()));
                    }
                    gc.pods_reported(workers.keys());
                }
                continue;
            }
        };
        if matches!(msg, ManagerMsg::Shutdown(_)) {
            shutting_down = true;
        }
        match msg {
            ManagerMsg::Apply(..) if shutting_down => {
                // Upstream rejects pods while the node shuts down; here they simply wait for the
                // next kubelet, and workers being stopped keep their marked copy of the pod.
            }
            ManagerMsg::Shutdown(reply) | ManagerMsg::Workers(reply) => {
                // (`shutting_down` is set above for a Shutdown.)
                let refs = workers
                    .values()
                    .map(|w| crate::shutdown::WorkerRef {
                        pod: w.pod.clone(),
                        tx: w.tx.clone(),
                    })
                    .collect();
                let _ = reply.send(refs);
            }
            ManagerMsg::Apply(pod, source) => {
                let is_mirror = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
                if source == Source::Api && is_mirror {
                    if let Some(m) = MirrorRef::of(&pod) {
                        mirrors.insert(m.api_uid.clone(), m);
                    }
                    continue;
                }
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(w) = workers.get_mut(&uid) {
                    w.pod = (*pod).clone();
                    let _ = w.tx.send(WorkerMsg::Update(pod)).await;
                    continue;
                }
                let active: Vec<Pod> = workers.values().map(|w| w.pod.clone()).collect();
                let admission = pods::admit(&pod, &active, &allocatable)
                    .and_then(|()| ctx.security.admit(&pod))
                    .and_then(|()| pressure.admit(&pod));
                let state = WorkerState::admitted(&admission);
                let mut pod = pod;
                if let Err(r) = &admission {
                    let status = pods::rejected_status(&pod, r);
                    let api: Api<Pod> = Api::namespaced(
                        ctx.client.clone(),
                        pod.metadata.namespace.as_deref().unwrap_or("default"),
                    );
                    let patch = serde_json::json!({"status": status});
                    if let Some(name) = &pod.metadata.name {
                        let _ = api
                            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                            .await;
                    }
                    executor::event(
                        &ctx,
                        &pod,
                        None,
                        "Warning",
                        &status.reason.clone().unwrap_or_default(),
                        status.message.clone().unwrap_or_default(),
                    );
                    // The worker starts from the rejected status, so its first status update keeps
                    // the terminal phase instead of overwriting it with Pending.
                    pod.status = Some(status);
                }
                let (wtx, wrx) = mpsc::channel(64);
                workers.insert(
                    uid.clone(),
                    WorkerHandle {
                        tx: wtx,
                        pod: (*pod).clone(),
                    },
                );
                let ctx = ctx.clone();
                let done = tx.clone();
                tokio::spawn(async move {
                    executor::run(ctx, *pod, state, wrx).await;
                    let _ = done.send(ManagerMsg::Done(uid)).await;
                });
            }
            ManagerMsg::Gone(uid) => {
                mirrors.remove(&uid);
                if let Some(w) = workers.get(&uid) {
                    if is_static(&w.pod) {
                        static_removed.insert(uid.clone());
                    }
                    let _ = w.tx.send(WorkerMsg::Removed).await;
                }
            }
            ManagerMsg::Poke(uid) => {
                if let Some(w) = workers.get(&uid) {
                    let _ = w.tx.try_send(WorkerMsg::Poke);
                }
            }
            ManagerMsg::PokeAll => {
                for w in workers.values() {
                    let _ = w.tx.try_send(WorkerMsg::Poke);
                }
            }
            ManagerMsg::Done(uid) => {
                // A static pod that finished terminating (its manifest removed or changed) takes
                // its mirror pod with it, as upstream; the mirror of a changed manifest's new
                // version carries another hash and stays.
                if let Some(w) = workers.remove(&uid)
                    && static_removed.remove(&uid)
                    && let Some(m) = MirrorRef::of(&w.pod)
                {
                    // Off the main loop: it also feeds the watchdog.
                    tokio::spawn(delete_mirror(ctx.client.clone(), m));
                }
            }
            ManagerMsg::ProbeFailed(ev) => {
                if let Some(w) = workers.get(&ev.pod_uid) {
                    executor::event(
                        &ctx,
                        &w.pod,
                        Some(&ev.container),
                        "Warning",
                        crate::probes::ProbeEvent::REASON,
                        ev.event_message(),
                    );
                }
            }
        }
    }
}

/// Removes containers (and sandboxes) of pods no worker owns: pods deleted while the kubelet was
/// down, or left over from a crash.
async fn cleanup_orphans(ctx: &Arc<NodeContext>, workers: &HashMap<String, WorkerHandle>) {
    let Ok(listed) = ctx.runtime.list_containers().await else {
        return;
    };
    let mut orphan_pods: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Sandboxes without containers (a pod deleted before its containers were made): network too.
    for uid in crate::network::sandbox_uids(&ctx.root_dir.join("sandboxes")) {
        if !workers.contains_key(&uid) {
            orphan_pods.entry(uid).or_default();
        }
    }
    for l in listed {
        if !workers.contains_key(&l.meta.pod_uid) {
            orphan_pods.insert(
                l.meta.pod_uid.clone(),
                (l.meta.pod_namespace.clone(), l.meta.pod_name.clone()),
            );
        }
    }
    for (uid, (ns, name)) in orphan_pods {
        tracing::info!(
            pod = format!("{ns}/{name}"),
            uid,
            "removing containers of a pod that is no longer assigned to this node"
        );
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                uid: Some(uid),
                namespace: Some(ns),
                name: Some(name),
                ..Default::default()
            },
            ..Default::default()
        };
        executor::remove_pod(ctx, &pod).await;
    }
}

/// Static pods: manifests in `dir` (YAML or JSON, one pod each), checked every second for changes and
/// fully every 20 s; each runs under a UID derived from its content and gets a mirror pod.
async fn static_pods(
    dir: PathBuf,
    node: String,
    node_uid: Option<String>,
    client: kube::Client,
    tx: mpsc::Sender<ManagerMsg>,
) {
    let mut known: HashMap<PathBuf, (std::time::SystemTime, String)> = HashMap::new();
    let mut last_full = Instant::now() - Duration::from_secs(60);
    loop {
        let full = last_full.elapsed() >= Duration::from_secs(20);
        if full {
            last_full = Instant::now();
        }
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "yaml" | "yml" | "json") {
                continue;
            }
            present.push(path.clone());
            let mtime = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            if !full && known.get(&path).is_some_and(|(t, _)| *t == mtime) {
                continue;
            }
            match load_static(&path, &node) {
                Ok(pod) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if let Some((_, old)) = known.get(&path)
                        && *old != uid
                        && tx.send(ManagerMsg::Gone(old.clone())).await.is_err()
                    {
                        return;
                    }
                    known.insert(path.clone(), (mtime, uid));
                    ensure_mirror(&client, &pod, &node, node_uid.as_deref()).await;
                    if tx
                        .send(ManagerMsg::Apply(Box::new(pod), Source::File))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "static pod manifest skipped");
                    known.insert(path.clone(), (mtime, String::new()));
                }
            }
        }
        let gone: Vec<PathBuf> = known.keys().filter(|p| !present.contains(p)).cloned().collect();
        for p in gone {
            if let Some((_, uid)) = known.remove(&p)
                && !uid.is_empty()
                && tx.send(ManagerMsg::Gone(uid)).await.is_err()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads one static pod manifest and gives it its node-specific identity (upstream's file source).
pub fn load_static(path: &Path, node: &str) -> Result<Pod, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_saphyr_or_json(&text)?;
    let mut pod: Pod = serde_json::from_value(v).map_err(|e| format!("not a Pod: {e}"))?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name is required")?;
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(text.as_bytes());
    h.update(node.as_bytes());
    let hash: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    pod.metadata.name = Some(format!("{name}-{node}"));
    pod.metadata.namespace = Some(pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()));
    pod.metadata.uid = Some(hash.clone());
    let ann = pod.metadata.annotations.get_or_insert_with(Default::default);
    ann.insert("kubernetes.io/config.source".into(), "file".into());
    ann.insert("kubernetes.io/config.hash".into(), hash);
    ann.insert("kubernetes.io/config.seen".into(), Timestamp::now().to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.enable_service_links.get_or_insert(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy.get_or_insert_with(|| "File".into());
        let image = c.image.clone().unwrap_or_default();
        c.image_pull_policy.get_or_insert_with(|| {
            let last = image.rsplit('/').next().unwrap_or("");
            if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
    }
    Ok(pod)
}

fn serde_saphyr_or_json(text: &str) -> Result<serde_json::Value, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"));
    }
    serde_saphyr::from_str(text).map_err(|e| format!("invalid YAML: {e}"))
}

fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s == "file")
}

/// A mirror pod by name and the static pod hash (the static pod's UID here) it mirrors.
#[derive(Debug, Clone)]
struct MirrorRef {
    namespace: String,
    name: String,
    hash: String,
    /// The mirror's UID in the API (empty for a static pod's own view of it).
    api_uid: String,
}

impl MirrorRef {
    /// From a mirror pod seen in the API (it carries `config.mirror`; its copied annotations say
    /// `config.source: file` too), or from the static pod it mirrors.
    fn of(pod: &Pod) -> Option<MirrorRef> {
        let ann = pod.metadata.annotations.as_ref();
        let (hash, api_uid) = match ann.and_then(|a| a.get("kubernetes.io/config.mirror")) {
            Some(h) => (h.clone(), pod.metadata.uid.clone().unwrap_or_default()),
            None => (
                ann.and_then(|a| a.get("kubernetes.io/config.hash"))?.clone(),
                String::new(),
            ),
        };
        Some(MirrorRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone()?,
            hash,
            api_uid,
        })
    }
}

/// Deletes a mirror pod if it still mirrors `m.hash` (a newer mirror of the same name is kept);
/// grace 0 with a UID precondition, as upstream's `DeleteMirrorPod`.
async fn delete_mirror(client: kube::Client, m: MirrorRef) {
    let api: Api<Pod> = Api::namespaced(client, &m.namespace);
    let pod = format!("{}/{}", m.namespace, m.name);
    let existing = match api.get_opt(&m.name).await {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(pod, error = %e, "reading the mirror pod to delete it failed; retried later");
            return;
        }
    };
    let mirrors = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.mirror"));
    if mirrors != Some(&m.hash) {
        return;
    }
    let params = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&m.name, &params).await {
        Ok(_) => tracing::info!(pod, "mirror pod deleted: its static pod is gone"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod, error = %e, "deleting the mirror pod failed; retried later"),
    }
}

/// Creates (or recreates) the mirror pod of a static pod.
async fn ensure_mirror(client: &kube::Client, pod: &Pod, node: &str, node_uid: Option<&str>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = pod.metadata.name.clone().unwrap_or_default();
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    if let Ok(Some(existing)) = api.get_opt(&name).await {
        let same = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/config.mirror"))
            == Some(&hash);
        if same {
            return;
        }
        let _ = api
            .delete(
                &name,
                &kube::api::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
    }
    let mut mirror = pod.clone();
    mirror.metadata.uid = None;
    mirror.metadata.resource_version = None;
    mirror.status = None;
    mirror
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("kubernetes.io/config.mirror".into(), hash);
    if let Some(uid) = node_uid {
        mirror.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid: uid.to_string(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
    }
    match api.create(&PostParams::default(), &mirror).await {
        Ok(_) => tracing::info!(pod = format!("{ns}/{name}"), "mirror pod created"),
        Err(e) => tracing::warn!(pod = format!("{ns}/{name}"), error = %e, "creating the mirror pod failed"),
    }
}

/// The node object (tests).
pub async fn get_node(client: &kube::Client, name: &str) -> Option<Node> {
    Api::<Node>::all(client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// The node's lease (tests).
pub async fn get_lease(client: &kube::Client, name: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .get_opt(name)
        .await
        .ok()
        .flatten()
}
