//! The runtime side of the CNI exec protocol: find a plugin in `CNI_PATH`, run it with the CNI
//! environment and the network config on stdin, decode its result or error object, with a timeout;
//! chain a conflist (ADD in order with `prevResult`, DEL in reverse order, CHECK with the cached result).
//! STATUS and GC are CNI 1.1 commands; this library speaks 1.0.0 and does not send them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::types::{CniError, NetConf, NetConfList, PluginResult, VersionInfo};

/// A CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Add the container to the network.
    Add,
    /// Remove the container from the network.
    Del,
    /// Verify the container's networking is as expected.
    Check,
    /// Report supported spec versions.
    Version,
}

impl Command {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

/// Per-invocation runtime parameters (the CNI_* environment).
#[derive(Debug, Clone)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: path of the container's network namespace.
    pub netns: String,
    /// `CNI_IFNAME`: interface name inside the container.
    pub ifname: String,
    /// `CNI_ARGS` key/value pairs (joined as `K=V;K=V`).
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: directories searched for plugin executables.
    pub cni_path: Vec<PathBuf>,
    /// Kill a plugin that runs longer than this.
    pub timeout: Duration,
    /// Capability arguments (`portMappings`, …), given as `runtimeConfig` to the plugins that
    /// declare the capability.
    pub capability_args: serde_json::Map<String, serde_json::Value>,
}

impl RuntimeConf {
    /// Parameters with no `CNI_ARGS` and a 60 s timeout.
    pub fn new(container_id: &str, netns: &str, ifname: &str, cni_path: Vec<PathBuf>) -> Self {
        RuntimeConf {
            container_id: container_id.to_string(),
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            args: Vec::new(),
            cni_path,
            timeout: Duration::from_secs(60),
            capability_args: serde_json::Map::new(),
        }
    }

    fn cni_args(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Why a plugin invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The executable is not in any `CNI_PATH` directory.
    #[error("CNI plugin {plugin:?} not found in CNI_PATH {paths:?}")]
    NotFound {
        /// Plugin type.
        plugin: String,
        /// Directories searched.
        paths: Vec<PathBuf>,
    },
    /// The process could not be started or talked to.
    #[error("running CNI plugin {plugin} {command}: {source}")]
    Io {
        /// Plugin path.
        plugin: String,
        /// CNI command.
        command: &'static str,
        /// OS error.
        source: std::io::Error,
    },
    /// The plugin ran longer than the timeout and was killed.
    #[error("CNI plugin {plugin} {command} timed out after {timeout:?} and was killed")]
    Timeout {
        /// Plugin path.
        plugin: String,
        /// CNI command.
        command: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The plugin answered with a CNI error object.
    #[error("CNI plugin {plugin} {command} failed: {error}")]
    Plugin {
        /// Plugin path.
        plugin: String,
        /// CNI command.
        command: &'static str,
        /// The plugin's error object.
        error: CniError,
    },
    /// The plugin's output was not a valid result/error.
    #[error("CNI plugin {plugin} {command} printed undecodable output ({reason}): {output:?}")]
    BadOutput {
        /// Plugin path.
        plugin: String,
        /// CNI command.
        command: &'static str,
        /// Decoder message.
        reason: String,
        /// What it printed (stdout, then stderr).
        output: String,
    },
    /// The config could not be prepared for the plugin.
    #[error("preparing config for CNI plugin: {0}")]
    Config(CniError),
}

/// Finds plugin `name` in the `CNI_PATH` directories.
pub fn find_plugin(name: &str, paths: &[PathBuf]) -> Result<PathBuf, ExecError> {
    // A type with a path separator would let a config escape CNI_PATH.
    if !name.contains('/') && !name.is_empty() {
        for dir in paths {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(ExecError::NotFound {
        plugin: name.to_string(),
        paths: paths.to_vec(),
    })
}

/// Runs `plugin` once with `command`, the CNI environment from `rt` and `stdin`; returns stdout on exit 0.
pub fn exec_plugin(
    plugin: &Path,
    command: Command,
    rt: &RuntimeConf,
    stdin: &[u8],
) -> Result<Vec<u8>, ExecError> {
    let name = plugin.display().to_string();
    let io = |source| ExecError::Io {
        plugin: name.clone(),
        command: command.as_str(),
        source,
    };
    let cni_path = std::env::join_paths(&rt.cni_path).map_err(|e| io(std::io::Error::other(e)))?;
    let mut cmd = Process::new(plugin);
    cmd.env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_ARGS", rt.cni_args())
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // ETXTBSY: a plugin binary just written (an install, a test) can still be open for writing in
    // a child another thread forked at that moment; libcni retries the exec 5 times too.
    let mut attempt = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
            }
            r => break r.map_err(io)?,
        }
    };
    let (Some(mut child_in), Some(mut child_out), Some(mut child_err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io(std::io::Error::other("plugin stdio not captured")));
    };
    // Readers on threads: a plugin blocked writing a large output must not deadlock our stdin write.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = child_out.read_to_end(&mut out);
        let _ = tx.send(r.map(|_| out));
    });
    let err_reader = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = child_err.read_to_end(&mut err);
        err
    });
    // A plugin may exit without reading stdin (VERSION): a broken pipe here is not an error.
    let _ = child_in.write_all(stdin);
    drop(child_in);
    let out = match rx.recv_timeout(rt.timeout) {
        Ok(r) => r.map_err(io)?,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ExecError::Timeout {
                plugin: name,
                command: command.as_str(),
                timeout: rt.timeout,
            });
        }
    };
    let status = child.wait().map_err(io)?;
    let err = err_reader.join().unwrap_or_default();
    if status.success() {
        return Ok(out);
    }
    match serde_json::from_slice::<CniError>(&out) {
        Ok(error) => Err(ExecError::Plugin {
            plugin: name,
            command: command.as_str(),
            error,
        }),
        Err(e) => Err(ExecError::BadOutput {
            plugin: name,
            command: command.as_str(),
            reason: format!("exit {status}, {e}"),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            ),
        }),
    }
}

