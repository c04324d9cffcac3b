#!/usr/bin/env bash
# Builds the test image's program as a static binary (gnu target, +crt-static) at
# target/x86_64-unknown-linux-gnu/testimg/testimg, where knode-harness looks for it.
# The explicit --target keeps RUSTFLAGS away from build scripts and proc macros, which cannot be static.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build -q -p testimg --target x86_64-unknown-linux-gnu --profile testimg
echo "${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/testimg/testimg"
