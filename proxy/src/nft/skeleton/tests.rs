//! The skeleton, checked without a kernel: chain order and hooks, rule counts, references.

use std::collections::BTreeSet;

use nftnl::nftnl_sys as sys;

use super::*;

fn v4() -> TableConfig {
    TableConfig::default()
}

fn names(s: &Skeleton) -> Vec<&str> {
    s.chains.iter().map(|c| c.name.as_str()).collect()
}

fn chain<'a>(s: &'a Skeleton, name: &str) -> &'a ChainSpec {
    s.chains.iter().find(|c| c.name == name).unwrap()
}

/// The sets a chain's rules look up, in order.
fn lookups(c: &ChainSpec) -> Vec<&str> {
    c.rules
        .iter()
        .flatten()
        .filter(|e| e.kind() == "lookup")
        .filter_map(RawExpr::target)
        .collect()
}

#[test]
fn chains_come_in_dependency_order_with_upstreams_hooks() {
    let s = skeleton(&v4()).unwrap();
    assert_eq!(
        names(&s),
        [
            "nat-prerouting",
            "nat-output",
            "nat-postrouting",
            "firewall-check",
            "filter-prerouting",
            "filter-input",
            "filter-forward",
            "filter-output",
        ]
    );
    let hook = |n: &str| chain(&s, n).base.map(|b| (b.hook, b.priority, b.kind));
    assert_eq!(
        hook("nat-prerouting"),
        Some((Hook::PreRouting, -100, ChainType::Nat))
    );
    assert_eq!(hook("nat-output"), Some((Hook::Out, -100, ChainType::Nat)));
    assert_eq!(
        hook("nat-postrouting"),
        Some((Hook::PostRouting, 100, ChainType::Nat))
    );
    assert_eq!(hook("firewall-check"), None);
    for (n, h) in [
        ("filter-prerouting", Hook::PreRouting),
        ("filter-input", Hook::In),
        ("filter-forward", Hook::Forward),
        ("filter-output", Hook::Out),
    ] {
        assert_eq!(hook(n), Some((h, -110, ChainType::Filter)), "{n}");
    }
    assert_eq!(s.sets.len(), SETS.len());
}

#[test]
fn rule_counts_per_chain_are_the_layouts() {
    let counts = |config: &TableConfig| expected_rule_counts(config, &[]).unwrap();
    let want = |nat: usize, firewall: usize| {
        [
            ("filter-forward", 2),
            ("filter-input", 2),
            ("filter-output", 3),
            ("filter-prerouting", 1),
            ("firewall-check", firewall),
            ("nat-output", nat),
            ("nat-postrouting", 3),
            ("nat-prerouting", nat),
        ]
        .into_iter()
        .map(|(c, n)| (c.to_string(), n))
        .collect::<BTreeMap<_, _>>()
    };
    // Marks (external, node-local to Local policy), affinity dispatch, 4 choices; one
    // firewall rule per prefix length and the drop.
    assert_eq!(counts(&v4()), want(7, 34));
    let cidr = TableConfig {
        cluster_cidr: Some(("10.244.0.0".parse().unwrap(), 16)),
        ..v4()
    };
    assert_eq!(counts(&cidr), want(8, 34));
    let all = TableConfig {
        masquerade_all: true,
        ..v4()
    };
    assert_eq!(counts(&all), want(8, 34));
    let v6 = TableConfig {
        family: Family::V6,
        ..v4()
    };
    assert_eq!(counts(&v6), want(7, 130));
    // Each affinity class adds its two one-rule chains.
    let with_classes = expected_rule_counts(&v4(), &[10, 600]).unwrap();
    assert_eq!(with_classes.len(), 8 + 4);
    assert_eq!(with_classes["affinity-600"], 1);
    assert_eq!(with_classes["affinity-record-10"], 1);
}

#[test]
fn rules_refer_only_to_sets_of_the_layout_and_chains_written_before() {
    for family in [Family::V4, Family::V6] {
        let s = skeleton(&TableConfig { family, ..v4() }).unwrap();
        let mut written = BTreeSet::new();
        for c in &s.chains {
            for e in c.rules.iter().flatten() {
                match e.kind() {
                    "lookup" => {
                        let set = e.target().unwrap();
                        let spec = set_spec(set);
                        assert_eq!(spec.name, set, "{} looks up an unknown set", c.name);
                        assert_eq!(e.u32_attr(sys::NFTNL_EXPR_LOOKUP_SET_ID), Some(spec.id));
                    }
                    "immediate" => {
                        if let Some(target) = e.target() {
                            assert!(written.contains(target), "{} jumps to {target}", c.name);
                        }
                    }
                    _ => {}
                }
            }
            written.insert(c.name.as_str());
        }
    }
}

