//! The fixed skeleton of the table — its chains and their rules — as a pure function of the
//! [`TableConfig`] ([`skeleton`]), plus the two chains of one session-affinity timeout class
//! ([`affinity_chains`]). Nothing here touches the kernel: [`super::batch`] encodes what these
//! functions compute, and [`super::programmer`] decides when to send it. The rules are written
//! out, with the layout, in proxy/README.md.
//!
//! Register use in the DNAT rules: client address at 0, destination (address . protocol . port)
//! after it, the bucket and then the chosen endpoint (address . port) after that.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nftnl::{ChainType, Hook};

use super::elements::{
    SETS, SetSpec, addr_bytes, affinity_name, affinity_record_name, affinity_set_id, set_spec,
};
use super::expr::{
    REG_VERDICT, REG1, REG32_00, RawExpr, all_ones, aw, bitwise, bitwise_bytes, cmp, ct, ct_dst_ip,
    ct_original, daddr, dnat_to, dport, dynset_update, fib_saddr_type, immediate, jump, lookup,
    masquerade_fully_random, meta_load, meta_store, numgen, reg, reject_port_unreachable, saddr, saddr_daddr,
    verdict,
};
use super::{MASQUERADE_MARK, NftError, TableConfig};
use crate::model::{
    EXTERNAL_LOCAL_SERVICES, EXTERNAL_SERVICES, FIREWALL_ALLOW, FIREWALL_IPS, Family, HAIRPIN_ENDPOINTS,
    LARGE_BUCKETS, NO_ENDPOINT_SERVICES, NO_LOCAL_ENDPOINT_SERVICES, SERVICE_AFFINITY,
    SERVICE_AFFINITY_RECORD, SERVICE_ENDPOINTS, SERVICE_ENDPOINTS_LARGE, SERVICE_ENDPOINTS_LOCAL,
    SERVICE_IPS, mask_ip,
};

/// Upstream's NAT chain priority (dstnat) and srcnat priority.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;
/// Upstream's filter chain priority: dstnat - 10.
const FILTER_PRIORITY: i32 = -110;
/// `IPS_DST_NAT` (conntrack status bit) and `NF_CT_STATE_BIT(IP_CT_NEW)`.
const IPS_DST_NAT: u32 = 1 << 5;
const CT_STATE_NEW: u32 = 1 << 3;

/// One rule: its expressions in order.
pub(super) type RuleExprs = Vec<RawExpr>;

/// Where a base chain hooks in (policy accept, as every base chain of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    pub kind: ChainType,
}

/// A chain and its rules; `base` is None for chains only jumped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChainSpec {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<RuleExprs>,
}

/// The fixed part of a table: every set of the layout and every chain, in the order they are
/// written (a chain is written after the sets and chains its rules refer to).
#[derive(Debug, Clone)]
pub(super) struct Skeleton {
    pub sets: &'static [SetSpec],
    pub chains: Vec<ChainSpec>,
}

fn base(name: &str, hook: Hook, priority: i32, kind: ChainType, rules: Vec<RuleExprs>) -> ChainSpec {
    ChainSpec {
        name: name.to_string(),
        base: Some(BaseChain { hook, priority, kind }),
        rules,
    }
}

fn regular(name: &str, rules: Vec<RuleExprs>) -> ChainSpec {
    ChainSpec {
        name: name.to_string(),
        base: None,
        rules,
    }
}

/// Sets, chains and rules: fixed for a configuration (the affinity classes' maps and chains come
/// and go with their elements; see [`affinity_chains`]).
pub(super) fn skeleton(config: &TableConfig) -> Result<Skeleton, NftError> {
    let mut chains = nat_chains(config)?;
    chains.push(nat_postrouting(config.family)?);
    chains.extend(filter_chains(config.family)?);
    Ok(Skeleton { sets: &SETS, chains })
}

