#!/usr/bin/env bash
# Installs everything knode's build, demo and tests need on a Debian 12 machine.
# Idempotent: packages already present are not touched and apt is not even updated.
# With --upstream (the test command), a missing or too old Go is an error rather than a warning:
# the upstream control plane's tests need it (scripts/build-upstream.sh).
set -euo pipefail
go_required=0
for arg in "$@"; do
  case "$arg" in
    --upstream) go_required=1 ;;
    *) echo "setup-host: unknown argument '$arg' (usage: scripts/setup-host.sh [--upstream])" >&2; exit 2 ;;
  esac
done

PKGS=(
  # build: containerd-client needs protoc; nftnl-sys links libnftnl/libmnl
  protobuf-compiler libnftnl-dev libmnl-dev pkg-config build-essential
  # the control plane's embedded store (rusqlite links the system SQLite)
  libsqlite3-dev
  # runtime parts the daemons drive and the tests use for real
  containerd runc nftables iproute2 conntrack containernetworking-plugins
  # test image and registry
  busybox-static docker-registry skopeo umoci
  # test clients / tools
  curl ca-certificates jq socat python3-kubernetes procps psmisc util-linux
  # htpasswd (bcrypt) for the auth-requiring test registry
  apache2-utils
  # systemd-analyze verifies the shipped units; systemd-nspawn boots them under a real systemd
  systemd systemd-container
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps Debian's postinst from starting host daemons (containerd, registry):
  # knode's tests run their own private instances and must not share the host's.
  had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ $had_policy = 0 ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ $had_policy = 0 ]; then rm -f /usr/sbin/policy-rc.d; fi
else
  echo "setup-host: all packages present"
fi

# Pods need forwarding between the bridge and the outside; the kernel default here is 0.
if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
  echo "setup-host: enabling net.ipv4.ip_forward (pods route through this node)"
  echo 1 >/proc/sys/net/ipv4/ip_forward
fi

# The upstream control plane (scripts/build-upstream.sh) is built from Go modules: it needs a Go
# toolchain at least as new as the pinned k8s.io/kubernetes release's go.mod asks for. Debian 12's
# golang package is too old; install from https://go.dev/dl (or set GOTOOLCHAIN=goX.Y.Z to let an
# older go fetch the right toolchain through the module proxy).
need_go=$(awk '$1=="go"{print $2; exit}' "$(dirname "$0")/../tests/upstream/go.mod")
go_missing() {
  if [ $go_required = 1 ]; then
    echo "setup-host: MISSING: $*" >&2
    exit 1
  fi
  echo "setup-host: warning: $* (only the upstream control plane needs it)" >&2
}
have_go=
if command -v go >/dev/null; then have_go=$(go env GOVERSION 2>/dev/null | sed 's/^go//'); fi
if [ -z "$have_go" ]; then
  go_missing "Go >= $need_go (no working 'go' in PATH) for scripts/build-upstream.sh:" \
    "install it from https://go.dev/dl and put its bin/ in PATH"
elif [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -n1)" != "$need_go" ]; then
  go_missing "Go >= $need_go for scripts/build-upstream.sh (found go$have_go at $(command -v go)):" \
    "install a newer one from https://go.dev/dl, or export GOTOOLCHAIN=go$need_go"
else
  echo "setup-host: go$have_go present (>= $need_go, for scripts/build-upstream.sh)"
fi
