#!/usr/bin/env bash
# The README's main command: brings up a single-node knode cluster on this machine (containerd,
# knode-control-plane, kubelet, kube-proxy), runs a demo pod and Service, and prints the kubectl
# lines to try next.
#
# Status: host setup works; the cluster itself arrives with the kubelet lifecycle issue. Until
# then this script says so and exits non-zero rather than pretend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
echo "up.sh: the single-node cluster is not available in this build yet (kubelet lifecycle issue)" >&2
exit 1
