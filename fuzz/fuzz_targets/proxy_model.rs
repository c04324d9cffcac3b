//! kube-proxy's model: Services and EndpointSlices as the API serves them → the desired nftables
//! map/set elements, the diff against what is programmed, and the netlink encoding of each element
//! (whose inverse is what adoption reads back after a restart).
//!
//! Input: JSON `{"services": [...], "slices": [...], "nodeIPs": [...], "nodeName": "..."}`.
#![no_main]

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_proxy::diff::diff;
use kube_proxy::model::{Element, Family, ModelConfig, Ruleset, desired_ruleset};
use kube_proxy::nft::{affinity_name, affinity_record_name, element_bytes, parse_element};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    #[serde(default)]
    services: Vec<Service>,
    #[serde(default)]
    slices: Vec<EndpointSlice>,
    #[serde(default, rename = "nodeIPs")]
    node_ips: Vec<IpAddr>,
    node_name: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Input>(data) else {
        return;
    };
    let config = ModelConfig {
        node_ips: input.node_ips,
        node_name: input.node_name,
        ..ModelConfig::default()
    };
    let desired = desired_ruleset(&input.services, &input.slices, &config);
    assert_eq!(
        desired,
        desired_ruleset(&input.services, &input.slices, &config),
        "the model is deterministic"
    );

    // From an empty table everything is added; against itself nothing changes.
    let from_empty = diff(&Ruleset::default(), &desired);
    assert!(from_empty.delete.is_empty());
    assert_eq!(
        from_empty.add.iter().collect::<BTreeSet<_>>().len(),
        desired.all().len(),
        "every desired element is added once"
    );
    assert!(diff(&desired, &desired).is_empty(), "no change against itself");
    let v4 = desired.family(Family::V4, None);
    let v6 = desired.family(Family::V6, None);
    assert_eq!(
        v4.len() + v6.len(),
        desired.len(),
        "every element is of one family"
    );

    // Encoding then decoding an element (adoption after a restart) gives it back.
    for e in desired.all() {
        let (k, d) = element_bytes(&e);
        let chain = match e {
            Element::AffinityService { timeout, .. } => Some(affinity_name(timeout)),
            Element::AffinityRecord { timeout, .. } => Some(affinity_record_name(timeout)),
            _ => None,
        };
        assert_eq!(
            parse_element(e.set_name(), e.family(), &k, d.as_deref(), chain.as_deref()),
            Some(e),
            "netlink encoding round trip"
        );
    }
});
