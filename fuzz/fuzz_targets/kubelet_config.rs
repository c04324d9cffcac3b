//! The kubelet's configuration: a KubeletConfiguration file (YAML or JSON, strict) plus a command
//! line in upstream's flag syntax, merged the way the daemon does at start-up
//! (`KubeletFlags::parse_upstream` then `resolve`, which reads `--config` from disk).
//!
//! Input: the file's text, a NUL byte, then one command-line argument per line.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kubelet::config::KubeletConfiguration;
use kubelet::config::KubeletFlags;
use libfuzzer_sys::fuzz_target;

/// One config file per fuzzing process, rewritten for every input.
fn config_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("knode-fuzz-kubelet-{}.yaml", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, args) = text.split_once('\0').unwrap_or((text, ""));
    let path = config_path();

    if let Ok(loaded) = KubeletConfiguration::decode(path, file) {
        // What /configz serves must decode back to the same configuration.
        let json = serde_json::to_string(&loaded.config).expect("config serializes");
        let again =
            KubeletConfiguration::decode(path, &json).unwrap_or_else(|e| panic!("re-decoding {json}: {e}"));
        assert_eq!(again.config, loaded.config, "configz round trip");
    }

    let mut argv: Vec<String> = args.lines().map(String::from).collect();
    if std::fs::write(path, file).is_err() {
        return;
    }
    argv.push(format!("--config={}", path.display()));
    if let Ok(flags) = KubeletFlags::parse_upstream(&argv) {
        let _ = flags.resolve("fuzz-node");
    }
});
