//! knode's kubelet: the node agent that runs the pods bound to this node through containerd.
//! ARCHITECTURE.md (at the repository root) draws the flow; each module in one line:
//!
//! - [`agent`]: the daemon's wiring (connections, node context, loops, sources, manager, shutdown).
//! - [`pods`]: the pod lifecycle — sources (API watch, static manifests, mirror pods), the pod
//!   manager, the pure plan and status, stop requests, and the executor that carries plans out.
//! - [`runtime`]: containerd behind the [`runtime::PodRuntime`] seam (images, containers, tasks,
//!   exec, events, the image's passwd); the only module that speaks containerd gRPC.
//! - [`sandbox`]: the pause-less pod sandbox (pinned net/ipc/uts namespaces).
//! - [`network`]: pod networking through CNI plugins, the default conflist, network readiness.
//! - [`spec`]: the pure pod → OCI runtime spec translation (security context, seccomp, users).
//! - [`inputs`]: a container's env, referenced ConfigMaps/Secrets/Services, /etc/hosts.
//! - [`volumes`]: pod volumes (emptyDir, configMap, secret, downwardAPI, projected, hostPath).
//! - [`cgroups`]: QoS cgroup hierarchy and resource math, and all cgroup file access (v1 and v2).
//! - [`probes`]: liveness/readiness/startup probes: pure schedule, http/tcp/exec/grpc executors.
//! - [`hooks`]: postStart/preStop lifecycle hooks (exec, httpGet, sleep).
//! - [`node`]: the Node object: registration, status, conditions, the heartbeat Lease.
//! - [`eviction`]: node-pressure eviction (pure decisions, admission, the manager loop).
//! - [`gc`]: image garbage collection and the sweep of dead pods' leftovers.
//! - [`shutdown`]: graceful node shutdown (priority groups, terminated status).
//! - [`stats`]: `/stats/summary` data from cgroups and the runtime.
//! - [`metrics`]: the `/metrics` families (Prometheus text).
//! - [`server`]: the kubelet API on :10250 (authn/authz, logs, exec/attach/port-forward, metrics).
//! - [`certs`]: TLS bootstrap, the rotating client certificate, the serving certificate.
//! - [`config`]: upstream's flags and the KubeletConfiguration file.
//! - [`lock`]: a poison-tolerant `Mutex` lock.

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
