//! The resources this server serves, and the discovery documents (`/api`, `/apis`, `/api/v1`,
//! `/apis/<group>/<version>`) that kubectl and client libraries read to find them.

use serde_json::{Value, json};

/// One served resource (a group/version/plural with its kind and verbs).
#[derive(Debug, Clone, Copy)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Subresources, e.g. `status`, `binding`.
    pub subresources: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Where objects are kept; resources that are views of another share its key
    /// (events.k8s.io/v1 events are core events).
    pub storage: &'static str,
}

const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const CREATE_ONLY: &[&str] = &["create"];

const fn def(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names: &[],
        verbs: CRUD,
        subresources: &[],
        categories: &[],
        storage: plural,
    }
}

impl ResourceDef {
    /// With kubectl's short names.
    const fn short(self, short_names: &'static [&'static str]) -> ResourceDef {
        ResourceDef { short_names, ..self }
    }

    /// A review: created and answered, never stored.
    const fn review(self) -> ResourceDef {
        ResourceDef {
            verbs: CREATE_ONLY,
            storage: "",
            ..self
        }
    }
}

/// Every served resource.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        short_names: &["ns"],
        subresources: &["status", "finalize"],
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        ..def("", "namespaces", "namespace", "Namespace", false)
    },
    ResourceDef {
        short_names: &["no"],
        subresources: &["status", "proxy"],
        ..def("", "nodes", "node", "Node", false)
    },
    ResourceDef {
        short_names: &["po"],
        subresources: &[
            "status",
            "binding",
            "eviction",
            "ephemeralcontainers",
            "log",
            "exec",
            "attach",
            "portforward",
        ],
        categories: &["all"],
        ..def("", "pods", "pod", "Pod", true)
    },
    ResourceDef {
        short_names: &["svc"],
        subresources: &["status"],
        categories: &["all"],
        ..def("", "services", "service", "Service", true)
    },
    def("", "endpoints", "endpoints", "Endpoints", true).short(&["ep"]),
    def("", "configmaps", "configmap", "ConfigMap", true).short(&["cm"]),
    def("", "secrets", "secret", "Secret", true),
    ResourceDef {
        short_names: &["sa"],
        subresources: &["token"],
        ..def("", "serviceaccounts", "serviceaccount", "ServiceAccount", true)
    },
    def("", "events", "event", "Event", true).short(&["ev"]),
    def("events.k8s.io", "events", "event", "Event", true).short(&["ev"]),
    ResourceDef {
        storage: "leases.coordination.k8s.io",
        ..def("coordination.k8s.io", "leases", "lease", "Lease", true)
    },
    ResourceDef {
        storage: "endpointslices.discovery.k8s.io",
        ..def(
            "discovery.k8s.io",
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            true,
        )
    },
    def(
        "authentication.k8s.io",
        "tokenreviews",
        "tokenreview",
        "TokenReview",
        false,
    )
    .review(),
    def(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false,
    )
    .review(),
    def(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
    )
    .review(),
    def(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
    )
    .review(),
];

impl ResourceDef {
    /// `v1` or `group/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the resource stores objects (review resources do not).
    pub fn stored(&self) -> bool {
        !self.storage.is_empty()
    }

    /// The `<plural>.<group>` name used in RBAC-style messages and Status details.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The core/v1 definition for a storage key (controllers use this).
pub fn by_storage(storage: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.storage == storage)
}

/// The groups served under `/apis`, in upstream's order.
fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str) -> Value {
    let gv = format!("{group}/v1");
    json!({
        "name": group,
        "versions": [{"groupVersion": gv, "version": "v1"}],
        "preferredVersion": {"groupVersion": gv, "version": "v1"},
    })
}

/// `GET /apis`.
pub fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_entry).collect::<Vec<_>>(),
    })
}

/// `GET /apis/<group>`.
pub fn group(group: &str) -> Option<Value> {
    if !groups().contains(&group) {
        return None;
    }
    let mut g = group_entry(group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in &defs {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for sub in r.subresources {
            let (kind, verbs): (&str, &[&str]) = match *sub {
                "status" | "ephemeralcontainers" => (r.kind, &["get", "patch", "update"]),
                "binding" => ("Binding", &["create"]),
                "eviction" => ("Eviction", &["create"]),
                "token" => ("TokenRequest", &["create"]),
                "finalize" => (r.kind, &["update"]),
                "log" => ("Pod", &["get"]),
                "exec" | "attach" | "portforward" => ("PodExecOptions", &["create", "get"]),
                "proxy" => (
                    "NodeProxyOptions",
                    &["create", "delete", "get", "patch", "update"],
                ),
                _ => (r.kind, &["get"]),
            };
            resources.push(json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// `GET /version`: the Kubernetes version this server's API corresponds to.
pub fn version() -> Value {
    json!({
        "major": knode_config::version::MAJOR,
        "minor": knode_config::version::MINOR,
        "gitVersion": knode_config::version::git_version(),
        "gitCommit": "knode",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "none (knode-control-plane is written in Rust)",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `name` of every item of a list.
    fn names_of(items: &Value) -> Vec<&str> {
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn discovery_lists_core_and_groups() {
        let core = resource_list("", "v1").unwrap();
        let names = names_of(&core["resources"]);
        for want in [
            "pods",
            "pods/status",
            "pods/log",
            "nodes",
            "services",
            "serviceaccounts/token",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let groups = group_list();
        let gnames = names_of(&groups["groups"]);
        assert_eq!(
            gnames,
            [
                "events.k8s.io",
                "coordination.k8s.io",
                "discovery.k8s.io",
                "authentication.k8s.io",
                "authorization.k8s.io"
            ]
        );
        assert!(find("coordination.k8s.io", "v1", "leases").is_some());
    }
}
