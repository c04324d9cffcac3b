//! What a container is given besides its image: environment variables (service links, `envFrom`,
//! `env` with `$(VAR)` expansion, downward API `fieldRef`/`resourceFieldRef`, configMap and secret
//! keys) and the pod's `/etc/hosts`. Pure functions over the pod and the referenced objects
//! ([`PodRefs`], fetched by [`fetch_refs`]); a missing non-optional reference is upstream's
//! `CreateContainerConfigError` with upstream's message.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::Api;
use kube::api::ListParams;

use crate::pods::StartError;

/// The objects a pod's containers reference, fetched once per container start.
#[derive(Debug, Default, Clone)]
pub struct PodRefs {
    /// `None` = does not exist.
    pub configmaps: HashMap<String, Option<ConfigMap>>,
    pub secrets: HashMap<String, Option<Secret>>,
    /// Services of the pod's namespace plus `default/kubernetes` (service links).
    pub services: Vec<Service>,
}

fn config_error(msg: String) -> StartError {
    StartError::new("CreateContainerConfigError", msg)
}

/// Names of configMaps and secrets the pod references (env, envFrom, volumes, projections).
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.push(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(vf) = &e.value_from {
                if let Some(r) = &vf.config_map_key_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &vf.secret_key_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.push(c.name.clone());
        }
        if let Some(s) = &v.secret
            && let Some(n) = &s.secret_name
        {
            secrets.push(n.clone());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                cms.push(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// Fetches what the pod references from the API server.
pub async fn fetch_refs(client: &kube::Client, pod: &Pod) -> Result<PodRefs, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (cms, secrets) = referenced(pod);
    let mut refs = PodRefs::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in cms {
        let v = cm_api.get_opt(&name).await?;
        refs.configmaps.insert(name, v);
    }
    let sec_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in secrets {
        let v = sec_api.get_opt(&name).await?;
        refs.secrets.insert(name, v);
    }
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    if links {
        let svc_api: Api<Service> = Api::namespaced(client.clone(), ns);
        refs.services = svc_api.list(&ListParams::default()).await?.items;
    }
    if ns != "default" {
        let def: Api<Service> = Api::namespaced(client.clone(), "default");
        if let Some(k) = def.get_opt("kubernetes").await? {
            refs.services.push(k);
        }
    }
    Ok(refs)
}

/// Docker-links style variables for the services (upstream's `getServiceEnvVarMap`).
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.metadata.name.clone());
    for s in sorted {
        let Some(spec) = &s.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let Some(name) = &s.metadata.name else { continue };
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_lowercase()
        };
        out.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", proto(first), first.port),
        ));
        for p in ports {
            let pr = proto(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((base.clone(), format!("{pr}://{ip}:{}", p.port)));
            out.push((format!("{base}_PROTO"), pr.clone()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// Upstream's `$(VAR)` expansion: defined names are replaced, `$$` escapes, anything else is kept.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Values the downward API can give.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub node_name: String,
    pub host_ip: String,
    pub pod_ip: String,
    /// Node allocatable cpu (millicores) and memory (bytes): the default for unset limits.
    pub node_cpu_millis: i64,
    pub node_memory: i64,
}

fn field_ref(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |p: &str, prefix: &str| -> Option<String> {
        p.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['").and_then(|r| r.strip_suffix("']")))
            .map(String::from)
    };
    if let Some(k) = map_key(path, "metadata.labels") {
        return Ok(m
            .labels
            .as_ref()
            .and_then(|l| l.get(&k))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(k) = map_key(path, "metadata.annotations") {
        return Ok(m
            .annotations
            .as_ref()
            .and_then(|l| l.get(&k))
            .cloned()
            .unwrap_or_default());
    }
    let fmt_map = |map: Option<&BTreeMap<String, String>>| -> String {
        map.into_iter()
            .flatten()
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => fmt_map(m.labels.as_ref()),
        "metadata.annotations" => fmt_map(m.annotations.as_ref()),
        "spec.nodeName" => facts.node_name.clone(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, mult) = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1.0));
    num.parse::<f64>().ok().map(|n| n * mult)
}

fn resource_field(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    facts: &PodFacts,
) -> Result<String, String> {
    let res = container.resources.as_ref();
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let value = map.and_then(|m| m.get(name)).and_then(|q| parse_quantity(&q.0));
    let value = match (value, kind, name) {
        (Some(v), _, _) => v,
        (None, "limits", "cpu") => facts.node_cpu_millis as f64 / 1000.0,
        (None, "limits", "memory") => facts.node_memory as f64,
        (None, _, _) => 0.0,
    };
    let div = divisor
        .and_then(parse_quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    // Upstream rounds up to the divisor's unit.
    Ok(((value / div).ceil() as i64).to_string())
}

/// The container's environment, in upstream's precedence: service links, then `envFrom` in order,
/// then `env` in order (each value expanded against what is defined before it).
pub fn container_env(
    pod: &Pod,
    c: &Container,
    refs: &PodRefs,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, StartError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<String, String> = HashMap::new();
    let set =
        |vars: &mut Vec<(String, String)>, index: &mut HashMap<String, String>, k: String, v: String| {
            if let Some(pos) = vars.iter().position(|(n, _)| *n == k) {
                vars[pos].1 = v.clone();
            } else {
                vars.push((k.clone(), v.clone()));
            }
            index.insert(k, v);
        };
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true)
    {
        for (k, v) in service_env(&refs.services) {
            set(&mut vars, &mut index, k, v);
        }
    } else {
        // Only the master service's variables when links are off.
        let k8s: Vec<Service> = refs
            .services
            .iter()
            .filter(|s| {
                s.metadata.name.as_deref() == Some("kubernetes")
                    && s.metadata.namespace.as_deref() == Some("default")
            })
            .cloned()
            .collect();
        for (k, v) in service_env(&k8s) {
            set(&mut vars, &mut index, k, v);
        }
    }
    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        if let Some(r) = &ef.config_map_ref {
            match refs.configmaps.get(&r.name).cloned().flatten() {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, &mut index, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(config_error(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &ef.secret_ref {
            match refs.secrets.get(&r.name).cloned().flatten() {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(
                            &mut vars,
                            &mut index,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(config_error(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or(""), &index),
            Some(vf) => {
                if let Some(f) = &vf.field_ref {
                    field_ref(pod, &f.field_path, facts).map_err(config_error)?
                } else if let Some(r) = &vf.resource_field_ref {
                    let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                        Some(n) => pod
                            .spec
                            .iter()
                            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
                            .find(|x| x.name == n)
                            .ok_or_else(|| {
                                config_error(format!("container {n:?} not found for resourceFieldRef"))
                            })?,
                        None => c,
                    };
                    resource_field(
                        target,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                        facts,
                    )
                    .map_err(config_error)?
                } else if let Some(r) = &vf.config_map_key_ref {
                    match refs.configmaps.get(&r.name).cloned().flatten() {
                        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => v.clone(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(config_error(format!(
                                    "couldn't find key {} in ConfigMap {}/{}",
                                    r.key,
                                    pod.metadata.namespace.as_deref().unwrap_or(""),
                                    r.name
                                )));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(config_error(format!("configmap \"{}\" not found", r.name))),
                    }
                } else if let Some(r) = &vf.secret_key_ref {
                    match refs.secrets.get(&r.name).cloned().flatten() {
                        Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(config_error(format!(
                                    "couldn't find key {} in Secret {}/{}",
                                    r.key,
                                    pod.metadata.namespace.as_deref().unwrap_or(""),
                                    r.name
                                )));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(config_error(format!("secret \"{}\" not found", r.name))),
                    }
                } else {
                    String::new()
                }
            }
        };
        set(&mut vars, &mut index, e.name.clone(), value);
    }
    Ok(vars)
}

/// Expands `$(VAR)` in command and args against the container's environment.
pub fn expand_args(list: Option<&Vec<String>>, env: &[(String, String)]) -> Option<Vec<String>> {
    let index: HashMap<String, String> = env.iter().cloned().collect();
    list.map(|l| l.iter().map(|a| expand(a, &index)).collect())
}

/// The pod's `/etc/hosts` (upstream's managed hosts file) for its `hostname` and `domain` (see
/// [`crate::pods::dns::hostname_and_domain`]).
pub fn hosts_file(
    pod: &Pod,
    pod_ip: &str,
    host_network_hosts: Option<&str>,
    hostname: &str,
    domain: Option<&str>,
) -> String {
    if let Some(h) = host_network_hosts {
        return h.to_string();
    }
    let spec = pod.spec.as_ref();
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if !pod_ip.is_empty() {
        match domain {
            Some(d) => out.push_str(&format!("{pod_ip}\t{hostname}.{d}\t{hostname}\n")),
            None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
        }
    }
    let aliases = spec.and_then(|s| s.host_aliases.clone()).unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.unwrap_or_default().join("\t")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1",
            "labels": {"app": "x"}}, "spec": spec}))
        .unwrap()
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$$-$", &vars), "1-$(B)-$(A)-$-$");
        assert_eq!(expand("x$(A", &vars), "x$(A");
    }

    #[test]
    fn env_precedence_downward_api_and_refs() {
        let p = pod(
            json!({"serviceAccountName": "sa", "containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"memory": "64Mi"}},
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [{"name": "A", "value": "a"}, {"name": "B", "value": "$(A)-$(CM_k)"},
                    {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}}]}]}),
        );
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"k": "v"}})).unwrap();
        let sec: Secret =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"pw": "aHVudGVyMg=="}}))
                .unwrap();
        let refs = PodRefs {
            configmaps: HashMap::from([("cm".to_string(), Some(cm))]),
            secrets: HashMap::from([("s".to_string(), Some(sec))]),
            services: vec![serde_json::from_value(json!({"metadata": {"name": "my-svc"},
                "spec": {"clusterIP": "10.96.1.2", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})).unwrap()],
        };
        let facts = PodFacts {
            pod_ip: "10.244.0.7".into(),
            ..Default::default()
        };
        let env: HashMap<String, String> =
            container_env(&p, &p.spec.as_ref().unwrap().containers[0], &refs, &facts)
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(env["B"], "a-v");
        assert_eq!(env["N"], "p");
        assert_eq!(env["L"], "x");
        assert_eq!(env["IP"], "10.244.0.7");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["S"], "hunter2");
        assert_eq!(env["MY_SVC_SERVICE_HOST"], "10.96.1.2");
        assert_eq!(env["MY_SVC_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["MY_SVC_PORT_80_TCP_ADDR"], "10.96.1.2");
        assert_eq!(env["MY_SVC_PORT"], "tcp://10.96.1.2:80");
    }

    #[test]
    fn missing_references_are_create_container_config_errors_unless_optional() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}]}));
        let e = container_env(
            &p,
            &p.spec.as_ref().unwrap().containers[0],
            &PodRefs::default(),
            &PodFacts::default(),
        )
        .unwrap_err();
        assert_eq!(e.reason, "CreateContainerConfigError");
        assert_eq!(e.message, "configmap \"nope\" not found");
        let p = pod(json!({"containers": [{"name": "c", "image": "i",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}}]}]}));
        assert!(
            container_env(
                &p,
                &p.spec.as_ref().unwrap().containers[0],
                &PodRefs::default(),
                &PodFacts::default()
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn hosts_file_has_pod_ip_and_aliases() {
        let p = pod(
            json!({"hostname": "h", "subdomain": "sub", "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}], "containers": []}),
        );
        let (name, domain) = crate::pods::dns::hostname_and_domain(&p, "cluster.local").unwrap();
        let h = hosts_file(&p, "10.0.0.9", None, &name, domain.as_deref());
        assert!(h.contains("10.0.0.9\th.sub.ns.svc.cluster.local\th\n"), "{h}");
        assert!(h.contains("1.2.3.4\ta\tb\n"), "{h}");
    }
}
