#!/usr/bin/env bash
# knode's kubelet and kube-proxy side by side with upstream's own (built from the pinned release),
# on one upstream control plane, in the same run: prints a table of knode / upstream ratios with the
# absolute values and the floors measured beside them (concurrent `ctr run -d`), and appends the rows
# to scripts/bench-results.csv (date, commit, machine, mode, row, values).
#
#   scripts/bench.sh            full: bursts of 30 and 100 pods x 3 rounds, a Deployment of 100,
#                               kubelet restart with 50 probed pods, 100 / 1k / 10k Services
#   scripts/bench.sh --quick    the same rows CI-sized: one round, 30 pods, 100 / 1k Services
#   --debug                     knode's daemons from the debug build (CI: keeps the command from
#                               rotting without a release build; the CSV says "debug")
#   --only pods|proxy           one half
#
# Needs root (containerd, network namespaces, nftables). Installs what it needs (setup-host.sh),
# builds upstream's kubelet and kube-proxy once into the cache scripts/build-upstream.sh uses.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=() profile=release only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=(--quick) ;;
    --debug) profile=debug ;;
    --only) only=(--only "${2:?--only needs pods or proxy}"); shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (usage: scripts/bench.sh [--quick] [--debug] [--only pods|proxy])" >&2; exit 2 ;;
  esac
  shift
done
if [ "$(id -u)" != 0 ]; then
  echo "bench.sh: the benchmark drives containerd, network namespaces and nftables: run as root" >&2
  exit 1
fi

scripts/setup-host.sh --upstream
scripts/build-upstream.sh --with-node >/dev/null
scripts/build-testimg.sh >/dev/null
# The measured daemons in $profile; the harness driving them is the debug build the tests use.
if [ "$profile" = release ]; then
  cargo build --release -p kubelet -p kube-proxy -p cni --bins
else
  cargo build -p kubelet -p kube-proxy -p cni --bins
fi
cargo build -p knode-bench
mode=()
[ "$profile" = debug ] && mode=(--mode-suffix debug)
KNODE_BIN_DIR="$PWD/target/$profile" target/debug/knode-bench "${quick[@]}" "${only[@]}" "${mode[@]}" \
  --csv scripts/bench-results.csv
