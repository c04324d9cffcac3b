//! What kube-apiserver does to an object between decoding and storing: upstream's defaulting
//! (SetDefaults_* for pods and services), the admission plugins a default cluster runs
//! (ServiceAccount token volume, DefaultTolerationSeconds, Priority), the registry strategies'
//! PrepareForCreate/Update (status handling, generation, immutable metadata), ClusterIP and
//! NodePort allocation, and graceful deletion.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use crate::api::ApiError;
use crate::resources::ResourceDef;
use crate::store::Update;
use crate::{ControlPlane, machinery, now_rfc3339, now_unix, random_suffix, rfc3339};

/// Where the ServiceAccount admission plugin mounts the API credentials.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let o = v.as_object_mut()?;
    let e = o.entry(key).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut()
}

fn default(m: &mut Map<String, Value>, key: &str, v: Value) {
    let missing = m.get(key).is_none_or(Value::is_null);
    if missing {
        m.insert(key.into(), v);
    }
}

/// Whether PUT may create the object (upstream's AllowCreateOnUpdate).
pub fn create_on_update(def: &ResourceDef) -> bool {
    matches!(def.plural, "leases" | "endpoints" | "events" | "endpointslices")
}

/// Defaults, admission and allocation for a new object.
pub fn on_create(cp: &ControlPlane, def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    match (def.group, def.plural) {
        ("", "pods") => {
            default_pod(obj);
            if cp.config.admission_enabled("ServiceAccount") {
                service_account_admission(cp, def, obj)?;
            }
            if cp.config.admission_enabled("DefaultTolerationSeconds") {
                default_tolerations(obj);
            }
            if let Some(m) = obj_mut(obj, "metadata") {
                m.insert("generation".into(), json!(1));
            }
            let qos = machinery::qos_class(&obj["spec"]);
            let status = json!({"phase": "Pending", "qosClass": qos});
            if let Some(o) = obj.as_object_mut() {
                o.insert("status".into(), status);
            }
        }
        ("", "services") => {
            default_service(obj);
            allocate_service(cp, def, obj, None, None)?;
            if let Some(o) = obj.as_object_mut() {
                o.insert("status".into(), json!({"loadBalancer": {}}));
            }
        }
        ("", "secrets") => fold_string_data(obj),
        ("discovery.k8s.io", "endpointslices") => default_endpoint_slice(obj),
        ("", "namespaces") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                spec.insert("finalizers".into(), json!(["kubernetes"]));
            }
            if let Some(o) = obj.as_object_mut() {
                o.insert("status".into(), json!({"phase": "Active"}));
            }
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if let Some(labels) = obj_mut(&mut obj["metadata"], "labels") {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Update-time rules: immutable metadata, status only through `/status`, generation, service
/// allocations kept.
///
/// Runs under the store lock (inside `Store::update`), so it must not read the store: `services`
/// is the caller's snapshot of all Services (for ClusterIP / NodePort conflict checks).
pub fn on_update(
    cp: &ControlPlane,
    def: &ResourceDef,
    sub: &str,
    cur: &Value,
    new: &mut Value,
    services: &[std::sync::Arc<Value>],
) -> Result<(), ApiError> {
    // Metadata the server owns.
    for key in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match cur["metadata"].get(key) {
            Some(v) => {
                if let Some(m) = obj_mut(new, "metadata") {
                    m.insert(key.into(), v.clone());
                }
            }
            None => {
                if let Some(m) = obj_mut(new, "metadata") {
                    m.remove(key);
                }
            }
        }
    }
    let has_status = def.subresources.contains(&"status");
    match sub {
        "status" => {
            // The status endpoint changes status (and labels/annotations), never spec.
            if let Some(o) = new.as_object_mut() {
                o.insert("spec".into(), cur.get("spec").cloned().unwrap_or(json!({})));
            }
            if let Some(or) = cur["metadata"].get("ownerReferences")
                && let Some(m) = obj_mut(new, "metadata")
            {
                m.insert("ownerReferences".into(), or.clone());
            }
        }
        "ephemeralcontainers" => {
            // Only spec.ephemeralContainers changes, and only by additions (upstream's
            // ValidatePodEphemeralContainersUpdate); the pod's generation moves on.
            let added = new["spec"]["ephemeralContainers"].clone();
            let before = cur["spec"]["ephemeralContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let after = added.as_array().cloned().unwrap_or_default();
            for old_ec in &before {
                if !after.contains(old_ec) {
                    let name = old_ec["name"].as_str().unwrap_or_default();
                    return Err(invalid_field(
                        def,
                        cur,
                        "spec.ephemeralContainers",
                        format!("Forbidden: existing ephemeral containers \"{name}\" may not be changed"),
                    ));
                }
            }
            *new = cur.clone();
            new["spec"]["ephemeralContainers"] = added;
            if after.len() != before.len() {
                let g = cur["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                new["metadata"]["generation"] = json!(g);
            }
        }
        "finalize" => {
            let finalizers = new["spec"]["finalizers"].clone();
            *new = cur.clone();
            new["spec"]["finalizers"] = if finalizers.is_null() {
                json!([])
            } else {
                finalizers
            };
        }
        _ if has_status => {
            if let Some(o) = new.as_object_mut() {
                match cur.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            if def.plural == "namespaces" {
                new["spec"]["finalizers"] = cur["spec"]["finalizers"].clone();
            }
        }
        _ => {}
    }
    match def.plural {
        "pods" if sub.is_empty() && new.get("spec") != cur.get("spec") => {
            let g = cur["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        "services" if sub.is_empty() => {
            default_service(new);
            allocate_service(cp, def, new, Some(cur), Some(services))?;
        }
        "secrets" => fold_string_data(new),
        "endpointslices" => default_endpoint_slice(new),
        _ => {}
    }
    Ok(())
}

/// Whether an update leaves an object that should now be removed: being deleted, with no
/// finalizers left and no grace period running.
pub fn finalized(def: &ResourceDef, obj: &Value) -> bool {
    let meta = &obj["metadata"];
    if meta.get("deletionTimestamp").is_none_or(Value::is_null) {
        return false;
    }
    let no_finalizers = meta["finalizers"].as_array().is_none_or(Vec::is_empty);
    let grace_over = meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0;
    let ns_done =
        def.plural != "namespaces" || obj["spec"]["finalizers"].as_array().is_none_or(Vec::is_empty);
    no_finalizers && grace_over && ns_done
}

/// Deletion: graceful for pods running on a node, two-phase for namespaces and objects with
/// finalizers, immediate otherwise.
pub fn on_delete(def: &ResourceDef, cur: &Value, grace: Option<i64>) -> Update {
    let meta = &cur["metadata"];
    let deleting = meta.get("deletionTimestamp").is_some_and(|v| !v.is_null());
    let has_finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    let mut new = cur.clone();
    match def.plural {
        "namespaces" => {
            if deleting {
                return Update::Keep;
            }
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            new["status"]["phase"] = json!("Terminating");
            if new["spec"]["finalizers"].as_array().is_none_or(Vec::is_empty) && !has_finalizers {
                return Update::Delete;
            }
            return Update::Put(new);
        }
        "pods" => {
            let unscheduled = cur["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
            let terminal = matches!(cur["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
            let mut g = grace
                .or_else(|| cur["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0);
            if unscheduled || terminal {
                g = 0;
            }
            if deleting {
                let current = meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
                if g >= current && g != 0 {
                    return Update::Keep;
                }
            }
            if g > 0 {
                new["metadata"]["deletionTimestamp"] = json!(rfc3339(now_unix() + g));
                new["metadata"]["deletionGracePeriodSeconds"] = json!(g);
                return Update::Put(new);
            }
        }
        _ => {}
    }
    if has_finalizers {
        if deleting && meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0 {
            return Update::Keep;
        }
        if !deleting {
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        }
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        return Update::Put(new);
    }
    Update::Delete
}

/// EndpointSlice port defaults (upstream's SetDefaults_EndpointPort: name "" and protocol TCP;
/// kubectl describe dereferences both).
fn default_endpoint_slice(slice: &mut Value) {
    if let Some(ports) = slice.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "name", json!(""));
            default(p, "protocol", json!("TCP"));
        }
    }
}

/// Upstream's pod defaults (pkg/apis/core/v1/defaults.go) that clients see in `kubectl get -o yaml`.
pub fn default_pod(pod: &mut Value) {
    let mirror = pod["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some();
    let Some(spec) = obj_mut(pod, "spec") else { return };
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    if spec.get("priorityClassName").is_none_or(Value::is_null) {
        default(spec, "priority", json!(0));
    }
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    if !mirror {
        let sa = spec
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or_else(|| {
                spec.get("serviceAccount")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or("default")
            .to_string();
        spec.insert("serviceAccountName".into(), json!(sa));
        spec.insert("serviceAccount".into(), json!(sa));
    }
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                default_container(c);
            }
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            for (src, field) in [
                ("secret", "defaultMode"),
                ("configMap", "defaultMode"),
                ("projected", "defaultMode"),
                ("downwardAPI", "defaultMode"),
            ] {
                if let Some(s) = v.get_mut(src).and_then(Value::as_object_mut) {
                    default(s, field, json!(420));
                }
            }
            if let Some(h) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
                default(h, "type", json!(""));
            }
        }
    }
}

fn default_probe(p: &mut Value) {
    let Some(p) = p.as_object_mut() else { return };
    default(p, "timeoutSeconds", json!(1));
    default(p, "periodSeconds", json!(10));
    default(p, "successThreshold", json!(1));
    default(p, "failureThreshold", json!(3));
    if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
        default(h, "path", json!("/"));
        default(h, "scheme", json!("HTTP"));
    }
    if let Some(g) = p.get_mut("grpc").and_then(Value::as_object_mut) {
        default(g, "service", json!(""));
    }
}

fn default_container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or("").to_string();
    let Some(m) = c.as_object_mut() else { return };
    default(m, "terminationMessagePath", json!("/dev/termination-log"));
    default(m, "terminationMessagePolicy", json!("File"));
    default(m, "imagePullPolicy", json!(default_pull_policy(&image)));
    default(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe) {
            default_probe(p);
        }
    }
    if let Some(env) = m.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(f) = e
                .pointer_mut("/valueFrom/fieldRef")
                .and_then(Value::as_object_mut)
            {
                default(f, "apiVersion", json!("v1"));
            }
        }
    }
    // Requests default to limits where only limits are given.
    if let Some(res) = m.get_mut("resources").and_then(Value::as_object_mut)
        && let Some(limits) = res.get("limits").and_then(Value::as_object).cloned()
    {
        let requests = res.entry("requests").or_insert_with(|| json!({}));
        if let Some(r) = requests.as_object_mut() {
            for (k, v) in limits {
                r.entry(k).or_insert(v);
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise (digests included).
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_tolerations(pod: &mut Value) {
    let Some(spec) = obj_mut(pod, "spec") else { return };
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tols.as_array_mut() else { return };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let present = list.iter().any(|t| {
            (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
                && (t["effect"] == "NoExecute" || t["effect"].is_null())
        });
        if !present {
            list.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            );
        }
    }
}

/// The ServiceAccount admission plugin: the service account must exist (unless it is `default`,
/// which the namespace controller is about to create), and pods get the projected
/// `kube-api-access-*` volume mounted in every container unless automount is off.
fn service_account_admission(cp: &ControlPlane, def: &ResourceDef, pod: &mut Value) -> Result<(), ApiError> {
    if pod["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let sa_name = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let sa = cp.store.get("serviceaccounts", &ns, &sa_name);
    if sa.is_none() && sa_name != "default" {
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found",
            def.qualified()
        )));
    }
    let automount = pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| {
            sa.as_deref()
                .and_then(|s| s["automountServiceAccountToken"].as_bool())
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let already = ["containers", "initContainers"].iter().any(|k| {
        pod["spec"][*k].as_array().into_iter().flatten().any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == SA_MOUNT_PATH)
        })
    });
    if already {
        return Ok(());
    }
    let vol_name = format!("kube-api-access-{}", random_suffix(5));
    let volume = json!({"name": vol_name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}});
    let Some(spec) = obj_mut(pod, "spec") else {
        return Ok(());
    };
    let vols = spec.entry("volumes").or_insert_with(|| json!([]));
    if let Some(v) = vols.as_array_mut() {
        v.push(volume);
    }
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c.as_object_mut() {
                    let mounts = m.entry("volumeMounts").or_insert_with(|| json!([]));
                    if let Some(list) = mounts.as_array_mut() {
                        list.push(json!({"name": vol_name, "readOnly": true, "mountPath": SA_MOUNT_PATH}));
                    }
                }
            }
        }
    }
    Ok(())
}

