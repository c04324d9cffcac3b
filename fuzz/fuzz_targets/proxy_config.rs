//! kube-proxy's configuration: a KubeProxyConfiguration file (YAML or JSON, strict) plus its
//! command line, merged as the daemon does at start-up (`ProxyFlags` then `resolve`, which reads
//! `--config` from disk), and the `--cluster-cidr` / `--nodeport-addresses` CIDR lists.
//!
//! Input: the file's text, a NUL byte, then one command-line argument per line.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kube_proxy::config::{KubeProxyConfiguration, ProxyFlags, parse_cidr_list};
use libfuzzer_sys::fuzz_target;

use clap::Parser;

fn config_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("knode-fuzz-proxy-{}.yaml", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, args) = text.split_once('\0').unwrap_or((text, ""));
    let path = config_path();
    if std::fs::write(path, file).is_err() {
        return;
    }
    if let Ok((config, _ignored)) = KubeProxyConfiguration::load(path) {
        // A loaded configuration written back out loads to the same value.
        let json = serde_json::to_string(&config).expect("config serializes");
        if std::fs::write(path, &json).is_ok() {
            let (again, _) =
                KubeProxyConfiguration::load(path).unwrap_or_else(|e| panic!("re-loading {json}: {e}"));
            assert_eq!(again, config, "round trip");
        }
        let _ = std::fs::write(path, file);
    }
    let argv = std::iter::once("kube-proxy".to_string())
        .chain(args.lines().map(String::from))
        .chain([format!("--config={}", path.display())]);
    if let Ok(flags) = ProxyFlags::try_parse_from(argv) {
        if let Ok(settings) = flags.resolve("fuzz-node") {
            assert!(!settings.node_name.is_empty());
        }
    }
    for line in args.lines() {
        if let Ok(cidrs) = parse_cidr_list(line) {
            assert!(
                cidrs
                    .iter()
                    .all(|c| c.prefix <= if c.addr.is_ipv4() { 32 } else { 128 })
            );
        }
    }
});