/// What identifies this build's table layout for a configuration (stored as table userdata and
/// checked before a table is adopted).
pub(super) fn layout_tag(config: &TableConfig) -> String {
    format!(
        "knode kube-proxy layout 2; family {:?}; buckets {}; masquerade-all {}; cluster-cidr {:?}",
        config.family,
        config.buckets.max(1),
        config.masquerade_all,
        config.cluster_cidr
    )
}

/// Rules per chain of a table with this configuration and these affinity timeout classes.
pub(super) fn expected_rule_counts<'a>(
    config: &TableConfig,
    classes: impl IntoIterator<Item = &'a u32>,
) -> Result<BTreeMap<String, usize>, NftError> {
    let mut chains = skeleton(config)?.chains;
    for t in classes {
        chains.extend(affinity_chains(config.family, *t)?);
    }
    Ok(chains.into_iter().map(|c| (c.name, c.rules.len())).collect())
}

/// Looks the key in `sreg` up in the fixed set `name`.
fn set_lookup(name: &str, sreg: u32, dreg: Option<u32>) -> Result<RawExpr, NftError> {
    lookup(name, set_spec(name).id, sreg, dreg)
}

/// `ip daddr . meta l4proto . th dport` into 32-bit registers from `base` (address: 1 register
/// for IPv4, 4 for IPv6; then protocol and port).
fn load_destination_at(f: Family, base: u32) -> RuleExprs {
    let a = aw(f);
    vec![
        daddr(f, reg(base)),
        meta_load(libc::NFT_META_L4PROTO, reg(base + a)),
        dport(reg(base + a + 1)),
    ]
}

/// `<dst> @<set>`: the destination is an element of the fixed set `set`.
fn destination_in(f: Family, set: &str) -> Result<RuleExprs, NftError> {
    let mut r = load_destination_at(f, 0);
    r.push(set_lookup(set, REG32_00, None)?);
    Ok(r)
}

/// `meta mark set meta mark | 0x4000`
fn mark_for_masquerade() -> [RawExpr; 3] {
    [
        meta_load(libc::NFT_META_MARK, REG1),
        bitwise(REG1, !MASQUERADE_MARK, MASQUERADE_MARK),
        meta_store(libc::NFT_META_MARK, REG1),
    ]
}

/// `ct status dnat`
fn dnat_done() -> [RawExpr; 3] {
    [
        ct(libc::NFT_CT_STATUS, REG1),
        bitwise(REG1, IPS_DST_NAT, 0),
        cmp(libc::NFT_CMP_NEQ, REG1, &0u32.to_ne_bytes()),
    ]
}

/// Where the endpoint (or bucket) goes in rules that load the client address at 0 and the
/// destination after it.
fn endpoint_reg(f: Family) -> u32 {
    2 * aw(f) + 2
}

/// `fib saddr type local` (`op` EQ) or `!= local` (NEQ).
fn fib_local(op: i32) -> [RawExpr; 2] {
    [
        fib_saddr_type(),
        cmp(op, REG1, &u32::from(libc::RTN_LOCAL).to_ne_bytes()),
    ]
}

/// `ip saddr != <net>/<len>` (in the 16-byte scratch register, which holds either family).
fn source_outside(f: Family, net: IpAddr, len: u8) -> [RawExpr; 3] {
    let mask = addr_bytes(&mask_ip(all_ones(f), len));
    let net = addr_bytes(&mask_ip(net, len));
    [
        saddr(f, REG1),
        bitwise_bytes(REG1, &mask, &vec![0; mask.len()]),
        cmp(libc::NFT_CMP_NEQ, REG1, &net),
    ]
}

/// Conditions of "external" traffic for the Local traffic policy: not from a pod (source outside
/// `--cluster-cidr`, when known) and not from the node itself (`fib saddr type != local`).
/// Uses the 128-bit scratch register, so it must precede the loads into registers 0..5.
fn external_source(config: &TableConfig) -> RuleExprs {
    let mut r = Vec::new();
    if let Some((net, len)) = config.cluster_cidr {
        r.extend(source_outside(config.family, net, len));
    }
    r.extend(fib_local(libc::NFT_CMP_NEQ));
    r
}

