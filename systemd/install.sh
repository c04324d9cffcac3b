#!/usr/bin/env bash
# Installs knode's daemons as systemd services, like a distro package would:
#   binaries   -> /usr/local/bin (knode-bridge -> /opt/cni/bin)
#   units      -> /etc/systemd/system (+ containerd.service.d drop-in)
#   defaults   -> /etc/knode/*.yaml, /etc/default/{kubelet,kube-proxy,knode-control-plane},
#                 /etc/knode/10-knode.conflist (reference; the kubelet writes /etc/cni/net.d/10-knode.conflist
#                 from the node's podCIDR), /etc/sysctl.d/90-knode.conf (ip_forward=1)
# Idempotent. A config the user changed is kept (the shipped one lands beside it as *.knode-new).
# Every file it adds is recorded in /var/lib/knode/install-manifest; --uninstall removes exactly
# those (changed configs kept unless --purge) and leaves pods' data (/var/lib/kubelet,
# /var/log/pods) alone unless --purge.
#
# usage: install.sh [--root DIR] [--bin-dir DIR] [--uninstall] [--purge] [--no-reload]
#   --bin-dir DIR   where the built binaries are (default: target/release of this checkout)
#   --root DIR      install under DIR instead of / (packaging, tests)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=/
bin_dir="$here/../target/release"
mode=install
purge=0
reload=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --uninstall) mode=uninstall; shift ;;
    --purge) purge=1; shift ;;
    --no-reload) reload=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
root=${root%/}
manifest="$root/var/lib/knode/install-manifest"

