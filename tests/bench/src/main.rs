//! `knode-bench`: knode's kubelet and kube-proxy side by side with upstream's own, built from the
//! same pinned release, on one upstream control plane (`scripts/bench.sh` runs it with release
//! builds). The cluster has two nodes that differ only in their node agents: one runs knode's
//! kubelet + kube-proxy, the other upstream's kubelet (on containerd's CRI plugin, knode's pause
//! image) + kube-proxy (nftables mode); both use knode-bridge as CNI plugin, the same kubelet
//! settings, sync periods and test image. Each measurement alternates between the two so machine
//! noise hits both, and prints knode / upstream with the absolute values and the floors measured
//! in the same run (concurrent `ctr run -d`).
//!
//! Usage: knode-bench [--quick] [--only pods|proxy] [--csv FILE] [--mode-suffix WORD]
//! (`KNODE_BIN_DIR`: where knode's daemons are; scripts/bench.sh points it at a release build)

mod pods;
mod proxy;
mod report;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use knode_harness::cluster::{ClusterOptions, KnodeCluster, NodeKind};
use report::Row;

/// What to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// CI-sized: fewer pods and Services, one round.
    pub quick: bool,
    pub only: Option<String>,
    pub csv: Option<PathBuf>,
    /// Appended to the CSV's mode column (e.g. `debug` for debug builds of knode's daemons).
    pub mode_suffix: Option<String>,
}

impl Opts {
    pub fn rounds(&self) -> usize {
        if self.quick { 1 } else { 3 }
    }
}

fn parse_args() -> Result<Opts> {
    let mut opts = Opts {
        quick: false,
        only: None,
        csv: None,
        mode_suffix: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--only" => opts.only = Some(args.next().context("--only needs pods or proxy")?),
            "--csv" => opts.csv = Some(args.next().context("--csv needs a file")?.into()),
            "--mode-suffix" => opts.mode_suffix = Some(args.next().context("--mode-suffix needs a word")?),
            "-h" | "--help" => {
                println!("usage: knode-bench [--quick] [--only pods|proxy] [--csv FILE]");
                std::process::exit(0);
            }
            other => bail!(
                "unknown argument {other:?} (usage: knode-bench [--quick] [--only pods|proxy] [--csv FILE])"
            ),
        }
    }
    if let Some(o) = &opts.only
        && o != "pods"
        && o != "proxy"
    {
        bail!("--only {o:?}: expected pods or proxy");
    }
    Ok(opts)
}

/// What both halves of the benchmark work on.
pub struct Ctx<'a> {
    pub cluster: &'a mut KnodeCluster,
    pub client: &'a kube::Client,
    pub pair: Pair,
    pub opts: &'a Opts,
}

/// The two nodes' indexes in the cluster: (knode, upstream).
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub knode: usize,
    pub upstream: usize,
}

impl Pair {
    /// The kind of node `i` (one of the two).
    pub fn kind_of(&self, i: usize) -> NodeKind {
        if i == self.knode {
            NodeKind::Knode
        } else {
            NodeKind::Upstream
        }
    }

    /// Both, in the order of round `r` (alternating which goes first).
    pub fn order(&self, r: usize) -> [(NodeKind, usize); 2] {
        let k = (NodeKind::Knode, self.knode);
        let u = (NodeKind::Upstream, self.upstream);
        if r.is_multiple_of(2) { [k, u] } else { [u, k] }
    }
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    // One thread: it joins the cluster's network namespace once the cluster exists, and every
    // socket it opens afterwards (the API client's) lives there.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    // Ctrl-C or SIGTERM drops the cluster (stopping and removing everything it started).
    let rows = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(&opts) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted: cluster removed"),
            _ = term.recv() => bail!("terminated: cluster removed"),
        }
    })?;
    println!("\n{}", report::table(&rows));
    if let Some(r) = rows
        .iter()
        .find(|r| !r.knode.is_finite() || !r.upstream.is_finite())
    {
        bail!(
            "row {:?} has no value for one of the two (knode {}, upstream {})",
            r.name,
            r.knode,
            r.upstream
        );
    }
    if let Some(csv) = &opts.csv {
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let date = std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%dT%H:%M:%SZ")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let machine = format!(
            "{} cores {}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        );
        let mut mode = if opts.quick { "quick" } else { "full" }.to_string();
        if let Some(s) = &opts.mode_suffix {
            mode = format!("{mode}-{s}");
        }
        report::append_csv(csv, &rows, &date, &commit, &machine, &mode)
            .with_context(|| format!("appending to {}", csv.display()))?;
        println!("appended {} rows to {}", rows.len(), csv.display());
    }
    Ok(())
}

async fn run(opts: &Opts) -> Result<Vec<Row>> {
    knode_harness::install_crypto_provider();
    eprintln!("knode-bench: starting the upstream control plane and a knode node");
    let mut cluster = KnodeCluster::start(ClusterOptions {
        nodes: 1,
        coredns: false,
        ..Default::default()
    })
    .await?;
    eprintln!("knode-bench: joining an upstream node (upstream kubelet + kube-proxy)");
    let upstream = cluster.add_upstream_node().await?;
    let pair = Pair { knode: 0, upstream };
    enter_netns(&cluster.segment.ns.name)?;
    let kc = kube::config::Kubeconfig::read_from(&cluster.cp.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let mut rows = Vec::new();
    for half in ["pods", "proxy"] {
        if opts.only.as_deref().is_some_and(|o| o != half) {
            continue;
        }
        let ctx = Ctx {
            cluster: &mut cluster,
            client: &client,
            pair,
            opts,
        };
        match half {
            "pods" => pods::run(ctx, &mut rows).await?,
            _ => proxy::run(ctx, &mut rows).await?,
        }
    }
    Ok(rows)
}

/// Moves this thread into network namespace `name` (where the control plane listens).
fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {path}"))?;
    Ok(())
}
