//! The upstream control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler of
//! the pinned Kubernetes release (built by `scripts/build-upstream.sh`), configured as `kubeadm init`
//! would, for tests that need a real cluster's behaviour: Node authorizer + NodeRestriction, bootstrap
//! tokens, CSR auto-approval and signing, node CIDR allocation, ServiceAccount tokens, audit.
//!
//! Everything is private to one [`UpstreamControlPlane`]: a directory under /tmp (PKI, kubeconfigs,
//! etcd data, logs, audit log), free loopback ports, and optionally a network namespace. Drop stops
//! the processes (SIGTERM, then SIGKILL) in reverse start order and removes the directory. Processes
//! orphaned by an earlier test process that was killed outright are reaped at the next start.
//!
//! ```no_run
//! # fn main() -> knode_harness::Result<()> {
//! use knode_harness::upstream::{UpstreamControlPlane, UpstreamOptions};
//! let cp = UpstreamControlPlane::start(UpstreamOptions::default())?;
//! let ready = cp.run_kubectl(&["get", "--raw", "/readyz"], None)?;
//! assert_eq!(ready, "ok");
//! # Ok(()) }
//! ```

pub mod binaries;
pub mod bootstrap;
pub mod coredns;
pub mod node;
pub mod pki;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use binaries::UpstreamBinaries;
pub use bootstrap::BootstrapToken;
use pki::{Pki, Usage};

use crate::{HarnessError, Result, cleanup};

/// The private directories' prefix (also how orphans of killed test processes are recognised).
const DIR_PREFIX: &str = "knode-upcp-";
/// `--service-cluster-ip-range`.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// `--cluster-cidr` (node podCIDRs are /24s of it).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// How to start the plane. `Default` gives a plane on 127.0.0.1 with free ports.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// `--advertise-address` of the apiserver, also the address it binds and the host of
    /// [`UpstreamControlPlane::server_url`]. Nodes in other network namespaces need an address
    /// they can route to (e.g. one on the nodes' bridge).
    pub advertise_address: IpAddr,
    /// The apiserver's secure port; `None` picks a free one.
    pub secure_port: Option<u16>,
    /// `--cluster-signing-duration`: the lifetime of certificates the controller-manager signs
    /// (short ones exercise kubelet client certificate rotation).
    pub cluster_signing_duration: Duration,
    /// More SANs (IPs or DNS names) for the apiserver's serving certificate.
    pub extra_sans: Vec<String>,
    /// Run every process (and kubectl) in this network namespace (`/run/netns/<name>`).
    pub netns: Option<String>,
    /// Extra flags, appended after the harness's own (a later flag wins).
    pub apiserver_args: Vec<String>,
    pub controller_manager_args: Vec<String>,
    pub scheduler_args: Vec<String>,
    /// How long start-up may take before it is reported as failed.
    pub start_timeout: Duration,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            advertise_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secure_port: None,
            cluster_signing_duration: Duration::from_secs(365 * 24 * 3600),
            extra_sans: Vec::new(),
            netns: None,
            apiserver_args: Vec::new(),
            controller_manager_args: Vec::new(),
            scheduler_args: Vec::new(),
            start_timeout: Duration::from_secs(180),
        }
    }
}

/// One of the plane's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    Scheduler,
}

impl Component {
    /// The binary's name (also its log file's stem).
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
        }
    }
}

struct Proc {
    component: Component,
    child: Child,
}

