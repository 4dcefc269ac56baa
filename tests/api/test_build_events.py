"""Events and metrics of the build path, on a real API server, registry and build loop.

The API tier has no node, so a build Job never runs; deleting it is what makes the build
fail here (``BuildJobLost``), as a user or a cleanup tool could.  Building for real is the
node tier's e2e test.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.build_loop import build_loop_operator
from tests.api.test_build_planning import build_jobs, image, push, status_of
from tests.api.test_failures_visible import Operator, event_with, events_of
from tests.api.test_tree_reconcile import image as plain_image
from tests.conftest import KubeCluster, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def building_operator(
    crds_installed: KubeCluster, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Operator, Registry]]:
    home = f"lamina-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", home, check=True)
    work = tmp_path_factory.mktemp("build-events")
    try:
        with build_loop_operator(crds_installed, registry, work, home) as operator:
            yield operator, registry
    finally:
        crds_installed.kubectl("delete", "namespace", home, "--wait=false")


def test_build_started_and_lost_are_events_and_metrics(
    building_operator: tuple[Operator, Registry], namespace: str, tmp_path: Path
) -> None:
    operator, registry = building_operator
    kube = operator.kube
    repository = f"parents/{uuid.uuid4().hex[:8]}"
    digest = push(registry, repository, "1", "one", tmp_path)
    kube.apply(image("base", {"ref": registry.ref(repository, "1")}, registry), namespace)

    started = wait_for(
        lambda: event_with(kube, namespace, "base", "BuildStarted"), what="BuildStarted Event"
    )
    assert started["type"] == "Normal"
    assert f"FirstBuild - -> {digest}" in started["message"]
    assert started["involvedObject"]["kind"] == "Image"
    described = kube.kubectl("describe", "image", "base", "-n", namespace, check=True).stdout
    assert re.search(r"Normal\s+BuildStarted", described), described
    wait_for(lambda: operator.metric("lamina_builds_running") >= 1, what="builds running gauge")

    (job,) = build_jobs(kube, operator.home, namespace)
    failed_before = operator.metric("lamina_builds_total", result="failed")
    kube.kubectl("delete", "job", job["metadata"]["name"], "-n", operator.home, check=True)
    lost = wait_for(
        lambda: event_with(kube, namespace, "base", "BuildJobLost"), what="BuildJobLost Event"
    )
    assert lost["type"] == "Warning"
    assert "was deleted before it finished" in lost["message"]
    assert status_of(kube, "base", namespace)["build"]["failure"] == "BuildJobLost"
    wait_for(
        lambda: operator.metric("lamina_builds_total", result="failed") == failed_before + 1,
        what="lamina_builds_total{result=failed}",
    )
    assert operator.metric("lamina_build_failures_total", reason="BuildJobLost") >= 1
    # One Warning for the failure, not one more for the Stalled condition that follows it.
    time.sleep(2)
    (only,) = [e for e in events_of(kube, namespace, "base") if e["reason"] == "BuildJobLost"]
    assert only["count"] == 1


def test_a_missing_parent_is_a_warning_event_on_the_image(
    building_operator: tuple[Operator, Registry], namespace: str
) -> None:
    operator, _ = building_operator
    kube = operator.kube
    kube.apply(plain_image("child", "nowhere"), namespace)
    event = wait_for(
        lambda: event_with(kube, namespace, "child", "ParentNotFound"), what="ParentNotFound"
    )
    assert event["type"] == "Warning"
    assert f'parent Image "nowhere" does not exist in namespace "{namespace}"' in event["message"]
    assert operator.metric("lamina_kube_events_written_total", type="Warning", kind="Image") >= 1