fn fold_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(o) = secret.as_object_mut() else { return };
    if let Some(Value::Object(sd)) = o.remove("stringData") {
        let data = o.entry("data").or_insert_with(|| json!({}));
        if let Some(d) = data.as_object_mut() {
            for (k, v) in sd {
                let s = v.as_str().unwrap_or("");
                d.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(s)));
            }
        }
    }
    o.entry("type").or_insert_with(|| json!("Opaque"));
}

/// Service defaults (pkg/apis/core/v1/defaults.go SetDefaults_Service).
pub fn default_service(svc: &mut Value) {
    let Some(spec) = obj_mut(svc, "spec") else { return };
    default(spec, "type", json!("ClusterIP"));
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    default(spec, "sessionAffinity", json!("None"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
            if p.get("targetPort").is_none_or(Value::is_null) {
                let port = p.get("port").cloned().unwrap_or(json!(0));
                p.insert("targetPort".into(), port);
            }
        }
    }
    if ty != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        default(
            spec,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
}

fn invalid_field(def: &ResourceDef, obj: &Value, field: &str, detail: String) -> ApiError {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    ApiError::invalid(
        def,
        name,
        format!("{} \"{name}\" is invalid: {field}: {detail}", def.kind),
        vec![json!({"reason": "FieldValueInvalid", "message": detail, "field": field})],
    )
}

/// ClusterIP and NodePort allocation. Dynamic ClusterIPs come from above the range's static band
/// (as upstream, which keeps the low addresses for explicit requests such as a DNS service), node
/// ports from the whole range; duplicates of explicit values are rejected.
fn allocate_service(
    cp: &ControlPlane,
    def: &ResourceDef,
    svc: &mut Value,
    old: Option<&Value>,
    snapshot: Option<&[std::sync::Arc<Value>]>,
) -> Result<(), ApiError> {
    let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP").to_string();
    let my_ns = svc["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let my_name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let listed;
    let services: &[std::sync::Arc<Value>] = match snapshot {
        Some(s) => s,
        None => {
            listed = cp.store.list("services", None).1;
            &listed
        }
    };
    let others = services.iter().filter(|s| {
        !(s["metadata"]["namespace"] == my_ns.as_str() && s["metadata"]["name"] == my_name.as_str())
    });
    let mut used_ips = HashSet::new();
    let mut used_ports = HashSet::new();
    for s in others {
        if let Some(ip) = s["spec"]["clusterIP"].as_str() {
            used_ips.insert(ip.to_string());
        }
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64() {
                used_ports.insert(n);
            }
        }
    }
    if ty == "ExternalName" {
        return Ok(());
    }
    // ClusterIP: immutable once set; an update that omits it keeps the old one.
    let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    let old_ip = old
        .and_then(|o| o["spec"]["clusterIP"].as_str())
        .unwrap_or("")
        .to_string();
    let ip = if !old_ip.is_empty() {
        if !requested.is_empty() && requested != old_ip {
            return Err(invalid_field(
                def,
                svc,
                "spec.clusterIPs[0]",
                format!("Invalid value: []string{{\"{requested}\"}}: may not change once set"),
            ));
        }
        old_ip
    } else if requested == "None" {
        requested
    } else if !requested.is_empty() {
        let addr: Ipv4Addr = requested.parse().map_err(|_| {
            invalid_field(
                def,
                svc,
                "spec.clusterIPs[0]",
                format!("Invalid value: \"{requested}\": must be a valid IP address"),
            )
        })?;
        if !cp.config.service_cidr.contains(addr) {
            return Err(invalid_field(
                def,
                svc,
                "spec.clusterIPs",
                format!(
                    "Invalid value: []string{{\"{requested}\"}}: failed to allocate IP {requested}: provided IP is not in the valid range. The range of valid IPs is {}",
                    cp.config.service_cidr
                ),
            ));
        }
        if used_ips.contains(&requested) {
            return Err(invalid_field(
                def,
                svc,
                "spec.clusterIPs",
                format!(
                    "Invalid value: []string{{\"{requested}\"}}: failed to allocate IP {requested}: provided IP is already allocated"
                ),
            ));
        }
        requested
    } else {
        cp.config
            .service_cidr
            .dynamic_hosts()
            .map(|a| a.to_string())
            .find(|a| !used_ips.contains(a))
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "failed to allocate a serviceIP: range is full ({})",
                    cp.config.service_cidr
                ))
            })?
    };
    svc["spec"]["clusterIP"] = json!(ip);
    svc["spec"]["clusterIPs"] = json!([ip]);
    if let Some(spec) = obj_mut(svc, "spec") {
        default(spec, "ipFamilies", json!(["IPv4"]));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    let wants_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer" && svc["spec"]["allocateLoadBalancerNodePorts"].as_bool() != Some(false));
    let old_ports: Vec<Value> = old
        .and_then(|o| o["spec"]["ports"].as_array().cloned())
        .unwrap_or_default();
    let (lo, hi) = cp.config.node_port_range;
    let mut mine = HashSet::new();
    if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
        for (i, p) in ports.iter_mut().enumerate() {
            if !wants_node_ports {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
                continue;
            }
            let explicit = p["nodePort"].as_i64().filter(|n| *n != 0);
            let kept = old_ports
                .iter()
                .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                .and_then(|o| o["nodePort"].as_i64());
            let n = match explicit {
                Some(n) => {
                    if n < lo || n > hi {
                        return Err(invalid_field(
                            def,
                            svc,
                            &format!("spec.ports[{i}].nodePort"),
                            format!(
                                "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                            ),
                        ));
                    }
                    if used_ports.contains(&n) || (mine.contains(&n) && kept != Some(n)) {
                        return Err(invalid_field(
                            def,
                            svc,
                            &format!("spec.ports[{i}].nodePort"),
                            format!("Invalid value: {n}: provided port is already allocated"),
                        ));
                    }
                    n
                }
                None => match kept {
                    Some(k) => k,
                    None => {
                        let span = hi - lo + 1;
                        let start = (crate::random_u64() % span as u64) as i64;
                        (0..span)
                            .map(|k| lo + (start + k) % span)
                            .find(|c| !used_ports.contains(c) && !mine.contains(c))
                            .ok_or_else(|| {
                                ApiError::internal("failed to allocate a nodePort: range is full")
                            })?
                    }
                },
            };
            mine.insert(n);
            p["nodePort"] = json!(n);
        }
    }
    Ok(())
}
