//! CNI 1.0.0 JSON objects: network configuration, configuration list, plugin result, error object,
//! and the spec's well-known error codes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Well-known error codes from the CNI 1.0 spec ("Error" section); 1-99 are reserved by the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 2: unsupported field in network configuration.
    UnsupportedField = 2,
    /// 3: container unknown or does not exist.
    UnknownContainer = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// 5: I/O failure.
    IoFailure = 5,
    /// 6: failed to decode content.
    DecodingFailure = 6,
    /// 7: invalid network config.
    InvalidNetworkConfig = 7,
    /// 11: try again later.
    TryAgainLater = 11,
    /// 50: the plugin is not available (STATUS, spec 1.1).
    PluginNotAvailable = 50,
    /// 51: the plugin is not available, existing containers may be damaged (STATUS, spec 1.1).
    PluginNotAvailableLimited = 51,
    /// 100: generic plugin-specific failure (first non-reserved code).
    Generic = 100,
}

impl ErrorCode {
    /// The numeric code as it appears in the error object.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// The CNI error object a plugin prints on stdout when it exits non-zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    /// Version of the spec the error is expressed in.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Error code (see [`ErrorCode`]).
    pub code: u32,
    /// Short human-readable message.
    #[serde(default)]
    pub msg: String,
    /// Longer details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// A spec error with `code`, message and optional details.
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            cni_version: crate::SPEC_VERSION.to_string(),
            code: code.code(),
            msg: msg.into(),
            details: details.into(),
        }
    }
}

/// One plugin's network configuration (what a plugin receives on stdin).
///
/// Fields the spec defines are typed; plugin-specific fields are kept in `extra` so they round-trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetConf {
    /// Spec version of this configuration.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Network name (unique per host).
    #[serde(default)]
    pub name: String,
    /// Plugin executable name.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Capabilities the plugin supports (runtime config keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Map<String, Value>>,
    /// IPAM plugin configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    /// DNS settings to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Result of the previous plugin in a chain (set by the runtime).
    #[serde(rename = "prevResult", default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    /// Runtime-provided values for declared capabilities.
    #[serde(rename = "runtimeConfig", default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Map<String, Value>>,
    /// Plugin-specific fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `ipam` section: its `type` plus plugin-specific fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct IpamConf {
    /// IPAM plugin executable name.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// IPAM-specific fields (subnet, ranges, routes, dataDir …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A network configuration list (`.conflist`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetConfList {
    /// Spec version of the list (applies to every plugin in it).
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Versions the list is valid for (spec 1.1 addition; accepted, not required).
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Option::is_none")]
    pub cni_versions: Option<Vec<String>>,
    /// Network name.
    pub name: String,
    /// Skip CHECK for this network.
    #[serde(rename = "disableCheck", default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_check: bool,
    /// Plugins, invoked in order for ADD and in reverse for DEL.
    pub plugins: Vec<NetConf>,
}

impl NetConfList {
    /// Parses and validates a conflist document.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CniError> {
        let list: NetConfList = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                ErrorCode::DecodingFailure,
                "failed to decode network configuration list",
                e.to_string(),
            )
        })?;
        if list.name.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "network configuration list has no \"name\"",
                "",
            ));
        }
        if list.plugins.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("network configuration list {:?} has no \"plugins\"", list.name),
                "",
            ));
        }
        if let Some(i) = list.plugins.iter().position(|p| p.plugin_type.is_empty()) {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("plugin {i} of network {:?} has an empty \"type\"", list.name),
                "",
            ));
        }
        Ok(list)
    }

    /// Wraps a single `.conf` network config into a one-plugin list, as libcni's `ConfListFromConf` does.
    pub fn from_single(conf: NetConf) -> Self {
        NetConfList {
            cni_version: conf.cni_version.clone(),
            cni_versions: None,
            name: conf.name.clone(),
            disable_check: false,
            plugins: vec![conf],
        }
    }

    /// The config for plugin `i` as sent to it: the list's name and cniVersion injected, optional prevResult.
    pub fn plugin_conf(&self, i: usize, prev_result: Option<&PluginResult>) -> Result<NetConf, CniError> {
        let mut conf = self.plugins.get(i).cloned().ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("network {:?} has no plugin {i}", self.name),
                "",
            )
        })?;
        conf.name = self.name.clone();
        conf.cni_version = self.cni_version.clone();
        conf.prev_result = match prev_result {
            Some(r) => Some(serde_json::to_value(r).map_err(|e| {
                CniError::new(ErrorCode::IoFailure, "failed to encode prevResult", e.to_string())
            })?),
            None => None,
        };
        Ok(conf)
    }
}

