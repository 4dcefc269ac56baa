"""A periodic full resync: the safety net for a status patch lost to an API error.

Event handlers fix an object when it or an ancestor changes; a patch that failed is retried
only on the next such event.  So every ``resync_seconds`` the operator lists each namespace's
Images and Layers afresh (two LIST requests per watched scope, not one per object) and writes
whatever differs.  kopf's own timers are not used for this: they put a finalizer on every
object, which would block namespace deletion whenever the operator is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any

from lamina.domain.snapshot import ImageRecord, LayerRecord, NamespaceSnapshot
from lamina.handlers.indexes import image_record, layer_record
from lamina.handlers.tree import sync
from lamina.kube import Kube


async def resync_once(kube: Kube, namespaces: list[str], logger: Any) -> None:
    images: dict[str, list[ImageRecord]] = defaultdict(list)
    layers: dict[str, list[LayerRecord]] = defaultdict(list)
    scopes: list[str | None] = [*namespaces] or [None]
    for scope in scopes:
        for obj in await kube.list_objects("images", scope):
            meta = obj["metadata"]
            images[meta["namespace"]].append(
                image_record(meta["name"], obj.get("spec") or {}, obj.get("status") or {}, meta)
            )
        for obj in await kube.list_objects("layers", scope):
            meta = obj["metadata"]
            layers[meta["namespace"]].append(
                layer_record(meta["name"], obj.get("spec") or {}, obj.get("status") or {}, meta)
            )
    for namespace in sorted(set(images) | set(layers)):
        view = NamespaceSnapshot(namespace, images[namespace], layers[namespace])
        await sync(view, kube, list(view.images), list(view.layers), logger)


async def resync_forever(kube: Kube, namespaces: list[str], every: float, logger: Any) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await resync_once(kube, namespaces, logger)
        except Exception as error:
            logger.warning(f"periodic resync failed, retrying in {every:.0f}s: {error}")


def start(memo: Any, logger: Any) -> None:
    """Start the loop as a task kept in ``memo``, when a period is configured."""
    config = memo.config
    if config.resync_seconds > 0:
        memo.resync = asyncio.create_task(
            resync_forever(memo.kube, config.namespaces, config.resync_seconds, logger)
        )


async def stop(memo: Any) -> None:
    task: asyncio.Task[None] | None = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
