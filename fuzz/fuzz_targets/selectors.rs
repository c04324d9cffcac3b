//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`, and a `metav1.LabelSelector`
//! object as in a Service or a Deployment), matched against an object.
//!
//! Input: line 1 a label selector, line 2 a field selector, line 3 a resource (plural), the rest a
//! JSON object (matched against, and read as a `metav1.LabelSelector`).
#![no_main]

use knode_apimachinery::selector::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let label = parts.next().unwrap_or("");
    let field = parts.next().unwrap_or("");
    let resource = parts.next().unwrap_or("pods");
    let obj: Value = parts
        .next()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    let labels = obj.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);

    if let Ok(sel) = LabelSelector::parse(label) {
        // The canonical form parses to the same selector (it is what the server echoes back).
        let shown = sel.to_string();
        let again =
            LabelSelector::parse(&shown).unwrap_or_else(|e| panic!("{label:?} shown as {shown:?}: {e}"));
        assert_eq!(again, sel, "label selector {label:?} shown as {shown:?}");
        let _ = sel.matches(&labels);
    }
    if let Ok(sel) = FieldSelector::parse(field) {
        let shown = sel.to_string();
        let again =
            FieldSelector::parse(&shown).unwrap_or_else(|e| panic!("{field:?} shown as {shown:?}: {e}"));
        // The same terms; their order may differ, as upstream sorts the raw terms (`a==x` and
        // `a=x` sort differently) and the AND of the terms does not depend on it.
        let terms = |f: &FieldSelector| {
            let mut t: Vec<_> = f
                .requirements
                .iter()
                .map(|r| (r.field.clone(), r.negated, r.value.clone()))
                .collect();
            t.sort();
            t
        };
        assert_eq!(
            terms(&again),
            terms(&sel),
            "field selector {field:?} shown as {shown:?}"
        );
        if sel.validate(resource).is_ok() {
            let _ = sel.matches(&obj, resource);
        }
    }
    if let Ok(sel) = LabelSelector::from_json(&obj) {
        let _ = sel.matches(&labels);
    }
});
