#!/usr/bin/env bash
# Makes the node tier's images offline and pushes them to the local registry under their
# usual names, so `docker.io/library/busybox`, `registry.k8s.io/pause:3.10.1`, ... resolve
# through containerd's mirror (hosts.toml) to the local registry.
#
#   e2e/lib/build-images.sh [--build-only] REGISTRY_HOST:PORT
#
# Images (name in the registry  <-  what it is made of):
#   pause:$PAUSE_VERSION                   the pause program, compiled statically with gcc from
#                                          build/pause/linux/pause.c in the k8s.io/kubernetes
#                                          module (the cluster's sandbox image)
#   library/busybox:{latest,1.35,1.35.0}   Debian's busybox-static + every applet symlink
#   moby/buildkit:{$BUILDKIT_VERSION,latest}
#                                          buildkitd + buildctl (built from Go modules), runc
#                                          (Debian's, with its shared libraries), git
#                                          (Debian's, for git contexts, with its HTTP
#                                          transport),
#                                          /usr/bin/buildctl-daemonless.sh, busybox
#   docker/buildkit-syft-scanner:{stable-1,lamina-syft-$SYFT_VERSION}
#                                          BuildKit's SBOM generator: syft (built from Go
#                                          modules, github.com/anchore/syft/cmd/syft) and
#                                          syft-scanner.sh, which speaks BuildKit's scanner
#                                          protocol (docker/buildkit-syft-scanner itself is not
#                                          served by the Go module proxy), busybox
#   anchore/syft:{$SYFT_VERSION,latest}  the operator's SBOM scanner (LAMINA_SBOM_SCANNER_IMAGE):
#                                          the same syft binary as its entrypoint, busybox, as
#                                          upstream's image has syft as its entrypoint
#   buildah/stable:{$BUILDAH_VERSION,latest} (as quay.io/buildah/stable through the mirror)
#                                          a minimal Debian (debootstrap --variant=minbase)
#                                          + Debian's buildah package at $BUILDAH_DEBIAN_VERSION
#                                          (checked) and runc (RUN steps with OCI isolation),
#                                          storage.conf for the overlay driver, containers.conf
#                                          (cgroupfs, no systemd); the rootfs tarball is cached
#                                          in $LAMINA_CACHE/rootfs/ keyed by that version and
#                                          a hash of the packages and settings
#   library/python:{3.11-slim,3.11-slim-bookworm,3.11}
#                                          a minimal Debian (debootstrap --variant=minbase)
#                                          + python3 + pip; the rootfs tarball is cached in
#                                          $LAMINA_CACHE/rootfs/ keyed by suite
#
# Assembly: GNU tar makes each layer (numeric owners, fixed mtimes, sorted names), umoci puts
# layers and config into an OCI layout cached in $LAMINA_CACHE/images/<name>-<key>/, skopeo
# copies the layout to the registry (plain HTTP).  A warm run only checks the registry
# (`skopeo inspect`) and pushes what it lacks.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.sh
source "$here/versions.sh"

build_only=0
if [ "${1:-}" = "--build-only" ]; then build_only=1; shift; fi
registry="${1:-}"
[ -n "$registry" ] || [ "$build_only" = 1 ] || { echo "usage: $0 [--build-only] HOST:PORT" >&2; exit 2; }

log() { printf '[images] %s\n' "$*" >&2; }

images="$LAMINA_CACHE/images"
rootfs_cache="$LAMINA_CACHE/rootfs"
work="$LAMINA_CACHE/build/images"
mkdir -p "$images" "$rootfs_cache" "$work"

exec 8>"$work/.lock"
if ! flock -n 8; then log "another image build is running; waiting for it"; flock 8; fi

# tar_dir DIR OUT.tar: a reproducible layer tarball of DIR's contents.
tar_dir() {
  tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 --format=posix \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$1" -cf "$2" .
}

