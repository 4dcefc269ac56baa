"""The cluster as the next pass must see it: the watched stores, plus the operator's own writes.

A status patch the operator just made reaches the index only when its watch event arrives; a
pass that ran in between would decide on the old status and write the same patch again (or,
worse, decide a second build).  So every write's answer (the object with its new
resourceVersion) is kept here and shown instead of the index's record while the index still
holds a version the write superseded.  Once the index has moved on (to the write's version or
anyone else's), the index wins and the entry is dropped.  The same holds for Layers and Jobs
the operator created or deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from lamina.domain.changes import Changes, image_changes, layer_changes
from lamina.domain.reconcile import ClusterState
from lamina.domain.snapshot import BuildJobRecord, Failure, ImageRecord, LayerRecord
from lamina.handlers.indexes import BUILD_JOBS

Record = TypeVar("Record", ImageRecord, LayerRecord)
Key = tuple[str, str]  # (namespace, name)


@dataclass
class _Pending(Generic[Record]):
    """Our last write of one object: shown while the index holds a version in ``stale``.

    ``record`` None: we deleted it.  ``""`` in ``stale``: the index does not have it yet.
    """

    stale: frozenset[str]
    record: Record | None


class _Overlay(Generic[Record]):
    def __init__(self) -> None:
        self.pending: dict[Key, _Pending[Record]] = {}

    def wrote(self, before: Record | None, after: Record | None, key: Key) -> None:
        earlier = self.pending.get(key)
        stale = {before.resource_version if before is not None else ""}
        if earlier is not None:
            stale |= earlier.stale
        if after is not None:
            stale.discard(after.resource_version)
        self.pending[key] = _Pending(frozenset(stale), after)

    def merge(self, namespace: str, indexed: Iterable[Record]) -> dict[str, Record]:
        """The namespace's records: the index's, with our newer writes in their place."""
        records = {record.name: record for record in indexed}
        for key, pending in list(self.pending.items()):
            if key[0] != namespace:
                continue
            seen = records.get(key[1])
            version = seen.resource_version if seen is not None else ""
            if version not in pending.stale:
                del self.pending[key]  # the index has caught up, or someone wrote after us
            elif pending.record is None:
                records.pop(key[1], None)
            else:
                records[key[1]] = pending.record
        return records

    def namespaces(self) -> set[str]:
        return {namespace for namespace, _ in self.pending}


class ClusterView:
    """The watched stores of Images, Layers and Jobs, and the operator's writes."""

    def __init__(self) -> None:
        self.image_index: Mapping[Any, Any] | None = None
        self.layer_index: Mapping[Any, Any] | None = None
        self.job_index: Mapping[Any, Any] | None = None
        self.images: _Overlay[ImageRecord] = _Overlay()
        self.layers: _Overlay[LayerRecord] = _Overlay()
        self.created_jobs: dict[str, BuildJobRecord] = {}
        self.deleted_jobs: set[str] = set()
        # What the operator last saw of each object (a watch event or its own write's
        # answer): an event is compared with it to say what changed.  References to the
        # records the indexes hold anyway, not copies.
        self.seen_images: dict[Key, ImageRecord] = {}
        self.seen_layers: dict[Key, LayerRecord] = {}
        # The operator has an SBOM scanner (lamina.handlers.scans): the decision scans.
        self.scanning = False

    def saw(self, record: ImageRecord | LayerRecord) -> Changes:
        """What seeing ``record`` (in a watch event, or our write's answer) changes."""
        key = (record.namespace, record.name)
        if isinstance(record, ImageRecord):
            before_image = self.seen_images.get(key)
            self.seen_images[key] = record
            return image_changes(before_image, record)
        before_layer = self.seen_layers.get(key)
        self.seen_layers[key] = record
        return layer_changes(before_layer, record)

    def forget(self, plural: str, namespace: str, name: str) -> Changes:
        """What the deletion of an object changes."""
        if plural == "images":
            return image_changes(self.seen_images.pop((namespace, name), None), None) or Changes(
                frozenset({name}), frozenset({name})
            )
        self.seen_layers.pop((namespace, name), None)
        return Changes(layers=frozenset({name}))

    @property
    def attached(self) -> bool:
        """Whether kopf handed over its Image index, and the Layers are listed."""
        return (
            self.image_index is not None
            and bool(getattr(self.image_index, "ready", True))
            and bool(getattr(self.layer_index, "ready", True))
        )

    def attach(self, image_index: Any, layer_index: Any | None = None) -> None:
        # In the operator all three are the operator's own watches' stores (see
        # image_watch.ImageStore, layer_watch.LayerStore, indexes.OwnBuildJobs), set at start.
        self.image_index = image_index
        if layer_index is not None:
            self.layer_index = layer_index

    def image(self, namespace: str, name: str) -> ImageRecord | None:
        return self.images_of(namespace).get(name)

    def images_of(self, namespace: str) -> dict[str, ImageRecord]:
        indexed = self.image_index.get(namespace, ()) if self.image_index is not None else ()
        return self.images.merge(namespace, indexed)

    def layers_of(self, namespace: str) -> dict[str, LayerRecord]:
        indexed = self.layer_index.get(namespace, ()) if self.layer_index is not None else ()
        return self.layers.merge(namespace, indexed)

    def jobs(self) -> dict[str, BuildJobRecord]:
        indexed = self.job_index.get(BUILD_JOBS, ()) if self.job_index is not None else ()
        jobs = {job.name: job for job in indexed}
        for name in list(self.created_jobs):
            if name in jobs:
                del self.created_jobs[name]
            else:
                jobs[name] = self.created_jobs[name]
        for name in list(self.deleted_jobs):
            if name in jobs:
                del jobs[name]
            else:
                self.deleted_jobs.discard(name)
        return jobs

    def namespaces(self) -> set[str]:
        found: set[str] = set()
        for index in (self.image_index, self.layer_index):
            if index is not None:
                found.update(key for key in index if isinstance(key, str))
        return found | self.images.namespaces() | self.layers.namespaces()

    def state(
        self,
        now: datetime,
        limit: int,
        rebase_refused: Mapping[tuple[str, str], tuple[str, str]],
        failures: Mapping[tuple[str, str, str], Failure],
        *,
        polled: Mapping[str, datetime] | None = None,
        namespace_limit: int | None = None,
    ) -> ClusterState:
        images: dict[str, dict[str, ImageRecord]] = {}
        layers: dict[str, dict[str, LayerRecord]] = {}
        for namespace in self.namespaces():
            if found := self.images_of(namespace):
                images[namespace] = found
            if found_layers := self.layers_of(namespace):
                layers[namespace] = found_layers
        return ClusterState(
            now=now,
            images=images,
            layers=layers,
            jobs=self.jobs(),
            limit=limit,
            namespace_limit=namespace_limit,
            rebase_refused=dict(rebase_refused),
            failures=dict(failures),
            polled=dict(polled or {}),
            scanning=self.scanning,
        )


# The one view of the running operator, for writers outside the loop (commit recording).
_current: ClusterView | None = None


def current_view() -> ClusterView | None:
    return _current


def install(view: ClusterView) -> None:
    global _current  # noqa: PLW0603 - one operator process, one view
    _current = view
