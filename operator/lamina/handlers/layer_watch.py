"""The Layers (and Images) of the served namespaces, kept by the operator's own watches.

Layers are most of the objects (about four per Image) and the operator has no handler for
them: it only needs to know what each says.  Through kopf, every Layer event went through its
per-object machinery (a worker, the index's handler invocation, a diff base, a wait until all
indexes are full with the event's whole body held): most of a start's CPU and peak memory on
20,000 Layers.  Here the listing comes in pages, each object is read into a small
:class:`LayerRecord` at once and its body dropped, and an event costs one parse.

The store answers like a kopf index (``store.get(namespace)`` gives the namespace's records),
so :class:`lamina.handlers.state.ClusterView` reads both the same way; the loop starts once
every scope has been listed, and a watch that ends is resumed, or relisted on 410 Gone.
Images are kept the same way (:mod:`lamina.handlers.image_watch`), for the same reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kubernetes_asyncio.client.exceptions import ApiException

from lamina.api.meta import GROUP, VERSION
from lamina.domain.changes import Changes
from lamina.domain.snapshot import ImageRecord, LayerRecord
from lamina.handlers.indexes import layer_record
from lamina.handlers.metrics import EVENTS
from lamina.kube import Kube

Record = TypeVar("Record", ImageRecord, LayerRecord)

RETRY_SECONDS = 5.0
PAGE = 500


def record_of(obj: Mapping[str, Any]) -> LayerRecord:
    meta = obj.get("metadata") or {}
    return layer_record(
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        obj.get("spec") or {},
        obj.get("status") or {},
        meta,
    )


class RecordStore(Generic[Record]):
    """Per namespace, the records by name; ``ready`` once every scope was listed."""

    def __init__(self, scopes: Iterable[str | None]) -> None:
        self.scopes = list(scopes)
        self.listed: set[str | None] = set()
        self._namespaces: dict[str, dict[str, Record]] = {}

    @property
    def ready(self) -> bool:
        return all(scope in self.listed for scope in self.scopes)

    def get(self, namespace: str, default: Any = ()) -> Any:
        found = self._namespaces.get(namespace)
        return found.values() if found else default

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._namespaces))

    def put(self, record: Record) -> None:
        self._namespaces.setdefault(record.namespace, {})[record.name] = record

    def drop(self, namespace: str, name: str) -> None:
        found = self._namespaces.get(namespace)
        if found is not None:
            found.pop(name, None)
            if not found:
                del self._namespaces[namespace]

    def in_scope(self, scope: str | None) -> list[tuple[str, str]]:
        return [
            (namespace, name)
            for namespace, records in self._namespaces.items()
            if scope is None or namespace == scope
            for name in records
        ]


LayerStore = RecordStore[LayerRecord]

# What an event changes for the loop: (namespace, changes) to touch.
Touch = Callable[[str, Changes], None]
# Called with each event (ADDED, MODIFIED, DELETED; a listed object is ADDED) and the object,
# after the store holds it: for readers of the whole body (the Events about transitions).
OnEvent = Callable[[str, Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Watched(Generic[Record]):
    """One kind of object the operator keeps a store of."""

    plural: str
    parse: Callable[[Mapping[str, Any]], Record]
    on_event: OnEvent | None = None
    kind: str = ""  # for the stand-in body of an object deleted while not watched


async def _list(
    kube: Kube,
    kind: Watched[Record],
    scope: str | None,
    *,
    store: RecordStore[Record],
    saw: Any,
    touch: Touch,
) -> str:
    """List the scope afresh into the store; returns the resourceVersion to watch from."""
    # Everything in the store for the scope, also what an earlier attempt that failed half
    # way put there: what this listing does not find is gone.
    before = set(store.in_scope(scope))
    version = ""
    async with contextlib.aclosing(kube.list_pages(kind.plural, scope, PAGE)) as pages:
        async for items, listed_at in pages:
            version = listed_at or version
            for obj in items:
                record = kind.parse(obj)
                before.discard((record.namespace, record.name))
                store.put(record)
                touch(record.namespace, saw.saw(record))
                if kind.on_event is not None:
                    await kind.on_event("ADDED", obj)
    for namespace, name in before:  # gone while we were not watching
        store.drop(namespace, name)
        touch(namespace, saw.forget(kind.plural, namespace, name))
        if kind.on_event is not None:
            gone = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": kind.kind,
                "metadata": {"namespace": namespace, "name": name},
            }
            await kind.on_event("DELETED", gone)
    store.listed.add(scope)
    return version


async def watch_records(
    kube: Kube,
    kind: Watched[Record],
    scope: str | None,
    *,
    store: RecordStore[Record],
    saw: Any,
    touch: Touch,
    logger: Any,
) -> None:
    """Keep ``store`` current for ``scope`` (a namespace, or None: all), forever.

    ``saw``: the view that says what an event changes (``saw``/``forget``); ``touch``: tells
    the loop.
    """
    version = ""
    what = f"{kind.plural} in {scope or 'all namespaces'}"
    while True:
        try:
            if not version:
                version = await _list(kube, kind, scope, store=store, saw=saw, touch=touch)
                touch_ready(touch)
            async for event, obj in kube.watch_objects(kind.plural, scope, version):
                meta = obj.get("metadata") or {}
                # A bookmark moves the version on too: a watch resumed after a quiet spell
                # starts from it, not from one the server no longer has (410: a relist).
                version = str(meta.get("resourceVersion") or version)
                if event == "BOOKMARK":
                    continue
                EVENTS.labels(kind.plural).inc()
                namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
                if event == "DELETED":
                    store.drop(namespace, name)
                    touch(namespace, saw.forget(kind.plural, namespace, name))
                elif event in ("ADDED", "MODIFIED"):
                    record = kind.parse(obj)
                    store.put(record)
                    touch(namespace, saw.saw(record))
                else:
                    continue
                if kind.on_event is not None:
                    await kind.on_event(event, obj)
        except ApiException as error:
            if error.status == 410:  # the watch is too old: relist at once
                version = ""
                continue
            logger.warning(
                f"watching {what}: {error.status} {error.reason}; again in {RETRY_SECONDS:.0f}s"
            )
            await asyncio.sleep(RETRY_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a lost connection, a timeout: the watch must go on
            logger.warning(f"watching {what}: {error!r}; again in {RETRY_SECONDS:.0f}s")
            await asyncio.sleep(RETRY_SECONDS)


LAYERS: Watched[LayerRecord] = Watched("layers", record_of)


async def watch_layers(
    kube: Kube, scope: str | None, *, store: LayerStore, saw: Any, touch: Touch, logger: Any
) -> None:
    await watch_records(kube, LAYERS, scope, store=store, saw=saw, touch=touch, logger=logger)


def touch_ready(touch: Touch) -> None:
    """A scope was listed: the loop may be waiting for that to start."""
    touch("", Changes())
