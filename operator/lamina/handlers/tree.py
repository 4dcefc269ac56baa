"""Image and Layer handlers: keep tree-derived status (lineage, Stalled, Vulnerable, usage) true.

An event on one object can change the status of others: an Image's lineage names every
ancestor, a Layer's advisory flags every Image containing it.  So each event recomputes the
status of everything it affects, from the indexes, and patches what differs.  A patch causes
another event, which finds nothing to change: the loop ends after one round.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from lamina.api.meta import GROUP, VERSION
from lamina.domain.snapshot import NamespaceSnapshot
from lamina.handlers import builds
from lamina.handlers.indexes import snapshot
from lamina.handlers.metrics import EVENTS, STATUS_PATCH_FAILURES, STATUS_PATCHES
from lamina.kube import Kube


async def sync(
    view: NamespaceSnapshot,
    kube: Kube,
    images: Iterable[str],
    layers: Iterable[str],
    logger: kopf.Logger,
) -> None:
    now = datetime.now(UTC)
    targets = [("images", name, view.image_patch(name, now)) for name in images]
    targets += [("layers", name, view.layer_patch(name)) for name in layers]
    for plural, name, patch in targets:
        if patch is None:
            continue
        try:
            await kube.patch_status(plural, view.namespace, name, patch)
            STATUS_PATCHES.labels(plural).inc()
        except ApiException as error:
            STATUS_PATCH_FAILURES.labels(plural).inc()
            # One failed patch must not stop the others; the next event or resync retries it.
            logger.warning(f"could not update status of {plural}/{name}: {error.reason}")


def _view(namespace: str | None, kwargs: dict[str, Any]) -> NamespaceSnapshot:
    # kopf passes each index as a keyword argument named after its function.
    return snapshot(namespace or "", kwargs["image_index"], kwargs["layer_index"])


@kopf.on.event(GROUP, VERSION, "images")
async def image_event(
    *, namespace: str | None, name: str, memo: Any, logger: kopf.Logger, **kwargs: Any
) -> None:
    EVENTS.labels("images").inc()
    builds.poke(memo)
    view = _view(namespace, kwargs)
    await sync(
        view,
        memo.kube,
        view.images_affected_by_image(name),
        view.layers_affected_by_image(name),
        logger,
    )


@kopf.on.event(GROUP, VERSION, "layers")
async def layer_event(
    *, namespace: str | None, name: str, memo: Any, logger: kopf.Logger, **kwargs: Any
) -> None:
    EVENTS.labels("layers").inc()
    view = _view(namespace, kwargs)
    own = [name] if name in view.layers else []
    await sync(view, memo.kube, view.images_affected_by_layer(name), own, logger)
