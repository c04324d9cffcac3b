//! Resource quantities, a pod's effective requests, its QoS class (upstream's `GetPodQOS`) and the
//! kubelet's admission check (upstream's pod-count and resource-fit admit handler with the `OutOfcpu`,
//! `OutOfmemory`, `OutOfpods`, … reasons).
//!
//! Requests missing where a limit is given default to the limit, as the API server's pod defaulting
//! does, so a pod that did not pass through that defaulting is judged the same.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Nano-units per unit: quantities are kept as exact integers of 1e-9.
const NANO: i128 = 1_000_000_000;

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a quantity, or beyond what nano-units of an `i128` hold.
    #[error("invalid quantity {0:?}")]
    Invalid(String),
    /// A quantity, but larger than the integer it must fit.
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// Parses a Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) into nano-units.
pub fn parse_quantity(q: &str) -> Result<i128, QuantityError> {
    let s = q.trim();
    let bad = || QuantityError::Invalid(q.to_string());
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let (neg, num) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part
            .chars()
            .chain(frac_part.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    // value = digits * 10^(-frac_len) * multiplier; keep exact in nano-units.
    let digits: i128 = format!("{int_part}{frac_part}").parse().map_err(|_| bad())?;
    let (mul_num, pow10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let exp = pow10 + 9 - frac_part.len() as i32;
    let scaled = digits.checked_mul(mul_num).ok_or_else(bad)?;
    let value = if exp >= 0 {
        10i128
            .checked_pow(exp as u32)
            .and_then(|p| scaled.checked_mul(p))
            .ok_or_else(bad)?
    } else {
        // Round up below a nano-unit, as upstream rounds quantities up to their precision.
        let p = 10i128.checked_pow((-exp) as u32).ok_or_else(bad)?;
        scaled.saturating_add(p - 1) / p
    };
    Ok(if neg { -value } else { value })
}

/// Compute resources the kubelet admits and classifies by.
const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// Resource name → nano-units.
type Amounts = BTreeMap<String, i128>;

/// A container's requests and limits in nano-units, with requests defaulted to limits.
fn container_resources(c: &Container) -> Result<(Amounts, Amounts), String> {
    let parse_map = |m: Option<&BTreeMap<String, Quantity>>| -> Result<BTreeMap<String, i128>, String> {
        m.into_iter()
            .flatten()
            .map(|(k, v)| {
                parse_quantity(&v.0)
                    .map(|n| (k.clone(), n))
                    .map_err(|e| format!("container {:?}: resources of {k}: {e}", c.name))
            })
            .collect()
    };
    let res = c.resources.as_ref();
    let limits = parse_map(res.and_then(|r| r.limits.as_ref()))?;
    let mut requests = parse_map(res.and_then(|r| r.requests.as_ref()))?;
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert(*v);
    }
    Ok((requests, limits))
}

/// The pod's effective requests (upstream's `PodRequests`): per resource, the larger of the sum over
/// app containers and the largest init container, plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Result<BTreeMap<String, i128>, String> {
    let mut sum: BTreeMap<String, i128> = BTreeMap::new();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(sum);
    };
    for c in &spec.containers {
        for (k, v) in container_resources(c)?.0 {
            let e = sum.entry(k).or_default();
            *e = e.saturating_add(v);
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in container_resources(c)?.0 {
            let e = sum.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    for (k, v) in spec.overhead.iter().flatten() {
        let v = parse_quantity(&v.0).map_err(|e| format!("overhead {k}: {e}"))?;
        let e = sum.entry(k.clone()).or_default();
        *e = e.saturating_add(v);
    }
    Ok(sum)
}

/// Upstream's `GetPodQOS`: `Guaranteed` when every container has cpu and memory limits and requests
/// equal to them, `BestEffort` when no container requests or limits cpu or memory, else `Burstable`.
/// A quantity that does not parse counts as absent.
pub fn pod_qos(pod: &Pod) -> Qos {
    let Some(spec) = pod.spec.as_ref() else {
        return Qos::BestEffort;
    };
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let (req, lim) = container_resources(c).unwrap_or_default();
        for name in QOS_RESOURCES {
            if let Some(v) = req.get(name).filter(|v| **v > 0) {
                let e = requests.entry(name).or_default();
                *e = e.saturating_add(*v);
            }
        }
        let mut found = 0;
        for name in QOS_RESOURCES {
            if let Some(v) = lim.get(name).filter(|v| **v > 0) {
                let e = limits.entry(name).or_default();
                *e = e.saturating_add(*v);
                found += 1;
            }
        }
        if found < QOS_RESOURCES.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return Qos::BestEffort;
    }
    if guaranteed && requests.len() == limits.len() && requests.iter().all(|(k, v)| limits.get(k) == Some(v))
    {
        return Qos::Guaranteed;
    }
    Qos::Burstable
}

/// A pod's QoS class ([`pod_qos`]); its cgroup is `cgroups`' business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    /// The name in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

/// Why the kubelet refused to run a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// Upstream's reason: `OutOfcpu`, `OutOfmemory`, `OutOfpods`, `OutOfephemeral-storage`, …, or
    /// `UnexpectedAdmissionError` for a pod whose resources do not parse.
    pub reason: String,
    pub message: String,
}

