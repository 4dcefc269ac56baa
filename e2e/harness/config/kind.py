"""The kind provider's names and generated files (hosts with a Docker engine)."""

from __future__ import annotations

from pathlib import Path

from harness.config.node_files import MIRRORED

KIND_CLUSTER = "lamina"
KIND_REGISTRY = "lamina-registry"
# The registry's one address for pods and node pulls (inside kind's network), and the host's.
KIND_REGISTRY_IN_CLUSTER = f"{KIND_REGISTRY}:5000"
KIND_REGISTRY_ON_HOST = "127.0.0.1:5001"


def registry_container_argv() -> list[str]:
    return [
        "docker",
        "run",
        "-d",
        "--restart=always",
        "--name",
        KIND_REGISTRY,
        "--network",
        "kind",
        "-p",
        f"{KIND_REGISTRY_ON_HOST}:5000",
        "registry:2",
    ]


def create_cluster_argv(kind: str, config: Path, kubeconfig: Path) -> list[str]:
    return [
        kind,
        "create",
        "cluster",
        "--name",
        KIND_CLUSTER,
        "--config",
        str(config),
        "--kubeconfig",
        str(kubeconfig),
        "--wait",
        "180s",
    ]


def node_hosts_toml() -> str:
    """containerd's hosts.toml on a kind node: every mirrored registry goes to ours."""
    url = f"http://{KIND_REGISTRY_IN_CLUSTER}"
    return f'server = "{url}"\n[host."{url}"]\n  capabilities = ["pull", "resolve", "push"]\n'


def node_hosts_dirs() -> list[str]:
    """Where `node_hosts_toml` goes on each node, one directory per registry host."""
    return [f"/etc/containerd/certs.d/{host}" for host in (*MIRRORED, KIND_REGISTRY_IN_CLUSTER)]
