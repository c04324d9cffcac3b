//! A multi-node knode cluster on one machine, for e2e tests: the upstream control plane, the
//! registry and the nodes' shared L2 segment live in one network namespace ([`Segment`]); each
//! node is a namespace on that segment with its own containerd (own root, socket and containerd
//! namespace), cgroup root, kubelet (joined by bootstrap token; its default CNI config written from
//! the podCIDR nodeipam gives it), kube-proxy and knode-hostgw. The control plane's namespace runs
//! knode-hostgw too, so it routes to every pod (the apiserver's proxy to pods).
//!
//! Everything is removed on drop: daemons killed, containers and shims stopped, mounts and cgroups
//! removed, namespaces (and every link in them) deleted.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::containerd::{CriOptions, PrivateContainerd};
use crate::control_plane::target_bin;
use crate::image::{PushedImage, TestImages, push_pause_image, push_test_images};
use crate::netns::{NodeNetns, Segment, in_netns};
use crate::registry::PrivateRegistry;
use crate::upstream::coredns;
use crate::upstream::node::{self, KernelTunables};
use crate::upstream::{CLUSTER_CIDR, UpstreamBinaries, UpstreamControlPlane, UpstreamOptions};
use crate::{HarnessError, Result, cleanup};

/// A NodePort Service `web` in front of the pods labelled `app: web`, to their port named `http`
/// (a YAML document).
pub const WEB_NODE_PORT_SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
";

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Nodes joined at start (more with [`KnodeCluster::add_node`]).
    pub nodes: usize,
    /// Deploy CoreDNS (as kubeadm does) once the nodes are Ready.
    pub coredns: bool,
    /// Extra KubeletConfiguration lines (YAML, top-level keys not set by the harness).
    pub kubelet_config: String,
    /// Extra kube-controller-manager flags (e.g. a short `--node-monitor-grace-period`).
    pub controller_manager_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 2,
            coredns: true,
            kubelet_config: String::new(),
            controller_manager_args: Vec::new(),
        }
    }
}

/// A node daemon that tests stop and start again with the same flags.
struct Daemon {
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<String>,
}

impl Daemon {
    fn new(bin: PathBuf, args: Vec<String>) -> Daemon {
        Daemon {
            child: None,
            bin,
            args,
        }
    }

    /// SIGKILL, as a crash would.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    fn start(&mut self, ns: &NodeNetns, log: &Path) -> Result<()> {
        self.stop();
        self.child = Some(spawn_in(ns, &self.bin, &self.args, log)?);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Which node agents a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// knode's kubelet, kube-proxy and knode-hostgw.
    Knode,
    /// Upstream's kubelet (on containerd's CRI plugin) and kube-proxy (nftables mode) of the pinned
    /// release, with knode-hostgw for routes and knode-bridge as CNI plugin: the baseline knode is
    /// benchmarked against.
    Upstream,
}

/// One node of the cluster.
pub struct ClusterNode {
    pub name: String,
    pub kind: NodeKind,
    pub netns: NodeNetns,
    /// The containerd namespace the kubelet uses (`k8s.io` on an upstream node: CRI's).
    pub ns: String,
    kubelet: Daemon,
    proxy: Daemon,
    others: Vec<Child>,
    containerd: PrivateContainerd,
    /// The cgroup root both kubelets are given (`/knode-test/<unique>`).
    cgroup_root: String,
    _tunables: Option<KernelTunables>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("name", &self.name)
            .field("ip", &self.netns.node_ip)
            .finish_non_exhaustive()
    }
}

