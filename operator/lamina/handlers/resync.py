"""A periodic full resync: the safety net for a status patch lost to an API error.

The loop renders a namespace's statuses when something in it changes; a patch that failed is
retried only on the next change.  So every ``resync_seconds`` the operator lists each scope's
Images and Layers afresh (LIST requests in pages per watched scope, not one per object: the only
relist the operator makes) and runs one pass on that state, which writes whatever differs.
kopf's own timers are not used for this: they put a finalizer on every object, which would
block namespace deletion whenever the operator is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from lamina.domain.reconcile import ClusterState
from lamina.domain.snapshot import ImageRecord, LayerRecord
from lamina.handlers.indexes import image_record, layer_record
from lamina.handlers.layer_watch import PAGE
from lamina.handlers.loop import Reconciler
from lamina.handlers.state import ClusterView
from lamina.handlers.tree import StatusWriter
from lamina.kube import Kube


async def listed_state(kube: Kube, namespaces: list[str], base: ClusterState) -> ClusterState:
    """``base`` with its Images and Layers replaced by a fresh LIST of each scope."""
    images: dict[str, dict[str, ImageRecord]] = defaultdict(dict)
    layers: dict[str, dict[str, LayerRecord]] = defaultdict(dict)
    scopes: list[str | None] = [*namespaces] or [None]
    # In pages, each read into its record at once: the whole listing's bodies at once were
    # the operator's peak memory on thousands of objects.
    for scope in scopes:
        async for page, _ in kube.list_pages("images", scope, PAGE):
            for obj in page:
                meta = obj["metadata"]
                ns, name = meta["namespace"], meta["name"]
                images[ns][name] = image_record(
                    ns, name, obj.get("spec") or {}, obj.get("status") or {}, meta
                )
        async for page, _ in kube.list_pages("layers", scope, PAGE):
            for obj in page:
                meta = obj["metadata"]
                ns, name = meta["namespace"], meta["name"]
                layers[ns][name] = layer_record(
                    ns, name, obj.get("spec") or {}, obj.get("status") or {}, meta
                )
    return ClusterState(
        now=base.now,
        images=dict(images),
        layers=dict(layers),
        jobs=base.jobs,
        limit=base.limit,
        namespace_limit=base.namespace_limit,
        rebase_refused=base.rebase_refused,
        failures=base.failures,
        polled=base.polled,
        scanning=base.scanning,
    )


async def resync_once(
    kube: Kube, namespaces: list[str], logger: Any, reconciler: Reconciler | None = None
) -> None:
    """One pass on a fresh LIST.  Without a running operator's ``reconciler``, it writes
    statuses only (no builds start: that is the operator's loop's job)."""
    if reconciler is None:
        reconciler = Reconciler(ClusterView(), StatusWriter(kube), None, limit=0, poll_seconds=0)
    now = datetime.now(UTC).replace(microsecond=0)
    base = reconciler.view.state(
        now,
        reconciler.limit,
        reconciler.rebase_refused,
        reconciler.failures,
        namespace_limit=reconciler.namespace_limit,
    )
    await reconciler.run_pass(None, logger, await listed_state(kube, namespaces, base))


async def resync_forever(
    kube: Kube, namespaces: list[str], every: float, reconciler: Reconciler, logger: Any
) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await resync_once(kube, namespaces, logger, reconciler)
        except Exception as error:
            logger.warning(f"periodic resync failed, retrying in {every:.0f}s: {error}")


def start(memo: Any, logger: Any) -> None:
    """Start the loop as a task kept in ``memo``, when a period is configured."""
    config = memo.config
    if config.resync_seconds > 0:
        memo.resync = asyncio.create_task(
            resync_forever(
                memo.kube, config.namespaces, config.resync_seconds, memo.reconciler, logger
            )
        )


async def stop(memo: Any) -> None:
    task: asyncio.Task[None] | None = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
