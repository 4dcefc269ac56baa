"""The Images of the served namespaces, kept by the operator's own paged list and watch.

Through kopf (an index and event handlers), each Image's event went through its per-object
machinery: a worker task, a body wrapper, handler invocations, and, during the initial
listing, the whole body held by every worker until all indexes were full.  At 5,000 Images
that was most of a restart (over a minute before a new Image was looked at) and of the peak
memory.  Here, as for Layers (:mod:`lamina.handlers.layer_watch`), the listing comes in
pages, each object is read into an :class:`ImageRecord` at once, the loop is told what
changed, and the body goes to the one other reader of whole Images (the Events about status
transitions, :mod:`lamina.handlers.transitions`) before it is dropped.  Deletions come from
the same watch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.domain.snapshot import ImageRecord
from lamina.handlers.indexes import image_record
from lamina.handlers.layer_watch import OnEvent, RecordStore, Touch, Watched, watch_records
from lamina.kube import Kube

ImageStore = RecordStore[ImageRecord]


def record_of(obj: Mapping[str, Any]) -> ImageRecord:
    meta = obj.get("metadata") or {}
    return image_record(
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        obj.get("spec") or {},
        obj.get("status") or {},
        meta,
    )


async def watch_images(
    kube: Kube,
    scope: str | None,
    *,
    store: ImageStore,
    saw: Any,
    touch: Touch,
    logger: Any,
    on_event: OnEvent | None = None,
) -> None:
    kind = Watched("images", record_of, on_event, kind="Image")
    await watch_records(kube, kind, scope, store=store, saw=saw, touch=touch, logger=logger)
