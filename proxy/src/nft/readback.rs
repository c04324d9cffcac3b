//! Read-back for adoption: netlink dumps of a table as the kernel holds it — its layout tag
//! (table userdata), rule counts per chain, every element of every fixed set, the chains and
//! named sets present, and the entries of an affinity map. [`read_back`] adopts a table with this
//! configuration's layout; the programmer decides what to send from there.

use std::collections::{BTreeMap, BTreeSet};

use knode_netlink::Socket;
use knode_netlink::attr::{attrs, str_value};
use knode_netlink::message::nft_get;

use super::elements::{SETS, affinity_name, parse_element};
use super::skeleton::{expected_rule_counts, layout_tag};
use super::{NftError, TableConfig, nfproto};
use crate::model::{Element, Ruleset, ServiceKey};

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFT_SET_ANONYMOUS: u32 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// The pseudo-Service owning adopted elements until the first diff hands them to their Services.
static ADOPTED: std::sync::LazyLock<ServiceKey> =
    std::sync::LazyLock::new(|| (String::new(), "(adopted from the kernel)".to_string()));

/// Reference counts of the shared elements programmed, by [`Element::shared_key`] (a map keyed by
/// the address alone: at 50k endpoints one keyed by the whole element took 3.6 MiB).
pub(super) type SharedCounts = std::collections::HashMap<std::net::IpAddr, u32>;

/// The chains and named sets of an existing table.
#[derive(Debug, Default)]
pub(super) struct Existing {
    pub chains: Vec<String>,
    pub sets: Vec<String>,
}

/// What [`read_back`] found in a table with this layout.
pub(super) struct Adopted {
    /// Every element, under one pseudo-Service (the first diff hands them to their Services).
    pub elements: Ruleset,
    /// Affinity timeout classes with their `service-affinity` element counts.
    pub classes: BTreeMap<u32, usize>,
    /// Shared elements, each counted once.
    pub shared: SharedCounts,
    /// The chains hold exactly the layout's rules.
    pub rules_match: bool,
}

/// A dump (or, with `dump` false, a get) of `msg` for this table's family, selected by strings.
fn get(
    sock: &mut Socket,
    config: &TableConfig,
    msg: i32,
    dump: bool,
    strings: &[(u16, &str)],
    each: impl FnMut(&[u8]),
) -> Result<(), knode_netlink::Error> {
    let family = nfproto(config.family) as u8;
    sock.request(|seq| nft_get(msg as u16, dump, seq, family, strings), each)
}

/// The table's layout tag: None when the table does not exist, Some(None) when it has none.
pub(super) fn table_tag(
    sock: &mut Socket,
    config: &TableConfig,
) -> Result<Option<Option<Vec<u8>>>, NftError> {
    let mut tag = None;
    let name = [(NFTA_TABLE_NAME, config.table_name.as_str())];
    let r = get(sock, config, libc::NFT_MSG_GETTABLE, false, &name, |a| {
        if let Some((_, p)) = attrs(a).find(|(ty, _)| *ty == NFTA_TABLE_USERDATA) {
            tag = Some(p.to_vec());
        }
    });
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(Some(tag)),
    }
}

/// The table's chains and named sets as they are in the kernel.
pub(super) fn existing_objects(sock: &mut Socket, config: &TableConfig) -> Result<Existing, NftError> {
    let name = config.table_name.as_str();
    let mut existing = Existing::default();
    get(
        sock,
        config,
        libc::NFT_MSG_GETCHAIN,
        true,
        &[(NFTA_CHAIN_TABLE, name)],
        |a| {
            let (mut table, mut chain) = (String::new(), String::new());
            for (ty, p) in attrs(a) {
                match ty {
                    NFTA_CHAIN_TABLE => table = str_value(p),
                    NFTA_CHAIN_NAME => chain = str_value(p),
                    _ => {}
                }
            }
            if table == name {
                existing.chains.push(chain);
            }
        },
    )?;
    get(
        sock,
        config,
        libc::NFT_MSG_GETSET,
        true,
        &[(NFTA_SET_TABLE, name)],
        |a| {
            let (mut table, mut set, mut flags) = (String::new(), String::new(), 0u32);
            for (ty, p) in attrs(a) {
                match ty {
                    NFTA_SET_TABLE => table = str_value(p),
                    NFTA_SET_NAME => set = str_value(p),
                    NFTA_SET_FLAGS if p.len() >= 4 => flags = u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                    _ => {}
                }
            }
            // Anonymous sets belong to their rules and go with them.
            if table == name && flags & NFT_SET_ANONYMOUS == 0 {
                existing.sets.push(set);
            }
        },
    )?;
    Ok(existing)
}

