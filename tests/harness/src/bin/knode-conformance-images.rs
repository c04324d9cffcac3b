//! Builds the images of upstream's conformance suites and pushes them to the local registry
//! (`knode_harness::conformance_images`); `scripts/conformance.sh` runs it.
//!
//! `e2e.test --list-images | knode-conformance-images --registry HOST:PORT --conformance-bin D
//!  --upstream-bin D --kubernetes-src D --cache D` reads the references on stdin and prints one line per reference:
//! `pushed <ref>` or `skipped <ref> <reason>`. Exit status 1 if a recipe failed.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use knode_harness::conformance_images::{Inputs, push_all};

const USAGE: &str = "usage: knode-conformance-images --registry HOST:PORT --conformance-bin DIR --upstream-bin DIR --kubernetes-src DIR --cache DIR < references";

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut registry, mut conformance_bin, mut upstream_bin, mut kubernetes_src, mut cache) =
        (None, None, None, None, None);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--registry" => &mut registry,
            "--conformance-bin" => &mut conformance_bin,
            "--upstream-bin" => &mut upstream_bin,
            "--kubernetes-src" => &mut kubernetes_src,
            "--cache" => &mut cache,
            _ => fail(&format!("unknown argument '{flag}'\n{USAGE}"), 2),
        };
        *slot = Some(PathBuf::from(
            args.next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value"), 2)),
        ));
    }
    let (Some(registry), Some(conformance_bin), Some(upstream_bin), Some(kubernetes_src), Some(cache)) =
        (registry, conformance_bin, upstream_bin, kubernetes_src, cache)
    else {
        fail(USAGE, 2)
    };
    let inputs = Inputs {
        conformance_bin,
        upstream_bin,
        kubernetes_src,
        cache,
    };
    let references: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(|l| l.ok())
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    knode_harness::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("tokio runtime: {e}"), 1));
    match rt.block_on(push_all(&references, &registry.to_string_lossy(), &inputs)) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            for p in &report.pushed {
                let _ = writeln!(out, "pushed {}", p.reference);
            }
            for (r, why) in &report.skipped {
                let _ = writeln!(out, "skipped {r} {why}");
            }
        }
        Err(e) => fail(&format!("building the conformance images: {e}"), 1),
    }
}

fn fail(msg: &str, code: i32) -> ! {
    eprintln!("knode-conformance-images: {msg}");
    std::process::exit(code)
}
