//! knode's kubelet: the node agent that runs the pods bound to this node through containerd.
//!
//! Modules are named after the domain (see the workspace's DESIGN.md): `config` holds upstream's
//! flags and KubeletConfiguration file, `runtime` the containerd adapters (images, containers and
//! tasks with CRI logs, exec, task events), `spec` the pure pod → OCI spec translation and `sandbox`
//! the pause-less pod sandbox (pinned namespaces).

pub mod agent;
pub mod certs;
pub mod cgroups;
pub mod config;
pub mod eviction;
pub mod gc;
pub mod hooks;
pub mod inputs;
pub mod lock;
pub mod metrics;
pub mod network;
pub mod node;
pub mod pods;
pub mod probes;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod shutdown;
pub mod spec;
pub mod stats;
pub mod volumes;
