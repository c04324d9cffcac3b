#!/usr/bin/env bash
# Builds the upstream Kubernetes components knode's tests run against, from Go modules pinned in
# tests/upstream (go.mod + go.sum, one module per component set):
#   tests/upstream          k8s.io/kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler,
#                           kubectl (and with --with-node: kubelet, kube-proxy, the benchmark baselines)
#   tests/upstream/etcd     go.etcd.io/etcd/server/v3: etcd
#   tests/upstream/coredns  github.com/coredns/coredns: coredns
#   tests/upstream/conformance  k8s.io/kubernetes test binaries (with --conformance): e2e.test,
#                           ginkgo, the test images' programs (agnhost, nonewprivs), sample-apiserver
#
# Output: a cache outside the clone, ${KNODE_UPSTREAM_CACHE:-$HOME/.cache/knode/upstream}/
# <release>-<hash of the modules' go.mod/go.sum>/bin/. A second run is a no-op. The bin dir is the last
# line on stdout; everything else goes to stderr. Concurrent runs wait for each other (flock).
#
# --conformance builds only the conformance binaries, into their own directory
# (.../conformance-<release>-<hash of tests/upstream/conformance>/bin/): the test-only module never
# changes the control plane's cache key.
#
# Usage: scripts/build-upstream.sh [--with-node | --conformance]
set -euo pipefail

