"""Rebase: put an Image's own layers on its parent's new layers, without running the build.

Safe only when the result is what a rebuild would give up to the build's own side effects:
the build inputs are unchanged (only the parent moved) and the old parent is a prefix of the
image (its layers, in order, are the image's first layers).  Then the image's own layers,
diff_ids and history entries are spliced onto the new parent's.  Anything else is refused with
the reason, and the operator falls back to a full rebuild.

Every document is registry input (the new parent's come from a registry the tenant picks, only
their digests are checked): one of the wrong shape is a refusal too, never an exception the
handler would have to know about.
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


class _Malformed(ValueError):
    """A document of the wrong shape: the rebase is refused with this text."""


def _list(document: Mapping[str, Any], key: str, what: str) -> list[Any]:
    found = document.get(key) if isinstance(document, Mapping) else None
    if found is None:
        return []
    if not isinstance(found, list):
        raise _Malformed(f"in {what}, {key} is not a list")
    return found


def config_digest(manifest: Any, what: str) -> str:
    """The digest a manifest names for its config; a registry's answer of another shape is
    refused here (a ValueError naming ``what``) rather than failing deeper as a TypeError."""
    config = manifest.get("config") if isinstance(manifest, Mapping) else None
    digest = config.get("digest") if isinstance(config, Mapping) else None
    if not isinstance(digest, str):
        raise _Malformed(f"the {what} manifest names no config digest")
    return digest


def _layers(manifest: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    """The manifest's layer descriptors, each an object with a string digest."""
    layers = _list(manifest, "layers", f"the {what} manifest")
    if not all(
        isinstance(layer, Mapping) and isinstance(layer.get("digest"), str) for layer in layers
    ):
        raise _Malformed(f"the {what} manifest has a layer that is not a descriptor")
    return [dict(layer) for layer in layers]


def _diff_ids(config: Mapping[str, Any], what: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, Mapping) else None
    if rootfs is None:
        return []
    if not isinstance(rootfs, Mapping):
        raise _Malformed(f"the {what} config has a rootfs that is not an object")
    diff_ids = _list(rootfs, "diff_ids", f"the {what} config's rootfs")
    if not all(isinstance(diff_id, str) for diff_id in diff_ids):
        raise _Malformed(f"the {what} config has a diff_id that is not a string")
    return diff_ids


def _layer_history(config: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    history = _list(config, "history", f"the {what} config")
    if not all(isinstance(entry, Mapping) for entry in history):
        raise _Malformed(f"the {what} config has a history entry that is not an object")
    return [dict(entry) for entry in history]


def _history_split(history: list[dict[str, Any]], parent_layers: int) -> int:
    """Index in history where the entries after the first ``parent_layers`` layers start."""
    seen = 0
    for index, entry in enumerate(history):
        if seen == parent_layers:
            return index
        if not entry.get("empty_layer", False):
            seen += 1
    return len(history)


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
    try:
        image_layers = _layers(image_manifest, "image")
        old_layers = [layer["digest"] for layer in _layers(old_parent_manifest, "old parent")]
        new_parent_layers = _layers(new_parent_manifest, "new parent")
        image_diff_ids = _diff_ids(image_config, "image")
        new_parent_diff_ids = _diff_ids(new_parent_config, "new parent")
        image_history = _layer_history(image_config, "image")
        new_parent_history = _layer_history(new_parent_config, "new parent")
    except _Malformed as error:
        return RebaseRefused(str(error))
    if [layer["digest"] for layer in image_layers[: len(old_layers)]] != old_layers:
        return RebaseRefused("the old parent's layers are not the first layers of the image")
    own_layers = image_layers[len(old_layers) :]
    if len(image_diff_ids) != len(image_layers):
        return RebaseRefused("the image config's diff_ids do not match its layers")
    if len(new_parent_diff_ids) != len(new_parent_layers):
        return RebaseRefused("the new parent config's diff_ids do not match its layers")
    own_diff_ids = image_diff_ids[len(old_layers) :]
    own_history = image_history[_history_split(image_history, len(old_layers)) :]

    config = dict(image_config)
    config["rootfs"] = {"type": "layers", "diff_ids": [*new_parent_diff_ids, *own_diff_ids]}
    config["history"] = [*new_parent_history, *own_history]
    manifest = dict(image_manifest)
    manifest["layers"] = [*new_parent_layers, *own_layers]
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
