//! knode's kube-proxy: programs nftables over netlink for ClusterIP, NodePort and LoadBalancer
//! Services, with upstream's nftables-mode semantics (see the workspace's DESIGN.md) and a flat,
//! linear-cost ruleset layout (see proxy/README.md).
//!
//! - [`model`]: Services + EndpointSlices → desired map/set elements (pure).
//! - [`diff`]: desired vs. programmed → minimal element changes (pure).
//! - [`nft`]: the nftables table: set/element layout and the fixed chains and rules (pure), their
//!   libnftnl encoding, one-batch apply and read-back for adoption (netlink framing and acks are
//!   the `knode-netlink` crate's).
//! - [`conntrack`]: stale UDP conntrack entries, deleted over ctnetlink after a sync.
//! - [`compact`]: watched objects trimmed to the fields the proxy reads (pure).
//! - [`sync`]: watch events → what changed and when to sync (pure).
//! - [`health`], [`metrics`]: `/healthz`, `/livez` and `/metrics` content (pure); [`http`] serves them.
//! - [`service_health`]: the `healthCheckNodePort` listeners of Local-policy Services.
//! - [`netif`]: the node's interface addresses (for `--nodeport-addresses` CIDRs).

pub mod compact;
pub mod config;
pub mod conntrack;
pub mod diff;
pub mod health;
pub mod http;
pub mod metrics;
pub mod model;
pub mod netif;
pub mod nft;
pub mod service_health;
pub mod sync;
