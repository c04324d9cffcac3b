//! `knode-bridge`: knode's CNI bridge + IPAM plugin. Not implemented yet.
//!
//! Answers every command with a CNI error object (code 4, "invalid configuration") so a runtime that
//! finds it gets a clear, spec-shaped refusal instead of silent success.

fn main() {
    println!(
        r#"{{"cniVersion":"1.0.0","code":4,"msg":"knode-bridge is not implemented yet in this build of knode"}}"#
    );
    std::process::exit(1);
}
