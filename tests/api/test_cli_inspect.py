"""`lamina tree`, `plan`, `history` and `affected` against a real API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.api.test_tree_reconcile import image, set_layers, wait_reason
from tests.conftest import KubeCluster

pytestmark = pytest.mark.api

OLD = "sha256:" + "0" * 64
OWN = "sha256:" + "e" * 64


def lamina(kube: KubeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina.cli.main", *args],
        env={**os.environ, "KUBECONFIG": kube.kubeconfig},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def tree(operator: KubeCluster, namespace: str) -> str:
    operator.apply(image("base", "docker.io/library/busybox:1.36"), namespace)
    operator.apply(image("app", "base"), namespace)
    operator.apply(image("tool", "base"), namespace)
    manual = image("app-debug", "app") + "  rebuild: {policy: Manual}\n"
    operator.apply(manual, namespace)
    operator.apply(image("orphan", "gone"), namespace)
    wait_reason(operator, "app-debug", namespace, "WaitingForParent")
    wait_reason(operator, "orphan", namespace, "ParentNotFound")
    return namespace


def test_tree(operator: KubeCluster, tree: str) -> None:
    result = lamina(operator, "tree", "-n", tree)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # No registry answers for docker.io here: base waits, then says why once it has asked.
    assert lines[1] in ("base  -  WaitingForParent", "base  -  RegistryUnavailable"), lines
    assert [lines[0], *lines[2:]] == [
        "[docker.io/library/busybox:1.36]",
        "├── app  -  WaitingForParent",
        "│   └── app-debug  -  WaitingForParent",
        "└── tool  -  WaitingForParent",
        "[missing parent gone]",
        "orphan  -  ParentNotFound",
    ]


def test_plan(operator: KubeCluster, tree: str) -> None:
    result = lamina(operator, "plan", "base", "-n", tree)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert rows == [
        ["app", "1", "base", "Automatic", "Rebuild", "rebuild"],
        ["tool", "1", "base", "Automatic", "Rebuild", "rebuild"],
        ["app-debug", "2", "app", "Manual", "Rebuild", "waits", "(Manual)"],
    ]
    missing = lamina(operator, "plan", "nothing", "-n", tree)
    assert missing.returncode == 1
    assert f'Image "nothing" not found in namespace {tree}' in missing.stdout


def test_history_and_affected(operator: KubeCluster, tree: str) -> None:
    set_layers(operator, "base", tree, [{"digest": OLD, "size": 4_000_000, "own": True}])
    set_layers(
        operator,
        "app",
        tree,
        [
            {"digest": OLD, "size": 4_000_000, "own": False},
            {"digest": OWN, "size": 2048, "own": True},
        ],
    )
    operator.kubectl(
        "patch",
        "image",
        "app",
        "-n",
        tree,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"lineage": [{"name": "base"}]}}),
    )
    result = lamina(operator, "history", "app", "-n", tree)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:3] == ["eeeeeeeeeeee", "2.0kB", "this"]
    assert lines[2].split()[:3] == ["000000000000", "4.0MB", "base"]

    affected = lamina(operator, "affected", OLD, "-n", tree)
    assert affected.returncode == 0, affected.stderr
    assert [line.split() for line in affected.stdout.splitlines()] == [
        ["IMAGE", "HOW"],
        ["app", "inherited"],
        ["base", "introduced"],
    ]
