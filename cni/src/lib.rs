//! CNI 1.0 library shared by the kubelet and knode's own `knode-bridge` plugin.
//!
//! - [`types`]: the spec's JSON objects (network config, conflist, result, error) and error codes.
//! - [`config`]: loading the network configuration from a conf dir the way libcni does.
//! - [`exec`]: the runtime side: invoking plugins by the exec protocol, chaining through a conflist.
//! - [`plugin`]: the plugin side: reading the CNI environment/stdin, emitting results and errors.
//! - [`ipnet`]: small IPv4 CIDR helpers used by configs and IPAM.
//! - [`ipam`], [`bridge`], [`masq`]: the parts of the `knode-bridge` plugin (host-local-compatible
//!   IPAM store, bridge/veth wiring over rtnetlink, masquerade over nftables netlink).
//! - [`hostgw`]: routes to the other nodes' pod subnets via their addresses (`knode-hostgw`).

pub mod bridge;
pub mod config;
pub mod exec;
pub mod hostgw;
pub mod ipam;
pub mod ipnet;
pub mod masq;
pub mod plugin;
pub mod types;

pub use types::{CniError, ErrorCode, NetConf, NetConfList, PluginResult};

/// The CNI specification version this library speaks.
pub const SPEC_VERSION: &str = "1.0.0";

/// Versions a plugin built on this library accepts and reports to `VERSION`. Only 1.0.0: results are
/// emitted in the 1.0 shape, which older (0.x) runtimes would misread.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];
