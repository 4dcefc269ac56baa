"""The Image tree of one namespace: parents, children, ancestry, cycles.

Images point at their parent by name, so the graph may contain what a tree must not: a
parent that does not exist (yet) and cycles.  Both are reported, never followed forever:
every walk here carries a visited set, and none recurses (a chain of thousands of Images is
fine).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property


@dataclass(frozen=True)
class ImageNode:
    """What the tree needs to know about one Image."""

    name: str
    parent_image: str | None = None
    parent_ref: str | None = None
    digest: str | None = None
    # The digest an external parent ref resolved to (status.parent.digest).
    parent_ref_digest: str | None = None
    # The ContainerCommit this Image records (spec.commit), if it is a snapshot.
    committed_by: str | None = None


@dataclass(frozen=True)
class Ancestry:
    """The walk from an Image up to its root.

    ``chain`` holds the existing ancestors, nearest first.  The walk ends in one of three ways:
    at an external ``root_ref`` (or an Image with neither), at a ``missing`` Image name, or in
    a ``cycle`` (the Images of the loop, in parent order, starting where the walk entered it).
    """

    chain: tuple[ImageNode, ...]
    root_ref: str | None = None
    root_ref_digest: str | None = None
    missing: str | None = None
    missing_from: str | None = None
    cycle: tuple[str, ...] | None = None


class ImageGraph:
    """An immutable snapshot of the Images of one namespace."""

    def __init__(self, nodes: Iterable[ImageNode]) -> None:
        self.nodes: Mapping[str, ImageNode] = {node.name: node for node in nodes}
        self._ancestries: dict[str, Ancestry] = {}

    @cached_property
    def _children(self) -> Mapping[str, tuple[str, ...]]:
        children: dict[str, list[str]] = defaultdict(list)
        for node in self.nodes.values():
            if node.parent_image is not None:
                children[node.parent_image].append(node.name)
        return {parent: tuple(sorted(names)) for parent, names in children.items()}

    def children(self, name: str) -> tuple[str, ...]:
        """Images whose parent is ``name`` (whether or not ``name`` exists)."""
        return self._children.get(name, ())

    def descendants(self, name: str) -> list[str]:
        """Every Image below ``name``, breadth first (so parents before children)."""
        seen = {name}
        order: list[str] = []
        frontier = list(self.children(name))
        while frontier:
            following: list[str] = []
            for child in frontier:
                if child in seen:
                    continue
                seen.add(child)
                order.append(child)
                following.extend(self.children(child))
            frontier = following
        return order

    def ancestry(self, name: str) -> Ancestry:
        """Walk up from ``name``; see :class:`Ancestry` for how the walk can end.

        Iterative and memoised: a 1,000-Image chain costs one walk, not one per Image, and never
        meets Python's recursion limit.  Walks that meet a cycle are not memoised (the cycle is
        spelled from where each walk entered it).
        """
        known = self._ancestries
        if name in known:
            return known[name]
        path = [name]
        on_path = {name}
        current = self.nodes[name]
        while True:
            parent_name = current.parent_image
            if parent_name is None:
                top = Ancestry(
                    chain=(), root_ref=current.parent_ref, root_ref_digest=current.parent_ref_digest
                )
                break
            if parent_name in on_path:
                return self._walk_into_cycle(name)
            if parent_name in known:  # never a cycle: those are not memoised
                above = known[parent_name]
                top = replace(above, chain=(self.nodes[parent_name], *above.chain))
                break
            parent = self.nodes.get(parent_name)
            if parent is None:
                top = Ancestry(chain=(), missing=parent_name, missing_from=current.name)
                break
            path.append(parent_name)
            on_path.add(parent_name)
            current = parent
        # ``top`` is the ancestry of path[-1]; each Image below prepends its parent.
        known[path[-1]] = top
        for child, parent_name in zip(reversed(path[:-1]), reversed(path[1:]), strict=True):
            above = known[parent_name]
            known[child] = replace(above, chain=(self.nodes[parent_name], *above.chain))
        return known[name]

    def _walk_into_cycle(self, name: str) -> Ancestry:
        path = [name]
        index = {name: 0}
        chain: list[ImageNode] = []
        current = self.nodes[name]
        while current.parent_image is not None:
            parent_name = current.parent_image
            if parent_name in index:
                loop = path[index[parent_name] :]
                return Ancestry(chain=tuple(chain), cycle=(*loop, parent_name))
            parent = self.nodes.get(parent_name)
            if parent is None:
                return Ancestry(chain=tuple(chain), missing=parent_name, missing_from=current.name)
            chain.append(parent)
            index[parent_name] = len(path)
            path.append(parent_name)
            current = parent
        return Ancestry(
            chain=tuple(chain),
            root_ref=current.parent_ref,
            root_ref_digest=current.parent_ref_digest,
        )