impl NetConf {
    /// Sets `runtimeConfig` from the runtime's capability arguments, as libcni does: only the
    /// capabilities this plugin declares `true` (e.g. `portMappings` for portmap), nothing else.
    pub fn inject_runtime_config(&mut self, capability_args: &Map<String, Value>) {
        let Some(caps) = &self.capabilities else { return };
        for (cap, value) in capability_args {
            if caps.get(cap) == Some(&Value::Bool(true)) {
                self.runtime_config
                    .get_or_insert_with(Map::new)
                    .insert(cap.clone(), value.clone());
            }
        }
    }
}

/// The success result of ADD (CNI 1.0 "Success" object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PluginResult {
    /// Spec version of the result.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Interfaces created or touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Assigned IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS information.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// An interface in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (spec 1.1; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for container interfaces; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An IP address assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IpConfig {
    /// CIDR notation address, e.g. `10.22.0.2/24`.
    pub address: String,
    /// Default gateway for the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Route {
    /// Destination in CIDR notation.
    pub dst: String,
    /// Next hop; absent means the IPAM default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when no DNS field is set (the object is then omitted).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The answer to `VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Version of the spec the answer is expressed in.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Spec versions the plugin supports.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn result_roundtrips_spec_example() {
        let json = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"00:11:22:33:44:55"},
            {"name":"eth0","mac":"00:11:22:33:44:66","sandbox":"/var/run/netns/blue"}],
            "ips":[{"address":"10.1.0.5/16","gateway":"10.1.0.1","interface":1}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.1.0.1"]}}"#;
        let r: PluginResult = serde_json::from_str(json).unwrap();
        assert_eq!(r.interfaces[1].sandbox, "/var/run/netns/blue");
        assert_eq!(r.ips[0].interface, Some(1));
        assert_eq!(r.routes[0].gw, None);
        let back: PluginResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn netconf_keeps_plugin_fields() {
        let json = r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","bridge":"cni0","isGateway":true,
            "ipam":{"type":"host-local","subnet":"10.1.0.0/16"}}"#;
        let c: NetConf = serde_json::from_str(json).unwrap();
        assert_eq!(c.extra["bridge"], "cni0");
        assert_eq!(c.ipam.as_ref().unwrap().extra["subnet"], "10.1.0.0/16");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["isGateway"], true);
        assert!(v.get("prevResult").is_none());
    }

    #[test]
    fn error_object_shape_and_codes() {
        let e = CniError::new(ErrorCode::TryAgainLater, "busy", "");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["code"], 11);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v.get("details").is_none());
        assert_eq!(ErrorCode::InvalidNetworkConfig.code(), 7);
        assert_eq!(ErrorCode::PluginNotAvailable.code(), 50);
    }

    #[test]
    fn conflist_validation_names_the_problem() {
        let e = NetConfList::from_bytes(br#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"x\""), "{}", e.msg);
        let e = NetConfList::from_bytes(b"{not json").unwrap_err();
        assert_eq!(e.code, 6);
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let args: Map<String, Value> = serde_json::from_str(
            r#"{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}],"bandwidth":{}}"#,
        )
        .unwrap();
        let mut portmap: NetConf = serde_json::from_str(
            r#"{"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}"#,
        )
        .unwrap();
        portmap.inject_runtime_config(&args);
        let rc = portmap.runtime_config.unwrap();
        assert_eq!(
            rc.keys().collect::<Vec<_>>(),
            ["portMappings"],
            "bandwidth is declared false"
        );
        assert_eq!(rc["portMappings"][0]["hostPort"], 80);
        let mut bridge: NetConf = serde_json::from_str(r#"{"type":"knode-bridge"}"#).unwrap();
        bridge.inject_runtime_config(&args);
        assert!(
            bridge.runtime_config.is_none(),
            "no capabilities, no runtimeConfig"
        );
    }

    #[test]
    fn plugin_conf_injects_name_version_prev_result() {
        let list = NetConfList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"a"},{"type":"b","x":1}]}"#,
        )
        .unwrap();
        let prev = PluginResult {
            cni_version: "1.0.0".into(),
            ..Default::default()
        };
        let c = list.plugin_conf(1, Some(&prev)).unwrap();
        assert_eq!(c.name, "net");
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.prev_result.unwrap()["cniVersion"], "1.0.0");
        assert_eq!(c.extra["x"], 1);
    }
}
