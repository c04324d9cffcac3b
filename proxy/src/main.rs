//! `kube-proxy`: knode's service proxy.
//!
//! Today it parses upstream's flags and KubeProxyConfiguration file (failing start-up with a message that
//! names a bad field) and then stops: the library programs nftables (model, diff, netlink apply; see
//! proxy/README.md) but the Service/EndpointSlice watch loop that would drive it is not wired into
//! this binary yet. It refuses to run rather than pretend to.

use clap::Parser;
use kube_proxy::config::ProxyFlags;

fn main() {
    let flags = ProxyFlags::parse();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let settings = match flags.resolve(hostname.trim()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-proxy: {e}");
            std::process::exit(1);
        }
    };
    for field in &settings.ignored_fields {
        eprintln!("kube-proxy: config field {field} is accepted but not acted on by knode");
    }
    eprintln!(
        "kube-proxy: configuration valid (node {}); the Service/EndpointSlice watch loop is not in this build yet",
        settings.node_name
    );
    std::process::exit(1);
}
