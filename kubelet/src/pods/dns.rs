//! A pod's DNS as upstream's kubelet forms it (`pkg/kubelet/network/dns`): the resolv.conf for each
//! `dnsPolicy` (ClusterFirst, ClusterFirstWithHostNet, Default, None) plus `dnsConfig`, within the
//! resolver's limits, and the pod's hostname and domain (`hostname`, `subdomain`,
//! `setHostnameAsFQDN`). Pure: the host's resolv.conf text comes in, the file content goes out; the
//! warnings upstream records as events come back as [`DnsEvent`]s.

use k8s_openapi::api::core::v1::Pod;

/// At most this many nameservers are used (glibc's MAXNS).
pub const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains (upstream's `MaxDNSSearchPaths`).
pub const MAX_SEARCH_PATHS: usize = 32;
/// At most this many characters in the search line (upstream's `MaxDNSSearchListChars`).
pub const MAX_SEARCH_CHARS: usize = 2048;
/// The kernel's nodename field holds 64 characters.
const FQDN_MAX_LEN: usize = 64;

/// A resolver configuration: what a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text as upstream's `parseResolvConf`: nameservers accumulate, the last
    /// `search` line wins (a `.` entry dropped, trailing dots trimmed), options accumulate.
    pub fn parse(text: &str) -> ResolvConf {
        let mut c = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => c.nameservers.extend(fields.next().map(String::from)),
                Some("search") => {
                    c.searches = fields
                        .filter(|s| *s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect();
                }
                Some("options") => c.options.extend(fields.map(String::from)),
                _ => {}
            }
        }
        c
    }

    /// The file content, as containerd's CRI plugin writes it (search, nameservers, options).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for s in &self.nameservers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The node's DNS settings (KubeletConfiguration `clusterDNS`, `clusterDomain`, `resolvConf`).
#[derive(Debug, Clone, Default)]
pub struct NodeDns {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The host's resolver config read from `resolvConf`; `None` when `resolvConf` is "" (DNS
    /// lookups of Default-policy pods then go nowhere, as upstream).
    pub host: Option<ResolvConf>,
    /// The node's IPs decide the local resolver address used when `resolvConf` is "".
    pub node_ipv6_only: bool,
}

/// The kubelet's DNS configuration as given (`clusterDNS`, `clusterDomain`, `resolvConf`).
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The host resolv.conf path; "" for none.
    pub resolv_conf: String,
    pub node_ipv6_only: bool,
}

/// Why a pod's DNS settings cannot be made (the message goes to the pod's status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("could not open resolv conf file {path}: {message}")]
    ResolvConf { path: String, message: String },
    #[error("hostname for pod {0:?} was invalid after truncation")]
    Hostname(String),
    #[error(
        "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long \
         ({max} characters is the max, {len} characters requested)",
        max = FQDN_MAX_LEN
    )]
    FqdnTooLong { fqdn: String, len: usize },
}

impl DnsSettings {
    /// The node's DNS with the host's resolver config read now, as upstream reads it for every pod
    /// (the only I/O in this module).
    pub fn load(&self) -> Result<NodeDns, DnsError> {
        let host = if self.resolv_conf.is_empty() {
            None
        } else {
            let text = std::fs::read_to_string(&self.resolv_conf).map_err(|e| DnsError::ResolvConf {
                path: self.resolv_conf.clone(),
                message: e.to_string(),
            })?;
            Some(ResolvConf::parse(&text))
        };
        Ok(NodeDns {
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            host,
            node_ipv6_only: self.node_ipv6_only,
        })
    }
}

/// A warning upstream records as an event on the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEvent {
    pub reason: &'static str,
    pub message: String,
}

