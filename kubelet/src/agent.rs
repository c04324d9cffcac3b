//! The kubelet daemon's wiring: connects to the API server and containerd, builds the node context,
//! starts the node loops (registration, status, lease), the kubelet API, eviction, GC, the pod sources
//! ([`crate::pods::sources`]) and the pod manager ([`crate::pods::manager`]), routes containerd events
//! and probe results to it, and runs the graceful node shutdown on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::node::{self, Health, MachineInfo, NodeAgent};
use crate::pods::executor::{CniSetup, NodeContext};
use crate::pods::manager::{ManagerMsg, PodManager};
use crate::pods::{self, BackoffBook, BackoffConfig, NodeCapacity};
use crate::runtime::container::LogRotation;
use crate::runtime::events::{self, TaskEvent};
use crate::runtime::{Containerd, ContainerdRuntime};

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
    let (probes, probe_pokes) = crate::probes::ProbeManager::new(containerd.clone(), root.join("probe-fifo"));
    let probe_events = probes.events();
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

    serve_kubelet_api(&settings, client.clone(), containerd.clone(), &node_ips)?;
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
        register(&agent).await
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
    route_events(&ctx, &containerd, &mtx, probe_pokes, probe_events);
    // API pods bound to this node.
    tokio::spawn(crate::pods::sources::watch_api(
        client.clone(),
        settings.node_name.clone(),
        mtx.clone(),
    ));
    // Static pods.
    if !c.static_pod_path.is_empty() {
        let mtx = mtx.clone();
        let dir = PathBuf::from(&c.static_pod_path);
        let node = settings.node_name.clone();
        let client = client.clone();
        let node_uid = node_uid.clone();
        tokio::spawn(async move {
            crate::pods::sources::file::static_pods(dir, node, node_uid, client, mtx).await
        });
    }
    // Orphans: containers of pods no source knows, cleaned up periodically (and once at start,
    // after the sources had a moment to report).
    let _ = notifier.ready(&format!("node {} registered", settings.node_name));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = crate::shutdown::ShutdownPlan::from_config(
        c.shutdown_grace_period,
        c.shutdown_grace_period_critical_pods,
    );
    let manager = PodManager::new(ctx.clone(), mtx.clone(), allocatable, pressure, gc)
        .run(mrx, knode_systemd::Watchdog::from_env(&notifier));
    tokio::pin!(manager);
    tokio::select! {
        _ = &mut manager => return Ok(()),
        _ = tokio::signal::ctrl_c() => { let _ = notifier.stopping(); return Ok(()) }
        _ = term.recv() => {}
    }
    graceful_shutdown(&notifier, &shutdown, &mtx, &mut manager, &mut term).await;
    Ok(())
}

/// The kubelet API on :10250 (when enabled) and healthz.
fn serve_kubelet_api(
    settings: &Settings,
    client: kube::Client,
    containerd: Containerd,
    node_ips: &[std::net::IpAddr],
) -> anyhow::Result<()> {
    let c = &settings.config;
    let root = &settings.root_dir;
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
        let serving = (c.server_tls_bootstrap && c.tls_cert_file.is_empty()).then(|| {
            crate::certs::serving::ServingOptions {
                cert_dir: settings.cert_dir.clone(),
                node_name: settings.node_name.clone(),
                dns_names: vec![settings.node_name.clone()],
                ips: node_ips.to_vec(),
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
    Ok(())
}

/// Registers the node, retrying with backoff until it works; its UID when the API says.
async fn register(agent: &NodeAgent) -> Option<String> {
    let mut delay = Duration::from_millis(200);
    loop {
        match agent.register().await {
            Ok(uid) => return uid,
            Err(e) => {
                tracing::warn!(error = %e, "registering the node failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(7));
            }
        }
    }
}

/// Container exits and probe results → the pod's worker (through the manager); failed probe runs →
/// `Unhealthy` events.
fn route_events(
    ctx: &Arc<NodeContext>,
    containerd: &Containerd,
    mtx: &mpsc::Sender<ManagerMsg>,
    mut probe_pokes: mpsc::UnboundedReceiver<String>,
    mut probe_events: tokio::sync::broadcast::Receiver<crate::probes::ProbeEvent>,
) {
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
}

/// After SIGTERM: with a shutdown grace period, the pods are terminated in priority order while the
/// manager keeps routing container exits to the stopping workers; without, containers keep running
/// for the next kubelet to adopt.
async fn graceful_shutdown(
    notifier: &knode_systemd::Notifier,
    shutdown: &crate::shutdown::ShutdownPlan,
    mtx: &mpsc::Sender<ManagerMsg>,
    manager: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    term: &mut tokio::signal::unix::Signal,
) {
    let _ = notifier.stopping();
    if !shutdown.enabled() {
        // Containers keep running: a restarted kubelet adopts them.
        tracing::info!("SIGTERM: stopping; pods keep running (shutdownGracePeriod is 0)");
        return;
    }
    tracing::info!(period = ?shutdown.total(), "SIGTERM: graceful node shutdown");
    let _ = notifier.status("graceful node shutdown: terminating pods");
    // The manager keeps running meanwhile: it routes container exits to the stopping workers.
    let (wtx, wrx) = tokio::sync::oneshot::channel();
    let workers = if mtx.send(ManagerMsg::Shutdown(wtx)).await.is_ok() {
        tokio::select! { w = wrx => w.unwrap_or_default(), _ = &mut *manager => Vec::new() }
    } else {
        Vec::new()
    };
    tokio::select! {
        (asked, late) = crate::shutdown::run(shutdown, workers) => {
            tracing::info!(pods = asked, late, "graceful node shutdown done");
        }
        _ = &mut *manager => {}
        _ = term.recv() => tracing::warn!("second SIGTERM: exiting before the pods are stopped"),
    }
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
    )
    .with_cluster_cidr(settings.cluster_cidr);
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
