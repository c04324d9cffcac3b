//! Runs the upstream control plane (kube-apiserver, controller-manager, scheduler, etcd at the
//! pinned release, see `scripts/build-upstream.sh`) in the foreground for `scripts/up.sh
//! --control-plane upstream`, set up as `kubeadm init` leaves a cluster for joining nodes.
//!
//! `knode-upstream-plane --dir DIR [--advertise-address IP] [--port N] [--registry HOST:PORT]`
//! writes into DIR: `admin.conf`, `bootstrap-kubelet.conf` (bootstrap token), `kube-proxy.conf`
//! (`system:kube-proxy`), `ca.crt`, `kubectl` (a link to the built kubectl), then `ready`; it stops
//! everything and removes the plane's own state on SIGTERM or SIGINT. With `--registry`, cluster
//! DNS is deployed as kubeadm does (CoreDNS image pushed there, the `coredns` Deployment and the
//! `kube-dns` Service at 10.96.0.10) before `ready`; it runs once a node joins.

use std::net::IpAddr;
use std::path::PathBuf;

use knode_harness::upstream::{UpstreamControlPlane, UpstreamOptions, coredns};
use nix::sys::signal::{SigSet, Signal};

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("knode-upstream-plane: {msg}");
    std::process::exit(1);
}

fn main() {
    let mut dir: Option<PathBuf> = None;
    let mut registry: Option<String> = None;
    let mut opts = UpstreamOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| fail(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(value("--dir"))),
            "--advertise-address" => {
                let v = value("--advertise-address");
                opts.advertise_address = v
                    .parse::<IpAddr>()
                    .unwrap_or_else(|e| fail(format!("--advertise-address {v:?}: {e}")));
            }
            "--port" => {
                let v = value("--port");
                opts.secure_port = Some(v.parse().unwrap_or_else(|e| fail(format!("--port {v:?}: {e}"))));
            }
            "--registry" => registry = Some(value("--registry")),
            other => fail(format!(
                "unknown argument {other:?}; usage: --dir DIR [--advertise-address IP] [--port N] \
                 [--registry HOST:PORT]"
            )),
        }
    }
    let dir = dir.unwrap_or_else(|| fail("--dir DIR is required"));
    // Block the stop signals before any thread starts, so sigwait below receives them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    if let Err(e) = stop.thread_block() {
        fail(format!("blocking signals: {e}"));
    }
    knode_harness::install_crypto_provider();
    let cp = UpstreamControlPlane::start(opts).unwrap_or_else(|e| fail(e));
    let write = |name: &str, result: knode_harness::Result<PathBuf>| {
        if let Err(e) = result {
            fail(format!("writing {name}: {e}"));
        }
    };
    let copy = |from: &std::path::Path, name: &str| {
        if let Err(e) = std::fs::copy(from, dir.join(name)) {
            fail(format!("writing {}: {e}", dir.join(name).display()));
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        fail(format!("creating {}: {e}", dir.display()));
    }
    copy(&cp.kubeconfig, "admin.conf");
    copy(&cp.ca_file, "ca.crt");
    write(
        "bootstrap-kubelet.conf",
        cp.bootstrap_kubeconfig(&dir.join("bootstrap-kubelet.conf")),
    );
    write(
        "kube-proxy.conf",
        cp.issue_kubeconfig("system:kube-proxy", &[], &dir.join("kube-proxy.conf")),
    );
    let link = dir.join("kubectl");
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink(cp.kubectl(), &link) {
        fail(format!("linking {}: {e}", link.display()));
    }
    if let Some(registry) = registry {
        let pushed = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(coredns::push_image(&registry, cp.binaries()))
                    .map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| fail(format!("pushing the CoreDNS image to {registry}: {e}")));
        cp.deploy_coredns(&pushed.reference).unwrap_or_else(|e| fail(e));
        eprintln!("knode-upstream-plane: CoreDNS {} deployed", pushed.reference);
    }
    if let Err(e) = std::fs::write(dir.join("ready"), &cp.server_url) {
        fail(format!("writing ready: {e}"));
    }
    eprintln!("knode-upstream-plane: serving at {}", cp.server_url);
    let _ = stop.wait();
    eprintln!("knode-upstream-plane: stopping");
    drop(cp);
}
