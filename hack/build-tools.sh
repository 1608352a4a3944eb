#!/usr/bin/env bash
# build-tools.sh: build the real components Strata's tests run, from the Go
# module proxy, into a cache outside the repo keyed by version and go.sum:
#   kube-apiserver, kubectl (tests/tools/k8s), etcd 3.7 (tests/tools/etcd),
#   cnitool, helm and gotestsum (pinned go install); golangci-lint with --lint.
# Warm: seconds. Cold: about 10 minutes on 2 cores (kube-apiserver dominates).
# The stable names live in $STRATA_CACHE/bin (symlinks); point
# KUBEBUILDER_ASSETS there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${STRATA_CACHE:-$HOME/.cache/strata}
bin=$cache/bin
mkdir -p "$bin"

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
CNI_VERSION=v1.3.0
HELM_VERSION=v3.22.0
GOTESTSUM_VERSION=v1.13.0
LINT_VERSION=v2.15.0

key() { cat "$@" | sha256sum | cut -c1-10; }
link() { ln -sfn "$1" "$bin/$2"; }
step() { printf '==> tools: %s\n' "$*"; }

build_mod() { # name version moddir outdir pkg...
  local name=$1 version=$2 moddir=$3 out=$4; shift 4
  if [[ -x $out/$name ]]; then step "$name $version cached"; return; fi
  step "building $name $version (first build on this machine; progress below)"
  mkdir -p "$out.tmp"
  local t0=$SECONDS
  ( cd "$moddir" && go build -trimpath -v -o "$out.tmp/$name" "$@" 2>&1 | awk '{ n++; if (n % 200 == 0) { printf "    ... %d packages compiled\n", n; fflush() } }' )
  [[ -x $out.tmp/$name ]] || { echo "build of $name failed; run: (cd $moddir && go build $*)" >&2; exit 1; }
  mkdir -p "$out" && mv "$out.tmp/$name" "$out/$name" && rmdir "$out.tmp" 2>/dev/null || true
  step "$name built in $((SECONDS - t0))s"
}

k8s_dir=$cache/k8s-$K8S_VERSION-$(key "$root/tests/tools/k8s/go.mod" "$root/tests/tools/k8s/go.sum")
ldflags="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"
build_mod kube-apiserver $K8S_VERSION "$root/tests/tools/k8s" "$k8s_dir" -ldflags "$ldflags" k8s.io/kubernetes/cmd/kube-apiserver
build_mod kubectl $K8S_VERSION "$root/tests/tools/k8s" "$k8s_dir" -ldflags "$ldflags" k8s.io/kubernetes/cmd/kubectl
link "$k8s_dir/kube-apiserver" kube-apiserver
link "$k8s_dir/kubectl" kubectl

etcd_dir=$cache/etcd-$ETCD_VERSION-$(key "$root/tests/tools/etcd/go.mod" "$root/tests/tools/etcd/go.sum")
build_mod etcd $ETCD_VERSION "$root/tests/tools/etcd" "$etcd_dir" .
link "$etcd_dir/etcd" etcd

install_pinned() { # name module@version
  local name=$1 spec=$2 dir=$cache/$1-${2##*@}
  if [[ -x $dir/$name ]]; then step "$name ${spec##*@} cached"; else
    step "installing $spec"
    GOBIN=$dir go install "$spec"
  fi
  link "$dir/$name" "$name"
}
install_pinned cnitool github.com/containernetworking/cni/cnitool@$CNI_VERSION
install_pinned helm helm.sh/helm/v3/cmd/helm@$HELM_VERSION
# gotestsum runs `make test`, so it ends with how many tests ran.
install_pinned gotestsum gotest.tools/gotestsum@$GOTESTSUM_VERSION
# The linter is only for `make lint` (hack/build-tools.sh --lint).
if [[ ${1:-} == --lint ]]; then
  install_pinned golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$LINT_VERSION
fi
step "ready in $bin"
