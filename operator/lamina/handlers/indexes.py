"""In-memory indexes of Images and Layers, per namespace, kept by kopf from its watches.

Tree decisions need the whole namespace (a parent, the children, a cycle); reading it from the
API on each event would cost a list request per event.  kopf keeps these indexes current from
the same watch streams that trigger the handlers, at no extra request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from lamina.api.image import ImageStatus
from lamina.api.layer import LayerStatus
from lamina.api.meta import GROUP, VERSION
from lamina.domain.builds import BuildState
from lamina.domain.graph import ImageNode
from lamina.domain.layers import Advisory
from lamina.domain.rebuild import REBUILD_ANNOTATION, BuiltFrom
from lamina.domain.snapshot import ImageRecord, LayerRecord, NamespaceSnapshot

StatusModel = TypeVar("StatusModel", bound=BaseModel)


def _parse(model: type[StatusModel], body: Mapping[str, Any]) -> StatusModel:
    """A status as the model reads it; a status someone mangled by hand reads as empty."""
    try:
        return model.model_validate(dict(body))
    except ValidationError:
        return model()


def image_record(
    name: str, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any]
) -> ImageRecord:
    """What the tree needs of one Image object."""
    parent = spec.get("parent") or {}
    parsed = _parse(ImageStatus, status)
    resolved = parsed.resolved
    current_ref_digest = (
        resolved.digest if resolved is not None and resolved.ref == parent.get("ref") else None
    )
    node = ImageNode(
        name=name,
        parent_image=parent.get("image"),
        parent_ref=parent.get("ref"),
        digest=parsed.digest,
        parent_ref_digest=current_ref_digest,
        committed_by=(spec.get("commit") or {}).get("name"),
    )
    return ImageRecord(node, meta.get("generation"), parsed, build_state(name, spec, parsed, meta))


def build_state(
    name: str, spec: Mapping[str, Any], status: ImageStatus, meta: Mapping[str, Any]
) -> BuildState:
    """What the build planner reads of one Image."""
    parent = spec.get("parent") or {}
    rebuild = spec.get("rebuild") or {}
    built = status.built_from
    resolved = status.resolved
    return BuildState(
        name=name,
        uid=str(meta.get("uid", "")),
        generation=meta.get("generation"),
        parent_image=parent.get("image"),
        parent_ref=parent.get("ref"),
        policy=rebuild.get("policy", "Automatic"),
        strategy=rebuild.get("strategy", "Rebuild"),
        trigger=(meta.get("annotations") or {}).get(REBUILD_ANNOTATION),
        committed=spec.get("commit") is not None,
        digest=status.digest,
        built_from=BuiltFrom(built.generation, built.parent_digest, built.trigger)
        if built is not None
        else None,
        # A resolution of an earlier ref says nothing about the current one.
        resolved_digest=resolved.digest
        if resolved is not None and resolved.ref == parent.get("ref")
        else None,
        build_phase=status.build.phase if status.build else None,
        build_inputs=status.build.inputs if status.build else None,
        created=str(meta.get("creationTimestamp", "")),
    )


def layer_record(
    name: str, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any]
) -> LayerRecord:
    """What usage and advisories need of one Layer object."""
    advisory = spec.get("advisory")
    return LayerRecord(
        name=name,
        generation=meta.get("generation"),
        advisory=Advisory(advisory.get("id", ""), advisory.get("severity", "Unknown"))
        if advisory
        else None,
        status=_parse(LayerStatus, status),
    )


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
    return {namespace: image_record(name, spec, status, meta)}


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
    return {namespace: layer_record(name, spec, status, meta)}


def snapshot(namespace: str, image_index: Any, layer_index: Any) -> NamespaceSnapshot:
    """The namespace as the indexes hold it now."""
    return NamespaceSnapshot(
        namespace, image_index.get(namespace, ()), layer_index.get(namespace, ())
    )
