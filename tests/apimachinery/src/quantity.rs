//! Resource quantities (`100m`, `128Mi`, `1e3`, `0.5Gi`) as upstream's
//! `k8s.io/apimachinery/pkg/api/resource.Quantity` parses them, held exactly as
//! `mantissa * 10^exp10 * 2^exp2` so comparisons and rounding match upstream.

use std::cmp::Ordering;
use std::fmt;

/// Upstream `ErrFormatWrong` message (shown by kube-apiserver when an object has a bad quantity).
pub const FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// Upstream `ErrSuffix` message.
pub const SUFFIX_ERROR: &str = "unable to parse quantity's suffix";

/// A quantity that could not be parsed; `Display` is upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{}", FORMAT_ERROR)]
    Format,
    #[error("{}", SUFFIX_ERROR)]
    Suffix,
    /// Beyond what this exact representation holds (upstream would fall back to big decimals).
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// An exactly represented resource quantity.
#[derive(Debug, Clone)]
pub struct Quantity {
    /// Signed decimal digits of the number, without the point.
    mantissa: i128,
    /// Power of ten applied to `mantissa` (negative for fractions and milli/micro/nano suffixes).
    exp10: i32,
    /// Power of two applied (binary suffixes: Ki = 10, Mi = 20, ...).
    exp2: u32,
    /// Suffix family, which upstream keeps to print the canonical form.
    format: Format,
    original: String,
    /// Upstream's parser keeps the input text as the `String()` form when it is already canonical
    /// by its fast-path test (`1Gi`, `100m`, `1e3`, `00012`); see [`Quantity::canonical`].
    keep_original: bool,
}

/// Upstream `resource.Format`: how a quantity is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `1e3`, `5e-3`
    DecimalExponent,
    /// `Ki`, `Mi`, ... (powers of 1024)
    BinarySI,
    /// `m`, `k`, `M`, ... or no suffix
    DecimalSI,
}

const SUFFIX_CHARS: &str = "eEinumkKMGTP";

/// Split into (negative, integer digits, fraction digits, suffix) as upstream `parseQuantityString`.
fn split(s: &str) -> Result<(bool, &str, &str, &str), QuantityError> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut negative = false;
    if let Some(&c) = b.first()
        && (c == b'-' || c == b'+')
    {
        negative = c == b'-';
        pos = 1;
    }
    let int_start = pos;
    while pos < b.len() && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let int = &s[int_start..pos];
    let mut frac = "";
    if pos < b.len() && b[pos] == b'.' {
        pos += 1;
        let fs = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        frac = &s[fs..pos];
    }
    let suffix_start = pos;
    while pos < b.len() && SUFFIX_CHARS.as_bytes().contains(&b[pos]) {
        pos += 1;
    }
    if pos < b.len() && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < b.len() && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < b.len() {
        return Err(QuantityError::Format);
    }
    Ok((negative, int, frac, &s[suffix_start..]))
}

/// (exp10, exp2) of a suffix, or `None` if it is not one upstream knows.
fn interpret_suffix(suffix: &str) -> Option<(i32, u32)> {
    Some(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let rest = suffix.strip_prefix(['e', 'E'])?;
            if rest.is_empty() {
                return None;
            }
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            (rest.parse::<i32>().ok()?, 0)
        }
    })
}