# oci_image NAME KEY CONFIG-ARGS... -- LAYER.tar...: OCI layout in $images/NAME-KEY (tag
# "image"), made once.  Prints the layout path.
oci_image() {
  local name="$1" key="$2"; shift 2
  local cfg=() layers=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do cfg+=("$1"); shift; done
  shift
  layers=("$@")
  local out="$images/$name-$key"
  if [ -f "$out/.done" ]; then echo "$out"; return 0; fi
  rm -rf "$out.tmp"
  umoci init --layout "$out.tmp"
  umoci new --image "$out.tmp:image"
  local l
  for l in "${layers[@]}"; do
    umoci raw add-layer --image "$out.tmp:image" --history.created_by "lamina e2e: $(basename "$l")" "$l"
  done
  umoci config --image "$out.tmp:image" --os linux --architecture amd64 \
    --created 1970-01-01T00:00:00Z --author lamina-e2e "${cfg[@]}"
  umoci gc --layout "$out.tmp"
  touch "$out.tmp/.done"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  echo "$out"
}

# --- pause -----------------------------------------------------------------------------------
build_pause() {
  local key="$PAUSE_VERSION-k8s$K8S_VERSION"
  if [ -f "$images/pause-$key/.done" ]; then echo "$images/pause-$key"; return; fi
  local src
  src="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
         | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/build/pause/linux/pause.c"
  [ -f "$src" ] || { log "pause.c not found at $src"; exit 1; }
  local d="$work/pause"
  rm -rf "$d" && mkdir -p "$d/root"
  # As build/pause/Makefile does: -Os -Wall -Werror -static -DVERSION=...
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-lamina" -o "$d/root/pause" "$src"
  strip "$d/root/pause"
  tar_dir "$d/root" "$d/layer.tar"
  log "pause: compiled $(basename "$src") from k8s.io/kubernetes@$K8S_VERSION"
  oci_image pause "$key" --config.entrypoint /pause --config.user 65535:65535 -- "$d/layer.tar"
}

# --- busybox ---------------------------------------------------------------------------------
busybox_tree() {  # busybox_tree DIR: busybox-static with its applet symlinks, /etc basics
  local d="$1"
  mkdir -p "$d/bin" "$d/etc" "$d/tmp" "$d/root" "$d/home" "$d/var/tmp" "$d/usr/bin" "$d/usr/sbin" "$d/sbin"
  chmod 1777 "$d/tmp" "$d/var/tmp"
  cp /bin/busybox "$d/bin/busybox"
  local a
  for a in $(/bin/busybox --list-full); do
    [ -e "$d/$a" ] || ln -s /bin/busybox "$d/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$d/etc/group"
}

build_busybox() {
  local ver key
  ver="$(dpkg-query -W -f='${Version}' busybox-static)"
  key="$(printf '%s' "$ver" | tr -c 'A-Za-z0-9.\n' '_')"
  if [ -f "$images/busybox-$key/.done" ]; then echo "$images/busybox-$key"; return; fi
  local d="$work/busybox"
  rm -rf "$d" && mkdir -p "$d/root"
  busybox_tree "$d/root"
  tar_dir "$d/root" "$d/layer.tar"
  oci_image busybox "$key" --config.cmd sh \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    -- "$d/layer.tar"
}

