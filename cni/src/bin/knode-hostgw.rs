//! `knode-hostgw`: keeps this node's routes to every other node's podCIDR (via its InternalIP) in
//! step with the Nodes in the API — knode's cross-node pod network, beside `knode-bridge` (pods on
//! one node). A daemon of its own, as flannel's host-gw is, rather than part of the kubelet or
//! kube-proxy: routing is the network plugin's job upstream (neither of them programs routes), it
//! runs unchanged on a node with upstream's kubelet, and it can run on a control-plane host that is
//! not a node (so the apiserver reaches pods).
//!
//! ```text
//! knode-hostgw --kubeconfig /etc/kubernetes/kube-proxy.conf [--hostname-override NAME]
//! knode-hostgw --cleanup        # remove its routes (protocol 76) and exit
//! ```
//! The Node watch (kube-rs, relists included) gives every change; the table is also re-read every
//! `--resync-period`, so a route someone deleted comes back. Nodes must share one L2 segment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cni::hostgw::{Peer, RouteChange, Routes, desired};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

#[derive(Parser, Debug)]
#[command(
    name = "knode-hostgw",
    version,
    about = "Routes to the other nodes' pod subnets (host-gw)"
)]
struct Args {
    /// Kubeconfig to watch Nodes with: an identity that may list and watch every Node, e.g.
    /// kube-proxy's (`system:node-proxier`). A node's own does not: the Node authorizer lets a
    /// kubelet read only its own Node object.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This node's name (its own podCIDR is local, not routed); default: the hostname, lowercased.
    #[arg(long)]
    hostname_override: Option<String>,
    /// How often the routing table is re-read and corrected, in seconds.
    #[arg(long, default_value_t = 60)]
    resync_period: u64,
    /// Remove knode-hostgw's routes and exit.
    #[arg(long)]
    cleanup: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading --kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig given and no in-cluster or $KUBECONFIG configuration")?,
    };
    kube::Client::try_from(config).context("building the API client")
}

fn log_changes(changes: &[RouteChange]) {
    for c in changes {
        match c {
            RouteChange::Add { dst, via } => tracing::info!(%dst, %via, "route added"),
            RouteChange::Replace { dst, via } => tracing::info!(%dst, %via, "route replaced"),
            RouteChange::Delete { dst, via } => tracing::info!(%dst, %via, "route deleted"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let routes = Routes::open()?;
    if args.cleanup {
        let changes = routes.reconcile(&BTreeMap::new()).await?;
        log_changes(&changes);
        return Ok(());
    }
    let me = args.hostname_override.clone().unwrap_or_else(hostname);
    let nodes: Api<Node> = Api::all(client(args.kubeconfig.as_ref()).await?);
    let mut events = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
    // During a (re)list the peer set is rebuilt before routes are touched, so a relist never
    // deletes a route only to add it back.
    let mut relisting: Option<BTreeMap<String, Peer>> = None;
    let mut synced = false;
    let mut resync = tokio::time::interval(Duration::from_secs(args.resync_period.max(1)));
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tracing::info!(node = me, "watching Nodes");
    loop {
        let changed = tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => { relisting = Some(BTreeMap::new()); false }
                Some(Ok(watcher::Event::InitApply(n))) => {
                    if let (Some(set), Some(p)) = (relisting.as_mut(), Peer::from_node(&n)) {
                        set.insert(p.name.clone(), p);
                    }
                    false
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    peers = relisting.take().unwrap_or_default();
                    synced = true;
                    true
                }
                Some(Ok(watcher::Event::Apply(n))) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    match Peer::from_node(&n) {
                        Some(p) => peers.insert(name, p.clone()) != Some(p),
                        None => peers.remove(&name).is_some(),
                    }
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    peers.remove(&n.metadata.name.clone().unwrap_or_default()).is_some()
                }
                Some(Err(e)) => { tracing::warn!(error = %e, "watching Nodes (retrying with backoff)"); false }
                None => anyhow::bail!("the Node watch ended"),
            },
            _ = resync.tick() => true,
            _ = &mut stop => break,
            _ = term.recv() => break,
        };
        if !(changed && synced) {
            continue;
        }
        match routes.reconcile(&desired(peers.values(), &me)).await {
            Ok(changes) => log_changes(&changes),
            // ENETUNREACH: a node address off this node's segment (host-gw needs one L2 segment).
            Err(e) => {
                tracing::error!(error = %e, "programming routes (retried at the next change or resync)")
            }
        }
    }
    // Routes stay on exit: pods keep talking across nodes while the daemon restarts.
    tracing::info!("stopping; routes kept");
    Ok(())
}