impl Quantity {
    /// Parse as upstream `resource.ParseQuantity` (surrounding whitespace is not allowed).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let (negative, int, raw_frac, suffix) = split(s)?;
        let (exp10, exp2) = interpret_suffix(suffix).ok_or(QuantityError::Suffix)?;
        let format = if exp2 > 0 {
            Format::BinarySI
        } else if suffix.starts_with(['e', 'E']) {
            Format::DecimalExponent
        } else {
            Format::DecimalSI
        };
        // Trim leading zeros of the integer part and trailing zeros of the fraction: they carry no value.
        let int = int.trim_start_matches('0');
        let frac = raw_frac.trim_end_matches('0');
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits
                .parse()
                .map_err(|_| QuantityError::TooLarge(s.to_string()))?
        };
        let frac_len = i32::try_from(frac.len()).map_err(|_| QuantityError::TooLarge(s.to_string()))?;
        let mut q = Self {
            mantissa: if negative { -mantissa } else { mantissa },
            exp10: exp10 - frac_len,
            exp2,
            format,
            original: s.to_string(),
            keep_original: reuses_input(int, raw_frac, exp10, exp2, format),
        };
        q.round_to_nano();
        Ok(q)
    }

    /// The value scaled by `10^scale` as an integer, rounded away from zero (upstream `ScaledValue`
    /// rounds up). Saturates at the `i64` range.
    fn scaled(&self, scale: i32) -> i64 {
        if self.mantissa == 0 {
            return 0;
        }
        let neg = self.mantissa < 0;
        let mut n: i128 = self.mantissa.abs();
        // Apply 2^exp2 first (exact), saturating.
        // Exponents come from input (`1e2000000000`): loop only as far as can change the value
        // (2^127 and 10^39 exceed i128), not once per unit of the exponent.
        for _ in 0..self.exp2.min(128) {
            n = n.saturating_mul(2);
        }
        let e = self.exp10 + scale;
        let v: i128 = if e >= 0 {
            let mut v = n;
            for _ in 0..e.min(40) {
                v = v.saturating_mul(10);
            }
            v
        } else {
            let mut d: i128 = 1;
            let mut overflow = false;
            for _ in 0..(-e) {
                match d.checked_mul(10) {
                    Some(x) => d = x,
                    None => {
                        overflow = true;
                        break;
                    }
                }
            }
            if overflow {
                1 // a non-zero value smaller than one unit rounds up to one
            } else {
                let q = n / d;
                if n % d != 0 { q + 1 } else { q }
            }
        };
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        if neg { -v } else { v }
    }

    /// Whole units rounded up, as upstream `Value()` (bytes for memory).
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// Thousandths rounded up, as upstream `MilliValue()` (millicores for cpu).
    pub fn millis(&self) -> i64 {
        self.scaled(3)
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// True for values below zero.
    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// The string this was parsed from.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The suffix family this quantity was written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Upstream keeps at most nano precision, rounding away from zero (`1.0000000001` → `1000000001n`).
    fn round_to_nano(&mut self) {
        if self.exp2 > 0 || self.exp10 >= -9 {
            return;
        }
        let neg = self.mantissa < 0;
        let mut n = self.mantissa.abs();
        let mut inexact = false;
        while self.exp10 < -9 {
            if n == 0 {
                // Nothing left to divide: skip the rest of an input-sized exponent at once.
                self.exp10 = -9;
                break;
            }
            inexact |= n % 10 != 0;
            n /= 10;
            self.exp10 += 1;
        }
        if inexact {
            n += 1;
        }
        self.mantissa = if neg { -n } else { n };
    }

    /// The form kube-apiserver writes back (upstream `Quantity.String()`): `0.5Gi` → `512Mi`,
    /// `1.5` → `1500m`, `1000m` → `1`, `12000` → `12k`; inputs upstream's parser deems canonical
    /// already (`1e3`, `100m`, `+5`) are kept as written.
    /// Falls back to the original text for values beyond this representation.
    pub fn canonical(&self) -> String {
        if self.keep_original {
            return self.original.clone();
        }
        if self.mantissa == 0 {
            return "0".to_string();
        }
        let Some((n, e)) = self.as_decimal() else {
            return self.original.clone();
        };
        let mut format = self.format;
        if format == Format::BinarySI {
            // Below 1024 (and for non-integers) upstream prints a plain decimal instead.
            let lt1024 = cmp_decimal((n.abs(), e), (1024, 0)) == Some(std::cmp::Ordering::Less);
            if lt1024 || scale_to_integer(n, e).is_none() {
                format = Format::DecimalSI;
            }
        }
        match format {
            Format::BinarySI => {
                let Some(mut v) = scale_to_integer(n, e) else {
                    return self.original.clone();
                };
                let mut exp = 0;
                while v % 1024 == 0 && exp < 6 {
                    v /= 1024;
                    exp += 1;
                }
                let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
                format!("{v}{suffix}")
            }
            Format::DecimalSI | Format::DecimalExponent => {
                let (mut m, mut exp) = (n, e);
                while m % 10 == 0 {
                    m /= 10;
                    exp += 1;
                }
                // Make the exponent a multiple of three.
                let shift = exp.rem_euclid(3);
                for _ in 0..shift {
                    m = match m.checked_mul(10) {
                        Some(x) => x,
                        None => return self.original.clone(),
                    };
                }
                exp -= shift;
                if format == Format::DecimalExponent {
                    return if exp == 0 {
                        m.to_string()
                    } else {
                        format!("{m}e{exp}")
                    };
                }
                // Beyond E (10^18) there is no SI suffix: fold the rest into the number.
                while exp > 18 {
                    m = match m.checked_mul(1000) {
                        Some(x) => x,
                        None => return self.original.clone(),
                    };
                    exp -= 3;
                }
                let suffix = match exp {
                    -9 => "n",
                    -6 => "u",
                    -3 => "m",
                    0 => "",
                    3 => "k",
                    6 => "M",
                    9 => "G",
                    12 => "T",
                    15 => "P",
                    18 => "E",
                    _ => return self.original.clone(),
                };
                format!("{m}{suffix}")
            }
        }
    }

    /// Value as (numerator, 10-exponent) with the binary part folded in, if it fits in i128.
    fn as_decimal(&self) -> Option<(i128, i32)> {
        let mut n = self.mantissa;
        for _ in 0..self.exp2 {
            n = n.checked_mul(2)?;
        }
        Some((n, self.exp10))
    }
}