# --- buildkit --------------------------------------------------------------------------------
build_buildkit_image() {
  local bk="$LAMINA_CACHE/bin/buildkit-$BUILDKIT_VERSION" runc_ver git_ver key
  [ -x "$bk/buildkitd" ] && [ -x "$bk/buildctl" ] || { log "buildkit binaries missing in $bk"; exit 1; }
  runc_ver="$(dpkg-query -W -f='${Version}' runc | tr -c 'A-Za-z0-9.\n' '_')"
  git_ver="$(dpkg-query -W -f='${Version}' git | tr -c 'A-Za-z0-9.\n' '_')"
  key="$BUILDKIT_VERSION-runc$runc_ver-git$git_ver-v1"
  if [ -f "$images/buildkit-$key/.done" ]; then echo "$images/buildkit-$key"; return; fi
  local d="$work/buildkit"
  rm -rf "$d" && mkdir -p "$d/base" "$d/bk"
  busybox_tree "$d/base"
  tar_dir "$d/base" "$d/base.tar"
  mkdir -p "$d/bk/usr/bin" "$d/bk/var/lib/buildkit" "$d/bk/run/buildkit" "$d/bk/etc/buildkit"
  cp "$bk/buildkitd" "$bk/buildctl" "$d/bk/usr/bin/"
  cp /usr/sbin/runc "$d/bk/usr/bin/runc"
  # git for git build contexts (the init container fetches the resolved commit): the
  # binary, its HTTP(S) transport, CA certificates.
  mkdir -p "$d/bk/usr/lib/git-core" "$d/bk/etc/ssl/certs"
  cp /usr/bin/git "$d/bk/usr/bin/git"
  cp /usr/lib/git-core/git-remote-http "$d/bk/usr/lib/git-core/git-remote-http"
  ln -s git-remote-http "$d/bk/usr/lib/git-core/git-remote-https"
  cp -L /etc/ssl/certs/ca-certificates.crt "$d/bk/etc/ssl/certs/ca-certificates.crt"
  # runc and git are dynamically linked: copy the libraries they load, at the same paths.
  local lib
  for lib in $(for bin in /usr/sbin/runc /usr/bin/git /usr/lib/git-core/git-remote-http; do
                 ldd "$bin" | grep -o '/[^ ]*'
               done | sort -u); do
    mkdir -p "$d/bk$(dirname "$lib")"
    cp -L "$lib" "$d/bk$lib"
  done
  cp "$here/buildctl-daemonless.sh" "$d/bk/usr/bin/buildctl-daemonless.sh"
  chmod 0755 "$d/bk/usr/bin/buildctl-daemonless.sh"
  tar_dir "$d/bk" "$d/bk.tar"
  oci_image buildkit "$key" --config.entrypoint buildkitd \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.volume /var/lib/buildkit \
    -- "$d/base.tar" "$d/bk.tar"
}

# --- SBOM generator (syft) -------------------------------------------------------------------
build_syft() {  # prints the directory of the syft binary, built once per version
  local out="$LAMINA_CACHE/bin/syft-$SYFT_VERSION"
  if [ -x "$out/syft" ]; then echo "$out"; return; fi
  local t0=$SECONDS
  log "syft $SYFT_VERSION from Go modules: several minutes on 2 cores, once"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  CGO_ENABLED=0 GOBIN="$out.tmp" GOFLAGS=-mod=mod go install -trimpath \
    -ldflags "-s -w -X main.version=${SYFT_VERSION#v}" \
    "github.com/anchore/syft/cmd/syft@$SYFT_VERSION" >"$work/syft-build.log" 2>&1 \
    || { tail -20 "$work/syft-build.log" >&2; exit 1; }
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "syft built in $((SECONDS - t0))s"
  echo "$out"
}

build_syft_scanner() {
  # Keyed by the scanner script too: an edit of it makes a new image.
  local key
  key="syft$SYFT_VERSION-$(sha256sum "$here/syft-scanner.sh" | cut -c1-12)"
  if [ -f "$images/syft-scanner-$key/.done" ]; then echo "$images/syft-scanner-$key"; return; fi
  local syft d
  syft="$(build_syft)"
  d="$work/syft-scanner"
  rm -rf "$d" && mkdir -p "$d/base" "$d/scanner/usr/bin"
  busybox_tree "$d/base"
  tar_dir "$d/base" "$d/base.tar"
  cp "$syft/syft" "$d/scanner/usr/bin/syft"
  cp "$here/syft-scanner.sh" "$d/scanner/usr/bin/syft-scanner.sh"
  chmod 0755 "$d/scanner/usr/bin/syft-scanner.sh"
  tar_dir "$d/scanner" "$d/scanner.tar"
  # No update checks (pods reach no network), no config files of the scanned tree.
  oci_image syft-scanner "$key" --config.entrypoint /usr/bin/syft-scanner.sh \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env SYFT_CHECK_FOR_APP_UPDATE=false \
    --config.env TMPDIR=/tmp \
    -- "$d/base.tar" "$d/scanner.tar"
}

