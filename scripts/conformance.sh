#!/usr/bin/env bash
# Runs upstream's conformance suite against knode nodes: the pinned release's e2e.test and ginkgo
# (scripts/build-upstream.sh --conformance), every test image built here and pushed to the
# cluster's local registry (knode-conformance-images), the upstream control plane with knode nodes
# (scripts/up.sh --control-plane upstream).
#
#   scripts/conformance.sh [--suite cluster] [--focus REGEX] [--skip REGEX] [--node-count N]
#                          [--subset FILE] [--procs N] [--keep] [--dir DIR]
#
#   --suite cluster   (default) test/e2e's [Conformance] tests on an upstream control plane with
#                     N knode nodes (default 2: the suite needs two schedulable nodes); a parallel
#                     pass (--procs, default 4) then a serial pass of the [Serial] ones, as upstream's
#                     conformance runner does
#   --suite node      test/e2e_node's [NodeConformance]: not built yet (see tests/conformance/README.md)
#   --focus/--skip    narrow *within* the suite's conformance set (ginkgo regexes on the full name)
#   --subset FILE     run exactly the tests named in FILE (one full test name per line, # comments):
#                     tests/conformance/ci-subset.txt is the CI's
#   --keep            leave the cluster up afterwards (scripts/up.sh --down --dir DIR removes it)
#
# Output: JUnit under tests/conformance/results/<suite>/ (<suite>-subset/ for --subset:
# junit_parallel.xml, junit_serial.xml), the e2e logs beside them, and one summary line
# `N passed, M failed, K skipped`. Exit status 1 if any selected test failed.
set -euo pipefail

# Everything is in main(), which bash parses whole before running it: editing this file during a
# (long) run cannot make the running instance read garbage.
main() {
cd "$(dirname "$0")/.."
ROOT=$PWD

SUITE=cluster
FOCUS=""
SKIP=""
NODES=2
SUBSET=""
PROCS=4
KEEP=0
DIR=/var/lib/knode-conformance
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE=$2; shift 2 ;;
    --focus) FOCUS=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    --node-count) NODES=$2; shift 2 ;;
    --subset) SUBSET=$2; shift 2 ;;
    --procs) PROCS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dir) DIR=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print } /^set -euo/ { exit }' "$0"; exit 0 ;;
    *) echo "conformance.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { echo "conformance: $*" >&2; }
case "$SUITE" in
  cluster) ;;
  node) log "--suite node (test/e2e_node NodeConformance) is not built yet: see tests/conformance/README.md"; exit 2 ;;
  *) log "--suite must be cluster or node, not '$SUITE'"; exit 2 ;;
esac
if ! [ "$NODES" -ge 2 ] 2>/dev/null; then log "--node-count must be >= 2 (the cluster suite needs two schedulable nodes)"; exit 2; fi
if [ -n "$SUBSET" ] && [ ! -r "$SUBSET" ]; then log "--subset $SUBSET: no such file"; exit 2; fi

