//! Desired vs. programmed ruleset → the minimal change set (pure).
//!
//! Elements are compared whole: a map element whose value changed (a bucket moved to another
//! endpoint) is a delete of the old element plus an add of the new one, sent in the same netlink
//! batch (one transaction), so no packet sees the bucket empty. Deletes come first in the batch
//! because re-adding an existing key would fail with EEXIST.
//!
//! [`diff`] compares everything (a full resync); [`diff_services`] compares only the Services named,
//! so a watch event costs O(that Service's elements), flat in cluster size.

use std::collections::BTreeSet;

use crate::model::{Element, ElementSet, Ruleset, ServiceKey};

/// What to send to the kernel to turn `programmed` into `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub delete: Vec<Element>,
    pub add: Vec<Element>,
}

impl ChangeSet {
    /// True when nothing needs to be sent.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }

    /// Number of element operations.
    pub fn len(&self) -> usize {
        self.delete.len() + self.add.len()
    }

    fn push_service(&mut self, old: Option<&ElementSet>, new: Option<&ElementSet>) {
        let empty = ElementSet::default();
        let old = old.unwrap_or(&empty);
        let new = new.unwrap_or(&empty);
        if old == new {
            return;
        }
        self.delete.extend(old.difference(new));
        self.add.extend(new.difference(old));
    }
}

/// The element operations that turn `programmed` into `desired`, over every Service.
pub fn diff(programmed: &Ruleset, desired: &Ruleset) -> ChangeSet {
    let keys: BTreeSet<&ServiceKey> = programmed
        .by_service
        .keys()
        .chain(desired.by_service.keys())
        .collect();
    let mut out = ChangeSet::default();
    for k in keys {
        out.push_service(programmed.by_service.get(k), desired.by_service.get(k));
    }
    dedupe_moves(out)
}

/// The element operations for the named Services only (the rest is assumed unchanged).
pub fn diff_services(programmed: &Ruleset, desired: &Ruleset, changed: &BTreeSet<ServiceKey>) -> ChangeSet {
    let mut out = ChangeSet::default();
    for k in changed {
        out.push_service(programmed.by_service.get(k), desired.by_service.get(k));
    }
    dedupe_moves(out)
}

/// An element that moves from one Service to another (e.g. an external IP reassigned) shows up as
/// both a delete and an add; it is already programmed, so neither is sent. Shared elements
/// ([`Element::is_shared`]) are left as they are: the programmer reference-counts them.
fn dedupe_moves(mut c: ChangeSet) -> ChangeSet {
    if c.delete.is_empty() || c.add.is_empty() {
        return c;
    }
    let deleted: BTreeSet<Element> = c.delete.iter().filter(|e| !e.is_shared()).copied().collect();
    let added: BTreeSet<Element> = c.add.iter().filter(|e| !e.is_shared()).copied().collect();
    c.delete.retain(|e| !added.contains(e));
    c.add.retain(|e| !deleted.contains(e));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Destination, Protocol};
    use std::net::{IpAddr, Ipv4Addr};

    fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn ep(svc: u8, bucket: u32, endpoint: u8) -> Element {
        Element::ServiceEndpoint {
            dst: Destination {
                ip: ip4(10, 96, 0, svc),
                protocol: Protocol::Tcp,
                port: 80,
            },
            bucket,
            endpoint: ip4(10, 244, 0, endpoint),
            endpoint_port: 8080,
        }
    }

    fn key(name: &str) -> ServiceKey {
        ("default".to_string(), name.to_string())
    }

    fn ruleset(services: &[(&str, &[Element])]) -> Ruleset {
        Ruleset {
            by_service: services
                .iter()
                .map(|(n, els)| (key(n), els.iter().copied().collect()))
                .collect(),
        }
    }

    #[test]
    fn identical_rulesets_need_nothing() {
        let r = ruleset(&[("a", &[ep(1, 0, 1), ep(1, 1, 2)])]);
        assert!(diff(&r, &r).is_empty());
    }

    #[test]
    fn moved_bucket_is_delete_plus_add_of_only_that_element() {
        let old = ruleset(&[("a", &[ep(1, 0, 1), ep(1, 1, 2)]), ("b", &[ep(2, 0, 3)])]);
        let new = ruleset(&[("a", &[ep(1, 0, 1), ep(1, 1, 1)]), ("b", &[ep(2, 0, 3)])]);
        let c = diff(&old, &new);
        assert_eq!(c.delete, vec![ep(1, 1, 2)]);
        assert_eq!(c.add, vec![ep(1, 1, 1)]);
        assert_eq!(c.len(), 2);
        assert_eq!(diff_services(&old, &new, &[key("a")].into()), c);
        assert!(diff_services(&old, &new, &[key("b")].into()).is_empty());
    }

    #[test]
    fn removed_service_deletes_all_its_elements() {
        let old = ruleset(&[("a", &[ep(1, 0, 1)]), ("b", &[ep(2, 0, 3), ep(2, 1, 4)])]);
        let new = ruleset(&[("a", &[ep(1, 0, 1)])]);
        let c = diff(&old, &new);
        assert_eq!(c.delete, vec![ep(2, 0, 3), ep(2, 1, 4)]);
        assert!(c.add.is_empty());
    }

    #[test]
    fn element_moving_between_services_is_not_resent() {
        let ip = Element::ClusterIp(ip4(10, 96, 0, 1));
        let old = ruleset(&[("a", &[ip])]);
        let new = ruleset(&[("b", &[ip])]);
        assert!(diff(&old, &new).is_empty());
    }

    #[test]
    fn shared_elements_are_not_deduplicated_between_services() {
        let hp = Element::HairpinEndpoint(ip4(10, 244, 0, 1));
        let old = ruleset(&[("a", &[hp])]);
        let new = ruleset(&[("b", &[hp]), ("c", &[hp])]);
        let c = diff(&old, &new);
        // One release and two holds: the programmer's reference count ends at 2.
        assert_eq!(c.delete, vec![hp]);
        assert_eq!(c.add, vec![hp, hp]);
    }

    #[test]
    fn from_empty_adds_everything() {
        let new = ruleset(&[("a", &[ep(1, 0, 1), Element::ClusterIp(ip4(10, 96, 0, 1))])]);
        let c = diff(&Ruleset::default(), &new);
        assert!(c.delete.is_empty());
        assert_eq!(c.add.len(), 2);
    }
}
