"""One namespace as the operator sees it, and the status patches that follow from it.

The handlers build a snapshot from kopf's indexes and ask it, per affected object, for the
status patch to write.  Everything here is pure, so the same snapshot always yields the same
patches, and a snapshot that already matches yields none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from lamina.api.image import ImageStatus
from lamina.api.layer import LayerStatus
from lamina.domain.builds import BuildPlan, BuildState, plan_namespace
from lamina.domain.graph import ImageGraph, ImageNode
from lamina.domain.image_status import decide_tree_status, image_status_patch
from lamina.domain.layers import (
    Advisory,
    ImageLayers,
    LayerUsage,
    decide_vulnerable,
    layer_digest,
)


@dataclass(frozen=True)
class ImageRecord:
    """An Image as last seen: its place in the tree and its status."""

    node: ImageNode
    generation: int | None
    status: ImageStatus
    build: BuildState | None = None

    @property
    def layers(self) -> ImageLayers:
        return ImageLayers(
            self.node.name,
            tuple((layer.digest, layer.own) for layer in self.status.layers or []),
        )


@dataclass(frozen=True)
class LayerRecord:
    """A Layer as last seen."""

    name: str
    generation: int | None
    advisory: Advisory | None
    status: LayerStatus

    @property
    def digest(self) -> str:
        return layer_digest(self.name)


class NamespaceSnapshot:
    """The Images and Layers of one namespace."""

    def __init__(
        self, namespace: str, images: Iterable[ImageRecord], layers: Iterable[LayerRecord]
    ) -> None:
        self.namespace = namespace
        self.images = {record.node.name: record for record in images}
        self.layers = {record.name: record for record in layers}
        self.graph = ImageGraph(record.node for record in self.images.values())

    @cached_property
    def _usage(self) -> dict[str, LayerUsage]:
        users: dict[str, list[str]] = {}
        introducers: dict[str, list[str]] = {}
        for record in self.images.values():
            for digest, own in record.layers.layers:
                users.setdefault(digest, []).append(record.node.name)
                if own:
                    introducers.setdefault(digest, []).append(record.node.name)
        # Two Images may build identical bytes; the first by name is the introducer, so the
        # answer never flips between reconciles.
        return {
            digest: LayerUsage(
                tuple(sorted(names)), min(introducers[digest]) if digest in introducers else None
            )
            for digest, names in users.items()
        }

    def usage(self, digest: str) -> LayerUsage:
        return self._usage.get(digest, LayerUsage((), None))

    @cached_property
    def _advisories(self) -> dict[str, Advisory]:
        return {
            record.digest: record.advisory
            for record in self.layers.values()
            if record.advisory is not None
        }

    def images_affected_by_image(self, name: str) -> list[str]:
        """The Image itself (if it still exists) and all below it: their lineage names it."""
        own = [name] if name in self.images else []
        return own + self.graph.descendants(name)

    def layers_affected_by_image(self, name: str) -> list[str]:
        """Layers the Image contains, plus Layers that still list it as a user."""
        record = self.images.get(name)
        digests = {digest for digest, _ in record.layers.layers} if record else set()
        names = {
            layer.name
            for layer in self.layers.values()
            if layer.digest in digests or name in (layer.status.used_by or [])
        }
        return sorted(names)

    def images_affected_by_layer(self, name: str) -> list[str]:
        """Images that contain the layer: an advisory on it changes their Vulnerable."""
        return list(self.usage(layer_digest(name)).used_by)

    @cached_property
    def build_plans(self) -> dict[str, BuildPlan]:
        """The build decision of every Image that carries its build state."""
        return plan_namespace(
            record.build for record in self.images.values() if record.build is not None
        )

    def image_patch(self, name: str, now: datetime) -> dict[str, Any] | None:
        record = self.images[name]
        tree = decide_tree_status(
            name, self.graph, self.namespace, self.build_plans.get(name), record.status
        )
        introducers = {digest: usage.introduced_by for digest, usage in self._usage.items()}
        vulnerable = decide_vulnerable(record.layers, self._advisories, introducers)
        return image_status_patch(
            current=record.status,
            generation=record.generation,
            tree=tree,
            extra=[vulnerable] if vulnerable is not None else [],
            now=now,
        )

    def layer_patch(self, name: str) -> dict[str, Any] | None:
        record = self.layers[name]
        usage = self.usage(record.digest)
        current = record.status
        desired = {
            "observedGeneration": record.generation,
            "digest": record.digest,
            "usedBy": list(usage.used_by),
            "usedByCount": usage.used_by_count,
            "introducedBy": usage.introduced_by,
        }
        seen = {
            "observedGeneration": current.observed_generation,
            "digest": current.digest,
            "usedBy": list(current.used_by or []),
            "usedByCount": current.used_by_count,
            "introducedBy": current.introduced_by,
        }
        return None if desired == seen else desired