fn encode(conf: &NetConf) -> Result<Vec<u8>, ExecError> {
    serde_json::to_vec(conf).map_err(|e| {
        ExecError::Config(CniError::new(
            crate::ErrorCode::IoFailure,
            "encoding network config",
            e.to_string(),
        ))
    })
}

fn decode_result(plugin: &Path, command: Command, out: &[u8]) -> Result<PluginResult, ExecError> {
    serde_json::from_slice(out).map_err(|e| ExecError::BadOutput {
        plugin: plugin.display().to_string(),
        command: command.as_str(),
        reason: e.to_string(),
        output: String::from_utf8_lossy(out).into_owned(),
    })
}

/// Plugin `i`'s config as the runtime hands it over: name, version, `prevResult`, `runtimeConfig`.
fn plugin_conf(
    list: &NetConfList,
    i: usize,
    prev: Option<&PluginResult>,
    rt: &RuntimeConf,
) -> Result<crate::types::NetConf, ExecError> {
    let mut conf = list.plugin_conf(i, prev).map_err(ExecError::Config)?;
    conf.inject_runtime_config(&rt.capability_args);
    Ok(conf)
}

/// ADD through every plugin of `list` in order, each receiving the previous one's result as `prevResult`.
/// Returns the final result (the one the runtime caches for CHECK and DEL).
pub fn add_network_list(list: &NetConfList, rt: &RuntimeConf) -> Result<PluginResult, ExecError> {
    let mut prev: Option<PluginResult> = None;
    for (i, p) in list.plugins.iter().enumerate() {
        let path = find_plugin(&p.plugin_type, &rt.cni_path)?;
        let conf = plugin_conf(list, i, prev.as_ref(), rt)?;
        let out = exec_plugin(&path, Command::Add, rt, &encode(&conf)?)?;
        prev = Some(decode_result(&path, Command::Add, &out)?);
    }
    // from_bytes guarantees at least one plugin; an empty hand-built list yields an empty result.
    Ok(prev.unwrap_or_else(|| PluginResult {
        cni_version: list.cni_version.clone(),
        ..Default::default()
    }))
}

