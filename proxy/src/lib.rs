//! knode's kube-proxy: programs nftables over netlink for ClusterIP, NodePort and LoadBalancer
//! Services, with upstream's nftables-mode semantics (see the workspace's DESIGN.md).

pub mod config;
