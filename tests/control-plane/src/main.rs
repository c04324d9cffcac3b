//! `knode-control-plane`: serves the Kubernetes API for a single-node knode cluster, or issues a
//! kubeconfig for a node or user from the cluster CA.
//!
//! ```text
//! knode-control-plane --listen 127.0.0.1:6443 --data-dir DIR --write-kubeconfig FILE
//! knode-control-plane issue-kubeconfig --data-dir DIR --user system:node:NAME --group system:nodes --out FILE
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use knode_control_plane::net::Ipv4Cidr;
use knode_control_plane::{Config, ControlPlane, controllers, server};

#[derive(Parser, Debug)]
#[command(
    name = "knode-control-plane",
    version,
    about = "Kubernetes API server and node controllers for knode"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a kubeconfig with a client certificate signed by the cluster CA.
    IssueKubeconfig(IssueArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where objects (SQLite) and certificates are kept; survives restarts.
    #[arg(long, default_value = "/var/lib/knode/control-plane")]
    data_dir: PathBuf,
    /// Write an admin kubeconfig (system:masters) here once serving.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// The address advertised to clients and in the `kubernetes` Service's endpoints.
    #[arg(long)]
    advertise_address: Option<std::net::Ipv4Addr>,
    /// CIDR for Service ClusterIPs.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cluster_ip_range: String,
    /// CIDR pod CIDRs are allocated from, one per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// NodePort range, `low-high`.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Admission plugins to turn off (comma-separated): ServiceAccount, DefaultTolerationSeconds.
    #[arg(long, value_delimiter = ',')]
    disable_admission_plugins: Vec<String>,
    /// How long a node may go without renewing its lease before it is marked Unknown.
    #[arg(long, default_value = "40s")]
    node_monitor_grace_period: String,
    /// How many changes are kept for watches to resume from (older resourceVersions get 410 Gone).
    #[arg(long, default_value_t = knode_control_plane::store::DEFAULT_HISTORY)]
    watch_history: usize,
    /// TEST ONLY (not a kube-apiserver flag): the shortest expirationSeconds a TokenRequest may
    /// ask for, so token refresh can be tested in seconds. Upstream's fixed minimum is 10m.
    #[arg(long, default_value = "10m")]
    service_account_min_token_expiration: String,
    /// Log verbosity (0-5), as upstream's -v.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
}

#[derive(Args, Debug)]
struct IssueArgs {
    #[arg(long, default_value = "/var/lib/knode/control-plane")]
    data_dir: PathBuf,
    /// User name (certificate CN), e.g. `system:node:node1` or `kubernetes-admin`.
    #[arg(long)]
    user: String,
    /// Group (certificate O); repeatable.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// API server URL written into the kubeconfig.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

fn init_tracing(v: u8) {
    let level = match v {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

fn write_private(path: &std::path::Path, data: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, data.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

fn config(a: &ServeArgs) -> anyhow::Result<Config> {
    let mut c = Config::new(a.listen, a.data_dir.clone());
    if let Some(adv) = a.advertise_address {
        c.advertise_address = adv;
    }
    c.service_cidr = a
        .service_cluster_ip_range
        .parse::<Ipv4Cidr>()
        .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
    c.cluster_cidr = a
        .cluster_cidr
        .parse::<Ipv4Cidr>()
        .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    if a.node_cidr_mask_size < c.cluster_cidr.prefix() || a.node_cidr_mask_size > 30 {
        bail!(
            "--node-cidr-mask-size: {} must be between the cluster CIDR's prefix ({}) and 30",
            a.node_cidr_mask_size,
            c.cluster_cidr.prefix()
        );
    }
    c.node_cidr_mask = a.node_cidr_mask_size;
    let (lo, hi) = a
        .service_node_port_range
        .split_once('-')
        .and_then(|(l, h)| Some((l.trim().parse::<i64>().ok()?, h.trim().parse::<i64>().ok()?)))
        .filter(|(l, h)| 0 < *l && l <= h && *h <= 65535)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--service-node-port-range: {:?} is not `low-high` within 1-65535",
                a.service_node_port_range
            )
        })?;
    c.node_port_range = (lo, hi);
    c.disabled_admission = a
        .disable_admission_plugins
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    for p in &c.disabled_admission {
        if !matches!(p.as_str(), "ServiceAccount" | "DefaultTolerationSeconds") {
            bail!(
                "--disable-admission-plugins: unknown plugin {p:?} (known: ServiceAccount, DefaultTolerationSeconds)"
            );
        }
    }
    if a.watch_history == 0 {
        bail!("--watch-history: must be at least 1");
    }
    c.watch_history = a.watch_history;
    c.node_monitor_grace = knode_config::duration::parse(&a.node_monitor_grace_period)
        .map_err(|e| anyhow::anyhow!("--node-monitor-grace-period: {e}"))?;
    c.min_token_expiration = knode_config::duration::parse(&a.service_account_min_token_expiration)
        .map_err(|e| anyhow::anyhow!("--service-account-min-token-expiration: {e}"))?;
    Ok(c)
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = config(&a)?;
    let cp = ControlPlane::open(cfg).context("opening the control plane's data dir")?;
    controllers::bootstrap(&cp).map_err(|e| anyhow::anyhow!("creating bootstrap objects: {}", e.message))?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    controllers::start(&cp);
    if let Some(path) = &a.write_kubeconfig {
        let server = format!("https://{}", cp.config.advertise());
        let kc = cp
            .pki
            .kubeconfig(&server, "kubernetes-admin", &["system:masters"])?;
        write_private(path, &kc)?;
    }
    tracing::info!(listen = %a.listen, data_dir = %a.data_dir.display(), rv = cp.store.current_rv(), "serving the Kubernetes API");
    let notifier = knode_systemd::Notifier::from_env();
    if let Err(e) = notifier.ready("serving") {
        tracing::warn!(error = %e, "sd_notify READY failed");
    }
    let srv = tokio::spawn(server::serve(cp.clone(), listener));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = srv => {
            match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => bail!("server task failed: {e}"),
            }
        }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; stopping"); let _ = notifier.stopping(); Ok(()) }
        _ = term.recv() => { tracing::info!("SIGTERM; stopping"); let _ = notifier.stopping(); Ok(()) }
    }
}

fn issue(a: IssueArgs) -> anyhow::Result<()> {
    let pki = knode_control_plane::auth::pki::Pki::load_or_create(&a.data_dir.join("pki"), None)
        .with_context(|| format!("loading the CA from {}", a.data_dir.display()))?;
    let groups: Vec<&str> = a.groups.iter().map(String::as_str).collect();
    let kc = pki.kubeconfig(&a.server, &a.user, &groups)?;
    write_private(&a.out, &kc)?;
    println!(
        "wrote {} for user {:?} groups {:?}",
        a.out.display(),
        a.user,
        a.groups
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::IssueKubeconfig(a)) => issue(a),
        None => {
            init_tracing(cli.serve.verbosity);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(serve(cli.serve))
        }
    }
}