/// DEL through every plugin of `list` in reverse order, with the cached ADD result (if any) as `prevResult`.
/// Every plugin is called even if an earlier one fails; the first error is returned.
pub fn del_network_list(
    list: &NetConfList,
    rt: &RuntimeConf,
    cached: Option<&PluginResult>,
) -> Result<(), ExecError> {
    let mut first_err = None;
    for i in (0..list.plugins.len()).rev() {
        let r = (|| {
            let path = find_plugin(&list.plugins[i].plugin_type, &rt.cni_path)?;
            let conf = plugin_conf(list, i, cached, rt)?;
            exec_plugin(&path, Command::Del, rt, &encode(&conf)?).map(|_| ())
        })();
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// CHECK through every plugin of `list` in order with the cached ADD result (skipped if `disableCheck`).
pub fn check_network_list(
    list: &NetConfList,
    rt: &RuntimeConf,
    cached: &PluginResult,
) -> Result<(), ExecError> {
    if list.disable_check {
        return Ok(());
    }
    for (i, p) in list.plugins.iter().enumerate() {
        let path = find_plugin(&p.plugin_type, &rt.cni_path)?;
        let conf = plugin_conf(list, i, Some(cached), rt)?;
        exec_plugin(&path, Command::Check, rt, &encode(&conf)?)?;
    }
    Ok(())
}

/// VERSION of the plugin `plugin_type`.
pub fn plugin_version(plugin_type: &str, rt: &RuntimeConf) -> Result<VersionInfo, ExecError> {
    let path = find_plugin(plugin_type, &rt.cni_path)?;
    let out = exec_plugin(&path, Command::Version, rt, br#"{"cniVersion":"1.0.0"}"#)?;
    serde_json::from_slice(&out).map_err(|e| ExecError::BadOutput {
        plugin: path.display().to_string(),
        command: "VERSION",
        reason: e.to_string(),
        output: String::from_utf8_lossy(&out).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Writes a shell-script plugin that logs its invocation and prints `body`.
    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn rt(dir: &Path) -> RuntimeConf {
        let mut rt = RuntimeConf::new("c1", "/var/run/netns/x", "eth0", vec![dir.to_path_buf()]);
        rt.args.push(("K8S_POD_NAME".into(), "p".into()));
        rt
    }

    #[test]
    fn chain_passes_prev_result_and_env_and_dels_in_reverse() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let log = log.display();
        // Plugin a answers with an IP; b echoes whether it saw a's result as prevResult.
        script(
            d.path(),
            "a",
            &format!(
                r#"cat > /dev/null; echo "a $CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_ARGS" >> {log}
echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.0.0.2/24"}}]}}'"#
            ),
        );
        script(
            d.path(),
            "b",
            &format!(
                r#"in=$(cat); echo "b $CNI_COMMAND" >> {log}
case "$in" in *10.0.0.2*) echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.0.0.2/24"}}],"routes":[{{"dst":"0.0.0.0/0"}}]}}';; *) exit 1;; esac"#
            ),
        );
        let list = NetConfList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"},{"type":"b"}]}"#,
        )
        .unwrap();
        let r = add_network_list(&list, &rt(d.path())).unwrap();
        assert_eq!(r.routes.len(), 1);
        check_network_list(&list, &rt(d.path()), &r).unwrap();
        del_network_list(&list, &rt(d.path()), Some(&r)).unwrap();
        let log = std::fs::read_to_string(d.path().join("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(
            lines,
            [
                "a ADD c1 eth0 K8S_POD_NAME=p",
                "b ADD",
                "a CHECK c1 eth0 K8S_POD_NAME=p",
                "b CHECK",
                "b DEL",
                "a DEL c1 eth0 K8S_POD_NAME=p"
            ]
        );
    }

    #[test]
    fn plugin_error_object_is_decoded() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "bad",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"d"}'; exit 1"#,
        );
        let list =
            NetConfList::from_bytes(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bad"}]}"#)
                .unwrap();
        match add_network_list(&list, &rt(d.path())) {
            Err(ExecError::Plugin { error, command, .. }) => {
                assert_eq!(error.code, 11);
                assert_eq!(error.msg, "busy");
                assert_eq!(command, "ADD");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_plugin_garbage_output_and_timeout() {
        let d = tempfile::tempdir().unwrap();
        let list =
            NetConfList::from_bytes(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"nope"}]}"#)
                .unwrap();
        assert!(matches!(
            add_network_list(&list, &rt(d.path())),
            Err(ExecError::NotFound { .. })
        ));
        let list =
            NetConfList::from_bytes(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#)
                .unwrap();
        assert!(matches!(
            add_network_list(&list, &rt(d.path())),
            Err(ExecError::NotFound { .. })
        ));
        script(d.path(), "junk", "echo oops; echo trace >&2; exit 2");
        let list =
            NetConfList::from_bytes(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"junk"}]}"#)
                .unwrap();
        match add_network_list(&list, &rt(d.path())) {
            Err(ExecError::BadOutput { output, .. }) => {
                assert!(output.contains("oops") && output.contains("trace"))
            }
            other => panic!("unexpected {other:?}"),
        }
        script(d.path(), "slow", "exec sleep 30");
        let list =
            NetConfList::from_bytes(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"slow"}]}"#)
                .unwrap();
        let mut r = rt(d.path());
        r.timeout = Duration::from_millis(200);
        assert!(matches!(
            add_network_list(&list, &r),
            Err(ExecError::Timeout { .. })
        ));
    }
}