# A subset's results sit beside the full run's, never over them.
RESULTS=$ROOT/tests/conformance/results/$SUITE${SUBSET:+-subset}
mkdir -p "$RESULTS"
UP_BIN=$(scripts/build-upstream.sh)
CONF_BIN=$(scripts/build-upstream.sh --conformance)
KSRC=$(cd tests/upstream/conformance && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
export KNODE_UPSTREAM_BIN=$UP_BIN
cargo build -q -p knode-harness --bin knode-conformance-images
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug

# The cluster: upstream control plane, N knode nodes on their own bridge, the registry on .1.
REG_PORT=5050
REG_HOST=10.210.0.1:$REG_PORT
down() { scripts/up.sh --down --dir "$DIR" >/dev/null 2>&1 || true; }
down
if [ "$KEEP" = 0 ]; then trap down EXIT; fi
scripts/up.sh --control-plane upstream --nodes "$NODES" --dir "$DIR" --registry-port "$REG_PORT" --api-port 6543 >&2
export KUBECONFIG=$DIR/admin.conf
"$UP_BIN/kubectl" delete pod,svc demo --ignore-not-found --wait=false >/dev/null

# Every upstream registry → the local one (test/utils/image/manifest.go's RegistryList). The
# invalid registry stays invalid and the private one private: tests expect their pulls to fail.
REPO_LIST=$DIR/repo-list.yaml
cat > "$REPO_LIST" <<EOF
promoterE2eRegistry: $REG_HOST/e2e-test-images
buildImageRegistry: $REG_HOST/build-image
gcEtcdRegistry: $REG_HOST
gcRegistry: $REG_HOST
sigStorageRegistry: $REG_HOST/sig-storage
dockerLibraryRegistry: $REG_HOST/library
cloudProviderGcpRegistry: $REG_HOST/cloud-provider-gcp
EOF
export KUBE_TEST_REPO_LIST=$REPO_LIST
log "building the test images into $REG_HOST"
"$CONF_BIN/e2e.test" --list-images 2>/dev/null | grep -v '^invalid\.' > "$DIR/images.txt"
"$BIN/knode-conformance-images" --registry "$REG_HOST" --conformance-bin "$CONF_BIN" --upstream-bin "$UP_BIN" \
  --kubernetes-src "$KSRC" --cache "${KNODE_IMAGE_CACHE:-$HOME/.cache/knode/conformance-images}" \
  < "$DIR/images.txt" > "$RESULTS/images.txt"
log "$(grep -c '^pushed' "$RESULTS/images.txt") images pushed, $(grep -c '^skipped' "$RESULTS/images.txt") without a local recipe ($RESULTS/images.txt)"

# Selection: the conformance set, narrowed by --focus/--skip or a subset file. Ginkgo ORs several
# --focus flags, so the conformance set is its label and the user's focus the only --focus.
if [ -n "$SUBSET" ]; then
  FOCUS=$(grep -v '^\s*#' "$SUBSET" | sed '/^\s*$/d' | sed 's/[][(){}.*+?^$|\\]/\\&/g' | paste -sd'|')
  FOCUS="($FOCUS)"
fi
ginkgo_run() { # <pass> <label filter> <procs>
  local pass=$1 filter=$2 procs=$3
  local args=(--label-filter "$filter" --timeout 24h --no-color --junit-report "junit_$pass.xml" --output-dir "$RESULTS")
  [ -n "$FOCUS" ] && args+=(--focus "$FOCUS")
  [ -n "$SKIP" ] && args+=(--skip "$SKIP")
  [ "$procs" -gt 1 ] && args+=(--procs "$procs")
  log "$pass pass ($filter${FOCUS:+, focus set}${SKIP:+, skip $SKIP})"
  "$CONF_BIN/ginkgo" "${args[@]}" "$CONF_BIN/e2e.test" -- \
    --kubeconfig "$KUBECONFIG" --provider local --kubectl-path "$UP_BIN/kubectl" \
    --e2e-output-dir "$RESULTS" --report-dir "" --disable-log-dump \
    --non-blocking-taints 'node-role.kubernetes.io/control-plane' >>"$RESULTS/e2e-$pass.log" 2>&1
}
rm -f "$RESULTS"/junit_*.xml "$RESULTS"/e2e-*.log
status=0
ginkgo_run parallel 'Conformance && !Serial && !Disruptive' "$PROCS" || status=1
ginkgo_run serial 'Conformance && (Serial || Disruptive)' 1 || status=1

# JUnit files keep only the selected specs (ginkgo lists every filtered-out spec as
# <skipped message="skipped">); skips the tests asked for themselves (Skip("reason")) stay. Then the
# summary line.
summary=$(python3 - "$RESULTS"/junit_*.xml <<'PY'
import sys, xml.etree.ElementTree as ET
p = f = s = 0
SUITE_NODES = {"[" + k + w + "Suite" for k in ("", "Report", "Synchronized") for w in ("Before", "After")}
for path in sys.argv[1:]:
    tree = ET.parse(path)
    for suite in tree.getroot().iter("testsuite"):
        for tc in list(suite.findall("testcase")):
            sk = tc.find("skipped")
            if sk is not None and sk.get("message") == "skipped":
                suite.remove(tc)
                continue
            # Suite-level nodes ([ReportAfterSuite] …, [SynchronizedBeforeSuite]) count only when
            # they fail: a failed BeforeSuite fails every test.
            if tc.get("name", "").split("]")[0] in SUITE_NODES:
                f += tc.find("failure") is not None or tc.find("error") is not None
                continue
            if sk is not None: s += 1
            elif tc.find("failure") is not None or tc.find("error") is not None: f += 1
            else: p += 1
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("skipped", str(sum(tc.find("skipped") is not None for tc in cases)))
        suite.set("disabled", "0")
    tree.write(path, encoding="unicode", xml_declaration=True)
print(f"{p} passed, {f} failed, {s} skipped")
PY
)
echo "$summary"
echo "$(date -u +%FT%TZ) $(git rev-parse --short HEAD) $summary" > "$RESULTS/summary.txt"
if echo "$summary" | grep -q '^0 passed, 0 failed'; then log "no test matched the selection"; exit 1; fi
if [ "$status" != 0 ] || ! echo "$summary" | grep -q ' 0 failed'; then exit 1; fi
}

main "$@"
