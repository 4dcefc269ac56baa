"""Rebase: put an Image's own layers on its parent's new layers, without running the build.

Safe only when the result is what a rebuild would give up to the build's own side effects:
the build inputs are unchanged (only the parent moved) and the old parent is a prefix of the
image (its layers, in order, are the image's first layers).  Then the image's own layers,
diff_ids and history entries are spliced onto the new parent's.  Anything else is refused with
the reason, and the operator falls back to a full rebuild.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lamina.domain.image_annotations import InvalidLineage, rebased_annotations


@dataclass(frozen=True)
class RebaseRefused:
    reason: str


def _layer_history(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(entry) for entry in config.get("history") or []]


def _history_split(config: Mapping[str, Any], parent_layers: int) -> int:
    """Index in history where the entries after the first ``parent_layers`` layers start."""
    seen = 0
    for index, entry in enumerate(config.get("history") or []):
        if seen == parent_layers:
            return index
        if not entry.get("empty_layer", False):
            seen += 1
    return len(config.get("history") or [])


def canonical(value: Any) -> bytes:
    """The bytes pushed for a document (their sha256 is its digest)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def rebase(
    *,
    image_manifest: Mapping[str, Any],
    image_config: Mapping[str, Any],
    old_parent_manifest: Mapping[str, Any],
    new_parent_manifest: Mapping[str, Any],
    new_parent_config: Mapping[str, Any],
    new_parent_digest: str,
    new_parent_name: str,
) -> tuple[dict[str, Any], dict[str, Any]] | RebaseRefused:
    """The new (manifest, config) documents, or why rebasing is not safe.

    The manifest names the new parent as its base (``new_parent_name``, as a build would:
    :func:`lamina.domain.image_annotations.base_name`, and ``new_parent_digest``); its other
    annotations (created, ...) stay as built.

    The caller serialises the config, pushes it, and passes its descriptor to
    :func:`with_config` to finish the manifest.
    """
    image_layers = list(image_manifest.get("layers") or [])
    old_layers = [layer["digest"] for layer in old_parent_manifest.get("layers") or []]
    if [layer["digest"] for layer in image_layers[: len(old_layers)]] != old_layers:
        return RebaseRefused("the old parent's layers are not the first layers of the image")
    own_layers = image_layers[len(old_layers) :]
    image_diff_ids = list((image_config.get("rootfs") or {}).get("diff_ids") or [])
    if len(image_diff_ids) != len(image_layers):
        return RebaseRefused("the image config's diff_ids do not match its layers")
    own_diff_ids = image_diff_ids[len(old_layers) :]
    own_history = _layer_history(image_config)[_history_split(image_config, len(old_layers)) :]

    config = dict(image_config)
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": [*(new_parent_config.get("rootfs") or {}).get("diff_ids", []), *own_diff_ids],
    }
    config["history"] = [*_layer_history(new_parent_config), *own_history]
    manifest = dict(image_manifest)
    manifest["layers"] = [*new_parent_manifest.get("layers", []), *own_layers]
    try:
        manifest["annotations"] = rebased_annotations(
            manifest.get("annotations") or {},
            new_base_name=new_parent_name,
            new_base_digest=new_parent_digest,
        )
    except InvalidLineage as error:
        return RebaseRefused(str(error))
    return manifest, config


def with_config(manifest: Mapping[str, Any], descriptor: Mapping[str, Any]) -> dict[str, Any]:
    return {**manifest, "config": dict(descriptor)}


def own_layers(manifest: Mapping[str, Any], parent_manifest: Mapping[str, Any]) -> list[str]:
    """The digests of the image's own layers: those after its parent's."""
    parent = len(parent_manifest.get("layers") or [])
    return [str(layer.get("digest")) for layer in (manifest.get("layers") or [])[parent:]]
