//! Built-in IPAM compatible with the reference `host-local` plugin's on-disk store, so the two can be
//! swapped on a node: `<dataDir>/<network>/` holds one file per reserved IP (named by the IP, containing
//! `<containerID>\r\n<ifname>`), `last_reserved_ip.0` (the last IP handed out in range set 0), and a
//! `lock` file that is `flock`ed for the duration of an operation. Allocation starts after the last
//! reserved IP and wraps, skipping the gateway, as host-local does.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::ipnet::Ipv4Net;
use crate::types::{CniError, ErrorCode, IpamConf, Route};

/// host-local's default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// host-local's separator between container ID and ifname in a reservation file.
const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED: &str = "last_reserved_ip.0";

/// The host-local IPAM configuration (single IPv4 range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLocalConf {
    /// The subnet addresses come from.
    pub subnet: Ipv4Net,
    /// First allocatable address.
    pub range_start: Ipv4Addr,
    /// Last allocatable address.
    pub range_end: Ipv4Addr,
    /// Gateway (never allocated).
    pub gateway: Ipv4Addr,
    /// Routes to return.
    pub routes: Vec<Route>,
    /// Store root (the network's dir is `<data_dir>/<network name>`).
    pub data_dir: PathBuf,
}

fn invalid(msg: String) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg, "")
}

fn ip_field(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<Ipv4Addr>, CniError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("ipam.{key}: {s:?} is not an IPv4 address"))),
        Some(v) => Err(invalid(format!("ipam.{key}: expected a string, got {v}"))),
    }
}

impl HostLocalConf {
    /// Reads the `ipam` section: `subnet` (+`rangeStart`/`rangeEnd`/`gateway`) or `ranges: [[{…}]]`,
    /// `routes`, and `dataDir`.
    pub fn from_ipam(ipam: &IpamConf) -> Result<Self, CniError> {
        if ipam.plugin_type != "host-local" {
            return Err(invalid(format!(
                "ipam.type {:?} is not supported by knode-bridge's built-in IPAM (use \"host-local\")",
                ipam.plugin_type
            )));
        }
        let range = match ipam.extra.get("ranges") {
            Some(Value::Array(sets)) => {
                let first = sets.first().and_then(|s| s.as_array()).and_then(|s| s.first());
                match first.and_then(|r| r.as_object()) {
                    Some(r) => r.clone(),
                    None => {
                        return Err(invalid(
                            "ipam.ranges must be a non-empty array of arrays of ranges".into(),
                        ));
                    }
                }
            }
            Some(v) => return Err(invalid(format!("ipam.ranges: expected an array, got {v}"))),
            None => ipam.extra.clone(),
        };
        let subnet = match range.get("subnet") {
            Some(Value::String(s)) => s
                .parse::<Ipv4Net>()
                .map_err(|e| invalid(format!("ipam subnet: {e}")))?
                .trunc(),
            _ => {
                return Err(invalid(
                    "ipam: \"subnet\" is required (a string like \"10.22.0.0/24\")".into(),
                ));
            }
        };
        if subnet.prefix > 30 {
            return Err(invalid(format!(
                "ipam subnet {subnet} is too small (need a /30 or larger)"
            )));
        }
        let range_start = ip_field(&range, "rangeStart")?.unwrap_or_else(|| subnet.first_host());
        let range_end = ip_field(&range, "rangeEnd")?.unwrap_or_else(|| subnet.last_host());
        let gateway = ip_field(&range, "gateway")?.unwrap_or_else(|| subnet.first_host());
        for (k, ip) in [
            ("rangeStart", range_start),
            ("rangeEnd", range_end),
            ("gateway", gateway),
        ] {
            if !subnet.contains(ip) {
                return Err(invalid(format!("ipam {k} {ip} is outside subnet {subnet}")));
            }
        }
        if u32::from(range_start) > u32::from(range_end) {
            return Err(invalid(format!(
                "ipam rangeStart {range_start} is after rangeEnd {range_end}"
            )));
        }
        let routes = match ipam.extra.get("routes") {
            None => Vec::new(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| invalid(format!("ipam.routes: {e}")))?,
        };
        let data_dir = match ipam.extra.get("dataDir") {
            Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
            _ => PathBuf::from(DEFAULT_DATA_DIR),
        };
        Ok(HostLocalConf {
            subnet,
            range_start,
            range_end,
            gateway,
            routes,
            data_dir,
        })
    }
}