/// A running upstream control plane; stopped and removed on drop.
pub struct UpstreamControlPlane {
    procs: Vec<Proc>,
    dir: Option<tempfile::TempDir>,
    bins: UpstreamBinaries,
    pki: Pki,
    netns: Option<String>,
    /// `https://<advertise address>:<port>`.
    pub server_url: String,
    /// The admin kubeconfig (`kubernetes-admin`, group `system:masters`).
    pub kubeconfig: PathBuf,
    /// The cluster CA (PEM): what kubelets trust for the apiserver and what signs their certificates.
    pub ca_pem: String,
    /// The cluster CA's file (a kubelet's `authentication.x509.clientCAFile`).
    pub ca_file: PathBuf,
    /// The join token (`kube-system/bootstrap-token-<id>`).
    pub bootstrap_token: BootstrapToken,
    /// `http://127.0.0.1:<port>` of etcd (in the plane's network namespace).
    pub etcd_url: String,
    /// The secure ports of the controller-manager and scheduler (127.0.0.1, serving certificates
    /// signed by the cluster CA).
    pub controller_manager_port: u16,
    pub scheduler_port: u16,
}

impl std::fmt::Debug for UpstreamControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamControlPlane")
            .field("dir", &self.dir())
            .field("server_url", &self.server_url)
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

/// Go's duration syntax for a flag (`90s`).
fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn write_file(path: &Path, data: &str) -> Result<()> {
    std::fs::write(path, data).map_err(HarnessError::io(format!("writing {}", path.display())))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| HarnessError::NotReady(format!("serializing {}: {e}", path.display())))?;
    write_file(path, &text)
}

/// Whether a process in `pid`'s network namespace listens on TCP `port` (any address): read from
/// `/proc/<pid>/net/tcp{,6}`, which works whatever namespace the process is in.
fn listening(pid: u32, port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["tcp", "tcp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    // local_address is column 1, st column 3; 0A = LISTEN.
                    cols.len() > 3 && format!("{} ", cols[1]).ends_with(&needle) && cols[3] == "0A"
                })
            })
            .unwrap_or(false)
    })
}

/// Kills processes left running by an earlier test process that died without dropping its plane
/// (their command lines name a private dir of ours and their parent is gone, so init adopted
/// them), and removes their directories.
fn reap_orphans() {
    let needle = format!("/tmp/{DIR_PREFIX}");
    let mut dirs = Vec::new();
    for pid in cleanup::pids_with_cmdline(&needle) {
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.get(s.rfind(')')? + 1..)?.to_string();
                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
            });
        if ppid != Some(1) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if let Some(start) = cmdline.find(&needle) {
                // tempfile's suffix is alphanumeric: the dir ends at the next '/' or space.
                let tail = &cmdline[start + needle.len()..];
                let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                if !name.is_empty() {
                    dirs.push(format!("{needle}{name}"));
                }
            }
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

