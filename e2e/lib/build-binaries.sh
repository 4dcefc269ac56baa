#!/usr/bin/env bash
# Builds the real Kubernetes pieces Lamina's test tiers run on, from Go modules.
#
# Why a wrapper module: k8s.io/kubernetes replaces its ~30 staging modules with local
# paths, so `go install k8s.io/kubernetes/cmd/...@vX` is refused.  A throw-away module that
# requires k8s.io/kubernetes and replaces each staging module by its published v0.X.Y is the
# documented way to depend on it.  etcd's server module has replace directives too.
#
# Binaries land in $LAMINA_CACHE/bin/<component>-<version>/ (outside the work tree, keyed by
# version), so a warm run is a handful of `test -x` calls.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.sh
source "$here/versions.sh"

export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
work="$LAMINA_CACHE/build"
mkdir -p "$work"

log() { printf '[build] %s\n' "$*" >&2; }

# One build at a time per cache: a second caller (two `e2e/cluster up`, or a manual run)
# waits for the first instead of compiling the same thing concurrently.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$work/.lock"
  if ! flock -n 9; then
    log "another build is running in $LAMINA_CACHE; waiting for it"
    flock 9
  fi
fi

# Build into a temporary directory and move the binaries into place, so an interrupted build
# never leaves a truncated executable that a later run would take for a finished one.
install_bins() {  # install_bins TMPDIR OUTDIR
  local f
  for f in "$1"/*; do mv -f "$f" "$2/"; done
  rm -rf "$1"
}

# Arguments: Kubernetes components (kube-apiserver, kubelet, kubectl, ...) and/or the extra
# components `containerd`, `buildkit`, `helm`, `kind` (the last only for hosts with Docker).  etcd is always built.  No argument at all means
# kube-apiserver + kube-controller-manager (the API tier).
k8s_components=()
extra_components=()
for arg in "$@"; do
  case "$arg" in
    containerd|buildkit|helm|kind|cosign) extra_components+=("$arg") ;;
    *) k8s_components+=("$arg") ;;
  esac
done
[ $# -gt 0 ] || k8s_components=(kube-apiserver kube-controller-manager)

build_k8s() {
  local out="$LAMINA_CACHE/bin/kubernetes-$K8S_VERSION" missing=() c
  for c in "${k8s_components[@]}"; do
    [ -x "$out/$c" ] || missing+=("$c")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "building ${missing[*]} $K8S_VERSION (cold build: tens of minutes on 2 cores)"
  local mod="$work/k8s-$K8S_VERSION" staging_version="v0.${K8S_VERSION#v1.}"
  mkdir -p "$mod" "$out"
  (
    cd "$mod"
    # doc.go is written last: without it the wrapper is a leftover of an interrupted setup.
    if [ ! -f doc.go ]; then
      rm -f go.mod go.sum
      go mod init lamina.local/k8s-wrapper >/dev/null 2>&1
      go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
      local gomod
      gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
      # Every staging module k8s.io/kubernetes replaces with ./staging/... gets the published
      # version instead.  Read from the real go.mod, never typed by hand.
      local m
      for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
        go mod edit -replace="$m=$m@$staging_version"
      done
      # Blank-import nothing: `go build` with -mod=mod resolves what each main package needs.
      printf 'package wrapper\n' > doc.go
    fi
    local pkg="k8s.io/component-base/version" cgo="k8s.io/client-go/pkg/version" minor
    minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
    local ld="-s -w"
    for p in "$pkg" "$cgo"; do
      ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    local pkgs=()
    for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    local tmp="$out/.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    go build -trimpath -tags "selinux,notest,grpcnotrace" -ldflags "$ld" -o "$tmp/" "${pkgs[@]}"
    install_bins "$tmp" "$out"
  )
}

build_etcd() {
  local out="$LAMINA_CACHE/bin/etcd-$ETCD_VERSION"
  [ -x "$out/etcd" ] && [ -x "$out/etcdctl" ] && return 0
  log "building etcd $ETCD_VERSION"
  local mod="$work/etcd-$ETCD_VERSION"
  mkdir -p "$mod" "$out"
  (
    cd "$mod"
    if [ ! -f doc.go ]; then
      rm -f go.mod go.sum
      go mod init lamina.local/etcd-wrapper >/dev/null 2>&1
      go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
                  -require="go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
      printf 'package wrapper\n' > doc.go
    fi
    local tmp="$out/.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
    go build -trimpath -ldflags "-s -w" -o "$tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3
    install_bins "$tmp" "$out"
  )
}

# build_wrapped NAME VERSION MODULE@VERSION... -- OUTNAME=PACKAGE... -- GO-BUILD-ARGS...
# A wrapper module that requires the given modules, then `go build` of each package.  This is
# how modules with `exclude`/`replace` lines in their go.mod (BuildKit, containerd) are built:
# `go install pkg@version` refuses them, a wrapper module does not.
build_wrapped() {
  local name="$1" version="$2"; shift 2
  local requires=() bins=() args=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do requires+=("$1"); shift; done
  shift
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  args=("$@")
  local out="$LAMINA_CACHE/bin/$name-$version" b missing=()
  for b in "${bins[@]}"; do [ -x "$out/${b%%=*}" ] || missing+=("$b"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "building $name $version (${missing[*]%%=*})"
  local t0=$SECONDS mod="$work/$name-$version"
  mkdir -p "$mod" "$out"
  (
    cd "$mod"
    if [ ! -f doc.go ]; then
      rm -f go.mod go.sum
      go mod init "lamina.local/$name-wrapper" >/dev/null 2>&1
      local r
      for r in "${requires[@]}"; do go mod edit -require="$r"; done
      printf 'package wrapper\n' > doc.go
    fi
    local tmp="$out/.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    for b in "${missing[@]}"; do
      go build -trimpath "${args[@]}" -o "$tmp/${b%%=*}" "${b#*=}"
    done
    install_bins "$tmp" "$out"
  )
  log "$name $version built in $((SECONDS - t0))s"
}

build_containerd() {
  # containerd 2.x (not Debian's 1.6): it pins the sandbox image, so the kubelet's image GC
  # can never remove pause; it is the line Kubernetes 1.34 is tested with.  Static, no cgo:
  # the btrfs/devmapper snapshotters (cgo) are left out; overlayfs and native remain.
  local m=github.com/containerd/containerd/v2 v="$CONTAINERD_VERSION"
  build_wrapped containerd "$v" "$m@$v" -- \
    "containerd=$m/cmd/containerd" \
    "containerd-shim-runc-v2=$m/cmd/containerd-shim-runc-v2" \
    "ctr=$m/cmd/ctr" -- \
    -tags "no_btrfs,no_devmapper,no_zfs,urfave_cli_no_docs" \
    -ldflags "-s -w -X $m/version.Version=$v -X $m/version.Revision=lamina -X $m/version.Package=$m"
}

build_buildkit() {
  local m=github.com/moby/buildkit v="$BUILDKIT_VERSION"
  build_wrapped buildkit "$v" "$m@$v" -- \
    "buildkitd=$m/cmd/buildkitd" "buildctl=$m/cmd/buildctl" -- \
    -tags "urfave_cli_no_docs" \
    -ldflags "-s -w -X $m/version.Version=$v -X $m/version.Revision=lamina -X $m/version.Package=$m"
}

build_helm() {
  # Helm's k8s version ldflags: without them `helm template`/lint assume an old Kubernetes.
  local m=helm.sh/helm/v3 v="$HELM_VERSION" minor
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  local ld="-s -w -X $m/internal/version.version=$v -X $m/internal/version.gitTreeState=clean"
  ld+=" -X $m/pkg/lint/rules.k8sVersionMajor=1 -X $m/pkg/lint/rules.k8sVersionMinor=$minor"
  ld+=" -X $m/pkg/chartutil.k8sVersionMajor=1 -X $m/pkg/chartutil.k8sVersionMinor=$minor"
  build_wrapped helm "$v" "$m@$v" -- "helm=$m/cmd/helm" -- -ldflags "$ld"
}

build_kind() {
  local m=sigs.k8s.io/kind v="$KIND_VERSION"
  build_wrapped kind "$v" "$m@$v" -- "kind=$m" -- -ldflags "-s -w"
}

build_cosign() {
  # `go install pkg@version` builds with cosign's own go.mod as the main module (it has no
  # replace or exclude lines), in a scratch GOPATH so nothing lands in ~/go; the module and
  # build caches are Lamina's.  Cold: 16 min wall (4.4 min CPU, with the module downloads) on
  # 2 busy cores; with warm Go caches 15 s.
  local m=github.com/sigstore/cosign/v3 v="$COSIGN_VERSION" out="$LAMINA_CACHE/bin/cosign-$COSIGN_VERSION"
  [ -x "$out/cosign" ] && return 0
  log "building cosign $v"
  local t0=$SECONDS tmp="$out/.tmp.$$"
  mkdir -p "$out"
  rm -rf "$tmp" && mkdir -p "$tmp"
  GOPATH="$work/cosign-gopath" GOBIN="$tmp" GOFLAGS="-buildvcs=false" \
    go install -trimpath -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$v" \
    "$m/cmd/cosign@$v"
  install_bins "$tmp" "$out"
  log "cosign $v built in $((SECONDS - t0))s"
}

build_etcd
build_k8s
for c in "${extra_components[@]}"; do "build_$c"; done
log "binaries ready in $LAMINA_CACHE/bin"