/// Which endpoint map a DNAT rule draws from.
#[derive(Clone, Copy)]
enum Pick {
    Large,
    Small,
    /// Node-local endpoints of Local-policy destinations, for external sources only.
    Local,
}

/// One DNAT rule: pick a bucket with `numgen`, look the endpoint up in the map (a miss ends the
/// rule) and DNAT to it.
fn dnat_rule(pick: Pick, config: &TableConfig) -> Result<RuleExprs, NftError> {
    let (map, modulus) = match pick {
        Pick::Large => (SERVICE_ENDPOINTS_LARGE, LARGE_BUCKETS),
        Pick::Small => (SERVICE_ENDPOINTS, config.buckets.max(1)),
        Pick::Local => (SERVICE_ENDPOINTS_LOCAL, config.buckets.max(1)),
    };
    let mut r = Vec::new();
    if matches!(pick, Pick::Local) {
        r.extend(external_source(config));
    }
    let f = config.family;
    let ep = endpoint_reg(f);
    r.push(saddr(f, reg(0)));
    r.extend(load_destination_at(f, aw(f)));
    r.push(numgen(modulus, reg(ep)));
    r.push(set_lookup(map, reg(aw(f)), Some(reg(ep)))?);
    r.push(dnat_to(f, ep));
    Ok(r)
}

/// The endpoint-choosing rules: Local policy first, then the large and the small map. External
/// traffic to a Local-policy destination that found no local endpoint stops after the first (no
/// DNAT); `no-local-endpoint-services` then drops it in the filter chains, as upstream.
fn choice_rules(config: &TableConfig) -> Result<Vec<RuleExprs>, NftError> {
    let mut local_policy_stop = external_source(config);
    local_policy_stop.extend(destination_in(config.family, EXTERNAL_LOCAL_SERVICES)?);
    local_policy_stop.push(verdict(libc::NF_ACCEPT));
    Ok(vec![
        dnat_rule(Pick::Local, config)?,
        local_policy_stop,
        // Large map first: a lookup miss ends the rule and falls through to the small map.
        dnat_rule(Pick::Large, config)?,
        dnat_rule(Pick::Small, config)?,
    ])
}

/// The masquerade marks of nat-prerouting and of nat-output. Node-originated traffic to a
/// Local-policy destination is masqueraded (upstream: "masquerade local traffic"); it then goes
/// to any endpoint.
fn masquerade_marks(config: &TableConfig) -> Result<(Vec<RuleExprs>, Vec<RuleExprs>), NftError> {
    let f = config.family;
    let marked = |set: &str, condition: &[RawExpr]| -> Result<RuleExprs, NftError> {
        let mut r = destination_in(f, set)?;
        r.extend_from_slice(condition);
        r.extend(mark_for_masquerade());
        Ok(r)
    };
    let mut marks = Vec::new();
    if config.masquerade_all || config.cluster_cidr.is_some() {
        let outside = match (config.masquerade_all, config.cluster_cidr) {
            (false, Some((net, len))) => source_outside(f, net, len).to_vec(),
            _ => Vec::new(),
        };
        marks.push(marked(SERVICE_IPS, &outside)?);
    }
    marks.push(marked(EXTERNAL_SERVICES, &[])?);
    let local = marked(EXTERNAL_LOCAL_SERVICES, &[])?;
    let mut output = marks.clone();
    output.push(local.clone());
    let mut from_node = fib_local(libc::NFT_CMP_EQ).to_vec();
    from_node.extend(local);
    marks.push(from_node);
    Ok((marks, output))
}

