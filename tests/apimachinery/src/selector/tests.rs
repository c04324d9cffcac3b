use super::*;
use serde_json::json;

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap()
}

#[test]
fn parses_all_operators_and_matches() {
    let labels = json!({"app": "web", "tier": "front", "n": "5"});
    assert!(sel("app=web").matches(&labels));
    assert!(sel("app==web").matches(&labels));
    assert!(!sel("app!=web").matches(&labels));
    assert!(sel("app!=db").matches(&labels));
    assert!(
        sel("missing!=x").matches(&labels),
        "!= matches when the key is absent"
    );
    assert!(sel("app in (web,db)").matches(&labels));
    assert!(!sel("app notin (web)").matches(&labels));
    assert!(sel("missing notin (web)").matches(&labels));
    assert!(sel("app").matches(&labels));
    assert!(!sel("!app").matches(&labels));
    assert!(sel("!missing").matches(&labels));
    assert!(sel("n>4").matches(&labels));
    assert!(!sel("n<5").matches(&labels));
    assert!(sel("  app = web ,  tier in ( front , back ) , !x ").matches(&labels));
    assert!(!sel("app=web,tier=back").matches(&labels));
}

#[test]
fn empty_selector_matches_everything_including_null_labels() {
    let s = sel("");
    assert!(s.is_empty());
    assert!(s.matches(&Value::Null));
    assert!(s.matches(&json!({"a": "b"})));
    assert!(!sel("a").matches(&Value::Null));
    assert!(sel("!a").matches(&Value::Null));
}

#[test]
fn canonical_string_is_sorted_like_upstream() {
    assert_eq!(sel("z=1,a in (y,x),!b").to_string(), "a in (x,y),!b,z=1");
    assert_eq!(sel("x in (in)").to_string(), "x in (in)");
}

#[test]
fn empty_values_are_allowed() {
    assert!(sel("a=").matches(&json!({"a": ""})));
    assert!(sel("a in ()").matches(&json!({"a": ""})));
    assert_eq!(
        sel("x in (foo,,baz)").requirements[0].values,
        vec!["", "baz", "foo"]
    );
}

#[test]
fn syntax_errors_have_upstream_messages() {
    let err = |s: &str| LabelSelector::parse(s).unwrap_err().to_string();
    assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
    assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
    assert_eq!(
        err(",a"),
        "found ',', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        err("a in x"),
        "unable to parse requirement: found 'x' expected: '('"
    );
    assert_eq!(
        err("a b"),
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    );
    assert_eq!(
        err("a in (x y)"),
        "unable to parse requirement: found 'y', expected: ',' or ')'"
    );
    assert_eq!(
        err("!=a"),
        "found '!=', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        err("!,a"),
        "unable to parse requirement: found ',', expected: identifier"
    );
}

#[test]
fn invalid_keys_and_values_are_rejected() {
    let e = LabelSelector::parse("-a=b").unwrap_err().to_string();
    assert!(
        e.starts_with("unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of"),
        "{e}"
    );
    let e = LabelSelector::parse("a=-b").unwrap_err().to_string();
    assert!(
        e.starts_with("unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string"),
        "{e}"
    );
    let e = LabelSelector::parse("a>b").unwrap_err().to_string();
    assert!(
        e.contains("for 'Gt', 'Lt' operators, the value must be an integer"),
        "{e}"
    );
}

#[test]
fn metav1_label_selector_semantics() {
    let labels = json!({"app": "web", "env": "prod"});
    assert!(
        !LabelSelector::from_json(&Value::Null).unwrap().matches(&labels),
        "null = nothing"
    );
    assert!(
        LabelSelector::from_json(&json!({})).unwrap().matches(&labels),
        "{{}} = everything"
    );
    let s = LabelSelector::from_json(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "staging"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "app", "operator": "Exists"},
            {"key": "tier", "operator": "NotIn", "values": ["db"]}
        ]
    }))
    .unwrap();
    assert!(s.matches(&labels));
    assert!(!s.matches(&json!({"app": "web", "env": "dev"})));
    assert!(!s.matches(&json!({"app": "web", "env": "prod", "canary": "1"})));
    let e = LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]}))
        .unwrap_err();
    assert_eq!(e.to_string(), "\"Foo\" is not a valid label selector operator");
    let e = LabelSelector::from_json(
        &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("values set can't be empty"), "{e}");
}

#[test]
fn service_map_selector() {
    let s = LabelSelector::from_map(&json!({"app": "web"}));
    assert!(s.matches(&json!({"app": "web", "x": "y"})));
    assert!(!s.matches(&json!({"app": "db"})));
    assert!(LabelSelector::from_map(&Value::Null).matches(&json!({})));
}

fn pod() -> Value {
    json!({
        "metadata": {"name": "p1", "namespace": "default"},
        "spec": {"nodeName": "node-a", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                 "serviceAccountName": "default", "hostNetwork": true},
        "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
    })
}