/// Rules per chain as the kernel holds them.
fn rule_counts(sock: &mut Socket, config: &TableConfig) -> Result<BTreeMap<String, usize>, NftError> {
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    let table = [(NFTA_RULE_TABLE, config.table_name.as_str())];
    get(sock, config, libc::NFT_MSG_GETRULE, true, &table, |a| {
        for (ty, p) in attrs(a) {
            if ty == NFTA_RULE_CHAIN {
                *rules.entry(str_value(p)).or_insert(0) += 1;
            }
        }
    })?;
    Ok(rules)
}

/// Dumps the elements of set `set`, each as (key, data, verdict chain) to `each`.
fn dump_set(
    sock: &mut Socket,
    config: &TableConfig,
    set: &str,
    mut each: impl FnMut(&[u8], Option<&[u8]>, Option<String>),
) -> Result<(), knode_netlink::Error> {
    let strings = [
        (NFTA_SET_ELEM_LIST_TABLE, config.table_name.as_str()),
        (NFTA_SET_ELEM_LIST_SET, set),
    ];
    get(sock, config, libc::NFT_MSG_GETSETELEM, true, &strings, |a| {
        for (_, list) in attrs(a).filter(|(ty, _)| *ty == NFTA_SET_ELEM_LIST_ELEMENTS) {
            for (_, elem) in attrs(list).filter(|(ty, _)| *ty == NFTA_LIST_ELEM) {
                let (key, data, chain) = element_attrs(elem);
                if let Some(key) = key {
                    each(key, data, chain);
                }
            }
        }
    })
}

/// An element's key value, data value and verdict chain.
fn element_attrs(elem: &[u8]) -> (Option<&[u8]>, Option<&[u8]>, Option<String>) {
    let value = |p| attrs(p).find(|(t, _)| *t == NFTA_DATA_VALUE).map(|x| x.1);
    let (mut key, mut data, mut chain) = (None, None, None);
    for (ty, p) in attrs(elem) {
        match ty {
            NFTA_SET_ELEM_KEY => key = value(p),
            NFTA_SET_ELEM_DATA => {
                data = value(p);
                chain = attrs(p)
                    .filter(|(t, _)| *t == NFTA_DATA_VERDICT)
                    .flat_map(|(_, v)| attrs(v))
                    .find(|(t, _)| *t == NFTA_VERDICT_CHAIN)
                    .map(|x| str_value(x.1));
            }
            _ => {}
        }
    }
    (key, data, chain)
}

/// The keys of the entries of affinity class `timeout`'s map whose (key, data) `select` picks.
pub(super) fn affinity_keys(
    sock: &mut Socket,
    config: &TableConfig,
    timeout: u32,
    select: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<Vec<Vec<u8>>, NftError> {
    let mut keys = Vec::new();
    dump_set(sock, config, &affinity_name(timeout), |k, d, _| {
        if d.is_some_and(|d| select(k, d)) {
            keys.push(k.to_vec());
        }
    })?;
    Ok(keys)
}

/// Reads the table back: None unless it exists with this configuration's layout tag and every
/// set of the layout.
pub(super) fn read_back(sock: &mut Socket, config: &TableConfig) -> Result<Option<Adopted>, NftError> {
    let Some(tag) = table_tag(sock, config)? else {
        return Ok(None);
    };
    if tag.as_deref() != Some(layout_tag(config).as_bytes()) {
        tracing::info!("existing table has another layout; replacing it");
        return Ok(None);
    }
    let rules = rule_counts(sock, config)?;
    let mut elements = BTreeSet::new();
    for spec in &SETS {
        let r = dump_set(sock, config, spec.name, |k, d, chain| {
            match parse_element(spec.name, config.family, k, d, chain.as_deref()) {
                Some(e) => {
                    elements.insert(e);
                }
                None => tracing::debug!(set = spec.name, "ignoring an element that is not one of ours"),
            }
        });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                tracing::info!(
                    set = spec.name,
                    "a set of the layout is missing; replacing the table"
                );
                return Ok(None);
            }
            r => r?,
        }
    }
    let mut classes: BTreeMap<u32, usize> = BTreeMap::new();
    for e in &elements {
        if let Element::AffinityService { timeout, .. } = e {
            *classes.entry(*timeout).or_insert(0) += 1;
        }
    }
    let expected = expected_rule_counts(config, classes.keys())?;
    if rules != expected {
        tracing::debug!(found = ?rules, expected = ?expected, "table rules differ from the layout");
    }
    let shared = elements
        .iter()
        .filter_map(Element::shared_key)
        .map(|k| (k, 1))
        .collect();
    Ok(Some(Adopted {
        elements: Ruleset {
            by_service: [(ADOPTED.clone(), elements.into_iter().collect())].into(),
        },
        classes,
        shared,
        rules_match: rules == expected,
    }))
}