build_syft_image() {
  # What docker.io/anchore/syft is to the operator: an image whose entrypoint is syft.  The
  # binary is build_syft's (cached): a cold run costs only the packing (seconds).
  local key="syft$SYFT_VERSION-v1"
  if [ -f "$images/syft-$key/.done" ]; then echo "$images/syft-$key"; return; fi
  local syft d
  syft="$(build_syft)"
  d="$work/syft-image"
  rm -rf "$d" && mkdir -p "$d/base" "$d/syft/usr/bin"
  busybox_tree "$d/base"
  tar_dir "$d/base" "$d/base.tar"
  cp "$syft/syft" "$d/syft/usr/bin/syft"
  tar_dir "$d/syft" "$d/syft.tar"
  oci_image syft "$key" --config.entrypoint /usr/bin/syft \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env SYFT_CHECK_FOR_APP_UPDATE=false \
    -- "$d/base.tar" "$d/syft.tar"
}

# --- buildah (debootstrap) -------------------------------------------------------------------
# RUN steps run with OCI isolation: each in its own runc container (PID, mount, IPC and UTS
# namespaces, the pod's network as BuildKit's steps have it), not a chroot of the build
# container.  runc is Debian's package (Buildah recommends crun | runc); there is no systemd in
# a build pod, so cgroups are cgroupfs and events go to a file.
# debootstrap resolves no virtual packages: containers-common's container-network-stack is
# named (steps use the pod's network, but the package must configure).
BUILDAH_PACKAGES="buildah,runc,containernetworking-plugins,ca-certificates"
# The driver is chosen per build Job (STORAGE_DRIVER); this is only the default, and no
# fuse-overlayfs: builds run privileged over an emptyDir, where kernel overlay works.
BUILDAH_STORAGE_CONF='[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
'
BUILDAH_CONTAINERS_CONF='[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
'
# The cache key of the rootfs and image: the package version and everything put into them, so
# a change of packages or settings makes a new image once (the old entry is left alone).
buildah_key() {
  printf '%s-%s' "$(printf '%s' "$BUILDAH_DEBIAN_VERSION" | tr -c 'A-Za-z0-9.\n' '_')" \
    "$(printf '%s\n' "$BUILDAH_PACKAGES" "$BUILDAH_STORAGE_CONF" "$BUILDAH_CONTAINERS_CONF" \
       | sha256sum | cut -c1-12)"
}

