"""``lamina operator`` out of the cluster checks its namespace at start: when the namespace is
missing, or its credentials may not run Jobs there, it exits at once saying what is missing and
how to fix it (rather than failing every build pass later with a bare API error)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import KubeCluster, service_account_kubeconfig

pytestmark = pytest.mark.api


def run_operator(kubeconfig: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina.cli.main",
            "operator",
            "--metrics-port=0",
            "--health-port=0",
        ],
        env={**os.environ, "KUBECONFIG": kubeconfig, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_missing_namespace_is_named_with_the_fix(crds_installed: KubeCluster) -> None:
    missing = f"lamina-{uuid.uuid4().hex[:6]}"
    result = run_operator(crds_installed.kubeconfig, LAMINA_NAMESPACE=missing)
    assert result.returncode == 1
    assert (
        f'lamina operator: the operator\'s namespace "{missing}" (LAMINA_NAMESPACE) does not '
        "exist" in result.stderr
    )
    assert f"kubectl create namespace {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_credentials_that_may_not_run_jobs_there_are_refused(
    crds_installed: KubeCluster, tmp_path: Path, namespace: str
) -> None:
    """A ServiceAccount with no Role in the namespace: every missing permission is named."""
    crds_installed.kubectl("create", "serviceaccount", "nobody", "-n", namespace, check=True)
    kubeconfig = service_account_kubeconfig(
        crds_installed,
        namespace,
        "nobody",
        tmp_path / "sa.kubeconfig",  # type: ignore[operator]
    )
    # It may list namespaces (so the namespace is found), nothing else.
    crds_installed.kubectl(
        "create",
        "clusterrole",
        f"ns-{namespace}",
        "--verb=list",
        "--resource=namespaces",
        check=True,
    )
    crds_installed.kubectl(
        "create",
        "clusterrolebinding",
        f"ns-{namespace}",
        f"--clusterrole=ns-{namespace}",
        f"--serviceaccount={namespace}:nobody",
        check=True,
    )
    try:
        result = run_operator(str(kubeconfig), LAMINA_NAMESPACE=namespace)
    finally:
        crds_installed.kubectl("delete", "clusterrolebinding,clusterrole", f"ns-{namespace}")
    assert result.returncode == 1, result.stderr
    assert (
        "these credentials may not create jobs, list jobs, watch jobs, delete jobs, create "
        f'secrets, create configmaps in the operator\'s namespace "{namespace}"' in result.stderr
    )
    assert "Role" in result.stderr
    assert "Traceback" not in result.stderr