/// The result of [`admit`].
pub type Admission = Result<(), Rejection>;

/// The node's allocatable resources (`cpu`, `memory`, `pods`, `ephemeral-storage`, extended ones) as
/// in the Node's `status.allocatable`.
pub type NodeCapacity = BTreeMap<String, Quantity>;

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whole units as upstream prints them: milli-cores for cpu, else the value rounded up.
fn display_units(resource: &str, nano: i128) -> i128 {
    let unit = if resource == "cpu" { NANO / 1000 } else { NANO };
    nano.saturating_add(unit - 1).div_euclid(unit)
}

/// Upstream's admission of a new pod against the pods already admitted (`active`; terminal ones are
/// ignored) and the node's allocatable: first the pod count, then each requested resource.
pub fn admit(pod: &Pod, active: &[Pod], allocatable: &NodeCapacity) -> Admission {
    let unexpected = |message: String| Rejection {
        reason: "UnexpectedAdmissionError".into(),
        message,
    };
    let active: Vec<&Pod> = active
        .iter()
        .filter(|p| !is_terminal(p) && p.metadata.uid != pod.metadata.uid)
        .collect();
    let insufficient = |name: &str, requested: i128, used: i128, capacity: i128| Rejection {
        reason: format!("OutOf{name}"),
        message: format!(
            "Node didn't have enough resource: {name}, requested: {}, used: {}, capacity: {}",
            display_units(name, requested),
            display_units(name, used),
            display_units(name, capacity)
        ),
    };
    let cap = |name: &str| -> Result<Option<i128>, Rejection> {
        allocatable
            .get(name)
            .map(|q| parse_quantity(&q.0).map_err(|e| unexpected(format!("node allocatable {name}: {e}"))))
            .transpose()
    };
    if let Some(max_pods) = cap("pods")? {
        let used = active.len() as i128 * NANO;
        if used + NANO > max_pods {
            return Err(insufficient("pods", NANO, used, max_pods));
        }
    }
    let request = pod_requests(pod).map_err(unexpected)?;
    let mut used: BTreeMap<String, i128> = BTreeMap::new();
    for p in &active {
        // A running pod whose quantities do not parse was admitted earlier; count what parses.
        for (k, v) in pod_requests(p).unwrap_or_default() {
            let e = used.entry(k).or_default();
            *e = e.saturating_add(v);
        }
    }
    // Upstream's order: cpu, memory, ephemeral-storage, then the others by name.
    let mut names: Vec<&String> = request.keys().collect();
    let rank = |n: &str| match n {
        "cpu" => 0,
        "memory" => 1,
        "ephemeral-storage" => 2,
        _ => 3,
    };
    names.sort_by_key(|n| (rank(n), (*n).clone()));
    for name in names {
        let req = request[name];
        if req <= 0 || name == "pods" {
            continue;
        }
        let used = used.get(name).copied().unwrap_or(0);
        // A resource the node does not list has capacity 0 (upstream: extended resources).
        let capacity = cap(name)?.unwrap_or(0);
        if req > capacity.saturating_sub(used) {
            return Err(insufficient(name, req, used, capacity));
        }
    }
    Ok(())
}

