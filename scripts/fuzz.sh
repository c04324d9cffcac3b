#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser and translator that takes outside input (fuzz/, see the
# README's "Fuzzing" section): installs cargo-fuzz if missing, builds every target, runs each for N
# seconds starting from the committed seeds (fuzz/seeds/<target>) plus the corpus grown by earlier
# runs, and fails if any target crashes (a panic, a failed invariant, an input that runs longer than
# -timeout, or an allocation above -malloc_limit_mb / RSS above -rss_limit_mb).
#
#   scripts/fuzz.sh                    # every target, 120 s each
#   scripts/fuzz.sh --quick            # every target, 8 s each (test.sh runs this)
#   scripts/fuzz.sh --target cni --seconds 3600
#
# A crash leaves its input in fuzz/artifacts/<target>/; replay it with
#   "$KNODE_FUZZ_TARGET"/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-...
# then fix the product code and add a unit test that replays the input next to the fix.
#
# Build choices (cold build of all 13 targets on the shared 2-core machine: 16.5 min wall, 17 CPU-min;
# with the dependencies optimised too it was 21.7 min wall, 27 CPU-min):
# - `-s none`: no AddressSanitizer. The code under test is safe Rust, where ASan finds nothing the
#   borrow checker does not, and it would instrument and slow down every dependency as well.
# - the code under test at opt-level 1 with debug assertions and overflow checks, the dependencies
#   unoptimised and without debug info (fuzz/Cargo.toml): overflow from input is a finding, and the
#   large dependency tree (kube, tonic, rustls, k8s-openapi) is most of the build.
# - the build output lives outside the clone (KNODE_FUZZ_TARGET, default
#   ~/.cache/knode/fuzz-target), so a fresh clone on the same machine builds incrementally; it is
#   made from nothing when absent. The grown corpora are kept there too.
# - cargo-fuzz with `-s none` passes only stable rustc flags: no RUSTC_BOOTSTRAP needed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=120
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) seconds=8 ;;
    --seconds) seconds="$2"; shift ;;
    --target) only="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

export CARGO_TARGET_DIR="${KNODE_FUZZ_TARGET:-$HOME/.cache/knode/fuzz-target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

mapfile -t all < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^knode-fuzz$')
targets=("${all[@]}")
if [ -n "$only" ]; then
  printf '%s\n' "${all[@]}" | grep -qx "$only" || {
    echo "fuzz.sh: no target $only (targets: ${all[*]})" >&2
    exit 2
  }
  targets=("$only")
fi

t0=$(date +%s)
build_args=(-s none --fuzz-dir fuzz)
if [ -n "$only" ]; then
  nice -n 10 cargo fuzz build "${build_args[@]}" "$only"
else
  nice -n 10 cargo fuzz build "${build_args[@]}"
fi
echo "fuzz.sh: built ${#targets[@]} target(s) in $(( $(date +%s) - t0 )) s"

bin_dir="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"
failed=()
for t in "${targets[@]}"; do
  corpus="$CARGO_TARGET_DIR/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  echo "==> $t (${seconds} s)"
  # -max_len: inputs up to 64 KiB; -timeout: an input running 10 s is a hang; -malloc_limit_mb:
  # one allocation of 256 MiB from at most 64 KiB of input is an unbounded allocation;
  # -rss_limit_mb: likewise for memory in total.
  if ! "$bin_dir/$t" "$corpus" "fuzz/seeds/$t" \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -rss_limit_mb=1024 -malloc_limit_mb=256 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 2>"$artifacts/last-run.log"; then
    tail -40 "$artifacts/last-run.log" >&2
    failed+=("$t")
  else
    grep -E '^stat::number_of_executed_units|^#[0-9]+ *DONE' "$artifacts/last-run.log" | tail -2 || true
  fi
done

echo "fuzz.sh: ${#targets[@]} target(s), $(( $(date +%s) - t0 )) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