reload_systemd() {
  # Only talk to systemd when installing into the running system and systemd is PID 1.
  if [ $reload = 1 ] && [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
}

sum() { sha256sum "$1" | cut -d' ' -f1; }

# put SRC DEST MODE KIND: KIND is "bin"/"unit" (always replaced) or "conf" (kept if user-modified).
put() {
  local src=$1 dest="$root$2" mode=$3 kind=$4
  mkdir -p "$(dirname "$dest")"
  if [ "$kind" = conf ] && [ -e "$dest" ]; then
    local recorded
    recorded=$(awk -v p="$2" '$2 == p {print $1}' "$manifest" 2>/dev/null || true)
    if [ "$(sum "$dest")" != "$(sum "$src")" ] && [ "$(sum "$dest")" != "$recorded" ]; then
      install -m "$mode" "$src" "$dest.knode-new"
      echo "install.sh: kept your $2 (shipped version is $2.knode-new)"
      grep -q " $2\$" "$manifest" 2>/dev/null || echo "user $2" >>"$manifest"
      return
    fi
  fi
  install -m "$mode" "$src" "$dest"
  # Record path with the checksum of what was installed (to tell user edits apart later).
  if [ -f "$manifest" ]; then
    grep -v " $2\$" "$manifest" >"$manifest.tmp" || true
    mv "$manifest.tmp" "$manifest"
  fi
  echo "$(sum "$dest") $2" >>"$manifest"
}

if [ $mode = install ]; then
  for b in kubelet kube-proxy knode-control-plane knode-bridge knode-hostgw; do
    [ -x "$bin_dir/$b" ] || { echo "install.sh: $bin_dir/$b not found: build with 'cargo build --release' or pass --bin-dir" >&2; exit 1; }
  done
  mkdir -p "$(dirname "$manifest")"
  touch "$manifest"
  for b in kubelet kube-proxy knode-control-plane knode-hostgw; do put "$bin_dir/$b" "/usr/local/bin/$b" 0755 bin; done
  put "$bin_dir/knode-bridge" /opt/cni/bin/knode-bridge 0755 bin
  for u in kubelet kube-proxy knode-control-plane knode-hostgw; do put "$here/units/$u.service" "/etc/systemd/system/$u.service" 0644 unit; done
  put "$here/units/containerd.service.d/10-knode.conf" /etc/systemd/system/containerd.service.d/10-knode.conf 0644 unit
  put "$here/defaults/kubelet-config.yaml" /etc/knode/kubelet-config.yaml 0644 conf
  put "$here/defaults/kube-proxy-config.yaml" /etc/knode/kube-proxy-config.yaml 0644 conf
  # Reference copy only: with /etc/cni/net.d empty, the kubelet writes its default conflist there
  # from the node's spec.podCIDR (a fixed subnet here would be wrong on every node but one).
  put "$here/defaults/10-knode.conflist" /etc/knode/10-knode.conflist 0644 conf
  mkdir -p "$root/etc/cni/net.d"
  put "$here/defaults/90-knode.conf" /etc/sysctl.d/90-knode.conf 0644 conf
  for d in kubelet kube-proxy knode-control-plane knode-hostgw; do put "$here/defaults/default-$d" "/etc/default/$d" 0644 conf; done
  mkdir -p "$root/etc/kubernetes/manifests" "$root/etc/kubernetes/pki"
  # Pods need IPv4 forwarding now, not only after the next boot (systemd-sysctl applies the file then).
  if [ -z "$root" ]; then sysctl -q -p "$root/etc/sysctl.d/90-knode.conf" >/dev/null 2>&1 || echo "install.sh: could not set net.ipv4.ip_forward=1 now (it applies at boot)"; fi
  reload_systemd
  echo "install.sh: installed into ${root:-/}; next: put kubeconfigs in /etc/kubernetes/, then 'systemctl enable --now kubelet kube-proxy'"
else
  if [ ! -f "$manifest" ] && [ $purge = 0 ]; then
    echo "install.sh: nothing installed under ${root:-/} (no $manifest)"; exit 0
  fi
  if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now kubelet.service kube-proxy.service knode-control-plane.service knode-hostgw.service 2>/dev/null || true
  fi
  while read -r recorded path; do
    f="$root$path"
    [ -e "$f" ] || continue
    if [ "$recorded" = user ] || { case $path in /etc/knode/*|/etc/default/*|/etc/cni/net.d/*|/etc/sysctl.d/*) true ;; *) false ;; esac && [ "$(sum "$f")" != "$recorded" ]; }; then
      if [ $purge = 0 ]; then echo "install.sh: kept your modified $path (--purge removes it)"; rm -f "$f.knode-new"; continue; fi
    fi
    rm -f "$f" "$f.knode-new"
  done < <(cat "$manifest" 2>/dev/null || true)
  rm -f "$manifest"
  # The default conflist the kubelet wrote from the node's podCIDR (recognised by its bridge).
  if grep -qs '"bridge": "knode0"' "$root/etc/cni/net.d/10-knode.conflist"; then rm -f "$root/etc/cni/net.d/10-knode.conflist"; fi
  for d in /etc/systemd/system/containerd.service.d /etc/knode /var/lib/knode /opt/cni/bin /opt/cni /etc/cni/net.d /etc/cni /etc/kubernetes/manifests /etc/kubernetes/pki /etc/kubernetes; do
    rmdir "$root$d" 2>/dev/null || true
  done
  if [ $purge = 1 ]; then
    # Configs kept by an earlier plain --uninstall are no longer in a manifest: knode's own paths.
    rm -f "$root"/etc/knode/*.yaml "$root"/etc/knode/*.conflist "$root"/etc/knode/*.knode-new "$root/etc/cni/net.d/10-knode.conflist" \
      "$root/etc/sysctl.d/90-knode.conf" "$root/etc/default/kubelet" "$root/etc/default/kube-proxy" \
      "$root/etc/default/knode-control-plane" "$root/etc/default/knode-hostgw"
    rmdir "$root/etc/knode" "$root/etc/cni/net.d" "$root/etc/cni" 2>/dev/null || true
    rm -rf "$root/var/lib/kubelet" "$root/var/log/pods" "$root/var/lib/knode" "$root/var/lib/cni/networks/knode"
  fi
  reload_systemd
  echo "install.sh: uninstalled from ${root:-/}"
fi
