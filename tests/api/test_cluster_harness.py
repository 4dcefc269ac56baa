"""The API-tier harness (`e2e/cluster up --tier api`) runs a real control plane.

These tests check the harness itself, through kubectl only: the server is the Kubernetes
version the harness builds, objects can be written and read back, and the controller manager
is running its garbage collector (Lamina relies on ownerReference GC to remove Layer objects
with their last Image).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

pytestmark = pytest.mark.api

GC_TIMEOUT = 60.0


def _ok(proc) -> str:
    assert proc.returncode == 0, (
        f"{proc.args!r} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc.stdout


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def namespace(kube_cluster):
    name = _unique("harness")
    _ok(kube_cluster.kubectl("create", "namespace", name))
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def test_server_reports_kubernetes_1_34(kube_cluster):
    info = json.loads(_ok(kube_cluster.kubectl("version", "-o", "json")))
    server = info["serverVersion"]
    assert server["gitVersion"].startswith("v1.34."), server
    assert (server["major"], server["minor"]) == ("1", "34"), server


def test_namespace_can_be_created_and_listed(kube_cluster):
    name = _unique("harness-ns")
    _ok(kube_cluster.kubectl("create", "namespace", name))
    try:
        listed = _ok(
            kube_cluster.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}")
        ).split()
        assert name in listed
        assert {"default", "kube-system"} <= set(listed)
        phase = _ok(
            kube_cluster.kubectl("get", "namespace", name, "-o", "jsonpath={.status.phase}")
        )
        assert phase == "Active"
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def test_garbage_collector_deletes_dependents(kube_cluster, namespace, tmp_path):
    _ok(
        kube_cluster.kubectl(
            "-n", namespace, "create", "configmap", "owner", "--from-literal=role=owner"
        )
    )
    owner_uid = _ok(
        kube_cluster.kubectl(
            "-n", namespace, "get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}"
        )
    ).strip()
    assert owner_uid

    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner_uid,
                }
            ],
        },
        "data": {"role": "dependent"},
    }
    manifest = tmp_path / "dependent.json"
    manifest.write_text(json.dumps(dependent))
    _ok(kube_cluster.kubectl("create", "-f", str(manifest)))
    stored = json.loads(
        _ok(kube_cluster.kubectl("-n", namespace, "get", "configmap", "dependent", "-o", "json"))
    )
    assert stored["metadata"]["ownerReferences"][0]["uid"] == owner_uid

    _ok(kube_cluster.kubectl("-n", namespace, "delete", "configmap", "owner"))

    deadline = time.monotonic() + GC_TIMEOUT
    while True:
        left = _ok(
            kube_cluster.kubectl(
                "-n", namespace, "get", "configmap", "dependent", "-o", "name", "--ignore-not-found"
            )
        ).strip()
        if not left:
            break
        assert time.monotonic() < deadline, (
            f"{left} still exists {GC_TIMEOUT:.0f}s after its owner was deleted: "
            "is kube-controller-manager's garbage collector running?"
        )
        time.sleep(0.5)