# Everything is in main(), which bash parses whole before running it: editing this file while a
# (long) build runs cannot make the running instance read garbage.
main() {
  cd "$(dirname "$0")/.."
  repo=$PWD
  mods="$repo/tests/upstream"

  with_node=0
  conformance=0
  for arg in "$@"; do
    case "$arg" in
      --with-node) with_node=1 ;;
      --conformance) conformance=1 ;;
      -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
      *) echo "build-upstream: unknown argument '$arg' (usage: scripts/build-upstream.sh [--with-node | --conformance])" >&2; exit 2 ;;
    esac
  done

  log() { echo "build-upstream: $*" >&2; }

  need_go=$(awk '$1=="go"{print $2; exit}' "$mods/go.mod")
  have_go=
  if command -v go >/dev/null; then have_go=$(go env GOVERSION 2>/dev/null | sed 's/^go//'); fi
  if [ -z "$have_go" ]; then
    log "go not found: install Go >= $need_go from https://go.dev/dl (scripts/setup-host.sh --upstream checks)"
    exit 1
  fi
  if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -n1)" != "$need_go" ] && [ -z "${GOTOOLCHAIN:-}" ]; then
    log "go$have_go is older than the go $need_go tests/upstream/go.mod needs: install a newer Go," \
      "or export GOTOOLCHAIN=go$need_go to fetch it through the module proxy"
    exit 1
  fi

  # The pinned versions, read from the modules themselves so that there is one place to change them.
  modver() { awk -v m="$2" '($1==m){print $2} ($1=="require" && $2==m){print $3}' "$1/go.mod" | head -n1; }
  release=$(modver "$mods" k8s.io/kubernetes)
  etcd_version=$(modver "$mods/etcd" go.etcd.io/etcd/server/v3)
  coredns_version=$(modver "$mods/coredns" github.com/coredns/coredns)
  if [ -z "$release" ] || [ -z "$etcd_version" ] || [ -z "$coredns_version" ]; then
    log "cannot read the pinned versions from tests/upstream/{,etcd/,coredns/}go.mod"
    exit 1
  fi

  hash=$(cat "$mods/go.mod" "$mods/go.sum" "$mods/etcd/go.mod" "$mods/etcd/go.sum" \
    "$mods/coredns/go.mod" "$mods/coredns/go.sum" | sha256sum | cut -c1-12)
  cache="${KNODE_UPSTREAM_CACHE:-$HOME/.cache/knode/upstream}"
  out="$cache/$release-$hash"
  bin="$out/bin"
  mkdir -p "$bin"

  cp_done="$bin/.control-plane-complete"
  node_done="$bin/.node-complete"
  built() { [ -e "$cp_done" ] && { [ $with_node = 0 ] || [ -e "$node_done" ]; }; }
  if [ $conformance = 1 ]; then
    cmods="$mods/conformance"
    # What is built is part of the key: adding a program rebuilds.
    conf_progs="github.com/onsi/ginkgo/v2/ginkgo k8s.io/kubernetes/test/images/agnhost k8s.io/kubernetes/test/images/nonewprivs"
    chash=$( (cat "$cmods/go.mod" "$cmods/go.sum"; echo "e2e.test sample-apiserver $conf_progs") | sha256sum | cut -c1-12)
    out="$cache/conformance-$release-$chash"
    bin="$out/bin"
    mkdir -p "$bin"
    conf_done="$bin/.conformance-complete"
    built() { [ -e "$conf_done" ]; }
  fi
  if built; then
    log "already built: $bin"
    echo "$bin"
    exit 0
  fi
  # One builder at a time per cache (parallel tests may all call this script); whoever waited
  # finds the work done.
  exec 9>"$cache/.lock"
  flock 9
  if built; then
    log "already built: $bin"
    echo "$bin"
    exit 0
  fi

  # Memory- and CPU-friendly on a small shared machine: at most 2 compile jobs, lowest priority, no
  # cgo (static binaries), no DWARF/symbol tables (smaller links: the link step is the memory peak).
  export CGO_ENABLED=0
  export GOFLAGS="-mod=readonly -buildvcs=false"
  jobs="${KNODE_UPSTREAM_JOBS:-2}"
  gobuild() { nice -n 10 go build -p "$jobs" -trimpath "$@"; }

  # What `--version` reports: without these the binaries say v0.0.0-master and kubectl warns of skew.
  # buildDate is the release tag's time from the module proxy, so the binaries are reproducible.
  build_date=$(cd "$mods" && go mod download -json "k8s.io/kubernetes@$release" | sed -n 's/.*"Info": "\(.*\)".*/\1/p' \
    | xargs -r sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')
  build_date=${build_date:-1970-01-01T00:00:00Z}
  minor=${release#v*.}; minor=${minor%%.*}
  major=${release#v}; major=${major%%.*}
  k8s_ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done

  tmp="$out/tmp-bin.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  trap 'rm -rf "$tmp"' EXIT

  t0=$(date +%s)
  if [ $conformance = 1 ]; then
    log "building the conformance suite of Kubernetes $release (e2e.test, ginkgo, sample-apiserver, $conf_progs)"
    # e2e.test is a test binary of a dependency's package: `go test -c` builds it like `make WHAT=test/e2e/e2e.test`.
    (cd "$cmods" && nice -n 10 go test -c -vet=off -p "$jobs" -trimpath -ldflags "$k8s_ldflags" -o "$tmp/e2e.test" \
      k8s.io/kubernetes/test/e2e)
    # shellcheck disable=SC2086 # a list of packages
    (cd "$cmods" && gobuild -ldflags "$k8s_ldflags" -o "$tmp/" $conf_progs)
    (cd "$cmods" && gobuild -ldflags "$k8s_ldflags" -o "$tmp/sample-apiserver" k8s.io/sample-apiserver)
    mv -f "$tmp"/* "$bin/"
    touch "$conf_done"
    log "built in $(( $(date +%s) - t0 )) s: $bin"
    echo "$bin"
    exit 0
  fi
  if [ ! -e "$cp_done" ]; then
    log "building the control plane of Kubernetes $release (cold: tens of minutes on 2 cores)"
    (cd "$mods" && gobuild -ldflags "$k8s_ldflags" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl)
    log "building etcd $etcd_version"
    (cd "$mods/etcd" && gobuild -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    log "building coredns $coredns_version"
    (cd "$mods/coredns" && gobuild -ldflags "-s -w" -o "$tmp/coredns" github.com/coredns/coredns)
    mv -f "$tmp"/* "$bin/"
    printf 'kubernetes %s\netcd %s\ncoredns %s\n' "$release" "$etcd_version" "$coredns_version" >"$bin/VERSIONS"
    touch "$cp_done"
  fi
  if [ $with_node = 1 ] && [ ! -e "$node_done" ]; then
    log "building kubelet and kube-proxy $release"
    (cd "$mods" && gobuild -ldflags "$k8s_ldflags" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy)
    mv -f "$tmp"/* "$bin/"
    touch "$node_done"
  fi
  log "built in $(( $(date +%s) - t0 )) s: $bin"
  echo "$bin"
}

main "$@"
