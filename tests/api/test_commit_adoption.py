"""An operator restarted while a commit Job runs adopts that Job instead of starting another.

In a module of its own, so that no other operator runs against the cluster meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.test_commit_flow import commit, jobs_in, reason_of, running_pod
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for

pytestmark = pytest.mark.api


@pytest.fixture
def operator_namespace(crds_installed: KubeCluster) -> Iterator[str]:
    name = f"lamina-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", name, check=True)
    yield name
    crds_installed.kubectl("delete", "namespace", name, "--wait=false")


def test_a_restarted_operator_adopts_the_running_job(
    crds_installed: KubeCluster,
    operator_namespace: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    running_pod(crds_installed, namespace)
    env = {"LAMINA_NAMESPACE": operator_namespace, "LAMINA_COMMITTER_IMAGE": "lamina:test"}
    first = start_operator(
        crds_installed.kubeconfig,
        tmp_path / "first.log",
        "--metrics-port=0",
        "--health-port=0",
        env=env,
    )
    try:
        crds_installed.apply(commit("adopted"), namespace)
        wait_for(
            lambda: reason_of(crds_installed, "adopted", namespace) == "Committing",
            what="Committing",
        )
    finally:
        stop_operator(first, tmp_path / "first.log")
    second = start_operator(
        crds_installed.kubeconfig,
        tmp_path / "second.log",
        "--metrics-port=0",
        "--health-port=0",
        env=env,
    )
    try:
        # Poke the commit so the new operator handles it again.
        crds_installed.kubectl("label", "containercommit", "adopted", "-n", namespace, "poke=1")
        wait_for(lambda: "adopted" in (tmp_path / "second.log").read_text(), what="handled")
    finally:
        stop_operator(second, tmp_path / "second.log")
    mine = [
        j
        for j in jobs_in(crds_installed, operator_namespace)
        if j["metadata"]["labels"]["lamina.dev/commit-name"] == "adopted"
        and j["metadata"]["labels"]["lamina.dev/commit-namespace"] == namespace
    ]
    assert len(mine) == 1
