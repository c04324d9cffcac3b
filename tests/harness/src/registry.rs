//! A private OCI registry (Debian's docker-registry) on a free 127.0.0.1 port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result, cleanup};

/// A docker-registry process with its own storage, listening on loopback only.
pub struct PrivateRegistry {
    dir: Option<tempfile::TempDir>,
    child: Child,
    port: u16,
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

    fn start_opts(auth: Option<(&str, &str)>) -> Result<Self> {
        let mut last = HarnessError::NotReady("docker-registry: no attempt made".into());
        // The free port is probed, then bound by the registry: another process may take it in
        // between, so a bind failure is retried on a new port.
        for _attempt in 0..5 {
            let mut reg = Self::spawn(crate::free_port()?, auth)?;
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

    fn spawn(port: u16, auth: Option<(&str, &str)>) -> Result<Self> {
        let dir = crate::private_dir("kn-reg-")?;
        let config = dir.path().join("config.yml");
        let mut yaml = config_yaml(&dir.path().join("storage").display().to_string(), port);
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
        let child = Command::new("docker-registry")
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
            if http_status(self.port, "/v2/").is_some_and(|s| s == ready) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::NotReady(format!(
            "docker-registry did not answer on 127.0.0.1:{} within {timeout:?}",
            self.port
        )))
    }

    /// `127.0.0.1:<port>`: the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    std::str::from_utf8(&head[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn config_yaml(storage: &str, port: u16) -> String {
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
  addr: 127.0.0.1:{port}
"#
    )
}