/// An open, locked store for one network. The lock is released on drop.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io_err(what: String, e: std::io::Error) -> CniError {
    CniError::new(ErrorCode::IoFailure, what, e.to_string())
}

impl Store {
    /// Opens (creating) `<data_dir>/<network>` and takes its lock.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, CniError> {
        if network.is_empty() || network.contains('/') || network == "." || network == ".." {
            return Err(invalid(format!(
                "network name {network:?} cannot be used as an IPAM store directory"
            )));
        }
        let dir = data_dir.join(network);
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_err(format!("creating IPAM store {}", dir.display()), e))?;
        let lock_path = dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(format!("opening {}", lock_path.display()), e))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(format!("locking {}", lock_path.display()), e.into()))?;
        Ok(Store { dir, _lock: lock })
    }

    fn owner(content: &str) -> (&str, &str) {
        let mut it = content.split(LINE_BREAK);
        (it.next().unwrap_or("").trim(), it.next().unwrap_or("").trim())
    }

    /// All reservations as (ip, container id, ifname).
    pub fn reservations(&self) -> Result<Vec<(Ipv4Addr, String, String)>, CniError> {
        let rd =
            std::fs::read_dir(&self.dir).map_err(|e| io_err(format!("reading {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let Ok(content) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let (id, ifname) = Self::owner(&content);
            out.push((ip, id.to_string(), ifname.to_string()));
        }
        out.sort();
        Ok(out)
    }

    /// The IP reserved for (id, ifname), if any.
    pub fn find(&self, id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, CniError> {
        Ok(self
            .reservations()?
            .into_iter()
            .find(|(_, i, n)| i == id.trim() && n == ifname)
            .map(|(ip, _, _)| ip))
    }

    /// Reserves the next free IP for (id, ifname); returns the existing one if already reserved.
    pub fn allocate(&self, conf: &HostLocalConf, id: &str, ifname: &str) -> Result<Ipv4Addr, CniError> {
        if let Some(ip) = self.find(id, ifname)? {
            return Ok(ip);
        }
        let start = u32::from(conf.range_start);
        let end = u32::from(conf.range_end);
        let last = std::fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|l| (start..=end).contains(l));
        // host-local begins after the last reserved IP, wrapping at the end of the range.
        let first = match last {
            Some(l) if l < end => l + 1,
            _ => start,
        };
        let tmp = self.temp_path(id, ifname);
        let mut f = File::create(&tmp).map_err(|e| io_err(format!("creating {}", tmp.display()), e))?;
        f.write_all(format!("{}{LINE_BREAK}{ifname}", id.trim()).as_bytes())
            .map_err(|e| io_err(format!("writing {}", tmp.display()), e))?;
        drop(f);
        let total = u64::from(end - start) + 1;
        let mut cur = first;
        for _ in 0..total {
            let ip = Ipv4Addr::from(cur);
            cur = if cur >= end { start } else { cur + 1 };
            if ip == conf.gateway {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            // The reservation appears with its owner already written (hard link of a complete temp
            // file): a plugin killed midway never leaves an empty, ownerless IP file that no DEL frees.
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&tmp);
                    std::fs::write(self.dir.join(LAST_RESERVED), ip.to_string()).map_err(|e| {
                        io_err(format!("writing {LAST_RESERVED} in {}", self.dir.display()), e)
                    })?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(io_err(format!("reserving {}", path.display()), e));
                }
            }
        }
        let _ = std::fs::remove_file(&tmp);
        Err(CniError::new(
            ErrorCode::Generic,
            format!(
                "no IP addresses available in range {}-{} of subnet {} (all reserved in {})",
                conf.range_start,
                conf.range_end,
                conf.subnet,
                self.dir.display()
            ),
            "release addresses (DEL unused containers) or enlarge the subnet",
        ))
    }

    /// Per-(id, ifname) temp file used while reserving (not an IP name, so never read as a reservation).
    fn temp_path(&self, id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!(
            ".reserving-{}",
            crate::bridge::host_veth_name(id.trim(), ifname)
        ))
    }

    /// Releases every IP reserved for (id, ifname); releasing nothing is not an error.
    pub fn release(&self, id: &str, ifname: &str) -> Result<usize, CniError> {
        let _ = std::fs::remove_file(self.temp_path(id, ifname));
        let mut n = 0;
        for (ip, i, name) in self.reservations()? {
            // Files written by old host-local versions hold only the ID.
            if i == id.trim() && (name == ifname || name.is_empty()) {
                match std::fs::remove_file(self.dir.join(ip.to_string())) {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(format!("releasing {ip} in {}", self.dir.display()), e)),
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn conf(dir: &Path, subnet: &str) -> HostLocalConf {
        let ipam: IpamConf = serde_json::from_value(serde_json::json!({
            "type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": dir.to_str().unwrap()
        }))
        .unwrap();
        HostLocalConf::from_ipam(&ipam).unwrap()
    }

    #[test]
    fn allocates_like_host_local_and_writes_its_format() {
        let d = tempfile::tempdir().unwrap();
        let c = conf(d.path(), "10.9.0.0/29");
        assert_eq!(c.gateway, Ipv4Addr::new(10, 9, 0, 1));
        let s = Store::open(d.path(), "net").unwrap();
        let a = s.allocate(&c, "c1", "eth0").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(
            std::fs::read_to_string(d.path().join("net/10.9.0.2")).unwrap(),
            "c1\r\neth0"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("net/last_reserved_ip.0")).unwrap(),
            "10.9.0.2"
        );
        assert!(d.path().join("net/lock").exists());
        // The temp file used to publish the reservation atomically is gone.
        let names: Vec<String> = std::fs::read_dir(d.path().join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with(".reserving")), "{names:?}");
        // Same container+ifname gets the same IP back.
        assert_eq!(s.allocate(&c, "c1", "eth0").unwrap(), a);
        let b = s.allocate(&c, "c2", "eth0").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        // Release then allocate continues after the last reserved (no immediate reuse), as host-local.
        assert_eq!(s.release("c1", "eth0").unwrap(), 1);
        assert_eq!(s.release("c1", "eth0").unwrap(), 0);
        assert_eq!(s.allocate(&c, "c3", "eth0").unwrap(), Ipv4Addr::new(10, 9, 0, 4));
    }

    #[test]
    fn exhaustion_is_a_clear_error_and_wraps_to_freed_ips() {
        let d = tempfile::tempdir().unwrap();
        let c = conf(d.path(), "10.9.0.0/29"); // hosts .1-.6, gateway .1 → 5 usable
        let s = Store::open(d.path(), "net").unwrap();
        for i in 0..5 {
            s.allocate(&c, &format!("c{i}"), "eth0").unwrap();
        }
        let e = s.allocate(&c, "c9", "eth0").unwrap_err();
        assert!(e.msg.contains("no IP addresses available"), "{}", e.msg);
        s.release("c0", "eth0").unwrap();
        assert_eq!(s.allocate(&c, "c9", "eth0").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
    }

    #[test]
    fn reads_legacy_and_rejects_bad_config() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "net").unwrap();
        std::fs::write(d.path().join("net/10.9.0.5"), "old").unwrap();
        assert_eq!(s.release("old", "eth0").unwrap(), 1);
        let bad =
            |v: serde_json::Value| HostLocalConf::from_ipam(&serde_json::from_value(v).unwrap()).unwrap_err();
        assert!(bad(serde_json::json!({"type":"dhcp"})).msg.contains("dhcp"));
        assert!(
            bad(serde_json::json!({"type":"host-local"}))
                .msg
                .contains("subnet")
        );
        assert!(
            bad(serde_json::json!({"type":"host-local","subnet":"10.0.0.0/24","gateway":"10.1.0.1"}))
                .msg
                .contains("outside")
        );
        assert!(Store::open(d.path(), "../x").is_err());
    }
}