/// Upstream `ParseQuantity`'s fast path, which caches the input as the printed form when it
/// looks canonical: no fraction digits beyond nano, an exponent that is a multiple of three, no
/// trailing `000` and no leading `0` in the digits (decimal), or an odd-ish multiplier (binary).
fn reuses_input(int: &str, denom: &str, exp10: i32, exp2: u32, format: Format) -> bool {
    let num = match int.trim_start_matches('0') {
        "" => "0",
        n => n,
    };
    let digits = i32::try_from(num.len() + denom.len()).unwrap_or(i32::MAX);
    let precision = match format {
        Format::DecimalExponent | Format::DecimalSI => 18 - digits,
        Format::BinarySI if denom.is_empty() => {
            // Go: 15 - len(num) - int32(float32(exponent)*3/10) - 1
            let e = i32::try_from(exp2).unwrap_or(i32::MAX);
            15 - i32::try_from(num.len()).unwrap_or(i32::MAX) - e * 3 / 10 - 1
        }
        Format::BinarySI => -1,
    };
    if precision < 0 {
        return false;
    }
    let base_scale = if format == Format::BinarySI { 0 } else { exp10 };
    let scale = base_scale - i32::try_from(denom.len()).unwrap_or(i32::MAX);
    if scale < -9 {
        return false;
    }
    let shifted = format!("{num}{denom}");
    let Ok(value) = shifted.parse::<i64>() else {
        return false;
    };
    if format == Format::BinarySI {
        if value.checked_mul(1i64 << exp2.min(62)).is_none() {
            return false;
        }
        exp2.is_multiple_of(10) && value & 0x07 != 0
    } else {
        scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0')
    }
}

/// `n * 10^e` as an integer if it is one.
fn scale_to_integer(n: i128, e: i32) -> Option<i128> {
    if e >= 0 {
        let mut v = n;
        for _ in 0..e.min(40) {
            v = v.checked_mul(10)?;
        }
        // 40 steps overflow any non-zero value, so a longer exponent only keeps zero at zero.
        Some(v)
    } else {
        let d = 10i128.checked_pow(e.unsigned_abs())?;
        (n % d == 0).then_some(n / d)
    }
}

