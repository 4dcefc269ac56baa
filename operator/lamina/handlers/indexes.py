"""In-memory indexes of Images and Layers, per namespace, kept by kopf from its watches.

Tree decisions need the whole namespace (a parent, the children, a cycle); reading it from the
API on each event would cost a list request per event.  kopf keeps these indexes current from
the same watch streams that trigger the handlers, at no extra request.
"""

from __future__ import annotations

from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from lamina.api.image import ImageStatus
from lamina.api.layer import LayerStatus
from lamina.api.meta import GROUP, VERSION
from lamina.domain.graph import ImageNode
from lamina.domain.layers import Advisory
from lamina.domain.snapshot import ImageRecord, LayerRecord, NamespaceSnapshot

StatusModel = TypeVar("StatusModel", bound=BaseModel)


def _parse(model: type[StatusModel], body: kopf.Status) -> StatusModel:
    """A status as the model reads it; a status someone mangled by hand reads as empty."""
    try:
        return model.model_validate(dict(body))
    except ValidationError:
        return model()


@kopf.index(GROUP, VERSION, "images")
def image_index(
    *,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    **_: Any,
) -> dict[str | None, ImageRecord]:
    parent = spec.get("parent") or {}
    parsed = _parse(ImageStatus, status)
    external = parsed.parent is not None and parsed.parent.ref is not None
    node = ImageNode(
        name=name,
        parent_image=parent.get("image"),
        parent_ref=parent.get("ref"),
        digest=parsed.digest,
        parent_ref_digest=parsed.parent.digest if external and parsed.parent else None,
    )
    return {namespace: ImageRecord(node, meta.get("generation"), parsed)}


@kopf.index(GROUP, VERSION, "layers")
def layer_index(
    *,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    **_: Any,
) -> dict[str | None, LayerRecord]:
    advisory = spec.get("advisory")
    return {
        namespace: LayerRecord(
            name=name,
            generation=meta.get("generation"),
            advisory=Advisory(advisory.get("id", ""), advisory.get("severity", "Unknown"))
            if advisory
            else None,
            status=_parse(LayerStatus, status),
        )
    }


def snapshot(namespace: str, image_index: Any, layer_index: Any) -> NamespaceSnapshot:
    """The namespace as the indexes hold it now."""
    return NamespaceSnapshot(
        namespace, image_index.get(namespace, ()), layer_index.get(namespace, ())
    )
