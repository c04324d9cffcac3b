//! Running a command with input: the one place the harness and the tests feed a child's stdin.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `cmd` with `stdin` written to its standard input (none: /dev/null), stdout and stderr
/// captured. A command that exits without reading all its input is not an error here: its exit
/// status and output say what happened.
pub fn output_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>) -> std::io::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(data), Some(mut input)) = (stdin, child.stdin.take()) {
        let _ = input.write_all(data);
    }
    child.wait_with_output()
}