#[test]
fn field_selector_parses_and_matches_pods() {
    let p = pod();
    let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&p, "pods").unwrap();
    assert!(m(""));
    assert!(m("spec.nodeName=node-a"));
    assert!(m("spec.nodeName==node-a,status.phase!=Pending"));
    assert!(!m("spec.nodeName=node-b"));
    assert!(m("spec.hostNetwork=true"));
    assert!(m("status.podIP=10.0.0.5"));
    assert!(m("metadata.name=p1,metadata.namespace=default"));
    assert!(m("status.nominatedNodeName="));
    assert!(m("spec.nodeName!="), "!= empty matches scheduled pods");
    assert!(m("spec.host=node-a"), "old clients' alias");
    assert!(m("status.podIPs="), "accepted, never set");
    let mut no_ips = pod();
    no_ips["status"].as_object_mut().unwrap().remove("podIPs");
    assert!(
        FieldSelector::parse("status.podIP=")
            .unwrap()
            .matches(&no_ips, "pods")
            .unwrap(),
        "only podIPs counts"
    );
}

#[test]
fn field_selector_rejects_unsupported_fields_with_upstream_message() {
    let s = FieldSelector::parse("spec.foo=bar").unwrap();
    let e = s.matches(&pod(), "pods").unwrap_err();
    assert_eq!(e.to_string(), "field label not supported: spec.foo");
    let s = FieldSelector::parse("spec.nodeName=x").unwrap();
    assert_eq!(
        s.validate("services").unwrap_err().to_string(),
        "field label not supported: spec.nodeName"
    );
    assert!(
        FieldSelector::parse("metadata.name=x")
            .unwrap()
            .validate("leases")
            .is_ok()
    );
}

#[test]
fn field_selector_syntax_errors() {
    let e = FieldSelector::parse("a=b,c").unwrap_err().to_string();
    assert_eq!(e, "invalid selector: 'a=b,c'; can't understand 'c'");
    let e = FieldSelector::parse("a=b=c").unwrap_err().to_string();
    assert_eq!(e, "invalid field selector: unescaped character in value: =");
    let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
    assert_eq!(s.requirements[0].value, "a,b");
}

#[test]
fn field_selector_events_nodes_secrets_namespaces() {
    let ev = json!({
        "metadata": {"name": "e", "namespace": "ns"},
        "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "ns", "uid": "u1", "fieldPath": "spec.containers{c}"},
        "reason": "Started", "type": "Normal", "source": {"component": "kubelet"}
    });
    let m = |s: &str, o: &Value, r: &str| FieldSelector::parse(s).unwrap().matches(o, r).unwrap();
    assert!(m(
        "involvedObject.kind=Pod,involvedObject.name=p1,involvedObject.uid=u1",
        &ev,
        "events"
    ));
    assert!(m("reason=Started,type=Normal,source=kubelet", &ev, "events"));
    let ev2 = json!({"metadata": {"name": "e2"}, "reportingController": "default-scheduler", "regarding": {"kind": "Pod", "name": "p"}});
    assert!(m(
        "source=default-scheduler,reportingComponent=default-scheduler,involvedObject.name=p",
        &ev2,
        "events"
    ));
    assert!(m("involvedObject.fieldPath=spec.containers{c}", &ev, "events"));
    let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
    assert!(m("spec.unschedulable=true", &node, "nodes"));
    assert!(m("spec.unschedulable!=false,metadata.name=n", &node, "nodes"));
    assert!(m(
        "spec.unschedulable=false",
        &json!({"metadata": {"name": "n"}}),
        "nodes"
    ));
    assert!(m(
        "type=kubernetes.io/tls",
        &json!({"type": "kubernetes.io/tls"}),
        "secrets"
    ));
    assert!(m(
        "status.phase=Active",
        &json!({"status": {"phase": "Active"}}),
        "namespaces"
    ));
}

#[test]
fn field_selector_shows_escaped_values_that_parse_back() {
    // Found by fuzzing (fuzz/fuzz_targets/selectors.rs): `a\,b` was shown as `a,b`, which
    // parses as another selector (or not at all).
    let input = r"involvedObject.kind=Pod,involvedObject.name=a\,b,reason=Started";
    let s = FieldSelector::parse(input).unwrap();
    assert_eq!(s.requirements[1].value, "a,b");
    let shown = s.to_string();
    assert_eq!(
        shown,
        r"involvedObject.kind=Pod,involvedObject.name=a\,b,reason=Started"
    );
    assert_eq!(FieldSelector::parse(&shown).unwrap(), s);
    let odd = FieldSelector::parse(r"metadata.name!=x\=\\y").unwrap();
    assert_eq!(odd.requirements[0].value, r"x=\y");
    assert_eq!(FieldSelector::parse(&odd.to_string()).unwrap(), odd);
}

#[test]
fn field_selector_with_non_ascii_text_is_an_error_or_a_value_not_a_panic() {
    // Found by fuzzing (fuzz/fuzz_targets/selectors.rs): the operator search sliced the term at
    // every byte and panicked inside a multi-byte character.
    assert!(FieldSelector::parse("spec.nodeName!Ç2").is_err());
    let s = FieldSelector::parse("spec.nodeName!=Ç2,metadata.name=ü\\,ß").unwrap();
    assert_eq!(s.requirements[0].value, "ü,ß");
    assert_eq!(s.requirements[1].value, "Ç2");
    // An escape before a multi-byte character in the field name.
    let _ = FieldSelector::parse("x\\Ç=1");
}
