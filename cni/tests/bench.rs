//! Benchmark: ADD+DEL time of knode-bridge against Debian's bridge+host-local, same config, one run,
//! printed as a ratio (goal ≤ 0.5×). Short by default; `KNODE_BENCH=1` (or `full`) runs 200 cycles per case.
//! Plugins are exec'd from a thread switched into the test's node netns (children inherit it), so no
//! `ip netns exec` wrapper cost is included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cni::exec::{self, RuntimeConf};
use common::{Flavor, Netns, World};

/// Mean (ADD, DEL) time per cycle.
fn time_cycles(
    w: &World,
    pod: &Netns,
    flavor: Flavor,
    ip_masq: bool,
    cycles: usize,
    bin: &std::path::Path,
) -> (Duration, Duration) {
    let mut list = w.conflist(flavor, ip_masq);
    list.plugins.truncate(1); // the bridge plugin alone (knode-bridge also brings lo up itself)
    let mut rt = RuntimeConf::new(
        "bench",
        &pod.path(),
        "eth0",
        vec![bin.to_path_buf(), PathBuf::from(common::REF_PLUGINS)],
    );
    rt.timeout = Duration::from_secs(30);
    // Warm-up: creates the bridge (and masquerade setup) outside the timed loop.
    let r = exec::add_network_list(&list, &rt).unwrap();
    exec::del_network_list(&list, &rt, Some(&r)).unwrap();
    let (mut add, mut del) = (Duration::ZERO, Duration::ZERO);
    for i in 0..cycles {
        rt.container_id = format!("bench{i}");
        let t = Instant::now();
        let r = exec::add_network_list(&list, &rt).unwrap();
        add += t.elapsed();
        let t = Instant::now();
        exec::del_network_list(&list, &rt, Some(&r)).unwrap();
        del += t.elapsed();
    }
    assert!(w.reserved_ips().is_empty());
    (add / cycles as u32, del / cycles as u32)
}

#[test]
fn bench_add_del_knode_vs_reference() {
    let cycles = if std::env::var("KNODE_BENCH").is_ok_and(|v| v == "1" || v == "full") {
        200
    } else {
        10
    };
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(common::knode_bridge_bin(), bin.path().join("knode-bridge")).unwrap();
    let w = World::new();
    let node_ns = std::fs::File::open(w.node.path()).unwrap();
    let pod = Netns::new("bench");
    std::thread::scope(|s| {
        s.spawn(|| {
            // Only this thread moves into the node netns.
            nix::sched::setns(node_ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            for ip_masq in [false, true] {
                let knode = time_cycles(&w, &pod, Flavor::Knode, ip_masq, cycles, bin.path());
                let reference = time_cycles(&w, &pod, Flavor::Reference, ip_masq, cycles, bin.path());
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                let (k, r) = (knode.0 + knode.1, reference.0 + reference.1);
                println!(
                    "CNI ADD+DEL (ipMasq={ip_masq}, {cycles} cycles): knode-bridge {:.2} ms (ADD {:.2} + DEL {:.2}), \
                     bridge+host-local {:.2} ms (ADD {:.2} + DEL {:.2}), ratio {:.2}x (goal <= 0.5x)",
                    ms(k),
                    ms(knode.0),
                    ms(knode.1),
                    ms(r),
                    ms(reference.0),
                    ms(reference.1),
                    k.as_secs_f64() / r.as_secs_f64()
                );
            }
        });
    });
}
