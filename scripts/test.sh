#!/usr/bin/env bash
# The README's test command: on a fresh Debian 12 machine (as root) it installs what the build and
# the tests need, builds everything, checks formatting and lints, and runs every test (unit + e2e).
# Exits non-zero on any failure. Benchmarks run in their short mode here (KNODE_BENCH=full for more;
# scripts/bench.sh for the side-by-side table with upstream's kubelet and kube-proxy).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the e2e tests drive containerd, mounts and network namespaces: run as root" >&2
  exit 1
fi
if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo not found: install a Rust toolchain >= 1.89 (rustup) first" >&2
  exit 1
fi

step() { printf '\n==> %s\n' "$*"; }
t0=$(date +%s)

step "host setup"
scripts/setup-host.sh --upstream

step "formatting"
cargo fmt --all -- --check

step "build (workspace, tests) and static test image program"
cargo build --workspace --all-targets
scripts/build-testimg.sh >/dev/null

step "clippy"
cargo clippy --workspace --all-targets -q -- -D warnings

step "upstream components (cached)"
# kube-apiserver, controller-manager, scheduler, kubectl, etcd, CoreDNS of the pinned release, for the
# upstream control plane tests: built once into ~/.cache/knode/upstream (cold: see the README).
scripts/build-upstream.sh >/dev/null

step "tests (unit + e2e)"
cargo test --workspace --no-fail-fast

step "upstream conformance, CI subset (tests/conformance/ci-subset.txt on a 2-node knode cluster; scripts/conformance.sh for the full run)"
scripts/build-upstream.sh --conformance >/dev/null
scripts/conformance.sh --subset tests/conformance/ci-subset.txt

step "fuzzing, quick (each target a few seconds from the committed seeds)"
scripts/fuzz.sh --quick

step "side-by-side benchmark, quick (prints knode / upstream ratios; asserts only that every row ran)"
# Debug builds of knode's daemons here (no release build in CI): the table's numbers are for
# checking the command still works; `scripts/bench.sh` (release) gives the ones to quote.
scripts/bench.sh --quick --debug

echo "test.sh: all green in $(( $(date +%s) - t0 )) s"