#[test]
fn bucket_maps_are_drawn_with_their_moduli_large_before_small() {
    let s = skeleton(&TableConfig { buckets: 8, ..v4() }).unwrap();
    for name in ["nat-prerouting", "nat-output"] {
        let c = chain(&s, name);
        let moduli: Vec<u32> = c
            .rules
            .iter()
            .flatten()
            .filter(|e| e.kind() == "numgen")
            .filter_map(|e| e.u32_attr(sys::NFTNL_EXPR_NG_MODULUS))
            .collect();
        assert_eq!(moduli, [8, LARGE_BUCKETS, 8], "{name}");
        let maps: Vec<&str> = lookups(c)
            .into_iter()
            .filter(|s| s.starts_with("service-endpoints"))
            .collect();
        assert_eq!(
            maps,
            [
                SERVICE_ENDPOINTS_LOCAL,
                SERVICE_ENDPOINTS_LARGE,
                SERVICE_ENDPOINTS
            ]
        );
    }
}

#[test]
fn clusterip_traffic_is_marked_only_with_a_cluster_cidr_or_masquerade_all() {
    let marks = |config: TableConfig| {
        let s = skeleton(&config).unwrap();
        let c = chain(&s, "nat-prerouting");
        // The rule that looks up service-ips, and whether it compares the source (cmp NEQ).
        c.rules
            .iter()
            .find(|r| r.iter().any(|e| e.target() == Some(SERVICE_IPS)))
            .map(|r| {
                r.iter()
                    .any(|e| e.kind() == "cmp" && e.u32_attr(sys::NFTNL_EXPR_CMP_OP) == Some(1))
            })
    };
    assert_eq!(marks(v4()), None);
    let cidr = Some(("10.244.0.0".parse().unwrap(), 16));
    assert_eq!(
        marks(TableConfig {
            cluster_cidr: cidr,
            ..v4()
        }),
        Some(true)
    );
    assert_eq!(
        marks(TableConfig {
            masquerade_all: true,
            cluster_cidr: cidr,
            ..v4()
        }),
        Some(false)
    );
}

#[test]
fn node_traffic_to_local_policy_destinations_is_marked_in_output_unconditionally() {
    let s = skeleton(&v4()).unwrap();
    let rule_kinds = |chain_name: &str| -> Vec<String> {
        let c = chain(&s, chain_name);
        let r = c
            .rules
            .iter()
            .find(|r| {
                r.iter().any(|e| e.target() == Some(EXTERNAL_LOCAL_SERVICES))
                    && r.iter().any(|e| e.kind() == "meta")
                    && !r.iter().any(|e| e.kind() == "immediate")
            })
            .unwrap();
        r.iter().map(|e| e.kind().to_string()).collect()
    };
    // In prerouting only traffic from the node itself (fib saddr type local) is marked.
    assert_eq!(rule_kinds("nat-prerouting")[..2], ["fib", "cmp"]);
    assert_eq!(rule_kinds("nat-output")[0], "payload");
}

#[test]
fn affinity_chains_dnat_from_and_record_into_their_class_map() {
    for family in [Family::V4, Family::V6] {
        let [hit, record] = affinity_chains(family, 600).unwrap();
        assert_eq!(
            (hit.name.as_str(), record.name.as_str()),
            ("affinity-600", "affinity-record-600")
        );
        assert!(hit.base.is_none() && record.base.is_none());
        assert_eq!(lookups(&hit), ["affinity-600"]);
        assert_eq!(hit.rules[0].last().map(RawExpr::kind), Some("nat"));
        let update = record.rules[0].last().unwrap();
        assert_eq!((update.kind(), update.target()), ("dynset", Some("affinity-600")));
        assert_eq!(
            update.u32_attr(sys::NFTNL_EXPR_DYNSET_SET_ID),
            Some(affinity_set_id(600))
        );
    }
}

#[test]
fn the_layout_tag_names_everything_that_shapes_the_skeleton() {
    let tag = layout_tag(&v4());
    assert!(tag.starts_with("knode kube-proxy layout 2;"), "{tag}");
    for other in [
        TableConfig { buckets: 8, ..v4() },
        TableConfig {
            masquerade_all: true,
            ..v4()
        },
        TableConfig {
            family: Family::V6,
            ..v4()
        },
        TableConfig {
            cluster_cidr: Some(("10.244.0.0".parse().unwrap(), 16)),
            ..v4()
        },
    ] {
        assert_ne!(layout_tag(&other), tag, "{other:?}");
    }
    // The table name is not part of the layout.
    let renamed = TableConfig {
        table_name: "other".into(),
        ..v4()
    };
    assert_eq!(layout_tag(&renamed), tag);
}