/// nat-prerouting and nat-output: mark what must be masqueraded, then DNAT through the flat
/// maps (session affinity first).
fn nat_chains(config: &TableConfig) -> Result<Vec<ChainSpec>, NftError> {
    let (prerouting, output) = masquerade_marks(config)?;
    let mut dispatch = load_destination_at(config.family, 0);
    dispatch.push(set_lookup(SERVICE_AFFINITY, REG32_00, Some(REG_VERDICT))?);
    let choices = choice_rules(config)?;
    let rules = |marks: Vec<RuleExprs>| -> Vec<RuleExprs> {
        marks
            .into_iter()
            .chain([dispatch.clone()])
            .chain(choices.iter().cloned())
            .collect()
    };
    Ok(vec![
        base(
            "nat-prerouting",
            Hook::PreRouting,
            DSTNAT,
            ChainType::Nat,
            rules(prerouting),
        ),
        base("nat-output", Hook::Out, DSTNAT, ChainType::Nat, rules(output)),
    ])
}

/// nat-postrouting: record session affinity, masquerade what was marked, and hairpin.
fn nat_postrouting(f: Family) -> Result<ChainSpec, NftError> {
    // Session affinity: record the endpoint of each new connection to an affinity destination
    // (looked up by the original destination; before the masquerade rules, which end the chain).
    let mut record = dnat_done().to_vec();
    record.extend([
        ct_original(ct_dst_ip(f), REG32_00),
        meta_load(libc::NFT_META_L4PROTO, reg(aw(f))),
        ct_original(libc::NFT_CT_PROTO_DST, reg(aw(f) + 1)),
        set_lookup(SERVICE_AFFINITY_RECORD, REG32_00, Some(REG_VERDICT))?,
    ]);
    // Masquerade what was marked, clearing the mark first so it does not leak further.
    let masquerade = vec![
        meta_load(libc::NFT_META_MARK, REG1),
        bitwise(REG1, MASQUERADE_MARK, 0),
        cmp(libc::NFT_CMP_EQ, REG1, &MASQUERADE_MARK.to_ne_bytes()),
        meta_load(libc::NFT_META_MARK, REG1),
        bitwise(REG1, !MASQUERADE_MARK, 0),
        meta_store(libc::NFT_META_MARK, REG1),
        masquerade_fully_random(),
    ];
    // Hairpin (after the marked traffic): a pod DNATed to itself (source == destination after
    // DNAT) is masqueraded, or its own reply would not come back through the node (upstream
    // marks it in the endpoint chain).
    let mut hairpin = dnat_done().to_vec();
    hairpin.extend([
        saddr_daddr(f, REG32_00),
        set_lookup(HAIRPIN_ENDPOINTS, REG32_00, None)?,
        masquerade_fully_random(),
    ]);
    let rules = vec![record, masquerade, hairpin];
    Ok(base(
        "nat-postrouting",
        Hook::PostRouting,
        SRCNAT,
        ChainType::Nat,
        rules,
    ))
}

/// loadBalancerSourceRanges: new connections to a firewalled LoadBalancer destination pass only
/// from an allowed network. The allow set is exact-match, so one rule per prefix length masks
/// the source and looks (destination . network . length) up; the last rule drops.
fn firewall_check(f: Family) -> Result<ChainSpec, NftError> {
    let (a, bits) = (aw(f), 8 * f.addr_len() as u32);
    let mut rules = Vec::new();
    for prefix in 0..=bits {
        let mut r = load_destination_at(f, 0);
        let mask = addr_bytes(&mask_ip(all_ones(f), prefix as u8));
        r.push(saddr(f, reg(a + 2)));
        r.push(bitwise_bytes(reg(a + 2), &mask, &vec![0; mask.len()]));
        r.push(immediate(reg(2 * a + 2), &prefix.to_ne_bytes()));
        r.push(set_lookup(FIREWALL_ALLOW, REG32_00, None)?);
        r.push(verdict(libc::NF_ACCEPT));
        rules.push(r);
    }
    rules.push(vec![verdict(libc::NF_DROP)]);
    Ok(regular("firewall-check", rules))
}

