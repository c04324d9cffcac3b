//! Resource quantities (`100m`, `1.5Gi`, `1e3`) as requests, limits, `systemReserved` and eviction
//! thresholds carry them: parsing and the integer views the kubelet and scheduler compute with.
//!
//! Input: the quantity text.
#![no_main]

use std::cmp::Ordering;

use knode_apimachinery::quantity::Quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = Quantity::parse(text) else {
        return;
    };
    let _ = (q.value(), q.millis(), q.is_zero(), q.is_negative(), q.format());
    assert_eq!(q.cmp(&q), Ordering::Equal);
    let again = Quantity::parse(&q.to_string()).expect("a quantity's text parses");
    assert_eq!(again.cmp(&q), Ordering::Equal);
    let zero = Quantity::parse("0").expect("zero");
    assert_eq!(
        q.is_zero(),
        q.cmp(&zero) == Ordering::Equal,
        "{text:?}: is_zero vs cmp"
    );
    assert_eq!(
        q.is_negative(),
        q.cmp(&zero) == Ordering::Less,
        "{text:?}: is_negative vs cmp"
    );
});
