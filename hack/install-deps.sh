#!/usr/bin/env bash
# install-deps.sh: install the Debian packages Strata's tests and lab need.
# Idempotent: packages already present are not fetched again.
# Usage: hack/install-deps.sh [--bpf]   (--bpf adds clang/llvm/libbpf-dev for `make generate`)
set -euo pipefail

pkgs=(bird2 frr iperf3 containernetworking-plugins nftables iputils-ping iproute2 tcpdump graphviz openssl procps psmisc)
if [[ "${1:-}" == "--bpf" ]]; then pkgs+=(clang llvm libbpf-dev); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "==> system packages: all ${#pkgs[@]} present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: need root to install: ${missing[*]} (re-run as root or with sudo)" >&2
  exit 1
fi
echo "==> system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep packaged daemons (bird, frr) from starting on install: tests start their own in namespaces.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Packaged services may still be enabled; stop them so only our namespaced daemons run.
for svc in bird frr; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
done
echo "==> system packages: done"
