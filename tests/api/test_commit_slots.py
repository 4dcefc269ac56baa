"""Commit slots on a real API server: a commit beyond the limit waits, and starts when a slot
frees.

The API tier has no kubelet, so a commit Job never finishes here; deleting the first one
(the commit fails as ``CommitJobLost``) is what frees its slot.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.api.test_commit_flow import commit, jobs_in, reason_of, running_pod
from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for

pytestmark = pytest.mark.api


def test_a_commit_beyond_the_limit_waits_for_a_slot(
    crds_installed: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    kube = crds_installed
    home = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", home, check=True)
    log = tmp_path / "operator.log"
    env = {
        "LAMINA_NAMESPACE": home,
        "LAMINA_COMMITTER_IMAGE": "lamina:test",
        "LAMINA_MAX_CONCURRENT_COMMITS": "1",
    }
    process = start_operator(kube.kubeconfig, log, "--metrics-port=0", "--health-port=0", env=env)
    try:
        running_pod(kube, namespace, "web")
        kube.apply(commit("first"), namespace)
        wait_for(lambda: reason_of(kube, "first", namespace) == "Committing", what="Committing")
        kube.apply(commit("second"), namespace)
        wait_for(lambda: reason_of(kube, "second", namespace) == "CommitQueued", what="queued")
        second = kube.get("containercommit", "second", namespace)
        assert second is not None
        assert second["status"]["phase"] == "Pending"
        message = condition(second, "Ready")["message"]  # type: ignore[index]
        assert message == (
            "waiting for a commit slot: 1 of 1 commit Jobs are running "
            "(LAMINA_MAX_CONCURRENT_COMMITS)"
        )
        assert len(jobs_in(kube, home)) == 1

        (job,) = jobs_in(kube, home)
        kube.kubectl("delete", "job", job["metadata"]["name"], "-n", home, check=True)
        wait_for(lambda: reason_of(kube, "first", namespace) == "CommitJobLost", what="lost")
        wait_for(
            lambda: reason_of(kube, "second", namespace) == "Committing",
            timeout=30,
            what="the queued commit started once the slot freed",
        )
        assert len(jobs_in(kube, home)) == 1
    finally:
        stop_operator(process, log)
        kube.kubectl("delete", "namespace", home, "--wait=false")


def test_a_freed_commit_slot_goes_to_the_tenant_whose_turn_it_is(
    crds_installed: KubeCluster, tmp_path: Path
) -> None:
    """One slot; the busy tenant holds it and queues two more commits before the quiet
    tenant queues one.  First come would give the freed slot to the busy tenant's older
    commit; the fair share gives it to the quiet tenant, which has not had a turn."""
    kube = crds_installed
    suffix = uuid.uuid4().hex[:6]
    home, busy, quiet = f"lamina-{suffix}", f"busy-{suffix}", f"quiet-{suffix}"
    for created in (home, busy, quiet):
        kube.kubectl("create", "namespace", created, check=True)
    log = tmp_path / "operator.log"
    env = {
        "LAMINA_NAMESPACE": home,
        "LAMINA_COMMITTER_IMAGE": "lamina:test",
        "LAMINA_MAX_CONCURRENT_COMMITS": "1",
    }
    process = start_operator(kube.kubeconfig, log, "--metrics-port=0", "--health-port=0", env=env)
    try:
        running_pod(kube, busy, "web")
        running_pod(kube, quiet, "web")
        kube.apply(commit("first"), busy)
        wait_for(lambda: reason_of(kube, "first", busy) == "Committing", what="Committing")
        for name in ("second", "third"):
            kube.apply(commit(name), busy)
            wait_for(lambda n=name: reason_of(kube, n, busy) == "CommitQueued", what=name)
        kube.apply(commit("only"), quiet)
        wait_for(lambda: reason_of(kube, "only", quiet) == "CommitQueued", what="quiet queued")

        (job,) = jobs_in(kube, home)
        kube.kubectl("delete", "job", job["metadata"]["name"], "-n", home, check=True)
        wait_for(
            lambda: reason_of(kube, "only", quiet) == "Committing",
            timeout=30,
            what="the quiet tenant's commit taking the freed slot",
        )
        assert [reason_of(kube, n, busy) for n in ("second", "third")] == ["CommitQueued"] * 2
        (running,) = jobs_in(kube, home)
        assert running["metadata"]["labels"]["lamina.dev/commit-namespace"] == quiet
        waiting = condition(kube.get("containercommit", "second", busy), "Ready") or {}
        assert "fair share" in waiting["message"] or "1 of 1" in waiting["message"]
        assert quiet not in waiting["message"]  # the other tenant is not named
    finally:
        stop_operator(process, log)
        for created in (home, busy, quiet):
            kube.kubectl("delete", "namespace", created, "--wait=false")
