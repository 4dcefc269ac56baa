"""Layer objects for an image that landed in the registry (a build, a rebase or a commit).

One Layer per digest and namespace.  It carries no owner references: one per Image would make
a base layer shared by thousands of Images a large object rewritten on every new user (etcd
refuses objects over 1.5 MiB).  Instead the operator labels the Layers it creates and the
reconcile pass collects them once no Image of the namespace contains them.

Recording is idempotent and batched: a Layer the operator already knows with the same facts
costs no request, so an image seen again costs none; new Layers are created a few at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from lamina.api.layer import LayerStatus
from lamina.api.meta import API_VERSION
from lamina.domain.build_job import MANAGED_BY
from lamina.domain.manifest_facts import LayerFact
from lamina.domain.snapshot import LayerRecord
from lamina.domain.status_diff import status_patch
from lamina.handlers.indexes import MANAGED_BY_LABEL, layer_record
from lamina.handlers.state import current_view
from lamina.kube import Kube

_IN_FLIGHT = 8


def _facts_status(fact: LayerFact, current: LayerStatus) -> LayerStatus:
    return current.model_copy(
        update={
            "digest": fact.digest,
            "size": fact.size,
            "media_type": fact.media_type,
            "diff_id": fact.diff_id,
            "created_by": fact.created_by,
        }
    )


async def _ensure_one(
    kube: Kube, namespace: str, fact: LayerFact, known: LayerRecord | None
) -> LayerRecord | None:
    """Create the Layer if absent, write its facts if they differ; the record we wrote."""
    if known is None:
        await kube.create_object(
            "layers",
            namespace,
            {
                "apiVersion": API_VERSION,
                "kind": "Layer",
                "metadata": {"name": fact.name, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            },
        )
    current = known.status if known is not None else LayerStatus()
    patch = status_patch(current.wire(), _facts_status(fact, current).wire())
    if patch is None:
        return None
    obj = await kube.patch_status("layers", namespace, fact.name, patch)
    if obj is None:  # collected between our look and this patch: make it again, once
        return await _ensure_one(kube, namespace, fact, None) if known is not None else None
    return layer_record(
        namespace, fact.name, obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    )


async def ensure_layers(
    kube: Kube,
    namespace: str,
    image_meta: Mapping[str, Any] | None,
    facts: Iterable[LayerFact],
    known: Mapping[str, LayerRecord] | None = None,
) -> list[LayerRecord]:
    """Make each fact a Layer object; the records written (for the operator's view).

    ``known``: the namespace's Layers as the operator sees them (default: the running
    operator's view).  ``image_meta`` is kept for callers; Layers no longer name their users.
    """
    view = current_view()
    if known is None:
        known = view.layers_of(namespace) if view is not None and view.attached else {}
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def one(fact: LayerFact) -> LayerRecord | None:
        async with gate:
            return await _ensure_one(kube, namespace, fact, known.get(fact.name))

    unique = {fact.name: fact for fact in facts}
    results = await asyncio.gather(*(one(fact) for fact in unique.values()))
    written = [record for record in results if record is not None]
    if view is not None:
        for record in written:
            view.layers.wrote(known.get(record.name), record, (namespace, record.name))
    return written
