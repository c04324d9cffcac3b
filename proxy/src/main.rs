//! `kube-proxy`: knode's service proxy: programs nftables for ClusterIP, NodePort and LoadBalancer services.
//!
//! Not implemented yet: see the project's open issues. The binary exists so the workspace layout,
//! build and packaging are fixed from the start; it refuses to run rather than pretend to work.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--version") {
        println!("kube-proxy v{}", env!("CARGO_PKG_VERSION"));
        return;
    }
    eprintln!("kube-proxy: not implemented yet in this build of knode");
    std::process::exit(1);
}