impl UpstreamControlPlane {
    /// Starts etcd, the apiserver (waiting for `/readyz`), applies what kubeadm sets up for joining
    /// nodes, then the controller-manager and the scheduler (waiting for their `/healthz`).
    pub fn start(opts: UpstreamOptions) -> Result<Self> {
        crate::require_root()?;
        let bins = UpstreamBinaries::locate(false)?;
        reap_orphans();
        if let Some(ns) = &opts.netns
            && !Path::new(&format!("/run/netns/{ns}")).exists()
        {
            return Err(HarnessError::Missing(format!(
                "network namespace {ns} does not exist (/run/netns/{ns}): create it first"
            )));
        }
        let dir = crate::private_dir(DIR_PREFIX)?;
        let base = dir.path().to_path_buf();
        let pki = Pki::create(&base.join("pki"))?;
        let token = BootstrapToken::generate()?;

        let adv = opts.advertise_address;
        let api_port = match opts.secure_port {
            Some(p) => p,
            None => crate::free_port()?,
        };
        let host = match adv {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        let server_url = format!("https://{host}:{api_port}");
        let etcd_port = crate::free_port()?;
        let etcd_peer_port = crate::free_port()?;
        let kcm_port = crate::free_port()?;
        let sched_port = crate::free_port()?;

        let mut me = UpstreamControlPlane {
            procs: Vec::new(),
            dir: Some(dir),
            bins,
            ca_pem: pki.ca.cert_pem.clone(),
            ca_file: pki.ca.cert.clone(),
            pki,
            netns: opts.netns.clone(),
            server_url,
            kubeconfig: base.join("admin.conf"),
            bootstrap_token: token,
            etcd_url: format!("http://127.0.0.1:{etcd_port}"),
            controller_manager_port: kcm_port,
            scheduler_port: sched_port,
        };
        let deadline = Instant::now() + opts.start_timeout;

        // Certificates and kubeconfigs.
        let mut sans = pki::apiserver_sans(&[adv]);
        sans.extend(opts.extra_sans.iter().cloned());
        let pki = &me.pki;
        let apiserver = pki.issue("apiserver", "kube-apiserver", &[], &sans, Usage::Server)?;
        let kubelet_client = pki.issue(
            "apiserver-kubelet-client",
            bootstrap::KUBELET_CLIENT_USER,
            &[],
            &[],
            Usage::Client,
        )?;
        let front_proxy_client = pki.issue_front_proxy_client()?;
        let local = ["localhost".to_string(), "127.0.0.1".to_string()];
        let kcm_serving = pki.issue(
            "controller-manager-serving",
            "kube-controller-manager",
            &[],
            &local,
            Usage::Server,
        )?;
        let sched_serving = pki.issue("scheduler-serving", "kube-scheduler", &[], &local, Usage::Server)?;
        me.issue_kubeconfig("kubernetes-admin", &["system:masters"], &base.join("admin.conf"))?;
        let kcm_conf = base.join("controller-manager.conf");
        me.issue_kubeconfig("system:kube-controller-manager", &[], &kcm_conf)?;
        let sched_conf = base.join("scheduler.conf");
        me.issue_kubeconfig("system:kube-scheduler", &[], &sched_conf)?;
        let audit_policy = base.join("audit-policy.yaml");
        write_file(
            &audit_policy,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )?;

        // etcd.
        let p = |path: &Path| path.display().to_string();
        let etcd_peer = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd_args = vec![
            "--name=knode".to_string(),
            format!("--data-dir={}", p(&base.join("etcd"))),
            format!("--listen-client-urls={}", me.etcd_url),
            format!("--advertise-client-urls={}", me.etcd_url),
            format!("--listen-peer-urls={etcd_peer}"),
            format!("--initial-advertise-peer-urls={etcd_peer}"),
            format!("--initial-cluster=knode={etcd_peer}"),
            "--initial-cluster-state=new".into(),
            // Test data: durability across power loss is not worth the fsync latency here.
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        me.spawn(Component::Etcd, &etcd_args)?;
        me.wait(Component::Etcd, deadline, |cp| {
            cp.pid(Component::Etcd)
                .is_some_and(|pid| listening(pid, etcd_port))
        })?;

        // kube-apiserver.
        let ca = p(&me.ca_file);
        let mut api_args = vec![
            format!("--advertise-address={adv}"),
            format!("--bind-address={adv}"),
            format!("--secure-port={api_port}"),
            format!("--etcd-servers={}", me.etcd_url),
            "--allow-privileged=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-bootstrap-token-auth=true".into(),
            format!("--client-ca-file={ca}"),
            format!("--tls-cert-file={}", p(&apiserver.cert)),
            format!("--tls-private-key-file={}", p(&apiserver.key)),
            format!("--kubelet-client-certificate={}", p(&kubelet_client.cert)),
            format!("--kubelet-client-key={}", p(&kubelet_client.key)),
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
            format!("--proxy-client-cert-file={}", p(&front_proxy_client.cert)),
            format!("--proxy-client-key-file={}", p(&front_proxy_client.key)),
            format!(
                "--requestheader-client-ca-file={}",
                p(&me.pki.front_proxy_ca.cert)
            ),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p(&me.pki.sa_pub)),
            format!("--service-account-signing-key-file={}", p(&me.pki.sa_key)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--audit-log-path={}", p(&me.audit_log())),
            format!("--audit-policy-file={}", p(&audit_policy)),
            "--audit-log-maxbackup=1".into(),
            "--profiling=false".into(),
        ];
        if adv.is_loopback() {
            // The `default/kubernetes` Endpoints cannot hold a loopback address (validation rejects
            // it, and the reconciler would log that forever): nothing in the cluster can reach a
            // loopback apiserver anyway. Give a routable advertise address for nodes and pods.
            api_args.push("--endpoint-reconciler-type=none".into());
        }
        api_args.extend(opts.apiserver_args.iter().cloned());
        me.spawn(Component::ApiServer, &api_args)?;
        me.wait(Component::ApiServer, deadline, |cp| {
            cp.run_kubectl(&["get", "--raw", "/readyz"], None)
                .is_ok_and(|s| s.trim() == "ok")
        })?;

        // What kubeadm init uploads for joining nodes.
        let join = base.join("bootstrap.json");
        write_json(
            &join,
            &bootstrap::join_objects(&me.bootstrap_token, &me.server_url, &me.ca_pem),
        )?;
        me.run_kubectl(&["apply", "-f", &p(&join)], None).map_err(|e| {
            HarnessError::NotReady(format!("applying the join objects ({}): {e}", join.display()))
        })?;

        // kube-controller-manager and kube-scheduler.
        let mut kcm_args = vec![
            format!("--kubeconfig={}", p(&kcm_conf)),
            format!("--authentication-kubeconfig={}", p(&kcm_conf)),
            format!("--authorization-kubeconfig={}", p(&kcm_conf)),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={kcm_port}"),
            format!("--tls-cert-file={}", p(&kcm_serving.cert)),
            format!("--tls-private-key-file={}", p(&kcm_serving.key)),
            format!("--client-ca-file={ca}"),
            format!(
                "--requestheader-client-ca-file={}",
                p(&me.pki.front_proxy_ca.cert)
            ),
            "--controllers=*,bootstrapsigner,tokencleaner".into(),
            "--cluster-name=kubernetes".into(),
            format!("--cluster-signing-cert-file={ca}"),
            format!("--cluster-signing-key-file={}", p(&me.pki.ca.key)),
            format!(
                "--cluster-signing-duration={}",
                go_duration(opts.cluster_signing_duration)
            ),
            format!("--root-ca-file={ca}"),
            format!("--service-account-private-key-file={}", p(&me.pki.sa_key)),
            "--use-service-account-credentials=true".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allocate-node-cidrs=true".into(),
            format!("--cluster-cidr={CLUSTER_CIDR}"),
            "--node-cidr-mask-size=24".into(),
            "--leader-elect=true".into(),
            "--profiling=false".into(),
        ];
        kcm_args.extend(opts.controller_manager_args.iter().cloned());
        me.spawn(Component::ControllerManager, &kcm_args)?;
        let mut sched_args = vec![
            format!("--kubeconfig={}", p(&sched_conf)),
            format!("--authentication-kubeconfig={}", p(&sched_conf)),
            format!("--authorization-kubeconfig={}", p(&sched_conf)),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={sched_port}"),
            format!("--tls-cert-file={}", p(&sched_serving.cert)),
            format!("--tls-private-key-file={}", p(&sched_serving.key)),
            format!("--client-ca-file={ca}"),
            format!(
                "--requestheader-client-ca-file={}",
                p(&me.pki.front_proxy_ca.cert)
            ),
            "--leader-elect=true".into(),
            "--profiling=false".into(),
        ];
        sched_args.extend(opts.scheduler_args.iter().cloned());
        me.spawn(Component::Scheduler, &sched_args)?;
        for c in [Component::ControllerManager, Component::Scheduler] {
            me.wait(c, deadline, |cp| cp.healthz(c).is_ok_and(|s| s.trim() == "ok"))?;
        }
        Ok(me)
    }

    /// A command for `program` in the plane's network namespace (if any).
    fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn spawn(&mut self, component: Component, args: &[String]) -> Result<()> {
        let name = component.name();
        let log_path = self.log_path(component);
        let log = std::fs::File::create(&log_path)
            .map_err(HarnessError::io(format!("creating {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(HarnessError::io(format!("opening {}", log_path.display())))?;
        let bin = self.bins.path(name);
        let child = self
            .command(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(HarnessError::io(format!("starting {}", bin.display())))?;
        self.procs.push(Proc { component, child });
        Ok(())
    }

    /// Polls `ready` until it holds; fails early (with the log's tail) if the process exits.
    fn wait(&mut self, component: Component, deadline: Instant, ready: impl Fn(&Self) -> bool) -> Result<()> {
        loop {
            if ready(self) {
                return Ok(());
            }
            let exited = self
                .procs
                .iter_mut()
                .find(|p| p.component == component)
                .and_then(|p| p.child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(HarnessError::NotReady(format!(
                    "{} exited during start-up ({status}); its log ({}) ends with:\n{}",
                    component.name(),
                    self.log_path(component).display(),
                    self.log_tail(component, 30)
                )));
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady(format!(
                    "{} was not ready in time; its log ({}) ends with:\n{}",
                    component.name(),
                    self.log_path(component).display(),
                    self.log_tail(component, 30)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn pid(&self, component: Component) -> Option<u32> {
        self.procs
            .iter()
            .find(|p| p.component == component)
            .map(|p| p.child.id())
    }

    /// The pids of the running components (for tests that check clean-up).
    pub fn pids(&self) -> Vec<(Component, u32)> {
        self.procs.iter().map(|p| (p.component, p.child.id())).collect()
    }

    /// The private directory (PKI in `pki/`, kubeconfigs, `etcd/`, logs, audit log).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The binaries this plane runs (and the matching `kubectl`).
    pub fn binaries(&self) -> &UpstreamBinaries {
        &self.bins
    }

    /// The PKI: CAs, ServiceAccount keys, and [`Pki::issue`] for more certificates.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The network namespace the plane runs in, if not the test's own.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// The `kubectl` built from the same release.
    pub fn kubectl(&self) -> PathBuf {
        self.bins.path("kubectl")
    }

    /// `kubectl --kubeconfig=<admin>` in the plane's network namespace, `HOME` in the private dir
    /// (kubectl's discovery cache stays out of the real home). Add args and run it.
    pub fn kubectl_command(&self) -> Command {
        self.kubectl_command_as(&self.kubeconfig)
    }

    /// Like [`Self::kubectl_command`] with another kubeconfig (a node's, a bootstrap token's).
    pub fn kubectl_command_as(&self, kubeconfig: &Path) -> Command {
        let mut c = self.command(&self.kubectl());
        c.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .env("HOME", self.dir());
        c
    }

    /// Runs kubectl as admin; returns its stdout, or an error with its stderr.
    pub fn run_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        self.run_kubectl_as(&self.kubeconfig, args, stdin)
    }

    /// Runs kubectl with `kubeconfig`; returns its stdout, or an error with its stderr.
    pub fn run_kubectl_as(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = self.kubectl_command_as(kubeconfig);
        cmd.args(args);
        let out = crate::process::output_with_stdin(&mut cmd, stdin.map(str::as_bytes))
            .map_err(HarnessError::io(format!("running {}", self.kubectl().display())))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HarnessError::NotReady(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// `GET /healthz` of the controller-manager or scheduler (their secure ports, our CA), or
    /// `/readyz` of the apiserver.
    pub fn healthz(&self, component: Component) -> Result<String> {
        let port = match component {
            Component::ControllerManager => self.controller_manager_port,
            Component::Scheduler => self.scheduler_port,
            Component::ApiServer => return self.run_kubectl(&["get", "--raw", "/readyz"], None),
            Component::Etcd => {
                return Err(HarnessError::Missing(
                    "etcd has no HTTPS health endpoint here".into(),
                ));
            }
        };
        let server = format!("--server=https://127.0.0.1:{port}");
        self.run_kubectl(&[&server, "get", "--raw", "/healthz"], None)
    }

    /// Writes a kubeconfig for `user` in `groups` (a client certificate signed by the cluster CA)
    /// to `path`, e.g. `("system:kube-proxy", &[])` or `("system:node:n1", &["system:nodes"])`.
    pub fn issue_kubeconfig(&self, user: &str, groups: &[&str], path: &Path) -> Result<PathBuf> {
        let file = format!("client-{}", user.replace([':', '/'], "_"));
        let cert = self.pki.issue(&file, user, groups, &[], Usage::Client)?;
        let kc = bootstrap::cert_kubeconfig(
            &self.server_url,
            &self.ca_pem,
            user,
            &cert.cert_pem,
            &cert.key_pem,
        );
        write_json(path, &kc)?;
        Ok(path.to_path_buf())
    }

    /// Writes a kubeconfig authenticating with the bootstrap token (what a joining kubelet's
    /// `--bootstrap-kubeconfig` holds) to `path`.
    pub fn bootstrap_kubeconfig(&self, path: &Path) -> Result<PathBuf> {
        let kc = bootstrap::kubeconfig(
            &self.server_url,
            &self.ca_pem,
            "tls-bootstrap-token-user",
            serde_json::json!({ "token": self.bootstrap_token.token() }),
        );
        write_json(path, &kc)?;
        Ok(path.to_path_buf())
    }

    /// Approves CertificateSigningRequest `name` (as an admin would a kubelet's serving CSR,
    /// which upstream never auto-approves).
    /// Deploys cluster DNS as kubeadm does ([`coredns::addon_objects`]: the `coredns` Deployment
    /// and the `kube-dns` Service at [`coredns::CLUSTER_DNS_IP`]) with `image`, e.g. the one
    /// [`coredns::push_image`] pushed. Does not wait for it to be ready.
    pub fn deploy_coredns(&self, image: &str) -> Result<()> {
        let path = self.dir().join("coredns.json");
        write_json(
            &path,
            &coredns::addon_objects(image, coredns::CLUSTER_DNS_IP, coredns::CLUSTER_DOMAIN),
        )?;
        self.run_kubectl(&["apply", "-f", &path.display().to_string()], None)
            .map(|_| ())
            .map_err(|e| {
                HarnessError::NotReady(format!("applying the CoreDNS addon ({}): {e}", path.display()))
            })
    }

    pub fn approve_csr(&self, name: &str) -> Result<()> {
        self.run_kubectl(&["certificate", "approve", name], None)
            .map(|_| ())
    }

    /// The apiserver's audit log (one JSON event per line, Metadata level).
    pub fn audit_log(&self) -> PathBuf {
        self.dir().join("audit.log")
    }

    /// Audit events of requests by `user` that were denied (HTTP 403) so far.
    pub fn audit_denials(&self, user: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.audit_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == user && e["responseStatus"]["code"] == 403)
            .collect()
    }

    /// Where `component` logs.
    pub fn log_path(&self, component: Component) -> PathBuf {
        self.dir().join(format!("{}.log", component.name()))
    }

    /// The last `lines` lines of `component`'s log.
    pub fn log_tail(&self, component: Component, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(component)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for UpstreamControlPlane {
    fn drop(&mut self) {
        // Reverse start order: clients before the apiserver, the apiserver before etcd.
        while let Some(mut p) = self.procs.pop() {
            cleanup::stop_child(&mut p.child, Duration::from_secs(10));
        }
        if std::env::var_os("KNODE_KEEP_UPSTREAM").is_some()
            && let Some(d) = self.dir.take()
        {
            eprintln!(
                "upstream control plane: keeping {} (KNODE_KEEP_UPSTREAM)",
                d.keep().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_go_seconds() {
        assert_eq!(go_duration(Duration::from_secs(90)), "90s");
        assert_eq!(go_duration(Duration::from_millis(10)), "1s");
    }

    #[test]
    fn listening_reads_our_own_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening(std::process::id(), port));
        drop(l);
        assert!(!listening(std::process::id(), port));
    }
}