fn omit_duplicates(v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// The pod's resolv.conf settings and the warnings forming them produced.
pub fn pod_resolv_conf(pod: &Pod, node: &NodeDns) -> (ResolvConf, Vec<DnsEvent>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let mut events = Vec::new();
    // Upstream's getPodDNSType: ClusterFirst falls back to Default for hostNetwork pods.
    let mut cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!host_network),
        _ => Some(false),
    };
    if cluster == Some(true) && node.cluster_dns.is_empty() {
        events.push(DnsEvent {
            reason: "MissingClusterDNS",
            message: format!(
                "pod: {:?}. kubelet does not have ClusterDNS IP configured and cannot create Pod using \
                 \"ClusterFirst\" policy. Falling back to \"Default\" policy.",
                super::pod_display(pod)
            ),
        });
        cluster = Some(false);
    }
    let mut conf = match cluster {
        None => ResolvConf::default(),
        Some(true) => {
            let host_search = node.host.as_ref().map(|h| h.searches.clone()).unwrap_or_default();
            let searches = if node.cluster_domain.is_empty() {
                host_search
            } else {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let d = &node.cluster_domain;
                let mut s = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
                s.extend(host_search);
                omit_duplicates(s)
            };
            ResolvConf {
                nameservers: node.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        Some(false) => match &node.host {
            Some(h) => h.clone(),
            None => ResolvConf {
                nameservers: vec![if node.node_ipv6_only { "::1" } else { "127.0.0.1" }.into()],
                searches: vec![".".into()],
                options: Vec::new(),
            },
        },
    };
    if let Some(extra) = &spec.dns_config {
        conf.nameservers = omit_duplicates(
            conf.nameservers
                .into_iter()
                .chain(extra.nameservers.iter().flatten().cloned())
                .collect(),
        );
        conf.searches = omit_duplicates(
            conf.searches
                .into_iter()
                .chain(extra.searches.iter().flatten().cloned())
                .collect(),
        );
        conf.options = merge_options(&conf.options, extra.options.as_deref().unwrap_or_default());
    }
    fit_limits(&mut conf, &mut events);
    (conf, events)
}

/// Upstream's `mergeDNSOptions`: a pod option replaces the one of the same name.
fn merge_options(existing: &[String], pod: &[k8s_openapi::api::core::v1::PodDNSConfigOption]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match merged.iter_mut().find(|(n, _)| n == name) {
        Some(e) => e.1 = value.to_string(),
        None => merged.push((name.to_string(), value.to_string())),
    };
    for o in existing {
        let (n, v) = o.split_once(':').unwrap_or((o, ""));
        set(n, v);
    }
    for o in pod {
        set(o.name.as_deref().unwrap_or(""), o.value.as_deref().unwrap_or(""));
    }
    merged
        .into_iter()
        .map(|(n, v)| if v.is_empty() { n } else { format!("{n}:{v}") })
        .collect()
}

/// Upstream's `formDNSConfigFitsLimits`: extra nameservers and search paths are dropped, with a
/// `DNSConfigForming` warning saying what is applied.
fn fit_limits(conf: &mut ResolvConf, events: &mut Vec<DnsEvent>) {
    if conf.nameservers.len() > MAX_NAMESERVERS {
        conf.nameservers.truncate(MAX_NAMESERVERS);
        events.push(DnsEvent {
            reason: "DNSConfigForming",
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied \
                 nameserver line is: {}",
                conf.nameservers.join(" ")
            ),
        });
    }
    let mut limited = false;
    if conf.searches.len() > MAX_SEARCH_PATHS {
        conf.searches.truncate(MAX_SEARCH_PATHS);
        limited = true;
    }
    while conf.searches.join(" ").len() > MAX_SEARCH_CHARS {
        conf.searches.pop();
        limited = true;
    }
    if limited {
        events.push(DnsEvent {
            reason: "DNSConfigForming",
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied \
                 search line is: {}",
                conf.searches.join(" ")
            ),
        });
    }
}

/// The pod's hostname and domain (upstream's `GeneratePodHostNameAndDomain`): `spec.hostname` or
/// the pod's name cut to 63 characters (trailing `-`/`.` trimmed), and with a `subdomain`
/// `<subdomain>.<namespace>.svc.<clusterDomain>`.
pub fn hostname_and_domain(pod: &Pod, cluster_domain: &str) -> Result<(String, Option<String>), DnsError> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or(name);
    let hostname = if hostname.len() > 63 {
        // By characters: names not validated by the API (static pods) may hold any UTF-8.
        let cut: String = hostname.chars().take(63).collect();
        let cut = cut.trim_end_matches(['-', '.']).to_string();
        if cut.is_empty() {
            return Err(DnsError::Hostname(hostname));
        }
        cut
    } else {
        hostname
    };
    let domain = spec
        .and_then(|s| s.subdomain.clone())
        .filter(|s| !s.is_empty())
        .map(|sub| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{sub}.{ns}.svc.{cluster_domain}")
        });
    Ok((hostname, domain))
}

