# Versions of everything the cluster harness builds; the cache is keyed by them.
# Kubernetes 1.34 is the last minor whose kubelet starts on cgroup v1 without an opt-out.
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
LAMINA_CACHE="${LAMINA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamina}"