fn spawn_in(ns: &NodeNetns, bin: &Path, args: &[String], log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(HarnessError::io(format!("opening {}", log.display())))?;
    ns.command(bin)
        .args(args)
        .env("RUST_LOG", "info,kube_client=warn")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(HarnessError::io(format!(
            "spawning {} (cargo build --workspace --bins)",
            bin.display()
        )))
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl ClusterNode {
    /// The log file of one of the node's daemons (`kubelet`, `kube-proxy`, `knode-hostgw`).
    pub fn log(&self, daemon: &str) -> PathBuf {
        self.dir.path().join(format!("{daemon}.log"))
    }

    /// The node's private directory (kubelet root, logs, CNI).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the kubelet (SIGKILL); its containers keep running, as on a real node.
    pub fn stop_kubelet(&mut self) {
        self.kubelet.stop();
    }

    /// Starts the kubelet again with the same flags (it adopts what runs).
    pub fn start_kubelet(&mut self) -> Result<()> {
        self.kubelet
            .start(&self.netns, &self.dir.path().join("kubelet.log"))
    }

    /// Kills kube-proxy (SIGKILL); its rules stay in the kernel.
    pub fn stop_proxy(&mut self) {
        self.proxy.stop();
    }

    /// Starts kube-proxy again with the same flags.
    pub fn start_proxy(&mut self) -> Result<()> {
        self.proxy
            .start(&self.netns, &self.dir.path().join("kube-proxy.log"))
    }

    /// The kubelet's process id, while it runs.
    pub fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.pid()
    }

    /// kube-proxy's process id, while it runs.
    pub fn proxy_pid(&self) -> Option<u32> {
        self.proxy.pid()
    }

    /// The cgroup root the node's kubelet is given (`/knode-test/<unique>`).
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The node's containerd (CRI-enabled on an upstream node).
    pub fn containerd(&self) -> &PrivateContainerd {
        &self.containerd
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kubelet.stop();
        self.proxy.stop();
        for c in &mut self.others {
            kill(c);
        }
        self.containerd.stop();
        cleanup::unmount_under(self.dir.path());
        let rel = self.cgroup_root.trim_start_matches('/');
        for ctl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            cleanup::remove_cgroup_tree(&ctl.path().join(rel));
        }
        if self.kind == NodeKind::Upstream {
            node::remove_host_leftovers(self.dir.path());
        }
    }
}

/// A running multi-node cluster; see the module doc.
pub struct KnodeCluster {
    /// Dropped first: nodes, then the plane's host daemon, the plane, the registry, the segment.
    pub nodes: Vec<ClusterNode>,
    cp_hostgw: Option<Child>,
    pub cp: UpstreamControlPlane,
    pub images: TestImages,
    pub coredns_image: PushedImage,
    /// CRI's sandbox image, pushed when the first upstream node joins.
    pause_image: Option<PushedImage>,
    pub registry: PrivateRegistry,
    proxy_kubeconfig: PathBuf,
    kubelet_config: String,
    joined: usize,
    pub segment: Segment,
}

impl std::fmt::Debug for KnodeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnodeCluster")
            .field("nodes", &self.nodes)
            .field("cp", &self.cp)
            .finish_non_exhaustive()
    }
}

impl Drop for KnodeCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        if let Some(c) = &mut self.cp_hostgw {
            kill(c);
        }
    }
}

