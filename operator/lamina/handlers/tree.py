"""Status writes: what the reconcile loop decided, written where it differs.

Events carry no work of their own: the watches (:mod:`lamina.handlers.image_watch`,
:mod:`lamina.handlers.layer_watch`) have already put the new object in the store and told the
loop what changed.  The loop decides the statuses that change can affect in one pass and
:class:`StatusWriter` writes those that differ, at most once per object per pass;
each answer goes into the operator's view at once, so the next pass never rewrites it from a
stale index.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from lamina.api.image import ImageStatus
from lamina.api.layer import LayerStatus
from lamina.domain.reconcile import ClusterState, WriteStatus
from lamina.handlers.api_errors import api_error
from lamina.handlers.indexes import image_record, layer_record
from lamina.handlers.metrics import STATUS_PATCH_FAILURES, STATUS_PATCHES
from lamina.handlers.state import ClusterView
from lamina.kube import Kube

# Status writes in flight at once: enough to settle thousands of objects quickly, few enough
# not to crowd the API server.
_IN_FLIGHT = 16


@dataclass
class StatusWriter:
    kube: Kube
    view: ClusterView | None = None

    async def write(
        self,
        writes: Sequence[WriteStatus],
        state: ClusterState,
        logger: Any,
        seconds: float | None = None,
    ) -> list[WriteStatus]:
        """Patch each status, a few at a time; after ``seconds`` start no more.  Returns the
        writes left for the next pass."""
        gate = asyncio.Semaphore(_IN_FLIGHT)
        deadline = None if seconds is None else time.monotonic() + seconds
        tasks: list[asyncio.Task[int]] = []
        left: list[WriteStatus] = []
        for index, write in enumerate(writes):
            await gate.acquire()
            if deadline is not None and time.monotonic() > deadline:
                gate.release()
                left = list(writes[index:])
                break
            tasks.append(asyncio.create_task(self._gated(gate, write, state, logger)))
        await asyncio.gather(*tasks)
        return left

    async def _gated(
        self, gate: asyncio.Semaphore, write: WriteStatus, state: ClusterState, logger: Any
    ) -> int:
        try:
            return await self._one(write, state, logger)
        finally:
            gate.release()

    async def _one(self, write: WriteStatus, state: ClusterState, logger: Any) -> int:
        try:
            obj = await self.kube.patch_status(
                write.plural, write.namespace, write.name, write.patch
            )
        except ApiException as error:
            STATUS_PATCH_FAILURES.labels(write.plural).inc()
            # One refused patch must not stop the others; the next pass or resync retries it.
            logger.warning(
                f"could not update status of {write.plural}/{write.namespace}/{write.name}: "
                f"{api_error(error)}"
            )
            return 0
        if obj is None:
            return 0
        STATUS_PATCHES.labels(write.plural).inc()
        if self.view is not None:
            self._remember(write, state, obj)
        return 1

    def _remember(self, write: WriteStatus, state: ClusterState, obj: dict[str, Any]) -> None:
        """Put the written object in the view (the next pass must not decide on the old one).

        Built from the record and the status the decision wanted when the object did not move
        under us (same generation): parsing every answer again was a fifth of a start's CPU.
        """
        assert self.view is not None
        meta, key = obj["metadata"], (write.namespace, write.name)
        version = str(meta.get("resourceVersion", ""))
        if write.plural == "images":
            before = state.images.get(write.namespace, {}).get(write.name)
            if before is not None and key in state.written:
                before = replace(before, status=state.written[key])
            if (
                before is not None
                and isinstance(write.desired, ImageStatus)
                and meta.get("generation") == before.generation
            ):
                after = replace(before, resource_version=version, status=write.desired)
            else:
                after = image_record(
                    write.namespace,
                    write.name,
                    obj.get("spec") or {},
                    obj.get("status") or {},
                    meta,
                )
            self.view.images.wrote(before, after, key)
            self.view.saw(after)
            return
        layer = state.layers.get(write.namespace, {}).get(write.name)
        if (
            layer is not None
            and isinstance(write.desired, LayerStatus)
            and meta.get("generation") == layer.generation
        ):
            written = replace(layer, resource_version=version, status=write.desired)
        else:
            written = layer_record(
                write.namespace, write.name, obj.get("spec") or {}, obj.get("status") or {}, meta
            )
        self.view.layers.wrote(layer, written, key)
        self.view.saw(written)
