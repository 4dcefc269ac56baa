"""A hostile registry named by one tenant's Image does not hurt the operator or anyone else.

Real kube-apiserver, real ``lamina operator``; the registry is the hostile test server on
127.0.0.1 (plain HTTP, configured insecure in the operator's registry settings).  One tenant's
Image names a ref whose manifest is 2 GiB (streamed, no Content-Length): before the bounded
reads this got the operator OOM-killed on every pass.  Now that Image shows why it waits,
another tenant's Images resolve and get their build Jobs, and the polling of the good ref is
counted in the registry's own request log: one HEAD per pass for five Images, no GET while the
digest stays.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from subprocess import Popen
from typing import Any

import pytest

from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for
from tests.hostile_registry import (
    OCI_MANIFEST,
    HostileRegistry,
    MiB,
    Reply,
    RequestLog,
    ServerThread,
    endless,
    manifest,
    sha,
    small_image_manifest,
)

pytestmark = pytest.mark.api

HUGE = "/v2/evil/huge/manifests/1"
GOOD = "/v2/good/base/manifests/1"


@dataclass
class Setup:
    kube: KubeCluster
    operator_ns: str
    registry: HostileRegistry
    process: Popen[bytes]
    good_digest: str


@pytest.fixture(scope="module")
def setup(crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    thread = ServerThread()
    registry = thread.start(RequestLog())
    # HEAD gives no digest, so the operator must GET: the GET streams 2 GiB.
    registry.on("HEAD", HUGE, Reply(200, {"Content-Type": OCI_MANIFEST}))
    registry.on("GET", HUGE, Reply(200, {"Content-Type": OCI_MANIFEST}, endless(2 << 30)))
    good = small_image_manifest("good")
    registry.on("*", GOOD, manifest(good, OCI_MANIFEST))

    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", operator_ns, check=True)
    work = tmp_path_factory.mktemp("hostile-parent")
    settings = work / "registries.yaml"
    settings.write_text(f'registries:\n  "{registry.address}":\n    insecure: true\n')
    env = {
        "LAMINA_NAMESPACE": operator_ns,
        "LAMINA_REGISTRY_CONFIG": str(settings),
        "LAMINA_MAX_CONCURRENT_BUILDS": "10",
        "LAMINA_BUILD_POLL_SECONDS": "1",
        "LAMINA_BUILDER_IMAGE": "builder:test",
    }
    log = work / "operator.log"
    process = start_operator(
        crds_installed.kubeconfig, log, "--metrics-port=0", "--health-port=0", env=env
    )
    try:
        yield Setup(crds_installed, operator_ns, registry, process, sha(good))
    finally:
        stop_operator(process, log)
        crds_installed.kubectl("delete", "namespace", operator_ns, "--wait=false")
        thread.stop()


@pytest.fixture
def other_namespace(crds_installed: KubeCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    crds_installed.kubectl("create", "namespace", name, check=True)
    yield name
    crds_installed.kubectl("delete", "namespace", name, "--wait=false")


def image(name: str, ref: str, output: str) -> str:
    return json.dumps(
        {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "Image",
            "metadata": {"name": name},
            "spec": {
                "parent": {"ref": ref, "pollInterval": "1s"},
                "build": {"steps": ["RUN true"]},
                "output": {"repository": f"{output}/out/{name}", "insecure": True},
            },
        }
    )


def status_of(kube: KubeCluster, name: str, namespace: str) -> dict[str, Any]:
    return (kube.get("image", name, namespace) or {}).get("status") or {}


def test_an_oversized_parent_manifest_is_that_images_condition_and_others_go_on(
    setup: Setup, namespace: str, other_namespace: str
) -> None:
    kube, registry = setup.kube, setup.registry
    huge_ref = f"{registry.address}/evil/huge:1"
    good_ref = f"{registry.address}/good/base:1"
    kube.apply(image("evil", huge_ref, registry.address), namespace)
    for index in range(5):
        kube.apply(image(f"good{index}", good_ref, registry.address), other_namespace)

    def why() -> str | None:
        reconciling = condition(kube.get("image", "evil", namespace), "Reconciling") or {}
        message = str(reconciling.get("message", ""))
        return message if "ManifestTooLarge" in message else None

    message = wait_for(why, timeout=60, what="the evil Image's WaitingForParent message")
    assert message == (
        f"cannot resolve {huge_ref}: ManifestTooLarge: registry {registry.address} served a "
        "manifest for evil/huge:1 larger than the 4 MiB (4194304 bytes) limit of the "
        "distribution spec"
    )
    reconciling = condition(kube.get("image", "evil", namespace), "Reconciling")
    assert reconciling is not None and reconciling["reason"] == "ManifestTooLarge"
    assert status_of(kube, "evil", namespace)["resolved"].get("digest") is None
    # The read stopped at the limit each time: never more than a few MiB left the server.
    huge_gets = [
        i
        for i, r in enumerate(registry.log.requests, start=registry.log.cleared)
        if r.path == HUGE and r.method == "GET"
    ]
    assert huge_gets
    assert max(registry.log.sent.get(i, 0) for i in huge_gets) < 64 * MiB

    # The other tenant's Images resolved and got their build Jobs meanwhile.
    for index in range(5):
        wait_for(
            lambda index=index: (
                status_of(kube, f"good{index}", other_namespace).get("resolved", {}).get("digest")
                == setup.good_digest
            ),
            timeout=60,
            what=f"good{index} resolved",
        )
        wait_for(
            lambda index=index: (
                (
                    condition(kube.get("image", f"good{index}", other_namespace), "Reconciling")
                    or {}
                ).get("reason")
                in ("Building", "BuildQueued")
            ),
            timeout=60,
            what=f"good{index} building",
        )
    assert setup.process.poll() is None, "the operator must still be running"

    # Polling the good ref: five Images, one HEAD per pass, no GET while the digest stays,
    # and no status write either (an unchanged answer is not written).
    def versions() -> list[str]:
        return [
            (kube.get("image", f"good{index}", other_namespace) or {})["metadata"][
                "resourceVersion"
            ]
            for index in range(5)
        ]

    time.sleep(2)  # let the conditions follow the last build fields
    before = versions()
    start = len(registry.log.requests)
    window = 6.0
    time.sleep(window)
    polled = [r.method for r in registry.log.requests[start:] if r.path == GOOD]
    assert "GET" not in polled
    assert 1 <= polled.count("HEAD") <= window + 2, polled
    assert versions() == before
