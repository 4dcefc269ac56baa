"""What each tier runs and needs: components in start order, binaries, Debian packages."""

from __future__ import annotations

from harness.settings import Tier

API_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
NODE_COMPONENTS = (*API_COMPONENTS, "kube-scheduler", "containerd", "kubelet", "kube-proxy")
COMPONENTS: dict[Tier, tuple[str, ...]] = {"api": API_COMPONENTS, "node": NODE_COMPONENTS}
# Arguments of e2e/lib/build-binaries.sh for each tier (etcd is always built).
K8S_BINARIES: dict[Tier, tuple[str, ...]] = {
    "api": ("kube-apiserver", "kube-controller-manager", "kubectl"),
    "node": (
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "kubectl",
        "containerd",
        "buildkit",
        "helm",
    ),
}
# Debian packages the node tier needs (installed by e2e/lib/packages.sh's ensure_packages).
NODE_PACKAGES = (
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "docker-registry",
    "skopeo",
    "umoci",
    "debootstrap",
    "busybox-static",
    "gcc",
    "libc6-dev",
)
# Readiness each component's health check waits for (the words of `up`'s errors).
READY_WHAT = {
    "etcd": "/health",
    "kube-apiserver": "/readyz",
    "kube-controller-manager": "/healthz",
    "kube-scheduler": "/healthz",
    "containerd": "its socket (ctr version)",
    "kubelet": "/healthz",
    "kube-proxy": "/healthz",
}
# The node's state under the state directory: removed when a node tier becomes an api tier.
NODE_STATE = (
    "containerd",
    "kubelet",
    "pod-logs",
    "kubelet-plugins",
    "scheduler-certs",
    "kubelet-config.yaml",
    "kube-proxy-config.yaml",
    "resolv.conf",
    "registries.yaml",
)
