//! The eviction manager (upstream's `pkg/kubelet/eviction`): watches the node's resources and, when
//! a threshold is crossed, reports the pressure as a node condition, refuses new pods that would
//! make it worse, reclaims node-level resources and then evicts pods one per cycle.
//!
//! The pure part decides: [`EvictionConfig`] parses `evictionHard`/`evictionSoft`/
//! `evictionSoftGracePeriod` into [`Threshold`]s, [`decide::observations`] turns a stats
//! [`Summary`](crate::stats::Summary) into signal observations, [`decide::synchronize`] tracks
//! thresholds met, soft grace periods and the pressure-transition period, [`decide::rank`] orders
//! pods for a signal, [`decide::eviction_message`] and [`decide::local_storage_violation`] say why a
//! pod goes, and [`decide::admit`] refuses pods under pressure. [`manager`] runs the loop every
//! [`manager::MONITORING_INTERVAL`] against the node through the [`manager::EvictionHost`] trait and
//! hands evicted pods to their worker, which kills them the way a graceful node shutdown does.

pub mod decide;
pub mod manager;
#[cfg(test)]
mod tests;

use crate::pods::resources::QuantityError;
use std::fmt;
use std::time::Duration;

use crate::config::KubeletConfiguration;

pub use decide::{Conditions, admit, evicted_status};
pub use manager::{EvictionManager, NoReclaim, NodeReclaimer, Pressure};

/// The reason of evicted pods and rejected admissions (upstream's `eviction.Reason`).
pub const REASON: &str = "Evicted";

/// A bad eviction setting (start-up fails with it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvictionError {
    #[error("{field}: unsupported eviction signal {signal:?} (supported: {supported})", supported = Signal::NAMES.join(", "))]
    UnsupportedSignal { field: String, signal: String },
    #[error("{field}: {message}")]
    BadValue { field: String, message: String },
    #[error(
        "evictionSoftGracePeriod.{signal}: grace period must be specified for the soft eviction threshold {signal} (--eviction-soft-grace-period)"
    )]
    MissingGracePeriod { signal: String },
}

/// An eviction signal (upstream's `evictionapi.Signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    MemoryAvailable,
    AllocatableMemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

/// A node condition the eviction manager reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeCondition {
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

impl NodeCondition {
    /// The condition type as the Node shows it.
    pub fn name(self) -> &'static str {
        match self {
            NodeCondition::MemoryPressure => "MemoryPressure",
            NodeCondition::DiskPressure => "DiskPressure",
            NodeCondition::PidPressure => "PIDPressure",
        }
    }
}

impl Signal {
    /// Every signal knode observes, as written in the configuration.
    pub const NAMES: [&'static str; 7] = [
        "memory.available",
        "allocatableMemory.available",
        "nodefs.available",
        "nodefs.inodesFree",
        "imagefs.available",
        "imagefs.inodesFree",
        "pid.available",
    ];
    const ALL: [Signal; 7] = [
        Signal::MemoryAvailable,
        Signal::AllocatableMemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    /// The signal's configuration name (`memory.available`) — also the metric label.
    pub fn name(self) -> &'static str {
        let i = Signal::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Signal::NAMES[i]
    }

    /// The signal named `name`, if knode knows it.
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Signal::ALL[i])
    }

    /// The resource reclaimed for it (upstream's `signalToResource`), as the messages name it.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    /// The node condition it drives (upstream's `signalToNodeCondition`).
    pub fn condition(self) -> NodeCondition {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => NodeCondition::MemoryPressure,
            Signal::PidAvailable => NodeCondition::PidPressure,
            _ => NodeCondition::DiskPressure,
        }
    }
}

/// How a quantity prints (Kubernetes' `resource.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    BinarySI,
    DecimalSI,
}

/// An integer quantity with its format; `Display` is Kubernetes' canonical `Quantity.String()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qty {
    pub value: i64,
    pub format: Format,
}

impl Qty {
    pub fn binary(value: i64) -> Qty {
        Qty {
            value,
            format: Format::BinarySI,
        }
    }

    pub fn decimal(value: i64) -> Qty {
        Qty {
            value,
            format: Format::DecimalSI,
        }
    }

    /// Parses a quantity as written in a spec or flag (`100Mi`, `1G`, `1.5Gi`); the value is
    /// rounded up to an integer, as `Quantity.Value()`.
    pub fn parse(s: &str) -> Result<Qty, QuantityError> {
        let nano = crate::pods::resources::parse_quantity(s)?;
        let value = nano.div_euclid(1_000_000_000) + i128::from(nano.rem_euclid(1_000_000_000) != 0);
        let value = i64::try_from(value).map_err(|_| QuantityError::TooLarge(s.to_string()))?;
        let format = if s.trim_end().ends_with('i') {
            Format::BinarySI
        } else {
            Format::DecimalSI
        };
        Ok(Qty { value, format })
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.value;
        // Upstream prints binary amounts below 1Ki in decimal, to avoid rounding confusion.
        let binary = self.format == Format::BinarySI && !(-1024 < v && v < 1024);
        let (base, suffixes): (i64, &[&str]) = if binary {
            (1024, &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
        } else {
            (1000, &["", "k", "M", "G", "T", "P", "E"])
        };
        let (mut n, mut i) = (v, 0);
        while n != 0 && n % base == 0 && i + 1 < suffixes.len() {
            n /= base;
            i += 1;
        }
        write!(f, "{n}{}", suffixes[i])
    }
}

/// A threshold's amount: absolute, or a fraction of the signal's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    Quantity(Qty),
    /// 0 < p < 1.
    Percentage(f32),
}

