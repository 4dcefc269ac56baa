# Versions of everything the cluster harness builds; the cache is keyed by them.
# Kubernetes 1.34 is the last minor whose kubelet starts on cgroup v1 without an opt-out.
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
LAMINA_CACHE="${LAMINA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamina}"
# Node tier: containerd 2.2 (pins the sandbox image; Debian's 1.6 cannot), BuildKit for the
# builder image, Helm for chart installs.  runc, CNI plugins, the registry: Debian packages.
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.9}"
BUILDKIT_VERSION="${BUILDKIT_VERSION:-v0.34.2}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# cosign: the tests verify the operator's signatures with it (go install: no replace lines).
COSIGN_VERSION="${COSIGN_VERSION:-v3.1.3}"
# Images made offline for the node tier (e2e/lib/build-images.sh).
PAUSE_VERSION="${PAUSE_VERSION:-3.10.1}"          # the sandbox image Kubernetes 1.34 expects
SYFT_VERSION="${SYFT_VERSION:-v1.57.1}"           # the SBOM generator image's scanner
# Buildah, the second build engine: Debian's package (its upstream version is the image tag).
BUILDAH_DEBIAN_VERSION="${BUILDAH_DEBIAN_VERSION:-1.28.2+ds1-3+deb12u1+b3}"
BUILDAH_VERSION="${BUILDAH_VERSION:-v1.28.2}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"          # the Python base image's Debian
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"           # only on hosts with Docker (e2e/kind.yaml)
# Go's module and build caches live in Lamina's cache too, so an empty LAMINA_CACHE is a truly
# cold machine (and a warm one reuses them).  A caller's own GOMODCACHE/GOCACHE wins.
export GOMODCACHE="${GOMODCACHE:-$LAMINA_CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$LAMINA_CACHE/go/build}"