/// The firewall and the filter base chains: new connections to firewalled destinations go
/// through firewall-check; destinations without endpoints are rejected (ICMP port unreachable:
/// TCP sees ECONNREFUSED at once); Local policy without a local endpoint is dropped (what was
/// short-circuited to another endpoint was DNATed already and no longer matches). Upstream's
/// priority (dstnat - 10): in output this runs before DNAT.
fn filter_chains(f: Family) -> Result<Vec<ChainSpec>, NftError> {
    let firewall = firewall_check(f)?;
    let mut firewall_jump = vec![
        ct(libc::NFT_CT_STATE, REG1),
        bitwise(REG1, CT_STATE_NEW, 0),
        cmp(libc::NFT_CMP_NEQ, REG1, &0u32.to_ne_bytes()),
    ];
    firewall_jump.extend(destination_in(f, FIREWALL_IPS)?);
    firewall_jump.push(jump(&firewall.name)?);
    let mut reject = destination_in(f, NO_ENDPOINT_SERVICES)?;
    reject.push(reject_port_unreachable(f));
    let mut drop = destination_in(f, NO_LOCAL_ENDPOINT_SERVICES)?;
    drop.push(verdict(libc::NF_DROP));
    let filter = |name: &str, hook: Hook, firewalled: bool| {
        let mut rules = Vec::new();
        if firewalled {
            rules.push(firewall_jump.clone());
        }
        rules.extend([reject.clone(), drop.clone()]);
        base(name, hook, FILTER_PRIORITY, ChainType::Filter, rules)
    };
    let prerouting = vec![firewall_jump.clone()];
    Ok(vec![
        firewall,
        base(
            "filter-prerouting",
            Hook::PreRouting,
            FILTER_PRIORITY,
            ChainType::Filter,
            prerouting,
        ),
        filter("filter-input", Hook::In, false),
        filter("filter-forward", Hook::Forward, false),
        filter("filter-output", Hook::Out, true),
    ])
}

/// The chains of one session-affinity timeout class (upstream: per-endpoint sets with the
/// timeout, checked before the random choice and updated by the endpoint chain), around the
/// dynamic map `affinity-<T>`:
///
/// - `affinity-<T>` (jumped to from nat-prerouting/-output before the endpoint choice):
///   `dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @affinity-<T>` — a client with
///   a live entry goes to its endpoint; others fall back to the usual choice;
/// - `affinity-record-<T>` (jumped to from nat-postrouting, first packet of each connection):
///   `update @affinity-<T> { ip saddr . ct original ip daddr . meta l4proto . ct original
///   proto-dst timeout <T>s : ip daddr . th dport }` — records the endpoint the connection was
///   DNATed to, or refreshes the entry's timeout.
///
/// Every operand is a plain packet or conntrack field, so `nft list` prints the rules. Entries
/// pointing at an endpoint the destination lost are deleted after the sync that removed it.
pub(super) fn affinity_chains(f: Family, timeout: u32) -> Result<[ChainSpec; 2], NftError> {
    let (name, id, a, ep) = (
        affinity_name(timeout),
        affinity_set_id(timeout),
        aw(f),
        endpoint_reg(f),
    );
    let mut hit = vec![saddr(f, reg(0))];
    hit.extend(load_destination_at(f, a));
    hit.push(lookup(&name, id, reg(0), Some(reg(ep)))?);
    hit.push(dnat_to(f, ep));
    let record = vec![
        saddr(f, reg(0)),
        ct_original(ct_dst_ip(f), reg(a)),
        meta_load(libc::NFT_META_L4PROTO, reg(2 * a)),
        ct_original(libc::NFT_CT_PROTO_DST, reg(2 * a + 1)),
        daddr(f, reg(ep)),
        dport(reg(ep + a)),
        dynset_update(&name, id, reg(0), reg(ep), timeout)?,
    ];
    Ok([
        regular(&name, vec![hit]),
        regular(&affinity_record_name(timeout), vec![record]),
    ])
}

#[cfg(test)]
mod tests;