impl ThresholdValue {
    /// The amount for a signal with `capacity` (upstream's `GetThresholdQuantity`).
    pub fn quantity(&self, capacity: i64) -> Qty {
        match *self {
            ThresholdValue::Quantity(q) => q,
            ThresholdValue::Percentage(p) => Qty::binary((capacity as f64 * f64::from(p)) as i64),
        }
    }
}

/// One eviction threshold: `signal < value`, hard (no grace period) or soft.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: ThresholdValue,
    pub grace_period: Duration,
}

impl Threshold {
    /// Hard thresholds act at once (upstream's `isHardEvictionThreshold`).
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }
}

/// The eviction manager's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionConfig {
    /// Hard thresholds first, then soft ones, then the allocatable copies.
    pub thresholds: Vec<Threshold>,
    /// How long a pressure condition stays after its last observation.
    pub pressure_transition_period: Duration,
    /// Grace-period cap of soft evictions (negative: the pod's own).
    pub max_pod_grace_period_seconds: i64,
}

impl EvictionConfig {
    /// Upstream's `ParseThresholdConfig` over the KubeletConfiguration (flags already merged).
    pub fn from_kubelet(c: &KubeletConfiguration) -> Result<EvictionConfig, EvictionError> {
        let mut thresholds = Vec::new();
        for (signal, value) in &c.eviction_hard {
            if let Some(t) = parse_statement("evictionHard", "--eviction-hard", signal, value)? {
                thresholds.push(t);
            }
        }
        let mut graces = std::collections::BTreeMap::new();
        for (signal, value) in &c.eviction_soft_grace_period {
            let field = format!("evictionSoftGracePeriod.{signal} (--eviction-soft-grace-period)");
            let s = parse_signal(&field, signal)?;
            let d = knode_config::duration::parse(value).map_err(|e| EvictionError::BadValue {
                field: field.clone(),
                message: format!("invalid grace period {value:?}: {e}"),
            })?;
            graces.insert(s, d);
        }
        for (signal, value) in &c.eviction_soft {
            if let Some(mut t) = parse_statement("evictionSoft", "--eviction-soft", signal, value)? {
                let grace = graces.get(&t.signal).copied().unwrap_or_default();
                if grace.is_zero() {
                    return Err(EvictionError::MissingGracePeriod {
                        signal: signal.clone(),
                    });
                }
                t.grace_period = grace;
                thresholds.push(t);
            }
        }
        // Upstream's addAllocatableThresholds: with pods in enforceNodeAllocatable, the hard
        // memory.available threshold also applies to the pods' own cgroup.
        if c.enforce_node_allocatable.iter().any(|k| k == "pods") {
            let extra: Vec<Threshold> = thresholds
                .iter()
                .filter(|t| t.signal == Signal::MemoryAvailable && t.is_hard())
                .map(|t| Threshold {
                    signal: Signal::AllocatableMemoryAvailable,
                    ..*t
                })
                .collect();
            thresholds.extend(extra);
        }
        Ok(EvictionConfig {
            thresholds,
            pressure_transition_period: c.eviction_pressure_transition_period,
            max_pod_grace_period_seconds: i64::from(c.eviction_max_pod_grace_period),
        })
    }
}

fn parse_signal(field: &str, name: &str) -> Result<Signal, EvictionError> {
    Signal::parse(name).ok_or_else(|| EvictionError::UnsupportedSignal {
        field: field.to_string(),
        signal: name.to_string(),
    })
}

/// Upstream's `parseThresholdStatement`: `None` for the ignored `0%` and `100%`.
fn parse_statement(
    field: &str,
    flag: &str,
    signal: &str,
    value: &str,
) -> Result<Option<Threshold>, EvictionError> {
    let field = format!("{field}.{signal} ({flag})");
    // Upstream accepts the containerfs signals and overrides them from nodefs/imagefs; knode has
    // no separate container filesystem, so they are accepted and have no effect.
    if signal.starts_with("containerfs.") {
        tracing::warn!(field, "containerfs thresholds follow nodefs/imagefs; ignored");
        return Ok(None);
    }
    let s = parse_signal(&field, signal)?;
    let bad = |message: String| EvictionError::BadValue {
        field: field.clone(),
        message,
    };
    let value = value.trim();
    let parsed = if let Some(p) = value.strip_suffix('%') {
        if value == "0%" || value == "100%" {
            return Ok(None);
        }
        let p: f32 = p
            .trim()
            .parse()
            .map_err(|_| bad(format!("invalid percentage {value:?}")))?;
        if !(0.0..=100.0).contains(&p) || p == 0.0 {
            return Err(bad(format!(
                "eviction percentage threshold {signal} must be > 0% and < 100%: {value}"
            )));
        }
        ThresholdValue::Percentage(p / 100.0)
    } else {
        let q = Qty::parse(value).map_err(|e| bad(e.to_string()))?;
        if q.value <= 0 {
            return Err(bad(format!(
                "eviction threshold {signal} must be positive: {value}"
            )));
        }
        ThresholdValue::Quantity(q)
    };
    Ok(Some(Threshold {
        signal: s,
        value: parsed,
        grace_period: Duration::ZERO,
    }))
}
