//! The programmer's bookkeeping, without a kernel (the dataplane tests cover the rest as root).

use std::net::Ipv4Addr;

use super::*;
use crate::model::Protocol;

fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn dst() -> Destination {
    Destination {
        ip: ip4(10, 96, 0, 1),
        protocol: Protocol::Tcp,
        port: 80,
    }
}

#[test]
fn bucket_mismatch_is_refused_before_touching_the_kernel() {
    let desired = Ruleset {
        by_service: [(
            ("default".to_string(), "a".to_string()),
            (0..8)
                .map(|bucket| Element::ServiceEndpoint {
                    dst: dst(),
                    bucket,
                    endpoint: ip4(10, 244, 0, 2),
                    endpoint_port: 80,
                })
                .collect(),
        )]
        .into(),
    };
    let mut p = NftProgrammer::new(TableConfig::default());
    assert!(matches!(
        p.sync(&desired),
        Err(NftError::BucketMismatch { model: 8, table: 16 })
    ));
}

#[test]
fn shared_elements_are_sent_only_when_their_count_leaves_or_reaches_zero() {
    let (a, b, c) = (ip4(10, 244, 0, 1), ip4(10, 244, 0, 2), ip4(10, 244, 0, 3));
    let shared: SharedCounts = [(a, 2), (b, 1)].into();
    let changes = ChangeSet {
        // a: 2 → 1 (stays); b: 1 → 0 (goes); c: 0 → 1 (comes); a service IP passes through.
        delete: vec![Element::HairpinEndpoint(a), Element::HairpinEndpoint(b)],
        add: vec![Element::HairpinEndpoint(c), Element::ServiceIp(dst())],
    };
    let (effective, counts) = net_shared(&shared, &changes);
    assert_eq!(effective.delete, [Element::HairpinEndpoint(b)]);
    assert_eq!(
        effective.add,
        [Element::ServiceIp(dst()), Element::HairpinEndpoint(c)]
    );
    assert_eq!(counts, [(a, 1), (b, 0), (c, 1)]);
    // Deleted and re-added in one batch: nets out.
    let again = ChangeSet {
        delete: vec![Element::HairpinEndpoint(b)],
        add: vec![Element::HairpinEndpoint(b)],
    };
    let (effective, counts) = net_shared(&shared, &again);
    assert!(effective.is_empty());
    assert_eq!(counts, [(b, 1)]);
}

#[test]
fn affinity_classes_come_before_their_first_element_and_go_after_their_last() {
    let svc = |timeout| Element::AffinityService { dst: dst(), timeout };
    let current: BTreeMap<u32, usize> = [(10, 1), (600, 2)].into();
    let changes = ChangeSet {
        delete: vec![svc(10), svc(600)],
        add: vec![svc(30)],
    };
    let plan = plan_classes(&current, &changes, None);
    assert_eq!(plan.classes, [(30, 1), (600, 1)].into());
    assert_eq!(plan.created, [30]);
    assert_eq!(plan.removed, [10]);
    // Rewriting the rules (a repair) re-creates every class in use.
    let repair = Rebuild::Repair(Existing::default());
    let plan = plan_classes(&current, &changes, Some(&repair));
    assert_eq!(plan.created, [30, 600]);
    assert_eq!(plan.removed, [10]);
    // A new table has nothing to remove.
    let plan = plan_classes(&BTreeMap::new(), &changes, Some(&Rebuild::Create));
    assert_eq!((plan.created, plan.removed), (vec![30], vec![]));
}

#[test]
fn only_endpoints_gone_for_good_lose_their_affinity_entries() {
    let ep = |last| Element::AffinityEndpoint {
        dst: dst(),
        endpoint: ip4(10, 244, 0, last),
        endpoint_port: 8080,
    };
    let changes = ChangeSet {
        delete: vec![ep(1), ep(2), Element::ServiceIp(dst())],
        add: vec![ep(2)],
    };
    assert_eq!(
        lost_affinity(&changes),
        [(dst(), ip4(10, 244, 0, 1), 8080)].into()
    );
}
