//! CRI log files (`<time> <stream> <P|F> <content>` records, rotated files first) rendered as
//! `kubectl logs` shows them, with the `containerLogs` query options. Checks that `tailLines`,
//! which reads backwards from the newest file, shows exactly what reading everything would.
//!
//! Input: line 1 the query (`tailLines=2&timestamps=true&sinceTime=...&limitBytes=...`), then
//! the log content, with NUL bytes separating rotated files (oldest first).
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use kubelet::server::LogOptions;
use kubelet::server::logs::{render_files, render_logs};
use libfuzzer_sys::fuzz_target;

/// A directory of this process's own for the log files.
fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("knode-fuzz-cri-logs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let nl = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let q: HashMap<String, String> = form_urlencoded::parse(&data[..nl]).into_owned().collect();
    let opts = LogOptions::from_query(&q, UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let content = data.get(nl + 1..).unwrap_or_default();

    let whole = render_logs(content, &opts);
    if let Some(max) = opts.limit_bytes {
        assert!(whole.len() <= max, "limitBytes");
    }
    if let Some(n) = opts.tail_lines {
        assert!(whole.iter().filter(|c| **c == b'\n').count() <= n, "tailLines");
    }

    // The same records split into rotated files: reading the files (backwards for a tail) gives
    // what rendering all of the content does. Rotation happens between records, so every file
    // but the newest ends with a newline.
    let parts: Vec<&[u8]> = content.split(|c| *c == 0).collect();
    let mut joined: Vec<u8> = Vec::new();
    let files: Vec<PathBuf> = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let mut part = part.to_vec();
            if i + 1 < parts.len() && !part.is_empty() && !part.ends_with(b"\n") {
                part.push(b'\n');
            }
            joined.extend_from_slice(&part);
            let p = dir().join(format!("{i}.log"));
            std::fs::write(&p, &part).expect("writing a log file");
            p
        })
        .collect();
    assert_eq!(
        render_files(&files, &opts),
        render_logs(&joined, &opts),
        "files read for {opts:?}"
    );
    for f in files {
        let _ = std::fs::remove_file(f);
    }
});
