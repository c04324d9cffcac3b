//! Kubernetes `metav1.Duration` values, as written in config files ("1m0s", "20s", "300ms", "1h30m").
//! The grammar is Go's `time.ParseDuration`: one or more `<decimal><unit>` terms, or a bare "0".

use std::time::Duration;

/// Why a duration string was refused (the input is in each message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative duration {0:?}")]
    Negative(String),
    #[error("invalid duration {0:?}: expected a number")]
    NoNumber(String),
    #[error("invalid duration {input:?}: bad number {number:?}")]
    BadNumber { input: String, number: String },
    #[error("invalid duration {0:?}: missing unit (use ns, us, ms, s, m or h)")]
    MissingUnit(String),
    #[error("invalid duration {input:?}: unknown unit {unit:?}")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration {0:?}: out of range")]
    OutOfRange(String),
}

/// Parses a Go duration string. Negative durations are refused: no kubelet setting takes one.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.into()));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(DurationError::NoNumber(s.into()));
        }
        let value: f64 = num.parse().map_err(|_| DurationError::BadNumber {
            input: s.into(),
            number: num.into(),
        })?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(DurationError::MissingUnit(s.into())),
            other => {
                return Err(DurationError::UnknownUnit {
                    input: s.into(),
                    unit: other.into(),
                });
            }
        };
        total += value * nanos_per;
        rest = next;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(DurationError::OutOfRange(s.into()));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Formats like Go's `Duration.String()` for whole seconds and above ("1m0s", "5m0s", "40s"),
/// and milliseconds below a second ("300ms"), so defaults print as upstream prints them.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    let frac = d.subsec_millis();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let s = if frac > 0 {
        format!("{s}.{frac:03}").trim_end_matches('0').to_string()
    } else {
        s.to_string()
    };
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("1m0s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("10us").unwrap(), Duration::from_micros(10));
    }

    #[test]
    fn refuses_bad_durations_with_a_reason() {
        assert!(parse("10").unwrap_err().to_string().contains("missing unit"));
        assert!(parse("5d").unwrap_err().to_string().contains("unknown unit"));
        assert!(parse("-1s").unwrap_err().to_string().contains("negative"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(60)), "1m0s");
        assert_eq!(format(Duration::from_secs(40)), "40s");
        assert_eq!(format(Duration::from_secs(300)), "5m0s");
        assert_eq!(format(Duration::from_secs(3700)), "1h1m40s");
        assert_eq!(format(Duration::from_millis(300)), "300ms");
        assert_eq!(format(Duration::ZERO), "0s");
        for s in ["1m0s", "20s", "5m0s", "1h1m40s", "300ms"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
