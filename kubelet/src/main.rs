//! `kubelet`: knode's node agent.
//!
//! Today it parses upstream's flags and KubeletConfiguration file (failing start-up with a message that
//! names a bad field) and then stops: the pod lifecycle is not in this build yet. It refuses to run
//! rather than pretend to.

use clap::Parser;
use kubelet::config::KubeletFlags;

fn main() {
    let flags = KubeletFlags::parse();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let settings = match flags.resolve(hostname.trim()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kubelet: {e}");
            std::process::exit(1);
        }
    };
    for field in &settings.ignored_fields {
        eprintln!("kubelet: config field {field} is accepted but not acted on by knode yet");
    }
    eprintln!(
        "kubelet: configuration valid (node {}); the pod lifecycle is not in this build yet",
        settings.node_name
    );
    std::process::exit(1);
}
