"""The JSON merge patch (RFC 7386) that turns one status into another, or None if equal.

Statuses are decided as whole typed models; what is written is only the difference from what
the object already has, so an unchanged object costs no request, and fields another writer
owns (that the decision did not change) are never in the patch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from ``old`` to ``new``: changed keys, removed keys as null.

    Objects are diffed key by key; lists and scalars are replaced whole (as merge patch does).
    """
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if key in old and before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    patch = merge_patch(old, new)
    return patch or None


def model_patch(old: BaseModel, new: BaseModel) -> dict[str, Any] | None:
    """The merge patch from one status model to another, or None when they are equal.

    Fields are compared as models first, and only the fields that differ are serialised: an
    unchanged status (the steady state) costs a comparison, not a serialisation.
    """
    changed = {name for name in type(new).model_fields if getattr(old, name) != getattr(new, name)}
    if not changed:
        return None
    dump: dict[str, Any] = {"by_alias": True, "exclude_none": True, "mode": "json"}
    before = old.model_dump(include=changed, **dump)
    after = new.model_dump(include=changed, **dump)
    return status_patch(before, after)