fn cmp_decimal(a: (i128, i32), b: (i128, i32)) -> Option<Ordering> {
    let (mut an, ae) = a;
    let (mut bn, be) = b;
    // The exponents are the input's: their difference may not fit an i32, and only the first 40
    // steps can matter (after them any non-zero value has overflowed, and zero stays zero).
    let diff = i64::from(ae) - i64::from(be);
    for _ in 0..diff.clamp(0, 40) {
        an = an.checked_mul(10)?;
    }
    for _ in 0..(-diff).clamp(0, 40) {
        bn = bn.checked_mul(10)?;
    }
    Some(an.cmp(&bn))
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    /// Exact comparison by value (`1Gi > 1G`, `1000m == 1`).
    fn cmp(&self, other: &Self) -> Ordering {
        if let (Some(a), Some(b)) = (self.as_decimal(), other.as_decimal())
            && let Some(o) = cmp_decimal(a, b)
        {
            return o;
        }
        // Out of i128 range: compare the sign, then magnitudes in floating point.
        let f = |q: &Quantity| q.mantissa as f64 * 10f64.powi(q.exp10) * 2f64.powi(q.exp2 as i32);
        f(self).partial_cmp(&f(other)).unwrap_or(Ordering::Equal)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Parse a quantity from JSON as the API accepts it: a string, or a bare number.
pub fn from_json(v: &serde_json::Value) -> Result<Quantity, QuantityError> {
    match v {
        serde_json::Value::String(s) => Quantity::parse(s),
        serde_json::Value::Number(n) => Quantity::parse(&n.to_string()),
        _ => Err(QuantityError::Format),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn parses_all_suffix_families() {
        assert_eq!(q("100m").millis(), 100);
        assert_eq!(q("1").millis(), 1000);
        assert_eq!(q("1.5").millis(), 1500);
        assert_eq!(q("128Mi").value(), 128 * 1024 * 1024);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1e-3").millis(), 1);
        assert_eq!(q("0.5Gi").value(), 512 * 1024 * 1024);
        assert_eq!(q("2Ki").value(), 2048);
        assert_eq!(q("1Ei").value(), 1 << 60);
        assert_eq!(q("+3").value(), 3);
        assert_eq!(q("-3").value(), -3);
        assert_eq!(q("500u").millis(), 1, "rounds up");
        assert_eq!(q("10n").value(), 1, "rounds up");
        assert_eq!(q("0").value(), 0);
        assert_eq!(q("0.000").millis(), 0);
        assert_eq!(q("1.").value(), 1, "upstream accepts a trailing point");
        assert_eq!(q(".5").millis(), 500);
        assert_eq!(q("1.5k").value(), 1500);
        assert_eq!(q("007").value(), 7);
        assert!(q("0").is_zero());
        assert!(q("-1m").is_negative());
    }

    #[test]
    fn rejects_bad_input_with_upstream_messages() {
        for bad in ["", "abc", "1.5.5", "1x", "1Qi", "1 Gi", " 1"] {
            assert_eq!(
                Quantity::parse(bad).unwrap_err().to_string(),
                FORMAT_ERROR,
                "{bad:?}"
            );
        }
        for bad in ["1iK", "1e", "1KiB", "1mi", "1Gm", "--1"] {
            let e = Quantity::parse(bad).unwrap_err();
            assert!(
                matches!(e, QuantityError::Suffix | QuantityError::Format),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(Quantity::parse("1iK").unwrap_err().to_string(), SUFFIX_ERROR);
    }

    #[test]
    fn compares_exactly() {
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1k"), q("1e3"));
        assert!(q("100m") < q("0.2"));
        assert!(q("-1") < q("0"));
        assert_eq!(q("1024"), q("1Ki"));
        assert!(q("1e30") > q("1Ei"));
    }

    #[test]
    fn canonical_form_matches_upstream_string() {
        let cases = [
            ("0.5Gi", "512Mi"),
            ("1.5Gi", "1536Mi"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("0.5Ki", "512"),
            ("1.5", "1500m"),
            ("1000m", "1"),
            ("100m", "100m"),
            ("12000", "12k"),
            ("1536", "1536"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            ("1E6", "1E6"),
            ("0", "0"),
            ("0Gi", "0"),
            ("-1.5", "-1500m"),
            ("1.0000000001", "1000000001n"),
            ("0.1m", "100u"),
            ("1k", "1k"),
            ("1000k", "1M"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("129M", "129M"),
            ("123Mi", "123Mi"),
            ("+5", "+5"),
        ];
        for (input, want) in cases {
            assert_eq!(q(input).canonical(), want, "{input}");
        }
        assert_eq!(q("1.5e3").format(), Format::DecimalExponent);
        assert_eq!(q("1.0000000001").millis(), 1001, "rounded up to nano precision");
    }

    #[test]
    fn json_numbers_are_quantities() {
        assert_eq!(from_json(&serde_json::json!(2)).unwrap().millis(), 2000);
        assert_eq!(from_json(&serde_json::json!("250m")).unwrap().millis(), 250);
        assert!(from_json(&serde_json::json!(true)).is_err());
    }

    #[test]
    fn huge_exponents_cost_nothing() {
        // Found by fuzzing (fuzz/fuzz_targets/quantity.rs): `1E415000605` took seconds (one
        // multiplication per unit of the exponent); `1e-2000000000` and comparisons likewise.
        let big = Quantity::parse("1E415000605").unwrap();
        assert_eq!((big.value(), big.millis()), (i64::MAX, i64::MAX));
        let tiny = Quantity::parse("1e-2000000000").unwrap();
        assert_eq!((tiny.value(), tiny.millis()), (1, 1), "rounded up to one unit");
        let zero = Quantity::parse("0e2000000000").unwrap();
        assert!(zero.is_zero());
        let one = Quantity::parse("1").unwrap();
        assert_eq!(big.cmp(&one), Ordering::Greater);
        assert_eq!(tiny.cmp(&one), Ordering::Less);
        assert_eq!(
            zero.cmp(&Quantity::parse("0e-2000000000").unwrap()),
            Ordering::Equal
        );
        assert_eq!(
            Quantity::parse("1e2000000000").unwrap().cmp(&tiny),
            Ordering::Greater
        );
        let _ = (big.to_string(), tiny.to_string());
    }
}
