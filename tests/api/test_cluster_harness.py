"""The API-tier harness (`e2e/cluster up --tier api`) runs a real control plane.

These tests check the harness itself: through kubectl, the server is the Kubernetes version
the harness builds, objects can be written and read back, and the controller manager is running
its garbage collector (Lamina relies on ownerReference GC to remove Layer objects with their
last Image); through `e2e/cluster` itself, its status, process records (what `down` trusts
before it signals), idempotent `up` and shell exports.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLUSTER

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


# The harness's own command line, against the running cluster (e2e/cluster, e2e/harness).


def _cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLUSTER), *args], capture_output=True, text=True, check=False, timeout=300
    )


def _state_dir() -> Path:
    for line in _ok(_cluster("status")).splitlines():
        if line.startswith("state dir: "):
            return Path(line.removeprefix("state dir: "))
    raise AssertionError("e2e/cluster status printed no state dir")


def _records(state: Path) -> dict[str, dict[str, Any]]:
    return {
        rec["name"]: rec
        for rec in (json.loads(p.read_text()) for p in (state / "run").glob("*.proc.json"))
    }


def test_status_reports_every_component_running_and_healthy(kube_cluster):
    out = _ok(_cluster("status"))
    assert out.splitlines()[-1] == "cluster (api tier): up and healthy"
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [name])
        assert "running pid " in line and "healthy" in line and "UNHEALTHY" not in line, line


def test_each_process_record_names_the_very_process_that_runs(kube_cluster):
    """PID, kernel start time and executable: what `down` checks before it signals."""
    records = _records(_state_dir())
    assert set(records) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    for name, rec in records.items():
        stat = Path(f"/proc/{rec['pid']}/stat").read_text()
        starttime = int(stat[stat.rindex(")") + 2 :].split()[19])
        assert starttime == rec["starttime"], name
        assert os.readlink(f"/proc/{rec['pid']}/exe") == rec["exe"], name
        assert Path(rec["exe"]).name == name
        assert rec["argv"][0].endswith(f"/{name}")


def test_up_on_a_healthy_cluster_keeps_every_process(kube_cluster):
    state = _state_dir()
    before = {name: (r["pid"], r["starttime"]) for name, r in _records(state).items()}
    up = _cluster("up", "--tier", "api")
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("cluster already up (api tier), checked in "), up.stdout
    after = {name: (r["pid"], r["starttime"]) for name, r in _records(state).items()}
    assert after == before


def test_env_and_kubeconfig_point_at_this_cluster(kube_cluster):
    state = _state_dir()
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in _ok(_cluster("env")).splitlines()
        if line.startswith("export ")
    )
    assert exports == {
        "KUBECONFIG": str(state / "kubeconfig" / "admin.kubeconfig"),
        "KUBECACHEDIR": str(state / "kube-cache"),
        "PATH": exports["PATH"],
    }
    # After `eval "$(e2e/cluster env)"`, kubectl is the cluster's and `lamina` the project's.
    found = subprocess.run(
        ["bash", "-c", f'eval "$({CLUSTER} env)" && command -v kubectl lamina kubectl-lamina'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [Path(p).name for p in found] == ["kubectl", "lamina", "kubectl-lamina"]
    assert Path(found[0]).parent.name.startswith("kubernetes-")
    assert _ok(_cluster("kubeconfig")).strip() == kube_cluster.kubeconfig == exports["KUBECONFIG"]
    registry = _cluster("registry")
    assert registry.returncode == 1
    assert registry.stderr.strip() == "e2e/cluster: no registry: the node tier is not up"
