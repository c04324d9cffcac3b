//! The control plane's PATCH bodies: JSON patch (RFC 6902), merge patch (RFC 7386), strategic
//! merge patch and server-side apply, applied to an object as the PATCH handler does, then the
//! result checked and decoded as a stored object would be.
//!
//! Input: JSON `{"type": "json|merge|strategic|apply", "plural": "pods", "doc": {...}, "patch": ...}`.
#![no_main]

use knode_control_plane::api::objects::ingest;
use knode_control_plane::resources::RESOURCES;
use knode_control_plane::{machinery, typed};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Input {
    #[serde(rename = "type")]
    kind: String,
    plural: String,
    doc: Value,
    patch: Value,
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Input>(data) else {
        return;
    };
    let Some(def) = RESOURCES.iter().find(|d| d.plural == input.plural) else {
        return;
    };
    let (doc, p) = (&input.doc, &input.patch);
    let patched = match input.kind.as_str() {
        "json" => machinery::json_patch(doc, p),
        "merge" => {
            let r = machinery::merge_patch(doc, p);
            if let Ok(once) = &r {
                // RFC 7386: applying the same merge patch again changes nothing.
                let twice = machinery::merge_patch(once, p).expect("re-applying a merge patch");
                assert_eq!(&twice, once, "merge patch is idempotent");
            }
            r
        }
        "strategic" => machinery::strategic_merge_patch(doc, p, def.kind),
        _ => machinery::apply_patch(doc, p, def.kind),
    };
    let Ok(patched) = patched else {
        return;
    };
    if let Ok(obj) = ingest(def, patched) {
        if let Ok((stored, _)) = typed::normalize(def, obj) {
            let _ = machinery::validate(def.plural, &stored);
        }
    }
});
