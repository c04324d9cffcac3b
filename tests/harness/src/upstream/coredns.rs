//! Cluster DNS as `kubeadm init` deploys it: CoreDNS (the binary `scripts/build-upstream.sh` built
//! at the pinned version) as an image built here and pushed to the local registry, then the addon
//! objects — ServiceAccount, `system:coredns` ClusterRole and binding, the `coredns` ConfigMap with
//! upstream's Corefile, the `coredns` Deployment in `kube-system` and the `kube-dns` Service at the
//! cluster DNS IP. The Deployment runs on a node like any workload, so it exercises that node:
//! ServiceAccount tokens, probes, capabilities, a read-only root, `dnsPolicy: Default`.

use serde_json::{Value, json};

use super::UpstreamBinaries;
use crate::image::{Entry, ImageConfig, PushedImage, build_image, build_layer, etc_layer, push};
use crate::{HarnessError, Result};

/// The `kube-dns` Service's ClusterIP: the tenth address of [`super::SERVICE_CIDR`], as kubeadm
/// picks it (a kubelet's `clusterDNS`).
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";
/// The cluster domain (a kubelet's `clusterDomain`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// `kubectl` arguments printing a field of the CoreDNS Deployment's status (`readyReplicas`,
/// `availableReplicas`).
pub fn status_query(field: &str) -> Vec<String> {
    let jsonpath = format!("jsonpath={{.status.{field}}}");
    ["get", "deploy", "-n", "kube-system", "coredns", "-o", &jsonpath]
        .map(String::from)
        .to_vec()
}

/// The repository the image is pushed to (upstream's is `registry.k8s.io/coredns/coredns`).
pub const REPOSITORY: &str = "coredns/coredns";

/// The version the build recorded in `VERSIONS` (`coredns v1.15.0`).
fn coredns_version(bins: &UpstreamBinaries) -> Result<String> {
    let versions = std::fs::read_to_string(bins.path("VERSIONS")).map_err(HarnessError::io(format!(
        "reading {}",
        bins.path("VERSIONS").display()
    )))?;
    versions
        .lines()
        .find_map(|l| l.strip_prefix("coredns "))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| {
            HarnessError::Missing(format!("no coredns line in {}", bins.path("VERSIONS").display()))
        })
}

/// Builds `<registry>/coredns/coredns:<version>` from the built binary (entrypoint `/coredns`, as
/// upstream's image) and pushes it.
pub async fn push_image(registry: &str, bins: &UpstreamBinaries) -> Result<PushedImage> {
    let path = bins.path("coredns");
    let data = std::fs::read(&path).map_err(HarnessError::io(format!("reading {}", path.display())))?;
    let layer = build_layer(&[
        Entry::File {
            path: "coredns".into(),
            mode: 0o755,
            data,
        },
        Entry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
        },
    ])?;
    let image = build_image(
        vec![etc_layer()?, layer],
        &ImageConfig {
            entrypoint: vec!["/coredns".into()],
            exposed_ports: vec!["53/tcp".into(), "53/udp".into()],
            ..Default::default()
        },
    );
    let tag = coredns_version(bins)?;
    push(
        registry,
        REPOSITORY,
        &tag,
        &image,
        &oci_client::secrets::RegistryAuth::Anonymous,
    )
    .await
}

/// Upstream's Corefile (kubeadm's default) for `domain`.
pub fn corefile(domain: &str) -> String {
    format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    \
         kubernetes {domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n       \
         fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    \
         forward . /etc/resolv.conf {{\n       max_concurrent 1000\n    }}\n    cache 30\n    \
         loop\n    reload\n    loadbalance\n}}\n"
    )
}

/// The addon's objects as one `v1/List` for `kubectl apply -f`, the way kubeadm writes them.
pub fn addon_objects(image: &str, dns_ip: &str, domain: &str) -> Value {
    let labels = json!({"k8s-app": "kube-dns"});
    let items = vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile(domain)},
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "priorityClassName": "system-cluster-critical",
                        "serviceAccountName": "coredns",
                        "tolerations": [
                            {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                        ],
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "containers": [{
                            "name": "coredns",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "resources": {
                                "limits": {"memory": "170Mi"},
                                "requests": {"cpu": "100m", "memory": "70Mi"},
                            },
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}],
                            "ports": [
                                {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                                "initialDelaySeconds": 60, "timeoutSeconds": 5,
                                "successThreshold": 1, "failureThreshold": 5,
                            },
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                "readOnlyRootFilesystem": true,
                            },
                        }],
                        "dnsPolicy": "Default",
                        "volumes": [{
                            "name": "config-volume",
                            "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]},
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "kube-dns", "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
                "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
            },
            "spec": {
                "selector": labels,
                "clusterIP": dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        }),
    ];
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addon_serves_the_cluster_domain_at_the_dns_ip() {
        let list = addon_objects("r/coredns/coredns:v1", "10.96.0.10", "example.org");
        let items = list["items"].as_array().unwrap();
        let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Service"
            ]
        );
        assert!(
            items[3]["data"]["Corefile"]
                .as_str()
                .unwrap()
                .contains("kubernetes example.org in-addr.arpa ip6.arpa {")
        );
        let pod = &items[4]["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "r/coredns/coredns:v1");
        assert_eq!(pod["dnsPolicy"], "Default");
        assert_eq!(items[5]["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(
            items[5]["spec"]["selector"],
            items[4]["spec"]["selector"]["matchLabels"]
        );
    }
}
