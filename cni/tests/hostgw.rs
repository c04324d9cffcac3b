//! knode-hostgw's routing-table edge on real netlink, in a test-made network namespace: it adopts
//! its own routes after a restart (protocol 76) — correcting a changed gateway, deleting a route
//! no longer wanted, adding the missing one — never touches another owner's route, is idempotent,
//! and `--cleanup` (an empty wanted set) removes only its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use cni::hostgw::{RouteChange, Routes};
use cni::ipnet::Ipv4Net;
use common::Netns;

/// Runs `f` on a thread inside `ns` with a current-thread runtime (netlink sockets opened there
/// talk to that namespace).
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce(&Routes, &tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let routes = rt.block_on(async { Routes::open() }).unwrap();
        f(&routes, &rt)
    })
    .join()
    .unwrap()
}

fn routes(ns: &Netns) -> String {
    ns.exec(&["ip", "route", "show"])
}

#[test]
fn routes_are_adopted_corrected_and_cleaned_up_without_touching_others() {
    common::require_root();
    let ns = Netns::new("hostgw");
    ns.exec(&["ip", "link", "add", "seg", "type", "veth", "peer", "name", "segp"]);
    ns.exec(&["ip", "link", "set", "segp", "up"]);
    ns.exec(&["ip", "addr", "add", "10.50.0.1/24", "dev", "seg"]);
    ns.exec(&["ip", "link", "set", "seg", "up"]);
    // Someone else's route, and what a previous knode-hostgw left: one stale, one outdated.
    ns.exec(&["ip", "route", "add", "10.99.0.0/24", "via", "10.50.0.9"]);
    ns.exec(&[
        "ip",
        "route",
        "add",
        "10.244.9.0/24",
        "via",
        "10.50.0.9",
        "proto",
        "76",
    ]);
    ns.exec(&[
        "ip",
        "route",
        "add",
        "10.244.1.0/24",
        "via",
        "10.50.0.8",
        "proto",
        "76",
    ]);
    let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
    let want = BTreeMap::from([
        (net("10.244.1.0/24"), Ipv4Addr::new(10, 50, 0, 2)),
        (net("10.244.2.0/24"), Ipv4Addr::new(10, 50, 0, 3)),
    ]);
    let w = want.clone();
    let changes = in_ns(&ns, move |r, rt| rt.block_on(r.reconcile(&w)).unwrap());
    assert_eq!(
        changes,
        [
            RouteChange::Delete {
                dst: net("10.244.9.0/24"),
                via: Ipv4Addr::new(10, 50, 0, 9)
            },
            RouteChange::Replace {
                dst: net("10.244.1.0/24"),
                via: Ipv4Addr::new(10, 50, 0, 2)
            },
            RouteChange::Add {
                dst: net("10.244.2.0/24"),
                via: Ipv4Addr::new(10, 50, 0, 3)
            },
        ]
    );
    let table = routes(&ns);
    assert!(
        table.contains("10.244.1.0/24 via 10.50.0.2 dev seg proto 76"),
        "{table}"
    );
    assert!(
        table.contains("10.244.2.0/24 via 10.50.0.3 dev seg proto 76"),
        "{table}"
    );
    assert!(!table.contains("10.244.9.0"), "{table}");
    assert!(table.contains("10.99.0.0/24 via 10.50.0.9"), "{table}");
    // Read back as its own, and nothing to do a second time.
    let w = want.clone();
    let (ours, again) = in_ns(&ns, move |r, rt| {
        rt.block_on(async { (r.ours().await.unwrap(), r.reconcile(&w).await.unwrap()) })
    });
    assert_eq!(ours, want);
    assert!(again.is_empty(), "{again:?}");
    // Cleanup: only knode-hostgw's routes go.
    in_ns(&ns, |r, rt| rt.block_on(r.reconcile(&BTreeMap::new())).unwrap());
    let table = routes(&ns);
    assert!(!table.contains("proto 76"), "{table}");
    assert!(table.contains("10.99.0.0/24 via 10.50.0.9"), "{table}");
}
