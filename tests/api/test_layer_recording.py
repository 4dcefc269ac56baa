"""Recording an image's Layers on a real API server: batched once, free when seen again.

The requests are counted on the wire of the recording client (every HTTP request its REST
client sends for Layers), not from the API server's cluster-wide ``apiserver_request_total``:
that counter has no namespace label, so the namespace controller still deleting an earlier
test's Layers, or another test's operator, would be counted as ours.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lamina.domain.manifest_facts import LayerFact
from lamina.handlers.indexes import layer_record
from lamina.handlers.recording import ensure_layers
from lamina.kube import Kube
from tests.conftest import KubeCluster

pytestmark = pytest.mark.api


class LayerRequestCounter:
    """Counts the requests one client sends for Layers, by wrapping its REST client."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def attach(self, client: Kube) -> None:
        rest = client._api.rest_client
        send: Callable[..., Awaitable[Any]] = rest.request

        async def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if "/layers" in url:
                self.sent.append(f"{method} {url}")
            return await send(method, url, *args, **kwargs)

        rest.request = counted


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

    async def record(known_from_list: bool) -> list[str]:
        os.environ["KUBECONFIG"] = kube.kubeconfig
        client = await Kube.connect()
        counter = LayerRequestCounter()
        try:
            known = {}
            if known_from_list:
                for obj in await client.list_objects("layers", namespace):
                    meta, spec, status = obj["metadata"], obj.get("spec"), obj.get("status")
                    known[meta["name"]] = layer_record(
                        namespace, meta["name"], spec or {}, status or {}, meta
                    )
            # Counted from here: the LIST above stands in for the operator's index.
            counter.attach(client)
            await ensure_layers(client, namespace, None, layers, known)
        finally:
            await client.close()
        return counter.sent

    first = asyncio.run(record(known_from_list=False))
    # One create and one status write per new Layer, no reads, no owner references.
    assert len(first) == 2 * len(layers), first
    assert sorted(r.split(" ", 1)[0] for r in first) == ["PATCH"] * 50 + ["POST"] * 50
    listed = kube.kubectl("get", "layers", "-n", namespace, "-o", "json", check=True).stdout
    assert listed.count('"kind": "Layer"') == 50
    assert '"ownerReferences"' not in listed
    assert '"app.kubernetes.io/managed-by": "lamina"' in listed
    one = kube.get("layer", layers[7].name, namespace)
    assert one is not None
    assert one["status"]["createdBy"] == "RUN step 7"
    assert one["status"]["diffID"] == layers[7].diff_id

    # Seen again (a second build of the same bytes, a restarted operator): nothing to write.
    again = asyncio.run(record(known_from_list=True))
    assert again == [], f"{len(again)} requests for Layers that were already recorded: {again}"
