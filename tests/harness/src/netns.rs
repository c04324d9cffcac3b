//! A test-created network namespace standing in for a node: loopback up, an address on a veth
//! pair kept inside it (no dummy module on every kernel), IP forwarding on, optionally a default
//! route. Deleted on drop; the host's network is never touched.

use std::process::{Command, Output};

use crate::{HarnessError, Result};

/// A "node" network namespace.
#[derive(Debug)]
pub struct NodeNetns {
    pub name: String,
    pub node_ip: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(HarnessError::io("running ip"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(HarnessError::NotReady(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        )))
    }
}

impl NodeNetns {
    /// Creates `name` with `node_ip/24` on `node0`; with `default_route`, a default route via the
    /// (absent) `.2` of that subnet, so Service IPs are routable for DNAT as on a real node.
    pub fn create(name: &str, node_ip: &str, default_route: bool) -> Result<Self> {
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
        ip(&["netns", "add", name])?;
        let ns = NodeNetns {
            name: name.to_string(),
            node_ip: node_ip.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", name, "link", "add", "node0", "type", "veth", "peer", "name", "node0p",
        ])?;
        ip(&["-n", name, "link", "set", "node0p", "up"])?;
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{node_ip}/24"),
            "dev",
            "node0",
        ])?;
        ip(&["-n", name, "link", "set", "node0", "up"])?;
        ip(&["netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        if default_route {
            let gw = match node_ip.rsplit_once('.') {
                Some((net, _)) => format!("{net}.2"),
                None => return Err(HarnessError::NotReady(format!("{node_ip} is not IPv4"))),
            };
            ip(&["-n", name, "route", "add", "default", "via", &gw, "dev", "node0"])?;
        }
        Ok(ns)
    }

    /// `nsenter --net=… -- args`: the namespace's network, the test's mounts (so bind mounts the
    /// program makes stay visible to containerd, unlike with `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs a command in the namespace and returns its output.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        let Some((program, rest)) = args.split_first() else {
            return Err(HarnessError::NotReady("empty command".into()));
        };
        self.command(program)
            .args(rest)
            .envs(env.iter().copied())
            .output()
            .map_err(HarnessError::io("running a command in the netns"))
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

/// Runs `f` on a new thread that has joined network namespace `name` (sockets it opens live
/// there; the rest of the process is untouched) and returns its result.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(HarnessError::io(format!("opening {path}")))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| HarnessError::NotReady(format!("entering {path}: {e}")))?;
        Ok(f())
    })
    .join()
    .map_err(|_| HarnessError::NotReady("a thread in a network namespace panicked".into()))?
}

/// The nodes' "physical" network of a multi-node cluster: a network namespace holding a bridge
/// with the gateway address (where the control plane and the registry listen), and one namespace
/// per node joined to it by a veth pair (`eth0` in the node, default route via the gateway). One
/// L2 segment, as host-gw routing between nodes requires. Deleting the namespaces on drop removes
/// every link with them; the host's network is never touched.
#[derive(Debug)]
pub struct Segment {
    /// The segment's own namespace (control-plane side).
    pub ns: NodeNetns,
    /// `a.b.c.` of the /24; the gateway is `.1`, node `i` is `.(10 + i)`.
    prefix: String,
}

impl Segment {
    /// Creates namespace `name` with bridge `seg0` holding `<prefix>1/24` (`prefix` like `10.210.0.`).
    pub fn create(name: &str, prefix: &str) -> Result<Segment> {
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
        ip(&["netns", "add", name])?;
        let seg = Segment {
            ns: NodeNetns {
                name: name.to_string(),
                node_ip: format!("{prefix}1"),
            },
            prefix: prefix.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&["-n", name, "link", "add", "seg0", "type", "bridge"])?;
        ip(&["-n", name, "addr", "add", &format!("{prefix}1/24"), "dev", "seg0"])?;
        ip(&["-n", name, "link", "set", "seg0", "up"])?;
        ip(&["netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        Ok(seg)
    }

    /// The gateway address (`<prefix>1`).
    pub fn gateway(&self) -> &str {
        &self.ns.node_ip
    }

    /// Node `i`'s address on the segment.
    pub fn node_ip(&self, i: u8) -> String {
        format!("{}{}", self.prefix, 10 + u16::from(i))
    }

    /// Creates node namespace `name` as node `i` of the segment.
    pub fn add_node(&self, name: &str, i: u8) -> Result<NodeNetns> {
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
        ip(&["netns", "add", name])?;
        let node = NodeNetns {
            name: name.to_string(),
            node_ip: self.node_ip(i),
        };
        let port = format!("n{i}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.ns.name,
        ])?;
        ip(&["-n", &self.ns.name, "link", "set", &port, "master", "seg0", "up"])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{}/24", node.node_ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", name, "link", "set", "eth0", "up"])?;
        ip(&["-n", name, "route", "add", "default", "via", self.gateway()])?;
        ip(&["netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        Ok(node)
    }
}
