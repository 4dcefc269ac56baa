"""A diff-base storage for an operator with no change-detecting handlers: nothing to build.

kopf builds every watched object's "essence" (a deep copy of its body, less some fields) on
every event, to diff it with the last handled one for on.create/on.update/on.resume handlers.
Lamina has none of those (only event handlers and indexes), so that copy was pure cost: a
twentieth of a first start's CPU on thousands of objects.  :func:`needed` says whether a
handler that would need the diff base is registered; setup keeps kopf's own storage then.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def needed(registry: Any | None = None) -> bool:
    """Whether any registered handler detects changes (and so needs a real diff base)."""
    registry = registry if registry is not None else kopf.get_default_registry()
    changing = getattr(registry, "_changing", None)
    if changing is None:
        return True  # a kopf that does not look as expected: keep its storage
    return bool(changing.get_all_handlers())