buildah_rootfs() {  # prints the cached rootfs tarball, made once per buildah_key
  local key tarball
  key="$(buildah_key)"
  tarball="$rootfs_cache/debian-$DEBIAN_SUITE-buildah-$key.tar"
  if [ -f "$tarball" ]; then echo "$tarball"; return; fi
  local d="$work/debootstrap-buildah" t0=$SECONDS got runc
  rm -rf "$d"
  log "debootstrap $DEBIAN_SUITE (minbase + $BUILDAH_PACKAGES) from $DEBIAN_MIRROR: a few minutes, once"
  debootstrap --variant=minbase --include="$BUILDAH_PACKAGES" \
    "$DEBIAN_SUITE" "$d" "$DEBIAN_MIRROR" >"$work/debootstrap-buildah.log" 2>&1 \
    || { tail -20 "$work/debootstrap-buildah.log" >&2; exit 1; }
  got="$(chroot "$d" dpkg-query -W -f='${Version}' buildah)"
  [ "$got" = "$BUILDAH_DEBIAN_VERSION" ] \
    || { log "debootstrap installed buildah $got, expected $BUILDAH_DEBIAN_VERSION (versions.sh)"; exit 1; }
  runc="$(chroot "$d" dpkg-query -W -f='${Version}' runc)" \
    || { log "debootstrap did not install runc"; exit 1; }
  mkdir -p "$d/etc/containers" "$d/var/lib/containers/storage" "$d/var/tmp"
  printf '%s' "$BUILDAH_STORAGE_CONF" > "$d/etc/containers/storage.conf"
  printf '%s' "$BUILDAH_CONTAINERS_CONF" > "$d/etc/containers/containers.conf"
  rm -rf "$d"/var/lib/apt/lists/* "$d"/var/cache/apt/*.bin "$d"/var/cache/apt/archives/*.deb \
         "$d"/var/log/* "$d"/tmp/* "$d"/root/.cache
  : > "$d/etc/resolv.conf"
  : > "$d/etc/hostname"
  tar_dir "$d" "$tarball.tmp"
  mv "$tarball.tmp" "$tarball"
  rm -rf "$d"
  log "buildah rootfs (buildah $got, runc $runc) made in $((SECONDS - t0))s: $tarball"
  echo "$tarball"
}

build_buildah() {
  local key
  key="$(buildah_key)-oci"
  if [ -f "$images/buildah-$key/.done" ]; then echo "$images/buildah-$key"; return; fi
  local tarball
  tarball="$(buildah_rootfs)" || exit 1
  oci_image buildah "$key" --config.entrypoint buildah \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env BUILDAH_ISOLATION=oci \
    --config.volume /var/lib/containers \
    -- "$tarball"
}

# --- python (debootstrap) --------------------------------------------------------------------
python_rootfs() {  # prints the cached rootfs tarball, making it once per suite
  local suite="$DEBIAN_SUITE" tarball="$rootfs_cache/debian-$DEBIAN_SUITE-python3.tar"
  if [ -f "$tarball" ]; then echo "$tarball"; return; fi
  local d="$work/debootstrap-$suite" t0=$SECONDS
  rm -rf "$d"
  log "debootstrap $suite (minbase + python3) from $DEBIAN_MIRROR: a few minutes, once"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv \
    "$suite" "$d" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # As the official python images: pip may install into the system Python (no PEP 668
  # marker), no apt caches or lists, a `python` command.
  rm -f "$d"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$d"/var/lib/apt/lists/* "$d"/var/cache/apt/*.bin "$d"/var/cache/apt/archives/*.deb \
         "$d"/var/log/* "$d"/tmp/* "$d"/root/.cache
  [ -e "$d/usr/bin/python" ] || ln -s python3 "$d/usr/bin/python"
  : > "$d/etc/resolv.conf"
  : > "$d/etc/hostname"
  tar_dir "$d" "$tarball.tmp"
  mv "$tarball.tmp" "$tarball"
  rm -rf "$d"
  log "python rootfs made in $((SECONDS - t0))s: $tarball"
  echo "$tarball"
}

build_python() {
  local key="$DEBIAN_SUITE-v1"
  if [ -f "$images/python-$key/.done" ]; then echo "$images/python-$key"; return; fi
  local tarball
  tarball="$(python_rootfs)"
  oci_image python "$key" --config.cmd python3 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env LANG=C.UTF-8 \
    -- "$tarball"
}

# --- push ------------------------------------------------------------------------------------
push() {  # push LAYOUT NAME TAG...
  local layout="$1" name="$2"; shift 2
  local tag want have
  # The registry's storage outlives the cluster: a tag is pushed again when it names other
  # bytes than this layout (an image whose key changed, e.g. git added to the builder).
  want="$(skopeo inspect --raw "oci:$layout:image" | sha256sum)"
  for tag in "$@"; do
    have="$( (skopeo inspect --raw --tls-verify=false "docker://$registry/$name:$tag" 2>/dev/null \
              || true) | sha256sum)"
    [ "$have" = "$want" ] && continue
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout:image" "docker://$registry/$name:$tag"
    log "pushed $registry/$name:$tag"
  done
}

t0=$SECONDS
pause="$(build_pause)"
busybox="$(build_busybox)"
buildkit="$(build_buildkit_image)"
python="$(build_python)"
syft_scanner="$(build_syft_scanner)"
syft_image="$(build_syft_image)"
buildah="$(build_buildah)"
[ "$build_only" = 1 ] && { log "images ready in $images ($((SECONDS - t0))s)"; exit 0; }
push "$pause" pause "$PAUSE_VERSION"
push "$busybox" library/busybox latest 1.35 1.35.0
push "$buildkit" moby/buildkit "$BUILDKIT_VERSION" latest
push "$python" library/python 3.11-slim 3.11-slim-bookworm 3.11
push "$syft_scanner" docker/buildkit-syft-scanner stable-1 "lamina-syft-$SYFT_VERSION"
push "$syft_image" anchore/syft "$SYFT_VERSION" latest
push "$buildah" buildah/stable "$BUILDAH_VERSION" latest
log "images in $registry ($((SECONDS - t0))s)"
