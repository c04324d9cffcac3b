//! The control plane's request bodies: a body of any content type (JSON, YAML, Kubernetes
//! protobuf) for any resource, through what a create does with it before storing it (decode,
//! apiVersion/kind check, typed decoding with unknown-field detection, validation) and what a
//! list shows (the kubectl table).
//!
//! Input: a first line `<plural> <content type>` (e.g. `pods application/json`), then the body.
#![no_main]

use knode_control_plane::api::objects::{decode, ingest, present};
use knode_control_plane::resources::RESOURCES;
use knode_control_plane::{machinery, typed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let nl = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..nl]);
    let body = data.get(nl + 1..).unwrap_or_default();
    let (plural, ct) = head.split_once(' ').unwrap_or((&head, "application/json"));
    let Some(def) = RESOURCES.iter().find(|d| d.plural == plural) else {
        return;
    };
    let Ok(value) = decode(ct, body) else {
        return;
    };
    let Ok(obj) = ingest(def, value) else {
        return;
    };
    let Ok((stored, _unknown)) = typed::normalize(def, obj) else {
        return;
    };
    // The stored form is a fixed point: decoding it again changes nothing and finds nothing unknown.
    let (again, unknown) = typed::normalize(def, stored.clone())
        .unwrap_or_else(|e| panic!("re-normalizing {stored}: {}", e.message));
    assert_eq!(again, stored, "normalize is idempotent");
    assert!(
        unknown.is_empty(),
        "unknown fields after normalizing: {unknown:?}"
    );
    let _ = machinery::validate(def.plural, &stored);
    let shown = present(def, &stored);
    let _ = machinery::table(def.plural, &[shown], 1_700_000_000);
});