/// The hostname the pod's UTS namespace gets (upstream's `GetNodenameForKernel`): the FQDN with
/// `setHostnameAsFQDN` and a domain, refused beyond the kernel's 64 characters.
pub fn kernel_hostname(pod: &Pod, cluster_domain: &str) -> Result<String, DnsError> {
    let (hostname, domain) = hostname_and_domain(pod, cluster_domain)?;
    let as_fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match domain {
        Some(d) if as_fqdn => {
            let fqdn = format!("{hostname}.{d}");
            if fqdn.len() > FQDN_MAX_LEN {
                let len = fqdn.len();
                return Err(DnsError::FqdnTooLong { fqdn, len });
            }
            Ok(fqdn)
        }
        _ => Ok(hostname),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u"},
            "spec": spec}),
        )
        .unwrap()
    }

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host: Some(ResolvConf::parse(
                "# host\nnameserver 192.0.2.53\nsearch old.example\nsearch corp.example. .\noptions rotate timeout:2\n",
            )),
            node_ipv6_only: false,
        }
    }

    #[test]
    fn host_resolv_conf_parses_as_upstream() {
        let h = node().host.unwrap();
        assert_eq!(h.nameservers, ["192.0.2.53"]);
        assert_eq!(
            h.searches,
            ["corp.example"],
            "the last search line wins, '.' dropped"
        );
        assert_eq!(h.options, ["rotate", "timeout:2"]);
    }

    #[test]
    fn cluster_first_uses_cluster_dns_with_the_namespace_search_path() {
        let (c, ev) = pod_resolv_conf(&pod(json!({"containers": []})), &node());
        assert!(ev.is_empty());
        assert_eq!(
            c.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_pods_get_the_host_dns_unless_cluster_first_with_host_net() {
        let (c, _) = pod_resolv_conf(&pod(json!({"hostNetwork": true})), &node());
        assert_eq!(c, node().host.unwrap());
        let (c, _) = pod_resolv_conf(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &node(),
        );
        assert_eq!(c.nameservers, ["10.96.0.10"]);
        let (c, _) = pod_resolv_conf(&pod(json!({"dnsPolicy": "Default"})), &node());
        assert_eq!(c, node().host.unwrap());
    }

    #[test]
    fn no_cluster_dns_falls_back_to_default_with_an_event() {
        let n = NodeDns {
            cluster_dns: vec![],
            ..node()
        };
        let (c, ev) = pod_resolv_conf(&pod(json!({})), &n);
        assert_eq!(c, n.host.clone().unwrap());
        assert_eq!(ev[0].reason, "MissingClusterDNS");
        assert!(
            ev[0].message.contains("Falling back to \"Default\" policy."),
            "{}",
            ev[0].message
        );
        // resolvConf "" disables lookups for Default pods.
        let off = NodeDns { host: None, ..n };
        let (c, _) = pod_resolv_conf(&pod(json!({"dnsPolicy": "Default"})), &off);
        assert_eq!(c.render(), "search .\nnameserver 127.0.0.1\n");
    }

    #[test]
    fn none_takes_only_dns_config_and_dns_config_merges() {
        let spec = json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"],
            "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}});
        let (c, _) = pod_resolv_conf(&pod(spec), &node());
        assert_eq!(
            c.render(),
            "search a.example\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
        let spec = json!({"dnsConfig": {"nameservers": ["10.96.0.10", "1.1.1.1"],
            "searches": ["svc.cluster.local", "x.example"], "options": [{"name": "ndots", "value": "1"}]}});
        let (c, _) = pod_resolv_conf(&pod(spec), &node());
        assert_eq!(c.nameservers, ["10.96.0.10", "1.1.1.1"], "duplicates omitted");
        assert_eq!(
            c.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "x.example"
            ]
        );
        assert_eq!(c.options, ["ndots:1"], "the pod's option replaces the default");
    }

    #[test]
    fn limits_drop_extra_nameservers_and_search_paths_with_events() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let spec = json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"], "searches": many}});
        let (c, ev) = pod_resolv_conf(&pod(spec), &node());
        assert_eq!(c.nameservers.len(), 3);
        assert_eq!(c.searches.len(), MAX_SEARCH_PATHS);
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|e| e.reason == "DNSConfigForming"));
        assert!(
            ev[0]
                .message
                .ends_with("nameserver line is: 1.1.1.1 2.2.2.2 3.3.3.3")
        );
    }

    #[test]
    fn hostnames_follow_upstream() {
        let p = pod(json!({"hostname": "h1", "subdomain": "sub"}));
        assert_eq!(
            hostname_and_domain(&p, "cluster.local").unwrap(),
            ("h1".to_string(), Some("sub.shop.svc.cluster.local".to_string()))
        );
        assert_eq!(kernel_hostname(&p, "cluster.local").unwrap(), "h1");
        let p = pod(json!({"hostname": "h1", "subdomain": "sub", "setHostnameAsFQDN": true}));
        assert_eq!(
            kernel_hostname(&p, "cluster.local").unwrap(),
            "h1.sub.shop.svc.cluster.local"
        );
        let long = pod(json!({"hostname": "a".repeat(40), "subdomain": "sub", "setHostnameAsFQDN": true}));
        let e = kernel_hostname(&long, "cluster.local").unwrap_err().to_string();
        assert!(
            e.contains("is too long (64 characters is the max, 67 characters requested)"),
            "{e}"
        );
        let mut named = pod(json!({}));
        named.metadata.name = Some(format!("{}-.x", "b".repeat(61)));
        assert_eq!(hostname_and_domain(&named, "c").unwrap().0, "b".repeat(61));
    }
}
