"""What an image manifest and config say about its layers, in the shape status needs.

Used wherever an image lands in the registry (a commit, later a build): the layers become
``status.layers`` of the Image and one Layer object each, with ``createdBy`` taken from the
config history (entries marked ``empty_layer`` made no layer and are skipped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lamina.domain.layers import layer_name


@dataclass(frozen=True)
class LayerFact:
    digest: str
    diff_id: str | None
    size: int
    media_type: str
    created_by: str | None
    own: bool

    @property
    def name(self) -> str:
        return layer_name(self.digest)

    def image_layer(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "own": self.own}

    def layer_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "digest": self.digest,
            "size": self.size,
            "mediaType": self.media_type,
        }
        if self.diff_id is not None:
            status["diffID"] = self.diff_id
        if self.created_by is not None:
            status["createdBy"] = self.created_by
        return status


def layer_facts(
    manifest: Mapping[str, Any], config: Mapping[str, Any], inherited: int
) -> list[LayerFact]:
    """The manifest's layers, bottom first; the first ``inherited`` came from the parent."""
    layers: Sequence[Mapping[str, Any]] = manifest.get("layers") or []
    diff_ids: Sequence[str] = (config.get("rootfs") or {}).get("diff_ids") or []
    history = [
        entry for entry in config.get("history") or [] if not entry.get("empty_layer", False)
    ]
    facts = []
    for index, layer in enumerate(layers):
        entry = history[index] if index < len(history) else {}
        facts.append(
            LayerFact(
                digest=str(layer["digest"]),
                diff_id=diff_ids[index] if index < len(diff_ids) else None,
                size=int(layer.get("size", 0)),
                media_type=str(layer.get("mediaType", "")),
                created_by=entry.get("created_by"),
                own=index >= inherited,
            )
        )
    return facts
