"""The interface every runtime provides, and the commands they share."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Protocol

from harness.errors import Fail
from harness.paths import REPO
from harness.settings import Settings


class Provider(Protocol):
    """One runtime for the cluster.  Each method is one `e2e/cluster` command: it prints the
    command's output and returns its exit code."""

    name: str

    def up(self) -> int: ...

    def down(self) -> int: ...

    def status(self) -> int: ...

    def kubeconfig(self) -> int: ...

    def env(self) -> int: ...

    def registry(self) -> int: ...


def print_kubeconfig(s: Settings) -> int:
    print(s.admin_kubeconfig)
    if not s.admin_kubeconfig.is_file():
        print("cluster is not up: run e2e/cluster up", file=sys.stderr)
        return 1
    return 0


def env_lines(s: Settings) -> list[str]:
    """`e2e/cluster env`: shell exports for this cluster."""
    tools = f"{s.k8s_bin}:{REPO / '.venv' / 'bin'}"
    lines = [
        f"export KUBECONFIG={shlex.quote(str(s.admin_kubeconfig))}",
        # kubectl's discovery/HTTP cache for this cluster lives (and dies) with its state, so
        # a fresh cluster on the same address never sees a previous one's cached API list.
        f"export KUBECACHEDIR={shlex.quote(str(s.kube_cache))}",
        # The cluster's own kubectl, and `lamina` / `kubectl lamina` from the project's venv.
        f'export PATH={shlex.quote(tools)}:"$PATH"',
    ]
    if s.tier == "node":
        lines += [
            f"export LAMINA_REGISTRY_CONFIG={shlex.quote(str(s.registries_yaml))}",
            f"export LAMINA_REGISTRY={shlex.quote(s.registry)}",
        ]
    return lines


def print_env(s: Settings) -> int:
    for line in env_lines(s):
        print(line)
    return 0


def exec_kubectl(s: Settings, args: list[str]) -> int:
    """The built kubectl, pointed at the cluster (replaces this process)."""
    if not os.access(s.kubectl, os.X_OK):
        raise Fail(f"{s.kubectl} is not built yet: run e2e/cluster up")
    env = dict(os.environ, KUBECONFIG=str(s.admin_kubeconfig), KUBECACHEDIR=str(s.kube_cache))
    os.execve(str(s.kubectl), [str(s.kubectl), *args], env)
    return 127  # not reached