impl KnodeCluster {
    /// Builds the segment, registry (test images and CoreDNS pushed from inside), the upstream
    /// control plane and `opts.nodes` nodes, each Ready; then CoreDNS if asked (not waited for).
    pub async fn start(opts: ClusterOptions) -> Result<KnodeCluster> {
        crate::require_root()?;
        let bins = UpstreamBinaries::locate(false)?;
        let id = std::process::id();
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let segment = Segment::create(&format!("knseg-{id}-{seq}"), "10.210.0.")?;
        let gateway = segment.gateway().to_string();
        let gw_ip = gateway
            .parse()
            .map_err(|e| HarnessError::NotReady(format!("gateway {gateway}: {e}")))?;
        let registry = PrivateRegistry::start_in(&segment.ns.name, gw_ip)?;
        let host = registry.host();
        let (images, coredns_image) = {
            let (host, bins) = (host.clone(), bins.clone());
            in_netns(&segment.ns.name, move || -> Result<(TestImages, PushedImage)> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(HarnessError::io("building a runtime to push images"))?;
                rt.block_on(async {
                    Ok((
                        push_test_images(&host).await?,
                        coredns::push_image(&host, &bins).await?,
                    ))
                })
            })??
        };
        let cp = UpstreamControlPlane::start(UpstreamOptions {
            advertise_address: std::net::IpAddr::V4(gw_ip),
            netns: Some(segment.ns.name.clone()),
            controller_manager_args: opts.controller_manager_args.clone(),
            ..Default::default()
        })?;
        let proxy_kubeconfig = cp.dir().join("kube-proxy-nodes.conf");
        cp.issue_kubeconfig("system:kube-proxy", &[], &proxy_kubeconfig)?;
        let cp_hostgw = spawn_in(
            &segment.ns,
            &target_bin("knode-hostgw"),
            &[
                format!("--kubeconfig={}", cp.kubeconfig.display()),
                "--hostname-override=control-plane".into(),
            ],
            &cp.dir().join("knode-hostgw.log"),
        )?;
        let mut cluster = KnodeCluster {
            nodes: Vec::new(),
            cp_hostgw: Some(cp_hostgw),
            cp,
            images,
            coredns_image,
            pause_image: None,
            registry,
            proxy_kubeconfig,
            kubelet_config: opts.kubelet_config.clone(),
            joined: 0,
            segment,
        };
        for _ in 0..opts.nodes {
            cluster.add_node().await?;
        }
        if opts.coredns {
            cluster.cp.deploy_coredns(&cluster.coredns_image.reference)?;
        }
        Ok(cluster)
    }

    /// `kubectl` as cluster admin; stdout, or "" on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.cp.run_kubectl(args, None).unwrap_or_default()
    }

    /// Every daemon log of every node (for failure messages).
    pub fn logs(&self) -> Vec<PathBuf> {
        self.nodes
            .iter()
            .flat_map(|n| ["kubelet", "kube-proxy", "knode-hostgw"].map(|d| n.log(d)))
            .collect()
    }

    /// The last `lines` lines of every daemon log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        self.logs()
            .iter()
            .map(|l| {
                let t = std::fs::read_to_string(l).unwrap_or_default();
                let all: Vec<&str> = t.lines().collect();
                format!(
                    "== {}\n{}",
                    l.display(),
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `f` every 500 ms until it holds; an error naming `what` (with the daemons' log tails)
    /// after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > timeout {
                return Err(HarnessError::NotReady(format!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.log_tails(12)
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// Whether node `name`'s Ready condition is `status`.
    pub fn node_ready_is(&self, name: &str, status: &str) -> bool {
        self.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]) == status
    }

    /// Joins one more node (its kubelet, kube-proxy and knode-hostgw) and waits until it is Ready
    /// and the other nodes route to its podCIDR. Returns its index in [`Self::nodes`].
    pub async fn add_node(&mut self) -> Result<usize> {
        self.join(None, NodeKind::Knode).await
    }

    /// Joins a node running upstream's kubelet and kube-proxy instead of knode's ([`NodeKind`]),
    /// and waits as [`Self::add_node`] does.
    pub async fn add_upstream_node(&mut self) -> Result<usize> {
        self.join(None, NodeKind::Upstream).await
    }

    /// Joins a fresh machine under an existing node's name (a node re-installed after it died):
    /// new namespace, address, containerd and certificates, the same Node object.
    pub async fn rejoin(&mut self, name: &str) -> Result<usize> {
        self.join(Some(name), NodeKind::Knode).await
    }

    async fn join(&mut self, reuse: Option<&str>, kind: NodeKind) -> Result<usize> {
        let i = self.joined;
        let index = u8::try_from(i).map_err(|_| HarnessError::NotReady("at most 245 nodes".into()))?;
        let netns = self
            .segment
            .add_node(&format!("knn-{}-{i}", &self.segment.ns.name[6..]), index)?;
        let (containerd, ns) = match kind {
            NodeKind::Knode => {
                // In the node's namespace, as up.sh and a real node have it: hostNetwork pods
                // (their shims are containerd's children) get the node's network.
                let c = PrivateContainerd::start_in(&netns.name).await?;
                let ns = c.unique_namespace(&format!("kc{i}"));
                (c, ns)
            }
            NodeKind::Upstream => {
                let sandbox_image = self.pause_image().await?;
                let c = PrivateContainerd::start_cri(CriOptions {
                    netns: netns.name.clone(),
                    sandbox_image,
                    registry: self.registry.host(),
                })
                .await?;
                node::link_cni_plugins(
                    &c.dir().join("cni-bin"),
                    &target_bin("knode-bridge").with_file_name(""),
                )?;
                (c, "k8s.io".to_string())
            }
        };
        // Unique to this node of this process (runc's state root is shared by every containerd).
        let unique = match kind {
            NodeKind::Knode => ns.clone(),
            NodeKind::Upstream => containerd.unique_namespace(&format!("up{i}")),
        };
        let dir = crate::private_dir("kn-node-")?;
        let name = reuse.map(str::to_string).unwrap_or_else(|| {
            format!("node{i}-{}", &unique[unique.len().saturating_sub(5)..]).to_lowercase()
        });
        let cgroup_root = format!("/knode-test/{unique}");
        let common = node::kubelet_config_common(
            &netns.node_ip,
            &dir.path().join("logs"),
            &self.cp.ca_file,
            &self.kubelet_config,
        );
        let config = dir.path().join("kubelet-config.yaml");
        let config_text = match kind {
            NodeKind::Knode => common,
            NodeKind::Upstream => {
                node::create_cgroup_root(&cgroup_root)?;
                node::upstream_kubelet_config(&common, containerd.socket(), &cgroup_root, dir.path())
            }
        };
        std::fs::write(&config, config_text).map_err(HarnessError::io("writing the kubelet config"))?;
        let bootstrap = self
            .cp
            .bootstrap_kubeconfig(&dir.path().join("bootstrap-kubelet.conf"))?;
        let mut kubelet_args = vec![
            format!("--bootstrap-kubeconfig={}", bootstrap.display()),
            format!("--kubeconfig={}", dir.path().join("kubelet.conf").display()),
            format!("--config={}", config.display()),
            format!("--hostname-override={name}"),
            format!("--node-ip={}", netns.node_ip),
            format!("--root-dir={}", dir.path().join("root").display()),
        ];
        let mut node_kubelet_args = Vec::new();
        let (kubelet_bin, proxy_bin, proxy_args, tunables) = match kind {
            NodeKind::Knode => {
                let cni = dir.path().join("cni");
                std::fs::create_dir_all(&cni).map_err(HarnessError::io("creating the CNI conf dir"))?;
                kubelet_args.extend([
                    format!(
                        "--container-runtime-endpoint=unix://{}",
                        containerd.socket().display()
                    ),
                    format!("--containerd-namespace={ns}"),
                    format!("--insecure-registry={}", self.registry.host()),
                    format!("--cgroup-root={cgroup_root}"),
                    // Empty: the kubelet writes knode-bridge's config from the node's podCIDR.
                    format!("--cni-conf-dir={}", cni.display()),
                    format!(
                        "--cni-bin-dir={}",
                        target_bin("knode-bridge").with_file_name("").display()
                    ),
                    format!("--cluster-cidr={CLUSTER_CIDR}"),
                ]);
                let proxy_args = vec![
                    format!("--kubeconfig={}", self.proxy_kubeconfig.display()),
                    format!("--hostname-override={name}"),
                    format!("--cluster-cidr={CLUSTER_CIDR}"),
                    format!("--sync-period={}", node::SYNC_PERIOD),
                    format!("--min-sync-period={}", node::MIN_SYNC_PERIOD),
                    "--healthz-bind-address=127.0.0.1:10256".into(),
                    "--metrics-bind-address=127.0.0.1:10249".into(),
                ];
                (target_bin("kubelet"), target_bin("kube-proxy"), proxy_args, None)
            }
            NodeKind::Upstream => {
                let bins = UpstreamBinaries::locate(true)?;
                let proxy_config = dir.path().join("kube-proxy-config.yaml");
                std::fs::write(
                    &proxy_config,
                    node::upstream_proxy_config(&self.proxy_kubeconfig, &name, CLUSTER_CIDR),
                )
                .map_err(HarnessError::io("writing the kube-proxy config"))?;
                // Its default is /var/lib/kubelet/pki whatever --root-dir says.
                node_kubelet_args.push(format!("--cert-dir={}", dir.path().join("pki").display()));
                (
                    bins.dir.join("kubelet"),
                    bins.dir.join("kube-proxy"),
                    vec![format!("--config={}", proxy_config.display())],
                    Some(KernelTunables::save()),
                )
            }
        };
        kubelet_args.extend(node_kubelet_args);
        let mut node = ClusterNode {
            name: name.clone(),
            kind,
            netns,
            ns,
            kubelet: Daemon::new(kubelet_bin, kubelet_args),
            proxy: Daemon::new(proxy_bin, proxy_args),
            others: Vec::new(),
            containerd,
            cgroup_root,
            _tunables: tunables,
            dir,
        };
        node.start_kubelet()?;
        node.start_proxy()?;
        // The Node authorizer lets a kubelet read only its own Node: knode-hostgw lists them all
        // with kube-proxy's identity (`system:node-proxier`).
        let hostgw = spawn_in(
            &node.netns,
            &target_bin("knode-hostgw"),
            &[
                format!("--kubeconfig={}", self.proxy_kubeconfig.display()),
                format!("--hostname-override={name}"),
            ],
            &node.log("knode-hostgw"),
        )?;
        node.others.push(hostgw);
        self.nodes.push(node);
        self.joined += 1;
        let i = self.nodes.len() - 1;
        self.approve_serving_csr(&name)?;
        if kind == NodeKind::Upstream {
            // What knode's kubelet does itself: CRI reports the network not ready (and the node
            // stays NotReady) until a CNI config is in its conf dir.
            let mut cidr = String::new();
            self.wait_for(&format!("{name}'s podCIDR"), Duration::from_secs(60), || {
                cidr = self.kubectl(&["get", "node", &name, "-o", "jsonpath={.spec.podCIDR}"]);
                !cidr.is_empty()
            })?;
            let n = &self.nodes[i];
            let conf = n.containerd.dir().join("cni-conf/10-knode.conflist");
            std::fs::write(
                &conf,
                node::cni_conflist(&cidr, &n.dir().join("ipam"), CLUSTER_CIDR),
            )
            .map_err(HarnessError::io("writing the upstream node's CNI config"))?;
        }
        self.wait_for(&format!("node {name} Ready"), Duration::from_secs(120), || {
            self.node_ready_is(&name, "True")
        })?;
        self.wait_for_routes_to(i)?;
        Ok(i)
    }

    /// Approves node `name`'s kubelet serving certificate, as kubeadm users do.
    fn approve_serving_csr(&self, name: &str) -> Result<()> {
        let user = format!("system:node:{name}");
        self.wait_for(&format!("{name}'s serving CSR"), Duration::from_secs(120), || {
            let pending = self.kubectl(&[
                "get",
                "csr",
                "-o",
                "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name} {.spec.username} {.status.certificate}{\"\\n\"}{end}",
            ]);
            pending.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() == 2 && w[1] == user && self.cp.approve_csr(w[0]).is_ok()
            })
        })
    }

    /// Waits until every other node and the control plane route to node `i`'s podCIDR.
    fn wait_for_routes_to(&self, i: usize) -> Result<()> {
        let name = &self.nodes[i].name;
        let cidr = self.kubectl(&["get", "node", name, "-o", "jsonpath={.spec.podCIDR}"]);
        let ip = self.nodes[i].netns.node_ip.clone();
        let route = format!("{cidr} via {ip}");
        self.wait_for(
            &format!("routes to {name}'s {cidr}"),
            Duration::from_secs(60),
            || {
                self.nodes
                    .iter()
                    .map(|n| &n.netns)
                    .filter(|n| n.node_ip != ip)
                    .chain([&self.segment.ns])
                    .all(|ns| {
                        ns.run(&["ip", "route", "show", "proto", "76"], &[])
                            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&route))
                            .unwrap_or(false)
                    })
            },
        )
    }

    /// The sandbox image reference, pushed (from the registry's namespace) the first time.
    async fn pause_image(&mut self) -> Result<String> {
        if let Some(p) = &self.pause_image {
            return Ok(p.reference.clone());
        }
        let host = self.registry.host();
        let pushed = in_netns(&self.segment.ns.name, move || -> Result<PushedImage> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(HarnessError::io("building a runtime to push the pause image"))?
                .block_on(push_pause_image(&host))
        })??;
        let r = pushed.reference.clone();
        self.pause_image = Some(pushed);
        Ok(r)
    }

    /// Index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
