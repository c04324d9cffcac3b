//! Test worlds for CNI data-plane tests: a test-created "node" netns (where plugins run, via
//! `ip netns exec`), pod netns, and an "outside host" netns linked to the node. Nothing touches the
//! host's own netns; every netns, process and temp dir is removed by Drop guards, even on failure.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cni::exec::RuntimeConf;
use cni::types::NetConfList;

pub const TESTIMG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/x86_64-unknown-linux-gnu/testimg/testimg"
);
pub const REF_PLUGINS: &str = "/usr/lib/cni";
/// Address of the node on the link to the outside host, and the outside host's.
pub const NODE_OUT_IP: &str = "192.168.77.1";
pub const OUTSIDE_IP: &str = "192.168.77.2";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn require_root() {
    assert!(nix_is_root(), "these tests need root (network namespaces)");
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

/// Runs a command and asserts success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace created with `ip netns add`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "kcni{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        ok(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
    pub fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        ok(&v)
    }
    pub fn try_exec(&self, args: &[&str]) -> std::process::Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }
    /// Starts the test image's servers in this netns.
    pub fn serve(&self) -> Server {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, TESTIMG])
            .args(["serve", "--http-port", "8080", "--udp-port", "8081"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server { child }
    }
    /// HTTP GET from inside this netns (curl), with retries until `deadline` for servers still starting.
    pub fn http_get(&self, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.try_exec(&["curl", "-sS", "--max-time", "2", url]);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "GET {url} from {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    /// The source address the testimg server at `ip` saw for a request from this netns.
    pub fn client_ip(&self, ip: &str) -> String {
        let s = self.http_get(&format!("http://{ip}:8080/clientip"));
        s.rsplit_once(':').map(|(a, _)| a.to_string()).unwrap_or(s)
    }
    /// UDP round trip from inside this netns (socat), with retries.
    pub fn udp_echo(&self, ip: &str, msg: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let cmd = format!("printf {msg} | socat -T1 - UDP:{ip}:8081");
            let out = self.try_exec(&["sh", "-c", &cmd]);
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !s.is_empty() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "UDP to {ip} from {} got nothing",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A testimg server process, killed on drop.
pub struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which plugins the network config selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Knode,
    Reference,
}

/// A node netns with an outside host, a private IPAM dir, and a CNI_PATH whose plugins run in the node.
pub struct World {
    pub node: Netns,
    pub outside: Netns,
    pub data: tempfile::TempDir,
    pub bin: tempfile::TempDir,
    pub subnet: String,
}

pub fn knode_bridge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_knode-bridge"))
}

impl World {
    pub fn new() -> World {
        require_root();
        let node = Netns::new("node");
        let outside = Netns::new("out");
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // node <-> outside link; the outside host has no route to the pod subnet (masquerade needed).
        let (a, b) = ("to-out", "to-node");
        node.exec(&[
            "ip",
            "link",
            "add",
            a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            &outside.name,
        ]);
        node.exec(&["ip", "addr", "add", &format!("{NODE_OUT_IP}/24"), "dev", a]);
        node.exec(&["ip", "link", "set", a, "up"]);
        outside.exec(&["ip", "addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", b]);
        outside.exec(&["ip", "link", "set", b, "up"]);
        let bin = tempfile::tempdir().unwrap();
        // Wrappers make the runtime's exec land in the node netns; host-local stays unwrapped because
        // the reference bridge execs it from inside the node netns already.
        for (name, target) in [
            ("knode-bridge", knode_bridge_bin()),
            ("bridge", PathBuf::from(REF_PLUGINS).join("bridge")),
            ("loopback", PathBuf::from(REF_PLUGINS).join("loopback")),
        ] {
            let p = bin.path().join(name);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
                    node.name,
                    target.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        World {
            node,
            outside,
            data: tempfile::tempdir().unwrap(),
            bin,
            subnet: "10.77.0.0/24".into(),
        }
    }

    pub fn conflist(&self, flavor: Flavor, ip_masq: bool) -> NetConfList {
        self.conflist_subnet(flavor, ip_masq, &self.subnet)
    }

    pub fn conflist_subnet(&self, flavor: Flavor, ip_masq: bool, subnet: &str) -> NetConfList {
        let ty = match flavor {
            Flavor::Knode => "knode-bridge",
            Flavor::Reference => "bridge",
        };
        let v = serde_json::json!({
            "cniVersion": "1.0.0", "name": "knodetest",
            "plugins": [
                {"type": ty, "bridge": "knode0", "isGateway": true, "isDefaultGateway": true, "ipMasq": ip_masq,
                 "hairpinMode": true, "mtu": 1500,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                          "dataDir": self.data.path().to_str().unwrap()}},
                {"type": "loopback"}
            ]
        });
        NetConfList::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    pub fn rt(&self, pod: &Netns, id: &str) -> RuntimeConf {
        RuntimeConf::new(
            id,
            &pod.path(),
            "eth0",
            vec![self.bin.path().to_path_buf(), PathBuf::from(REF_PLUGINS)],
        )
    }

    /// IPs reserved in the IPAM store of the test network.
    pub fn reserved_ips(&self) -> Vec<String> {
        let dir = self.data.path().join("knodetest");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// veth devices in the node netns.
    pub fn node_veths(&self) -> Vec<String> {
        self.node
            .exec(&["ip", "-o", "link", "show", "type", "veth"])
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n).to_string())
            })
            .filter(|n| n != "to-out")
            .collect()
    }

    /// The node netns's nftables ruleset.
    pub fn nft_ruleset(&self) -> String {
        self.node.exec(&["nft", "list", "ruleset"])
    }
}

pub fn ip_of(result: &cni::PluginResult) -> String {
    result.ips[0].address.split('/').next().unwrap().to_string()
}
