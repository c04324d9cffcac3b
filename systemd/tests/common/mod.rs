//! What the systemd tests share.

/// The daemons the install script installs, as cargo names the binaries.
pub const BINS: &[&str] = &[
    "kubelet",
    "kube-proxy",
    "knode-control-plane",
    "knode-bridge",
    "knode-hostgw",
];
