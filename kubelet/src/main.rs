//! `kubelet`: knode's node agent. Parses upstream's flags and KubeletConfiguration file (failing
//! start-up with a message that names a bad field), then runs the node: registration, status and
//! lease, pods from the API server and static manifests, through containerd.

use kubelet::config::KubeletFlags;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags = KubeletFlags::parse_upstream(&args).unwrap_or_else(|e| e.exit());
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let settings = match flags.resolve(hostname.trim()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kubelet: {e}");
            std::process::exit(1);
        }
    };
    let level = match settings.verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn,kube_client=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    for field in &settings.ignored_fields {
        tracing::warn!(field, "config field is accepted but not acted on by knode");
    }
    for flag in &settings.no_effect_flags {
        tracing::warn!(
            flag,
            "upstream kubelet flag is accepted but has no effect in knode"
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubelet: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(kubelet::agent::run(settings)) {
        eprintln!("kubelet: {e:#}");
        std::process::exit(1);
    }
}
