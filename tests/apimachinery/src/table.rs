//! Server-side `Table` rendering (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), as
//! kube-apiserver's printers in `pkg/printers/internalversion/printers.go` produce it, so that
//! `kubectl get` prints upstream's columns. The server always renders the wide columns; kubectl
//! hides those with `priority: 1` unless `-o wide`.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// `metav1.ObjectMeta` field docs used as column descriptions.
const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// Upstream `duration.HumanDuration` for a duration in whole seconds (may be negative: clock skew).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".to_string();
    }
    if secs < 0 {
        return "0s".to_string();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Parse an RFC 3339 timestamp (`2024-05-01T10:00:00Z`, fractional seconds and offsets allowed)
/// into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return "",
        }
    }
    cur.as_str().unwrap_or_default()
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return &[],
        }
    }
    cur.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn int_at(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return 0,
        }
    }
    cur.as_i64().unwrap_or(0)
}

/// Upstream `translateTimestampSince`: `<unknown>` for an absent timestamp.
fn since(ts: &str, now: i64) -> String {
    match parse_rfc3339(ts) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

fn age(obj: &Value, now: i64) -> Value {
    Value::String(since(str_at(obj, &["metadata", "creationTimestamp"]), now))
}

fn name(obj: &Value) -> Value {
    Value::String(str_at(obj, &["metadata", "name"]).to_string())
}

/// Upstream `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let pairs: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

fn col(name: &str, ty: &str, format: &str, priority: i64, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn name_col() -> Value {
    col("Name", "string", "name", 0, NAME_DOC)
}

fn age_col() -> Value {
    col("Age", "string", "", 0, CREATED_DOC)
}

/// Column definitions of the Table for `resource` (plural, lower-case).
pub fn column_definitions(resource: &str) -> Vec<Value> {
    let s = |n: &str, d: &str| col(n, "string", "", 0, d);
    let wide = |n: &str, d: &str| col(n, "string", "", 1, d);
    match resource {
        "pods" => vec![
            name_col(),
            s(
                "Ready",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            s("Status", "The aggregate status of the containers in this pod."),
            s(
                "Restarts",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age_col(),
            wide(
                "IP",
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            wide(
                "Node",
                "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.",
            ),
            wide(
                "Nominated Node",
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
            ),
            wide(
                "Readiness Gates",
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        "nodes" => vec![
            name_col(),
            s("Status", "The status of the node"),
            s("Roles", "The roles of the node"),
            age_col(),
            s("Version", "Kubelet Version reported by the node."),
            wide("Internal-IP", "List of addresses reachable to the node."),
            wide("External-IP", "List of addresses reachable to the node."),
            wide(
                "OS-Image",
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            wide(
                "Kernel-Version",
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            wide(
                "Container-Runtime",
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        "services" => vec![
            name_col(),
            s("Type", "type determines how the Service is exposed."),
            s(
                "Cluster-IP",
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            s(
                "External-IP",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            s("Port(s)", "The list of ports that are exposed by this service."),
            age_col(),
            wide(
                "Selector",
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        "namespaces" => vec![name_col(), s("Status", "The status of the namespace"), age_col()],
        "endpoints" => vec![
            name_col(),
            s(
                "Endpoints",
                "The set of all endpoints is the union of all subsets.",
            ),
            age_col(),
        ],
        "endpointslices" => vec![
            name_col(),
            s(
                "AddressType",
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            s(
                "Ports",
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            s(
                "Endpoints",
                "endpoints is a list of unique endpoints in this slice.",
            ),
            age_col(),
        ],
        "configmaps" => vec![
            name_col(),
            s("Data", "Data contains the configuration data."),
            age_col(),
        ],
        "secrets" => vec![
            name_col(),
            s("Type", "Used to facilitate programmatic handling of secret data."),
            s("Data", "Data contains the secret data."),
            age_col(),
        ],
        "serviceaccounts" => vec![
            name_col(),
            s(
                "Secrets",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            age_col(),
        ],
        "events" => vec![
            s(
                "Last Seen",
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            s(
                "Type",
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            s(
                "Reason",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            s("Object", "The object that this event is about."),
            wide(
                "Subobject",
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
            ),
            wide(
                "Source",
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            s(
                "Message",
                "A human-readable description of the status of this operation.",
            ),
            wide(
                "First Seen",
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            wide("Count", "The number of times this event has occurred."),
            col("Name", "string", "name", 1, NAME_DOC),
        ],
        "leases" => vec![
            name_col(),
            s(
                "Holder",
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            age_col(),
        ],
        _ => vec![name_col(), col("Created At", "date", "", 0, CREATED_DOC)],
    }
}

/// Cells of one row (and row conditions, for pods that finished).
fn row_cells(resource: &str, obj: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    match resource {
        "pods" => pod_row(obj, now),
        "nodes" => (node_row(obj, now), None),
        "services" => (service_row(obj, now), None),
        "namespaces" => (
            vec![
                name(obj),
                Value::from(str_at(obj, &["status", "phase"])),
                age(obj, now),
            ],
            None,
        ),
        "endpoints" => (
            vec![name(obj), Value::from(format_endpoints(obj)), age(obj, now)],
            None,
        ),
        "endpointslices" => (endpoint_slice_row(obj, now), None),
        "configmaps" => {
            let n = obj.get("data").and_then(Value::as_object).map_or(0, Map::len)
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, Map::len);
            (vec![name(obj), Value::from(n), age(obj, now)], None)
        }
        "secrets" => {
            let n = obj.get("data").and_then(Value::as_object).map_or(0, Map::len);
            (
                vec![
                    name(obj),
                    Value::from(str_at(obj, &["type"])),
                    Value::from(n),
                    age(obj, now),
                ],
                None,
            )
        }
        "serviceaccounts" => (
            vec![
                name(obj),
                Value::from(arr(obj, &["secrets"]).len()),
                age(obj, now),
            ],
            None,
        ),
        "events" => (event_row(obj, now), None),
        "leases" => (
            vec![
                name(obj),
                Value::from(str_at(obj, &["spec", "holderIdentity"])),
                age(obj, now),
            ],
            None,
        ),
        _ => {
            // Default convertor: creation time in RFC 3339, UTC.
            let created = str_at(obj, &["metadata", "creationTimestamp"]);
            let created = parse_rfc3339(created).map(format_rfc3339).unwrap_or_default();
            (vec![name(obj), Value::from(created)], None)
        }
    }
}

/// Unix seconds → `2006-01-02T15:04:05Z` ("" outside what a timestamp can hold).
pub fn format_rfc3339(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Render `objects` of `resource` as a `meta.k8s.io/v1` Table; each row's `object` is the object's
/// `PartialObjectMetadata` (upstream's default `includeObject=Metadata`). `now_unix` is the
/// server's clock for the Age columns. The caller sets `metadata.resourceVersion`/`continue`.
pub fn to_table(resource: &str, objects: &[Value], now_unix: i64) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let (cells, conditions) = row_cells(resource, obj, now_unix);
            let mut row = json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                },
            });
            if let (Some(c), Some(m)) = (conditions, row.as_object_mut()) {
                m.insert("conditions".to_string(), c);
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions(resource),
        "rows": rows,
    })
}

fn is_restartable_init(spec: &Value, name: &str) -> bool {
    arr(spec, &["initContainers"])
        .iter()
        .any(|c| str_at(c, &["name"]) == name && str_at(c, &["restartPolicy"]) == "Always")
}

fn last_terminated_at(cs: &Value) -> Option<i64> {
    cs.pointer("/lastState/terminated/finishedAt")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
}

fn condition_true(obj: &Value, ty: &str) -> bool {
    arr(obj, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == ty && str_at(c, &["status"]) == "True")
}

/// Upstream `printPod`, including its Init:/Completed/NotReady/Terminating rules.
fn pod_row(pod: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let status = pod.get("status").unwrap_or(&Value::Null);
    let phase = str_at(status, &["phase"]);
    let mut reason = phase.to_string();
    let status_reason = str_at(status, &["reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    for c in arr(status, &["conditions"]) {
        if str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }
    let conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    };

    let init_specs = arr(spec, &["initContainers"]);
    let mut total = arr(spec, &["containers"]).len();
    total += init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_sidecar_restart: Option<i64> = None;

    let init_statuses = arr(status, &["initContainerStatuses"]);
    let mut initializing = false;
    for (i, cs) in init_statuses.iter().enumerate() {
        let cname = str_at(cs, &["name"]);
        let count = int_at(cs, &["restartCount"]);
        restarts += count;
        let term_at = last_terminated_at(cs);
        if let Some(t) = term_at {
            last_restart = Some(last_restart.map_or(t, |l| l.max(t)));
        }
        let restartable = is_restartable_init(spec, cname);
        if restartable {
            sidecar_restarts += count;
            if let Some(t) = term_at {
                last_sidecar_restart = Some(last_sidecar_restart.map_or(t, |l| l.max(t)));
            }
        }
        let terminated = cs.pointer("/state/terminated");
        let waiting_reason = cs
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]) == 0) {
            continue;
        }
        if restartable && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = str_at(t, &["reason"]);
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if int_at(t, &["signal"]) != 0 {
                format!("Init:Signal:{}", int_at(t, &["signal"]))
            } else {
                format!("Init:ExitCode:{}", int_at(t, &["exitCode"]))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in arr(status, &["containerStatuses"]).iter().rev() {
            restarts += int_at(cs, &["restartCount"]);
            if let Some(t) = last_terminated_at(cs) {
                last_restart = Some(last_restart.map_or(t, |l| l.max(t)));
            }
            let waiting = cs
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let terminated = cs.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                let r = str_at(t, &["reason"]);
                reason = if !r.is_empty() {
                    r.to_string()
                } else if int_at(t, &["signal"]) != 0 {
                    format!("Signal:{}", int_at(t, &["signal"]))
                } else {
                    format!("ExitCode:{}", int_at(t, &["exitCode"]))
                };
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && cs.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let pod_ip = status
        .pointer("/podIPs/0/ip")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let gates = arr(spec, &["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let ty = str_at(g, &["conditionType"]);
                arr(status, &["conditions"])
                    .iter()
                    .find(|c| str_at(c, &["type"]) == ty)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    let cells = vec![
        name(pod),
        Value::from(format!("{ready}/{total}")),
        Value::from(reason),
        Value::from(restarts_str),
        age(pod, now),
        Value::from(or_none(pod_ip)),
        Value::from(or_none(str_at(spec, &["nodeName"]))),
        Value::from(or_none(str_at(status, &["nominatedNodeName"]))),
        Value::from(readiness_gates),
    ];
    (cells, conditions)
}

fn node_row(node: &Value, now: i64) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    // Upstream keeps the last condition of each type; only Ready is shown.
    if let Some(c) = arr(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
    {
        status.push(
            if str_at(c, &["status"]) == "True" {
                "Ready"
            } else {
                "NotReady"
            }
            .to_string(),
        );
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".to_string());
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(v.to_string());
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |ty: &str| {
        arr(node, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == ty)
            .map_or("<none>".to_string(), |a| str_at(a, &["address"]).to_string())
    };
    let info = |f: &str| {
        let v = str_at(node, &["status", "nodeInfo", f]);
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        name(node),
        Value::from(status.join(",")),
        Value::from(roles),
        age(node, now),
        Value::from(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        Value::from(address("InternalIP")),
        Value::from(address("ExternalIP")),
        Value::from(info("osImage")),
        Value::from(info("kernelVersion")),
        Value::from(info("containerRuntimeVersion")),
    ]
}

fn service_row(svc: &Value, now: i64) -> Vec<Value> {
    let spec = svc.get("spec").unwrap_or(&Value::Null);
    let ty = str_at(spec, &["type"]);
    let cluster_ip = arr(spec, &["clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            let ip = str_at(spec, &["clusterIP"]);
            (!ip.is_empty()).then(|| ip.to_string())
        })
        .unwrap_or_else(|| "<none>".to_string());
    let external_ips: Vec<&str> = arr(spec, &["externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match ty {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb: BTreeSet<&str> = arr(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| {
                    let ip = str_at(i, &["ip"]);
                    let host = str_at(i, &["hostname"]);
                    if !ip.is_empty() {
                        Some(ip)
                    } else if !host.is_empty() {
                        Some(host)
                    } else {
                        None
                    }
                })
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            if !external_ips.is_empty() {
                all.extend(external_ips);
                all.join(",")
            } else if !all.is_empty() {
                all.join(",")
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(spec, &["externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = arr(spec, &["ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let proto = str_at(p, &["protocol"]);
            let node_port = int_at(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name(svc),
        Value::from(ty),
        Value::from(cluster_ip),
        Value::from(external),
        Value::from(ports),
        age(svc, now),
        Value::from(format_labels(spec.get("selector"))),
    ]
}

/// Upstream `formatEndpoints` with all ports: up to three `ip:port`, then `+ N more...`.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addrs = arr(ss, &["addresses"]);
        let ports = arr(ss, &["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let ip = str_at(a, &["ip"]);
                let port = int_at(p, &["port"]);
                // net.JoinHostPort brackets IPv6 addresses.
                list.push(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
}

fn list_with_more(list: Vec<String>, more: bool, count: usize) -> String {
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - 3)
    } else if ret.is_empty() {
        "<unset>".to_string()
    } else {
        ret
    }
}

fn endpoint_slice_row(es: &Value, now: i64) -> Vec<Value> {
    let mut ports = Vec::new();
    let mut more = false;
    let mut count = 0;
    for p in arr(es, &["ports"]) {
        if ports.len() < 3 {
            let n = match (
                p.get("port").and_then(Value::as_i64),
                p.get("name").and_then(Value::as_str),
            ) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                _ => "*".to_string(),
            };
            ports.push(n);
        } else if ports.len() == 3 {
            more = true;
        }
        count += 1;
    }
    let ports = list_with_more(ports, more, count);
    let mut eps = Vec::new();
    let mut more = false;
    let mut count = 0;
    for e in arr(es, &["endpoints"]) {
        for a in arr(e, &["addresses"]) {
            if eps.len() < 3 {
                eps.push(a.as_str().unwrap_or_default().to_string());
            } else if eps.len() == 3 {
                more = true;
            }
            count += 1;
        }
    }
    let eps = list_with_more(eps, more, count);
    vec![
        name(es),
        Value::from(str_at(es, &["addressType"])),
        Value::from(ports),
        Value::from(eps),
        age(es, now),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

/// Upstream `printEvent` (wide form), for core/v1 and events.k8s.io/v1 shapes.
fn event_row(ev: &Value, now: i64) -> Vec<Value> {
    let v1 = ev.get("regarding").is_some() || ev.get("note").is_some();
    let pick = |core: &str, events: &str| if v1 { events.to_string() } else { core.to_string() };
    let first_ts = str_at(ev, &[&pick("firstTimestamp", "deprecatedFirstTimestamp")]).to_string();
    let last_ts = str_at(ev, &[&pick("lastTimestamp", "deprecatedLastTimestamp")]).to_string();
    let first = if first_ts.is_empty() {
        since(str_at(ev, &["eventTime"]), now)
    } else {
        since(&first_ts, now)
    };
    let mut last = if last_ts.is_empty() {
        first.clone()
    } else {
        since(&last_ts, now)
    };
    let mut count = int_at(ev, &[&pick("count", "deprecatedCount")]);
    if let Some(series) = ev.get("series").filter(|s| s.is_object()) {
        last = since(str_at(series, &["lastObservedTime"]), now);
        count = int_at(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let target_obj = ev
        .get(pick("involvedObject", "regarding"))
        .unwrap_or(&Value::Null);
    let kind = str_at(target_obj, &["kind"]).to_lowercase();
    let tname = str_at(target_obj, &["name"]);
    let target = if tname.is_empty() {
        kind
    } else {
        format!("{kind}/{tname}")
    };
    let source = ev.get(pick("source", "deprecatedSource")).unwrap_or(&Value::Null);
    let component = first_non_empty(
        str_at(source, &["component"]),
        str_at(ev, &["reportingController"]),
    );
    let instance = first_non_empty(str_at(source, &["host"]), str_at(ev, &["reportingInstance"]));
    let source_str = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    let message = str_at(ev, &[&pick("message", "note")]).trim().to_string();
    vec![
        Value::from(last),
        Value::from(str_at(ev, &["type"])),
        Value::from(str_at(ev, &["reason"])),
        Value::from(target),
        Value::from(str_at(target_obj, &["fieldPath"])),
        Value::from(source_str),
        Value::from(message),
        Value::from(first),
        Value::from(count),
        name(ev),
    ]
}

#[cfg(test)]
mod tests;
