//! A private OCI registry (Debian's docker-registry) on a free 127.0.0.1 port, or on a given
//! address inside a test-made network namespace (a multi-node cluster's segment).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result, cleanup};

/// A docker-registry process with its own storage, listening on loopback only.
pub struct PrivateRegistry {
    dir: Option<tempfile::TempDir>,
    child: Child,
    port: u16,
    addr: Ipv4Addr,
    netns: Option<String>,
}

impl PrivateRegistry {
    /// Starts an anonymous registry and waits (up to 20 s) until `GET /v2/` answers 200.
    pub fn start() -> Result<Self> {
        Self::start_opts(None)
    }

    /// Starts a registry that requires HTTP basic auth (htpasswd, bcrypt) for `user`/`password`:
    /// anonymous requests get 401, as on a private registry.
    pub fn start_with_auth(user: &str, password: &str) -> Result<Self> {
        Self::start_opts(Some((user, password)))
    }

    /// Starts an anonymous registry on `addr:5000` inside network namespace `netns` (reachable
    /// by every node on that segment; push to it from inside, e.g. with [`crate::netns::in_netns`]).
    pub fn start_in(netns: &str, addr: Ipv4Addr) -> Result<Self> {
        let mut reg = Self::spawn(5000, None, addr, Some(netns.to_string()))?;
        reg.wait_ready(Duration::from_secs(20), false)?;
        Ok(reg)
    }

    fn start_opts(auth: Option<(&str, &str)>) -> Result<Self> {
        let mut last = HarnessError::NotReady("docker-registry: no attempt made".into());
        // The free port is probed, then bound by the registry: another process may take it in
        // between, so a bind failure is retried on a new port.
        for _attempt in 0..5 {
            let mut reg = Self::spawn(crate::free_port()?, auth, Ipv4Addr::LOCALHOST, None)?;
            match reg.wait_ready(Duration::from_secs(20), auth.is_some()) {
                Ok(()) => return Ok(reg),
                Err(e) => {
                    let log = reg.log_tail();
                    last = HarnessError::NotReady(format!("{e}; log: {log}"));
                    if !log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn spawn(port: u16, auth: Option<(&str, &str)>, addr: Ipv4Addr, netns: Option<String>) -> Result<Self> {
        let dir = crate::private_dir("kn-reg-")?;
        let config = dir.path().join("config.yml");
        let mut yaml = config_yaml(&dir.path().join("storage").display().to_string(), addr, port);
        if let Some((user, password)) = auth {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .map_err(HarnessError::io(
                    "running htpasswd (package apache2-utils; run scripts/setup-host.sh)",
                ))?;
            std::fs::write(&htpasswd, &out.stdout)
                .map_err(HarnessError::io(format!("writing {}", htpasswd.display())))?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: knode-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml).map_err(HarnessError::io(format!("writing {}", config.display())))?;
        let log = std::fs::File::create(dir.path().join("registry.log"))
            .map_err(HarnessError::io("creating registry.log"))?;
        let log2 = log.try_clone().map_err(HarnessError::io("dup registry.log"))?;
        let mut cmd = match &netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg("docker-registry");
                c
            }
            None => Command::new("docker-registry"),
        };
        let child = cmd
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(HarnessError::io(
                "spawning docker-registry (is the docker-registry package installed? run scripts/setup-host.sh)",
            ))?;
        Ok(PrivateRegistry {
            dir: Some(dir),
            child,
            port,
            addr,
            netns,
        })
    }

    fn wait_ready(&mut self, timeout: Duration, auth: bool) -> Result<()> {
        // With auth on, an anonymous GET /v2/ answering 401 is the sign of life.
        let ready = if auth { 401 } else { 200 };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(HarnessError::NotReady(format!(
                    "docker-registry exited with {status}"
                )));
            }
            let status = match &self.netns {
                Some(ns) => {
                    let (addr, port) = (self.addr, self.port);
                    crate::netns::in_netns(ns, move || http_status_at(addr, port, "/v2/"))
                        .ok()
                        .flatten()
                }
                None => http_status(self.port, "/v2/"),
            };
            if status.is_some_and(|s| s == ready) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::NotReady(format!(
            "docker-registry did not answer on {}:{} within {timeout:?}",
            self.addr, self.port
        )))
    }

    /// `<address>:<port>` (`127.0.0.1:<port>` unless started in a namespace): the registry part
    /// of image references.
    pub fn host(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    /// The registry's process id (fault tests stop it with SIGSTOP to hold a pull in flight).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last lines of the registry's log, for error messages.
    pub fn log_tail(&self) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let text = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Stops the registry and removes its storage. Called by drop; idempotent.
    pub fn stop(&mut self) {
        cleanup::stop_child(&mut self.child, Duration::from_secs(5));
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Status code of a plain `GET path` on 127.0.0.1:port, or None if nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_status_at(Ipv4Addr::LOCALHOST, port, path)
}

/// Status code of a plain `GET path` on addr:port, or None if nothing answers.
pub fn http_status_at(addr: Ipv4Addr, port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    std::str::from_utf8(&head[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn config_yaml(storage: &str, addr: Ipv4Addr, port: u16) -> String {
    format!(
        r#"version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {addr}:{port}
"#
    )
}
