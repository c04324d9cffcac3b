//! `knode-control-plane`: a compact Kubernetes-API server with the controllers a node needs, for tests and single-node use.
//!
//! Not implemented yet: see the project's open issues. The binary exists so the workspace layout,
//! build and packaging are fixed from the start; it refuses to run rather than pretend to work.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--version") {
        println!("knode-control-plane v{}", env!("CARGO_PKG_VERSION"));
        return;
    }
    eprintln!("knode-control-plane: not implemented yet in this build of knode");
    std::process::exit(1);
}
