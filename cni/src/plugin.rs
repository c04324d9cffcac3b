//! The plugin side of the CNI exec protocol: read `CNI_*` from the environment and the config from
//! stdin, validate them, dispatch to a [`Plugin`], and print the result or the CNI error object
//! (exit code 0 / 1) exactly as a runtime expects.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::types::{CniError, ErrorCode, NetConf, PluginResult, VersionInfo};
use crate::{SPEC_VERSION, SUPPORTED_VERSIONS};

/// A command as received by a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginCommand {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// VERSION.
    Version,
}

/// The invocation as a plugin sees it.
#[derive(Debug, Clone)]
pub struct PluginArgs {
    /// `CNI_COMMAND`.
    pub command: PluginCommand,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` parsed into pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`.
    pub path: Vec<PathBuf>,
    /// Raw stdin.
    pub stdin: Vec<u8>,
}

impl PluginArgs {
    /// Parses the invocation from an environment lookup and stdin bytes.
    pub fn parse(env: impl Fn(&str) -> Option<String>, stdin: Vec<u8>) -> Result<Self, CniError> {
        let get = |k: &str| env(k).unwrap_or_default();
        let command = match get("CNI_COMMAND").as_str() {
            "ADD" => PluginCommand::Add,
            "DEL" => PluginCommand::Del,
            "CHECK" => PluginCommand::Check,
            "VERSION" => PluginCommand::Version,
            "" => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    "CNI_COMMAND is not set",
                    "",
                ));
            }
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("unknown CNI_COMMAND {other:?}"),
                    "expected ADD, DEL, CHECK or VERSION",
                ));
            }
        };
        let args = PluginArgs {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: parse_cni_args(&get("CNI_ARGS"))?,
            path: std::env::split_paths(&get("CNI_PATH"))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            stdin,
        };
        if command != PluginCommand::Version {
            let mut missing = Vec::new();
            if args.container_id.is_empty() {
                missing.push("CNI_CONTAINERID");
            }
            if args.ifname.is_empty() {
                missing.push("CNI_IFNAME");
            }
            // The spec lets DEL run without a netns (it may already be gone).
            if args.netns.is_empty() && command != PluginCommand::Del {
                missing.push("CNI_NETNS");
            }
            if !missing.is_empty() {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("required environment variables missing: {}", missing.join(", ")),
                    "",
                ));
            }
        }
        Ok(args)
    }

    /// Parses the process's own environment and reads stdin to the end.
    pub fn from_process() -> Result<Self, CniError> {
        let mut stdin = Vec::new();
        let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
        // VERSION may be run without stdin attached; reading it is harmless when it is.
        if cmd != "VERSION" || !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
                CniError::new(
                    ErrorCode::IoFailure,
                    "reading network config from stdin",
                    e.to_string(),
                )
            })?;
        }
        Self::parse(|k| std::env::var(k).ok(), stdin)
    }

    /// Decodes the network config from stdin and checks its cniVersion is supported.
    pub fn net_conf(&self) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(&self.stdin).map_err(|e| {
            CniError::new(
                ErrorCode::DecodingFailure,
                "failed to decode network config from stdin",
                e.to_string(),
            )
        })?;
        check_version(&conf.cni_version)?;
        Ok(conf)
    }
}

/// Error code 1 unless `version` is one this library supports.
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "incompatible CNI versions: config is {version:?}, plugin supports {SUPPORTED_VERSIONS:?}"
            ),
            "",
        ))
    }
}

/// Parses `CNI_ARGS` (`K=V;K=V`); an entry without `=` is a code-4 error, as in libcni's skel.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    s.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    CniError::new(
                        ErrorCode::InvalidEnvironment,
                        format!("invalid CNI_ARGS pair {kv:?}"),
                        "expected K=V",
                    )
                })
        })
        .collect()
}

/// A plugin implementation; VERSION and the protocol framing are handled by [`run`].
pub trait Plugin {
    /// ADD: set up networking and return the result.
    fn add(&mut self, args: &PluginArgs, conf: &NetConf) -> Result<PluginResult, CniError>;
    /// DEL: release everything; must succeed when resources are already gone.
    fn del(&mut self, args: &PluginArgs, conf: &NetConf) -> Result<(), CniError>;
    /// CHECK: verify the state described by `conf.prev_result`.
    fn check(&mut self, args: &PluginArgs, conf: &NetConf) -> Result<(), CniError>;
}

/// What [`dispatch`] produced: JSON for stdout and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes to print on stdout.
    pub stdout: Vec<u8>,
    /// Process exit code.
    pub exit_code: i32,
}

fn error_outcome(mut e: CniError) -> Outcome {
    if e.cni_version.is_empty() {
        e.cni_version = SPEC_VERSION.to_string();
    }
    Outcome {
        stdout: serde_json::to_vec(&e).unwrap_or_default(),
        exit_code: 1,
    }
}

