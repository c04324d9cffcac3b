//! knode's kube-proxy: programs nftables over netlink for ClusterIP, NodePort and LoadBalancer
//! Services, with upstream's nftables-mode semantics (see the workspace's DESIGN.md) and a flat,
//! linear-cost ruleset layout (see proxy/README.md).
//!
//! - [`model`]: Services + EndpointSlices → desired map/set elements (pure).
//! - [`diff`]: desired vs. programmed → minimal element changes (pure).
//! - [`nft`]: netlink encoding and one-batch apply.

pub mod config;
pub mod diff;
pub mod model;
pub mod nft;