/// The status upstream's kubelet sets on a pod it rejects.
pub fn rejected_status(pod: &Pod, rejection: &Rejection) -> PodStatus {
    PodStatus {
        phase: Some("Failed".into()),
        reason: Some(rejection.reason.clone()),
        message: Some(format!("Pod was rejected: {}", rejection.message)),
        qos_class: Some(pod_qos(pod).as_str().into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn quantities_parse_exactly() {
        let cases = [
            ("1", NANO),
            ("100m", NANO / 10),
            ("0.5", NANO / 2),
            ("1.5", 3 * NANO / 2),
            ("128Mi", 128 * 1024 * 1024 * NANO),
            ("1Gi", (1 << 30) * NANO),
            ("1G", 1_000_000_000 * NANO),
            ("2k", 2000 * NANO),
            ("1e3", 1000 * NANO),
            ("5n", 5),
            ("+3", 3 * NANO),
            ("-2m", -2 * NANO / 1000),
        ];
        for (q, want) in cases {
            assert_eq!(parse_quantity(q), Ok(want), "{q}");
        }
        // Huge values never panic: they saturate or are refused.
        let _ = parse_quantity("17014118346046923173168730371588410572.7n");
        assert!(parse_quantity("1e-100").is_err());
        assert!(parse_quantity("99999999999999999999999999999999999999999").is_err());
        assert!(parse_quantity("1000000000000000000Ei").is_err());
        for bad in ["", "abc", "1x", "1.2.3", "Mi", "1e"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn qos_classes_as_upstream() {
        let be = pod_with(vec![container("a", "img")], "Always");
        assert_eq!(pod_qos(&be).as_str(), "BestEffort");

        let g = pod_with(
            vec![
                with_resources(
                    container("a", "img"),
                    &[("cpu", "1"), ("memory", "1Gi")],
                    &[("cpu", "1"), ("memory", "1Gi")],
                ),
                // limits only: requests default to them
                with_resources(container("b", "img"), &[], &[("cpu", "500m"), ("memory", "64Mi")]),
            ],
            "Always",
        );
        assert_eq!(pod_qos(&g).as_str(), "Guaranteed");

        let unequal = pod_with(
            vec![with_resources(
                container("a", "img"),
                &[("cpu", "500m"), ("memory", "1Gi")],
                &[("cpu", "1"), ("memory", "1Gi")],
            )],
            "Always",
        );
        assert_eq!(pod_qos(&unequal).as_str(), "Burstable");

        let cpu_only = pod_with(
            vec![with_resources(container("a", "img"), &[], &[("cpu", "1")])],
            "Always",
        );
        assert_eq!(pod_qos(&cpu_only).as_str(), "Burstable");

        let mixed = pod_with(
            vec![
                with_resources(
                    container("a", "img"),
                    &[("cpu", "1"), ("memory", "1Gi")],
                    &[("cpu", "1"), ("memory", "1Gi")],
                ),
                container("b", "img"),
            ],
            "Always",
        );
        assert_eq!(pod_qos(&mixed).as_str(), "Burstable");

        // Only cpu/memory count: ephemeral-storage alone is BestEffort.
        let storage = pod_with(
            vec![with_resources(
                container("a", "img"),
                &[("ephemeral-storage", "1Gi")],
                &[],
            )],
            "Always",
        );
        assert_eq!(pod_qos(&storage).as_str(), "BestEffort");

        // Zero requests are ignored.
        let zero = pod_with(
            vec![with_resources(container("a", "img"), &[("cpu", "0")], &[])],
            "Always",
        );
        assert_eq!(pod_qos(&zero).as_str(), "BestEffort");
    }

    #[test]
    fn pod_requests_take_max_of_init_and_sum_of_apps() {
        let mut p = pod_with(
            vec![
                with_resources(container("a", "img"), &[("cpu", "200m")], &[]),
                with_resources(container("b", "img"), &[("cpu", "300m"), ("memory", "10Mi")], &[]),
            ],
            "Always",
        );
        set_init(
            &mut p,
            vec![with_resources(
                container("i", "img"),
                &[("cpu", "1"), ("memory", "5Mi")],
                &[],
            )],
        );
        let r = pod_requests(&p).unwrap();
        assert_eq!(r["cpu"], NANO);
        assert_eq!(r["memory"], 10 * 1024 * 1024 * NANO);
    }

    fn alloc(cpu: &str, mem: &str, pods: &str) -> NodeCapacity {
        [("cpu", cpu), ("memory", mem), ("pods", pods)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.into())))
            .collect()
    }

    #[test]
    fn admission_rejects_with_upstream_reasons_and_messages() {
        let node = alloc("2", "1Gi", "2");
        let small = |n: &str| {
            with_uid(
                pod_with(
                    vec![with_resources(
                        container("c", "img"),
                        &[("cpu", "500m"), ("memory", "100Mi")],
                        &[],
                    )],
                    "Always",
                ),
                n,
            )
        };
        assert_eq!(admit(&small("a"), &[], &node), Ok(()));
        assert_eq!(admit(&small("b"), &[small("a")], &node), Ok(()));

        let err = admit(&small("c"), &[small("a"), small("b")], &node).unwrap_err();
        assert_eq!(err.reason, "OutOfpods");
        assert_eq!(
            err.message,
            "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
        );

        // Terminal pods do not count.
        let mut done = small("b");
        set_phase(&mut done, "Succeeded");
        assert_eq!(admit(&small("c"), &[small("a"), done], &node), Ok(()));

        let big_cpu = with_uid(
            pod_with(
                vec![with_resources(container("c", "img"), &[("cpu", "1600m")], &[])],
                "Always",
            ),
            "x",
        );
        let err = admit(&big_cpu, &[small("a")], &node).unwrap_err();
        assert_eq!(err.reason, "OutOfcpu");
        assert_eq!(
            err.message,
            "Node didn't have enough resource: cpu, requested: 1600, used: 500, capacity: 2000"
        );

        let big_mem = with_uid(
            pod_with(
                vec![with_resources(
                    container("c", "img"),
                    &[("memory", "1000Mi")],
                    &[],
                )],
                "Always",
            ),
            "y",
        );
        let err = admit(&big_mem, &[small("a")], &node).unwrap_err();
        assert_eq!(err.reason, "OutOfmemory");
        assert_eq!(
            err.message,
            format!(
                "Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
                1000 << 20,
                100 << 20,
                1 << 30
            )
        );

        let gpu = with_uid(
            pod_with(
                vec![with_resources(
                    container("c", "img"),
                    &[("example.com/gpu", "1")],
                    &[],
                )],
                "Always",
            ),
            "z",
        );
        assert_eq!(
            admit(&gpu, &[], &node).unwrap_err().reason,
            "OutOfexample.com/gpu"
        );

        let bad = with_uid(
            pod_with(
                vec![with_resources(container("c", "img"), &[("cpu", "lots")], &[])],
                "Always",
            ),
            "w",
        );
        let err = admit(&bad, &[], &node).unwrap_err();
        assert_eq!(err.reason, "UnexpectedAdmissionError");
        assert!(
            err.message.contains("\"c\"") && err.message.contains("cpu"),
            "{}",
            err.message
        );

        let st = rejected_status(&big_cpu, &admit(&big_cpu, &[small("a")], &node).unwrap_err());
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("OutOfcpu"));
        assert!(
            st.message
                .as_deref()
                .unwrap_or_default()
                .starts_with("Pod was rejected: Node didn't have enough resource: cpu")
        );
        assert_eq!(st.qos_class.as_deref(), Some("Burstable"));
    }
}
