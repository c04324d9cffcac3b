use super::*;
use crate::model::SERVICE_NAME_LABEL;
use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::net::Ipv4Addr;

const MIN: Duration = Duration::from_secs(1);
const PERIOD: Duration = Duration::from_secs(30);

fn tracker() -> Tracker {
    Tracker::new(
        Timing {
            min_sync_period: MIN,
            sync_period: PERIOD,
        },
        NodePortAddresses::new(&[], Vec::new()),
        16,
    )
}

fn svc(name: &str, ip: &str, rv: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(name: &str, service: &str, ips: &[&str], trigger: Option<&str>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
            annotations: trigger.map(|t| [(LAST_CHANGE_TRIGGER_TIME.to_string(), t.to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            port: Some(8080),
            ..Default::default()
        }]),
    }
}

fn node(addrs: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(
                addrs
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

fn key(name: &str) -> ServiceKey {
    ("default".into(), name.into())
}

/// Delivers a complete initial list of both kinds.
fn initial_lists(t: &mut Tracker, services: Vec<Service>, slices: Vec<EndpointSlice>) {
    t.initial_lists(services, slices);
}

#[test]
fn nothing_is_synced_before_both_initial_lists_then_a_rebuild_at_once() {
    let mut t = tracker();
    let now = Instant::now();
    t.service_event(Event::<Service>::Init);
    t.service_event(Event::InitApply(svc("a", "10.96.0.1", "1")));
    t.service_event(Event::<Service>::InitDone);
    assert!(!t.ready());
    assert_eq!(t.next_sync(now), None);
    assert_eq!(t.take_due(now), None);
    t.slice_event(Event::<EndpointSlice>::Init);
    t.slice_event(Event::InitApply(slice("a-1", "a", &["10.244.0.5"], None)));
    assert!(!t.ready(), "a relist is complete only at InitDone");
    t.slice_event(Event::<EndpointSlice>::InitDone);
    assert!(
        !t.ready(),
        "the Node's list (empty if it does not exist) completes start-up"
    );
    t.node_event(Event::Init);
    t.node_event(Event::InitApply(node(&[("InternalIP", "192.168.77.1")])));
    t.node_event(Event::InitDone);
    assert!(t.ready());
    assert_eq!(t.node_ips(), &[Ipv4Addr::new(192, 168, 77, 1)]);
    assert_eq!(t.next_sync(now), Some(now));
    let plan = t.take_due(now).unwrap();
    assert_eq!(plan.kind, SyncKind::Rebuild);
    t.finished(now, true);
    assert!(!t.pending());
    assert_eq!(t.next_sync(now), Some(now + PERIOD));
    let desired = t.desired();
    assert!(desired.by_service.contains_key(&key("a")));
    assert_eq!(t.sizes(), (1, 1));
}

#[test]
fn changes_within_min_sync_period_are_coalesced_into_one_partial_sync() {
    let mut t = tracker();
    let t0 = Instant::now();
    initial_lists(&mut t, vec![svc("a", "10.96.0.1", "1")], vec![]);
    t.take_due(t0).unwrap();
    t.finished(t0, true);

    // 100 ms later a Service appears and a slice for another changes: due at t0 + minSyncPeriod.
    let t1 = t0 + Duration::from_millis(100);
    t.service_event(Event::Apply(svc("b", "10.96.0.2", "2")));
    t.slice_event(Event::Apply(slice("a-1", "a", &["10.244.0.5"], None)));
    assert!(t.pending());
    assert_eq!(
        t.counters(),
        Counters {
            service_changes: 2,
            endpoint_changes: 1,
            service_changes_pending: 1,
            endpoint_changes_pending: 1,
        },
        "Service b and one slice wait for the sync (a's list entry was synced)"
    );
    t.slice_event(Event::Apply(slice("a-1", "a", &["10.244.0.6"], None)));
    assert_eq!(
        t.counters().endpoint_changes_pending,
        2,
        "each slice change counts"
    );
    t.service_event(Event::Apply(svc("b", "10.96.0.3", "3")));
    assert_eq!(t.counters().service_changes_pending, 1, "a Service counts once");
    assert_eq!(t.next_sync(t1), Some(t0 + MIN));
    assert_eq!(t.take_due(t1), None, "not before minSyncPeriod");
    let t2 = t0 + MIN;
    let plan = t.take_due(t2).unwrap();
    assert_eq!(plan.kind, SyncKind::Services([key("a"), key("b")].into()));
    t.finished(t2, true);
    assert_eq!(
        t.counters(),
        Counters {
            service_changes: 3,
            endpoint_changes: 2,
            service_changes_pending: 0,
            endpoint_changes_pending: 0,
        },
        "a sync checks the pending changes out"
    );

    // After a quiet period a change is applied at once.
    let t3 = t2 + Duration::from_secs(5);
    t.service_event(Event::Delete(svc("b", "10.96.0.2", "2")));
    assert_eq!(t.next_sync(t3), Some(t2 + MIN));
    assert_eq!(
        t.take_due(t3).unwrap().kind,
        SyncKind::Services([key("b")].into())
    );
}

#[test]
fn unchanged_objects_and_unknown_deletes_are_not_changes() {
    let mut t = tracker();
    let t0 = Instant::now();
    initial_lists(&mut t, vec![svc("a", "10.96.0.1", "1")], vec![]);
    t.take_due(t0).unwrap();
    t.finished(t0, true);
    t.service_event(Event::Apply(svc("a", "10.96.0.1", "1")));
    t.service_event(Event::Delete(svc("zz", "10.96.0.9", "1")));
    assert!(!t.pending());
    assert_eq!(t.counters().service_changes, 1, "only the initial list's Service");
}

#[test]
fn periodic_resync_rebuilds_and_failures_retry_as_rebuilds() {
    let mut t = tracker();
    let t0 = Instant::now();
    initial_lists(&mut t, vec![], vec![]);
    t.take_due(t0).unwrap();
    t.finished(t0, true);
    assert_eq!(t.take_due(t0 + PERIOD - MIN), None);
    assert_eq!(t.take_due(t0 + PERIOD).unwrap().kind, SyncKind::Rebuild);

    // A failed partial sync: retried after minSyncPeriod as a rebuild.
    let t1 = t0 + PERIOD;
    t.finished(t1, true);
    t.service_event(Event::Apply(svc("a", "10.96.0.1", "1")));
    let t2 = t1 + Duration::from_secs(2);
    assert!(matches!(t.take_due(t2).unwrap().kind, SyncKind::Services(_)));
    t.finished(t2, false);
    assert!(t.pending());
    assert_eq!(t.next_sync(t2), Some(t2 + MIN));
    assert_eq!(t.take_due(t2 + MIN).unwrap().kind, SyncKind::Rebuild);
}

#[test]
fn zero_min_sync_period_still_backs_off_after_a_failure() {
    let mut t = Tracker::new(
        Timing {
            min_sync_period: Duration::ZERO,
            sync_period: PERIOD,
        },
        NodePortAddresses::default(),
        16,
    );
    let t0 = Instant::now();
    initial_lists(&mut t, vec![], vec![]);
    t.take_due(t0).unwrap();
    t.finished(t0, false);
    assert_eq!(t.next_sync(t0), Some(t0 + MIN_RETRY));
    t.take_due(t0 + MIN_RETRY).unwrap();
    t.finished(t0 + MIN_RETRY, true);
    t.service_event(Event::Apply(svc("a", "10.96.0.1", "1")));
    assert_eq!(t.next_sync(t0 + MIN_RETRY), Some(t0 + MIN_RETRY));
}

#[test]
fn relist_after_410_reports_only_the_difference() {
    let mut t = tracker();
    let t0 = Instant::now();
    initial_lists(
        &mut t,
        vec![svc("a", "10.96.0.1", "1"), svc("b", "10.96.0.2", "1")],
        vec![slice("a-1", "a", &["10.244.0.5"], None)],
    );
    t.take_due(t0).unwrap();
    t.finished(t0, true);
    // While the watch was down: b deleted, c created, a's slice changed; a itself unchanged.
    t.service_event(Event::<Service>::Init);
    t.service_event(Event::InitApply(svc("a", "10.96.0.1", "1")));
    t.service_event(Event::InitApply(svc("c", "10.96.0.3", "5")));
    assert!(!t.pending(), "a relist is applied at InitDone, atomically");
    t.service_event(Event::<Service>::InitDone);
    t.slice_event(Event::<EndpointSlice>::Init);
    t.slice_event(Event::InitApply(slice("a-1", "a", &["10.244.0.6"], None)));
    t.slice_event(Event::<EndpointSlice>::InitDone);
    let plan = t.take_due(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(
        plan.kind,
        SyncKind::Services([key("a"), key("b"), key("c")].into())
    );
    assert_eq!(t.sizes(), (2, 1));
}

#[test]
fn node_addresses_feed_node_ports_and_their_change_compares_every_service() {
    let mut t = tracker();
    let t0 = Instant::now();
    initial_lists(&mut t, vec![], vec![]);
    t.take_due(t0).unwrap();
    t.finished(t0, true);
    t.node_event(Event::Apply(node(&[
        ("Hostname", "n1"),
        ("InternalIP", "192.168.77.1"),
        ("InternalIP", "fd00::1"),
    ])));
    // Both families: the ip6 table serves NodePorts on the IPv6 address.
    let v6: std::net::IpAddr = "fd00::1".parse().unwrap();
    assert_eq!(t.node_ips(), &[Ipv4Addr::new(192, 168, 77, 1).into(), v6]);
    assert_eq!(
        t.model_config().node_ips,
        vec![Ipv4Addr::new(192, 168, 77, 1).into(), v6]
    );
    let plan = t.take_due(t0 + MIN).unwrap();
    assert_eq!(plan.kind, SyncKind::All);
    t.finished(t0 + MIN, true);
    // A status heartbeat that does not move the addresses changes nothing.
    let mut n = node(&[("InternalIP", "192.168.77.1"), ("InternalIP", "fd00::1")]);
    n.metadata.resource_version = Some("9".into());
    t.node_event(Event::Apply(n.clone()));
    assert!(!t.pending());
    assert!(t.node_eligible());
    n.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    t.node_event(Event::Apply(n));
    assert!(!t.node_eligible());
}

#[test]
fn node_port_addresses_primary_and_cidrs() {
    let local: Vec<IpAddr> = vec![
        Ipv4Addr::new(10, 0, 0, 5).into(),
        Ipv4Addr::new(172, 16, 1, 1).into(),
        "fd00:1::5".parse().unwrap(),
    ];
    let n = node(&[("ExternalIP", "203.0.113.1")]);
    // No InternalIP: primary falls back to ExternalIP.
    let p = NodePortAddresses::new(&["primary".into()], local.clone());
    assert_eq!(p.resolve(Some(&n)), vec![Ipv4Addr::new(203, 0, 113, 1)]);
    let c = NodePortAddresses::new(&["10.0.0.0/8".into()], local.clone());
    assert!(!c.primary);
    assert_eq!(c.resolve(Some(&n)), vec![Ipv4Addr::new(10, 0, 0, 5)]);
    let all = NodePortAddresses::new(&["0.0.0.0/0".into(), "primary".into()], local.clone());
    assert_eq!(all.resolve(None).len(), 2, "IPv4 CIDRs match IPv4 addresses only");
    let v6 = NodePortAddresses::new(&["fd00:1::/64".into(), "10.0.0.0/31".into()], local);
    assert_eq!(
        v6.resolve(None),
        vec!["fd00:1::5".parse::<IpAddr>().unwrap()],
        "IPv6 CIDRs match IPv6 addresses; 10.0.0.5 is outside 10.0.0.0/31"
    );
}

#[test]
fn interface_addresses_appearing_later_serve_node_ports() {
    let mut t = Tracker::new(
        Timing {
            min_sync_period: MIN,
            sync_period: Duration::from_secs(30),
        },
        NodePortAddresses::new(&["10.99.0.0/24".into()], vec![Ipv4Addr::LOCALHOST.into()]),
        16,
    );
    let t0 = Instant::now();
    initial_lists(&mut t, vec![], vec![]);
    t.take_due(t0).unwrap();
    t.finished(t0, true);
    assert!(t.node_ips().is_empty());
    let added: IpAddr = Ipv4Addr::new(10, 99, 0, 5).into();
    t.set_local_addrs(vec![Ipv4Addr::LOCALHOST.into(), added]);
    assert_eq!(t.node_ips(), &[added]);
    assert!(t.pending());
    let plan = t.take_due(t0 + MIN).unwrap();
    assert_eq!(plan.kind, SyncKind::All, "every Service's NodePorts move");
    t.finished(t0 + MIN, true);
    // An address outside the CIDRs changes nothing.
    t.set_local_addrs(vec![
        Ipv4Addr::LOCALHOST.into(),
        added,
        Ipv4Addr::new(192, 0, 2, 1).into(),
    ]);
    assert!(!t.pending());
    // The address goes: so do its NodePorts.
    t.set_local_addrs(vec![Ipv4Addr::LOCALHOST.into()]);
    assert!(t.node_ips().is_empty() && t.pending());
}

#[test]
fn trigger_times_keep_the_earliest_per_service_and_bad_ones_are_ignored() {
    let mut t = tracker();
    let t0 = Instant::now();
    initial_lists(&mut t, vec![svc("a", "10.96.0.1", "1")], vec![]);
    t.take_due(t0).unwrap();
    t.finished(t0, true);
    t.slice_event(Event::Apply(slice(
        "a-1",
        "a",
        &["10.244.0.5"],
        Some("2026-01-01T00:00:02Z"),
    )));
    t.slice_event(Event::Apply(slice(
        "a-2",
        "a",
        &["10.244.0.6"],
        Some("2026-01-01T00:00:01Z"),
    )));
    t.slice_event(Event::Apply(slice(
        "b-1",
        "b",
        &["10.244.0.7"],
        Some("yesterday"),
    )));
    let plan = t.take_due(t0 + MIN).unwrap();
    assert_eq!(
        plan.triggers,
        vec!["2026-01-01T00:00:01Z".parse::<jiff::Timestamp>().unwrap()]
    );
    assert!(t.take_due(t0 + MIN).is_none());
}

#[test]
fn partial_desired_state_equals_the_full_one_for_the_changed_services() {
    let mut t = tracker();
    let t0 = Instant::now();
    initial_lists(
        &mut t,
        vec![svc("a", "10.96.0.1", "1"), svc("b", "10.96.0.2", "1")],
        vec![
            slice("a-1", "a", &["10.244.0.5"], None),
            slice("a-2", "a", &["10.244.0.6"], None),
            slice("b-1", "b", &["10.244.0.7"], None),
        ],
    );
    t.take_due(t0).unwrap();
    t.finished(t0, true);
    // a-2 moves to b; a-1 is deleted; an orphan slice for a missing Service appears.
    t.slice_event(Event::Apply(slice("a-2", "b", &["10.244.0.6"], None)));
    t.slice_event(Event::Delete(slice("a-1", "a", &["10.244.0.5"], None)));
    t.slice_event(Event::Apply(slice("x-1", "x", &["10.244.0.9"], None)));
    let plan = t.take_due(t0 + MIN).unwrap();
    let SyncKind::Services(changed) = plan.kind else {
        panic!("expected a partial sync")
    };
    assert_eq!(changed, [key("a"), key("b"), key("x")].into());
    let full = t.desired();
    let partial = t.desired_for(&changed);
    for k in &changed {
        assert_eq!(partial.by_service.get(k), full.by_service.get(k), "{k:?}");
    }
    // a has no endpoints left: rejected; b has two.
    assert!(
        partial.by_service[&key("a")]
            .iter()
            .any(|e| matches!(e, crate::model::Element::NoEndpointService(_)))
    );
    assert!(!partial.by_service.contains_key(&key("x")));
}
