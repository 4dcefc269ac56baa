"""Cascades and time to remediate, computed from Images' status alone.

Definitions (what the metrics measure):

- The **Automatic descendants** of an Image R are the Images below it reached through
  ``rebuild.policy: Automatic`` edges only: a Manual Image, and everything below it, waits for
  a person, and a committed Image (``spec.commit``) is never rebuilt, so neither is counted.
- A **cascade** starts when R's ``status.digest`` changes from one digest to another D while
  no ancestor of R has a cascade in progress (a rebuilt child inside a cascade is part of it,
  not a new one).  Its **size** is the number of Automatic descendants, its **depth** the
  largest number of edges from R to one of them.
- A descendant X is **on D** when every edge on the path from R to X is current: each Image's
  ``status.builtFrom.parentDigest`` equals its parent's ``status.digest``, and R's digest is
  still D.
- The cascade is **remediated** when every Automatic descendant is on D.  The **time to
  remediate** is the latest ``builtAt`` of the descendants' current digests (from
  ``status.history``) minus the ``builtAt`` of D on R.  A cascade whose root moves to another
  digest before it completes is **superseded** (counted, not timed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from lamina.domain.transitions import ImageFacts


def automatic_descendants(root: str, images: Mapping[str, ImageFacts]) -> dict[str, int]:
    """Name -> depth below ``root`` of every Automatic descendant (cycles are not followed)."""
    children: dict[str, list[str]] = defaultdict(list)
    for name, facts in images.items():
        if facts.parent_image is not None:
            children[facts.parent_image].append(name)
    found: dict[str, int] = {}
    frontier = [(root, 0)]
    while frontier:
        name, depth = frontier.pop()
        for child in sorted(children.get(name, ())):
            facts = images[child]
            if child in found or child == root or not facts.automatic or facts.committed:
                continue
            found[child] = depth + 1
            frontier.append((child, depth + 1))
    return found


@dataclass(frozen=True)
class Cascade:
    """A root's new digest on its way to every Automatic descendant."""

    root: str
    digest: str
    started_at: datetime | None
    size: int
    depth: int


def start_cascade(
    old: ImageFacts | None, new: ImageFacts, images: Mapping[str, ImageFacts], open_roots: set[str]
) -> Cascade | None:
    """The cascade that ``new``'s digest change starts, or None (first build, no descendants,
    or already inside a cascade of an ancestor)."""
    if old is None or old.digest is None or new.digest is None or old.digest == new.digest:
        return None
    ancestor, seen = new.parent_image, {new.name}
    while ancestor is not None and ancestor not in seen:
        if ancestor in open_roots:
            return None
        seen.add(ancestor)
        parent = images.get(ancestor)
        ancestor = parent.parent_image if parent is not None else None
    below = automatic_descendants(new.name, images)
    if not below:
        return None
    return Cascade(new.name, new.digest, new.built_at, len(below), max(below.values()))


@dataclass(frozen=True)
class Progress:
    done: bool
    superseded: bool
    pending: tuple[str, ...]
    seconds: float | None = None


def progress(cascade: Cascade, images: Mapping[str, ImageFacts]) -> Progress:
    """How far ``cascade`` got, and its time to remediate once done."""
    root = images.get(cascade.root)
    if root is None or root.digest != cascade.digest:
        return Progress(False, True, ())
    below = automatic_descendants(cascade.root, images)
    on_digest = {cascade.root}
    for name in sorted(below, key=lambda n: (below[n], n)):  # parents before children
        facts = images[name]
        parent = images.get(facts.parent_image or "")
        if (
            parent is not None
            and facts.parent_image in on_digest
            and facts.built_on == parent.digest
        ):
            on_digest.add(name)
    pending = sorted(name for name in below if name not in on_digest)
    if pending:
        return Progress(False, False, tuple(pending))
    finished = [images[name].built_at for name in below]
    if cascade.started_at is None or any(at is None for at in finished):
        return Progress(True, False, ())
    latest = max(at for at in finished if at is not None)
    return Progress(True, False, (), max(0.0, (latest - cascade.started_at).total_seconds()))