/// Runs one invocation against `plugin` and encodes the answer (pure apart from the plugin itself).
pub fn dispatch<P: Plugin>(plugin: &mut P, args: Result<PluginArgs, CniError>) -> Outcome {
    let args = match args {
        Ok(a) => a,
        Err(e) => return error_outcome(e),
    };
    if args.command == PluginCommand::Version {
        let v = VersionInfo {
            cni_version: SPEC_VERSION.to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
        };
        return Outcome {
            stdout: serde_json::to_vec(&v).unwrap_or_default(),
            exit_code: 0,
        };
    }
    let conf = match args.net_conf() {
        Ok(c) => c,
        Err(e) => return error_outcome(e),
    };
    let r = match args.command {
        PluginCommand::Add => plugin.add(&args, &conf).and_then(|mut res| {
            res.cni_version = conf.cni_version.clone();
            serde_json::to_vec(&res)
                .map_err(|e| CniError::new(ErrorCode::IoFailure, "encoding result", e.to_string()))
        }),
        PluginCommand::Del => plugin.del(&args, &conf).map(|_| Vec::new()),
        PluginCommand::Check => plugin.check(&args, &conf).map(|_| Vec::new()),
        PluginCommand::Version => Ok(Vec::new()),
    };
    match r {
        Ok(stdout) => Outcome { stdout, exit_code: 0 },
        Err(mut e) => {
            e.cni_version = conf.cni_version.clone();
            error_outcome(e)
        }
    }
}

/// The whole plugin `main`: parse the process's invocation, dispatch, print, and return the exit code.
pub fn run<P: Plugin>(plugin: &mut P) -> i32 {
    let out = dispatch(plugin, PluginArgs::from_process());
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out.stdout);
    let _ = stdout.flush();
    out.exit_code
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Fake;
    impl Plugin for Fake {
        fn add(&mut self, a: &PluginArgs, _c: &NetConf) -> Result<PluginResult, CniError> {
            if a.ifname == "fail" {
                return Err(CniError::new(ErrorCode::TryAgainLater, "busy", ""));
            }
            Ok(PluginResult::default())
        }
        fn del(&mut self, _a: &PluginArgs, _c: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&mut self, _a: &PluginArgs, _c: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| v.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone())
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c"),
        ("CNI_NETNS", "/n"),
        ("CNI_IFNAME", "eth0"),
    ];

    fn run_with(pairs: &[(&str, &str)], stdin: &str) -> (serde_json::Value, i32) {
        let o = dispatch(
            &mut Fake,
            PluginArgs::parse(env(pairs), stdin.as_bytes().to_vec()),
        );
        let v = if o.stdout.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&o.stdout).unwrap()
        };
        (v, o.exit_code)
    }

    #[test]
    fn version_answers_supported_versions() {
        let (v, code) = run_with(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(
            v["supportedVersions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "1.0.0")
        );
    }

    #[test]
    fn add_sets_result_version_and_errors_are_objects() {
        let (v, code) = run_with(FULL, r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#);
        assert_eq!((code, v["cniVersion"].as_str()), (0, Some("1.0.0")));
        let (v, code) = run_with(FULL, "{bad json");
        assert_eq!((code, v["code"].as_u64()), (1, Some(6)));
        let (v, code) = run_with(FULL, r#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#);
        assert_eq!((code, v["code"].as_u64()), (1, Some(1)));
        assert!(v["msg"].as_str().unwrap().contains("9.9.9"));
        let mut fail = FULL.to_vec();
        fail[3] = ("CNI_IFNAME", "fail");
        let (v, code) = run_with(&fail, r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#);
        assert_eq!((code, v["code"].as_u64()), (1, Some(11)));
    }

    #[test]
    fn environment_errors_name_the_variables() {
        let (v, code) = run_with(&[("CNI_COMMAND", "ADD")], "{}");
        assert_eq!((code, v["code"].as_u64()), (1, Some(4)));
        let msg = v["msg"].as_str().unwrap();
        assert!(
            msg.contains("CNI_CONTAINERID") && msg.contains("CNI_NETNS") && msg.contains("CNI_IFNAME"),
            "{msg}"
        );
        let (v, _) = run_with(&[("CNI_COMMAND", "FROB")], "{}");
        assert_eq!(v["code"], 4);
        // DEL without netns is allowed.
        let (_, code) = run_with(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "eth0"),
            ],
            r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#,
        );
        assert_eq!(code, 0);
    }

    #[test]
    fn cni_args_parse() {
        assert_eq!(
            parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=a").unwrap(),
            [
                ("IgnoreUnknown".to_string(), "1".to_string()),
                ("K8S_POD_NAME".to_string(), "a".to_string())
            ]
        );
        assert_eq!(parse_cni_args("junk").unwrap_err().code, 4);
        assert!(parse_cni_args("").unwrap().is_empty());
    }
}
