//! knode's kubelet: the node agent that runs the pods bound to this node through containerd.
//!
//! Modules are named after the domain (see the workspace's DESIGN.md): `config` holds upstream's
//! flags and KubeletConfiguration file.

pub mod config;
pub mod runtime;
pub mod spec;
