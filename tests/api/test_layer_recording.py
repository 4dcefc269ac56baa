"""Recording an image's Layers on a real API server: batched once, free when seen again.

The API server counts the requests (``apiserver_request_total`` for Layers), so what is
measured is what reached it.
"""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from lamina.domain.manifest_facts import LayerFact
from lamina.handlers.indexes import layer_record
from lamina.handlers.recording import ensure_layers
from lamina.kube import Kube
from tests.conftest import KubeCluster, wait_for

pytestmark = pytest.mark.api


def layer_requests(kube: KubeCluster) -> int:
    metrics = kube.kubectl("get", "--raw", "/metrics", check=True).stdout
    total = 0
    for line in metrics.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="layers"' in line
            and re.search(r'verb="(POST|PATCH|PUT|GET|DELETE)"', line)
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def facts(count: int) -> list[LayerFact]:
    return [
        LayerFact(
            digest=f"sha256:{n:064x}",
            diff_id=f"sha256:{n + 1000:064x}",
            size=100 + n,
            media_type="application/vnd.oci.image.layer.v1.tar+gzip",
            created_by=f"RUN step {n}",
            own=n == count - 1,
        )
        for n in range(count)
    ]


def test_fifty_layers_are_recorded_once_and_seen_again_for_free(
    crds_installed: KubeCluster, namespace: str
) -> None:
    kube = crds_installed
    layers = facts(50)

    async def record(known_from_list: bool) -> None:
        os.environ["KUBECONFIG"] = kube.kubeconfig
        client = await Kube.connect()
        try:
            known = {}
            if known_from_list:
                for obj in await client.list_objects("layers", namespace):
                    meta, spec, status = obj["metadata"], obj.get("spec"), obj.get("status")
                    known[meta["name"]] = layer_record(
                        namespace, meta["name"], spec or {}, status or {}, meta
                    )
            await ensure_layers(client, namespace, None, layers, known)
        finally:
            await client.close()

    # The API server counts Layer requests cluster-wide: let the namespace controller finish
    # deleting earlier tests' namespaces (and their Layers) before counting ours.
    wait_for(
        lambda: (
            "Terminating"
            not in kube.kubectl("get", "namespaces", "--no-headers", check=True).stdout
        ),
        timeout=180,
        what="earlier tests' namespaces deleted",
    )
    before = layer_requests(kube)
    asyncio.run(record(known_from_list=False))
    first = layer_requests(kube) - before
    # One create and one status write per new Layer, no reads, no owner references.
    assert first == 2 * len(layers)
    listed = kube.kubectl("get", "layers", "-n", namespace, "-o", "json", check=True).stdout
    assert listed.count('"kind": "Layer"') == 50
    assert '"ownerReferences"' not in listed
    assert '"app.kubernetes.io/managed-by": "lamina"' in listed
    one = kube.get("layer", layers[7].name, namespace)
    assert one is not None
    assert one["status"]["createdBy"] == "RUN step 7"
    assert one["status"]["diffID"] == layers[7].diff_id

    # Seen again (a second build of the same bytes, a restarted operator): nothing to write.
    # The LIST that stands in for the operator's index is excluded from the count.
    before = layer_requests(kube)
    asyncio.run(record(known_from_list=True))
    again = layer_requests(kube) - before
    assert again == 0, f"{again} requests for Layers that were already recorded"
