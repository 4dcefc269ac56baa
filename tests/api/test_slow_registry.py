"""One tenant's slow registry holds up no other tenant's builds.

Real kube-apiserver, real ``lamina operator``, a real registry for the parents, and the hostile
test server (plain HTTP, insecure in the registry settings) as one tenant's output registry.
That server answers every request in a slow drip: a byte a second, status line and headers
included, so no single read times out soon, yet nothing ever finishes.  Before the per-action
deadline, the build pass carried out its actions one after another and this tenant's rebase
(which reads its own image from that registry) held every other tenant's builds for minutes.

Now the other tenant's build Job is created while the slow rebase is still being answered,
and the slow Image's condition says ``RegistryTimeout``, naming the registry host and nothing
the registry sent; it is not asked again before its back-off.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_build_planning import image, push
from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for
from tests.hostile_registry import (
    OCI_MANIFEST,
    SECRET_BODY,
    HostileRegistry,
    Reply,
    RequestLog,
    ServerThread,
)
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api

DEADLINE_SECONDS = 45


@pytest.fixture
def slow_registry() -> Iterator[tuple[HostileRegistry, RequestLog]]:
    thread = ServerThread()
    log = RequestLog()
    server = thread.start(log)
    body = json.dumps({"note": SECRET_BODY}).encode()
    server.on("*", r"/v2/.*", Reply(200, {"Content-Type": OCI_MANIFEST}, body, drip=1.0))
    yield server, log
    thread.stop()


def _jobs_of(kube: KubeCluster, operator_ns: str, tenant: str) -> list[dict[str, Any]]:
    listed = kube.kubectl("get", "jobs", "-n", operator_ns, "-o", "json", check=True)
    return [
        job
        for job in json.loads(listed.stdout)["items"]
        if job["metadata"]["labels"].get("lamina.dev/image-namespace") == tenant
    ]


def test_a_slow_registry_delays_no_other_tenants_build(
    crds_installed: KubeCluster,
    registry: Registry,
    slow_registry: tuple[HostileRegistry, RequestLog],
    tmp_path: Path,
) -> None:
    kube = crds_installed
    hostile, log = slow_registry
    suffix = uuid.uuid4().hex[:6]
    operator_ns, slow, quick = f"lamina-{suffix}", f"slow-{suffix}", f"quick-{suffix}"
    for namespace in (operator_ns, slow, quick):
        kube.kubectl("create", "namespace", namespace, check=True)
    parents = f"parents/{suffix}"
    first = push(registry, parents, "1", "one", tmp_path)
    push(registry, parents, "1", "two", tmp_path)  # the parent moved: the slow Image rebases
    ref = registry.ref(parents, "1")
    rebasing = {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": "Image",
        "metadata": {"name": "app"},
        "spec": {
            "parent": {"ref": ref, "pollInterval": "1s"},
            "build": {"steps": ["RUN echo never-run"]},
            "output": {"repository": f"{hostile.address}/slow/app", "insecure": True},
            "rebuild": {"strategy": "Rebase"},
        },
    }
    kube.apply(json.dumps(rebasing), slow)
    kube.kubectl(
        "patch", "image", "app", "-n", slow, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": {
            "digest": "sha256:" + "ab" * 32,
            "builtFrom": {"generation": 1, "parentDigest": first},
        }}),
        check=True,
    )  # fmt: skip
    settings = tmp_path / "registries.yaml"
    settings.write_text(
        f'registries:\n  "{registry.address}":\n    insecure: true\n'
        f'  "{hostile.address}":\n    insecure: true\n'
    )
    operator_log = tmp_path / "operator.log"
    process = start_operator(
        kube.kubeconfig,
        operator_log,
        "--metrics-port=0",
        "--health-port=0",
        env={
            "LAMINA_NAMESPACE": operator_ns,
            "LAMINA_NAMESPACES": f"{slow},{quick}",
            "LAMINA_REGISTRY_CONFIG": str(settings),
            "LAMINA_BUILD_POLL_SECONDS": "1",
            "LAMINA_BUILDER_IMAGE": "builder:test",
            "LAMINA_REGISTRY_ACTION_SECONDS": str(DEADLINE_SECONDS),
        },
    )
    try:
        # The slow tenant's rebase is under way: its registry is being asked.
        wait_for(lambda: log.to(hostile.origin), timeout=60, what="the rebase reading its image")
        kube.apply(image("web", {"ref": ref}, registry), quick)

        jobs = wait_for(
            lambda: _jobs_of(kube, operator_ns, quick),
            timeout=DEADLINE_SECONDS,
            what="the quick tenant's build Job",
        )
        # Created while the slow rebase is still being answered, byte by byte.
        assert log.unfinished(hostile.origin), "the slow registry's answer had finished"
        stalled = condition(kube.get("image", "app", slow), "Stalled") or {}
        assert stalled.get("reason") != "RegistryTimeout"
        assert len(jobs) == 1
        assert _jobs_of(kube, operator_ns, slow) == []

        def timed_out() -> dict[str, Any] | None:
            found = condition(kube.get("image", "app", slow), "Stalled") or {}
            return found if found.get("reason") == "RegistryTimeout" else None

        said = wait_for(timed_out, timeout=DEADLINE_SECONDS + 30, what="RegistryTimeout")
        message = str(said["message"])
        assert said["status"] == "True"
        assert hostile.address in message
        assert f"within {DEADLINE_SECONDS} s" in message
        assert "retried in 30s" in message
        assert SECRET_BODY not in message and "hunter2" not in message
        # The quick tenant's Image builds and says nothing of the other's registry.
        web = kube.get("image", "web", quick) or {}
        assert (condition(web, "Reconciling") or {}).get("reason") == "Building"
        assert hostile.address not in json.dumps(web.get("status"))
        # Backed off: not asked again before its retry (30 s after the deadline).
        asked = len(log.to(hostile.origin))
        time.sleep(10)
        assert len(log.to(hostile.origin)) == asked
    finally:
        stop_operator(process, operator_log)
        for namespace in (operator_ns, slow, quick):
            kube.kubectl("delete", "namespace", namespace, "--wait=false")
