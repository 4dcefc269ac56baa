"""The build path's failures are visible on the Image: a refused build Job, a stuck build pod.

A real API server, registry and build loop.  The operator's namespace does not exist at
first, so the API refuses the build Job: the Image must say ``NamespaceNotFound`` (not sit in
``BuildQueued``) and build once the namespace exists.  Then the build pod is put into
ImagePullBackOff (the API tier has no kubelet: the pod's status is written as a kubelet
would) and the Image must show it within seconds, keep its digest, and go back to
``Building`` once the pod pulls.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.build_loop import build_loop_operator
from tests.api.test_build_planning import image, push, status_of
from tests.api.test_failures_visible import Operator, event_with, set_pod_waiting
from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def homeless_builder(
    crds_installed: KubeCluster, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Operator, Registry]]:
    home = f"lamina-nohome-{uuid.uuid4().hex[:6]}"
    # The operator checks its namespace at start; it disappears afterwards.
    crds_installed.kubectl("create", "namespace", home, check=True)
    work = tmp_path_factory.mktemp("build-failures")
    try:
        with build_loop_operator(crds_installed, registry, work, home) as operator:
            crds_installed.kubectl("delete", "namespace", home, "--wait=true", check=True)
            wait_for(
                lambda: crds_installed.get("namespace", home, "") is None,
                timeout=60,
                what=f"namespace {home} gone",
            )
            yield operator, registry
    finally:
        crds_installed.kubectl("delete", "namespace", home, "--wait=false")


def reason(kube: KubeCluster, name: str, namespace: str) -> str | None:
    ready = condition(kube.get("image", name, namespace), "Ready")
    return ready["reason"] if ready else None


def test_a_refused_build_job_then_a_stuck_build_pod_are_on_the_image(
    homeless_builder: tuple[Operator, Registry], namespace: str, tmp_path: Path
) -> None:
    operator, registry = homeless_builder
    kube = operator.kube
    repository = f"parents/{uuid.uuid4().hex[:8]}"
    push(registry, repository, "1", "one", tmp_path)
    kube.apply(image("base", {"ref": registry.ref(repository, "1")}, registry), namespace)

    wait_for(
        lambda: reason(kube, "base", namespace) == "NamespaceNotFound",
        timeout=30,
        what="NamespaceNotFound on the Image",
    )
    stalled = condition(kube.get("image", "base", namespace), "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert f'namespace "{operator.home}" does not exist' in stalled["message"]
    assert (
        wait_for(
            lambda: event_with(kube, namespace, "base", "NamespaceNotFound"),
            what="NamespaceNotFound Event",
        )["type"]
        == "Warning"
    )

    kube.kubectl("create", "namespace", operator.home, check=True)
    wait_for(
        lambda: reason(kube, "base", namespace) == "Building",
        timeout=30,
        what="Building once the namespace exists",
    )
    job = status_of(kube, "base", namespace)["build"]["job"]

    def build_pod() -> str | None:
        listed = kube.kubectl(
            "get", "pods", "-n", operator.home, "-l", f"job-name={job}", "-o", "name", check=True
        ).stdout.split()
        return listed[0].split("/", 1)[1] if listed else None

    pod = wait_for(build_pod, what="the build pod")
    message = 'Back-off pulling image "builder:test"'
    started = time.monotonic()
    set_pod_waiting(kube, operator.home, pod, "ImagePullBackOff", message)
    wait_for(
        lambda: reason(kube, "base", namespace) == "ImagePullBackOff",
        timeout=10,
        interval=0.2,
        what="ImagePullBackOff on the Image",
    )
    assert time.monotonic() - started < 5
    reconciling = condition(kube.get("image", "base", namespace), "Reconciling")
    assert reconciling is not None and reconciling["status"] == "True"
    assert message in reconciling["message"]
    assert (
        wait_for(
            lambda: event_with(kube, namespace, "base", "ImagePullBackOff"),
            what="ImagePullBackOff Event",
        )["type"]
        == "Warning"
    )

    # The pod starts (the kubelet's neutral "ContainerCreating" between pull retries is not a
    # start: the problem would stand).
    started = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "buildkit",
                    "ready": True,
                    "restartCount": 0,
                    "image": "builder:test",
                    "imageID": "",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        }
    }
    kube.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        operator.home,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(started),
        check=True,
    )
    wait_for(
        lambda: reason(kube, "base", namespace) == "Building", timeout=10, what="Building again"
    )
    assert status_of(kube, "base", namespace)["build"].get("waiting") is None
