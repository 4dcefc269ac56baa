"""What changed in a namespace since the last pass, and so which statuses a pass must render.

Rendering every status of a namespace on every event is O(N) per event: with 5,000 Images and
20,000 Layers, a first start (whose own writes echo back as events) is quadratic.  So each
event says what it changed, decided here from the object before and after it, and a pass
renders only the objects whose inputs are in the change:

- an Image's status follows from itself and its ancestors (lineage, build plan), and from its
  layers' advisories: a change to an Image's tree facts (parent, digest, build) re-renders
  everything below it, any other change only the Image itself;
- a Layer's status (usage, introducer) follows from the Images that list it: an Image whose
  layers (or which of them are its own) changed re-renders those Layers only;
- an advisory (the Layer's spec) is read by the Images that use the layer, so a Layer whose
  spec is not yet observed (or that is gone) re-renders its users.

An object whose watch event shows what the operator last saw of it (the echo of its own
status write) changed nothing and renders nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lamina.domain.layers import layer_digest, layer_name
from lamina.domain.snapshot import ImageRecord, LayerRecord, NamespaceSnapshot


@dataclass(frozen=True)
class Changes:
    """What changed in one namespace: Images (and the subtrees below some), and Layers."""

    images: frozenset[str] = frozenset()
    subtrees: frozenset[str] = frozenset()
    layers: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.images or self.subtrees or self.layers)

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            self.images | other.images, self.subtrees | other.subtrees, self.layers | other.layers
        )


NOTHING = Changes()
# Per namespace, what changed; None for a namespace means: render all of it.
Dirty = Mapping[str, Changes | None]


@dataclass
class ChangeSet:
    """Changes gathered from a burst of events (mutable: one event costs O(its change), not a
    copy of everything gathered so far).  ``None`` for a namespace: all of it."""

    namespaces: dict[str, tuple[set[str], set[str], set[str]] | None] = field(default_factory=dict)

    def add(self, namespace: str, changes: Changes | None) -> None:
        if changes is None:
            self.namespaces[namespace] = None
            return
        if not changes:
            return
        if namespace not in self.namespaces:
            self.namespaces[namespace] = (set(), set(), set())
        gathered = self.namespaces[namespace]
        if gathered is not None:
            gathered[0].update(changes.images)
            gathered[1].update(changes.subtrees)
            gathered[2].update(changes.layers)

    def __bool__(self) -> bool:
        return bool(self.namespaces)

    def frozen(self) -> dict[str, Changes | None]:
        return {
            namespace: None
            if sets is None
            else Changes(frozenset(sets[0]), frozenset(sets[1]), frozenset(sets[2]))
            for namespace, sets in self.namespaces.items()
        }


def merge(*dirties: Dirty) -> dict[str, Changes | None]:
    gathered = ChangeSet()
    for dirty in dirties:
        for namespace, changes in dirty.items():
            gathered.add(namespace, changes)
    return gathered.frozen()


def _layer_marks(record: ImageRecord | None) -> frozenset[tuple[str, bool]]:
    return frozenset(record.layers.layers) if record is not None else frozenset()


def image_changes(before: ImageRecord | None, after: ImageRecord | None) -> Changes:
    """What an Image going from ``before`` to ``after`` (None: absent) changes."""
    record = after if after is not None else before
    if record is None:
        return NOTHING
    if before is not None and after is not None and _same_image(before, after):
        return NOTHING
    name = record.name
    tree = (
        before is None or after is None or before.node != after.node or before.build != after.build
    )
    marks = _layer_marks(before) ^ _layer_marks(after)
    return Changes(
        images=frozenset({name}),
        subtrees=frozenset({name}) if tree else frozenset(),
        layers=frozenset(layer_name(digest) for digest, _ in marks),
    )


def _same_image(before: ImageRecord, after: ImageRecord) -> bool:
    return (
        before.generation == after.generation
        and before.trigger == after.trigger
        and before.uid == after.uid
        and before.spec_error == after.spec_error
        and before.status_unreadable == after.status_unreadable
        and before.spec == after.spec
        and before.status_json == after.status_json
    )


def layer_changes(before: LayerRecord | None, after: LayerRecord | None) -> Changes:
    """What a Layer going from ``before`` to ``after`` (None: absent) changes."""
    record = after if after is not None else before
    if record is None:
        return NOTHING
    if (
        before is not None
        and after is not None
        and before.generation == after.generation
        and before.managed == after.managed
        and before.advisory == after.advisory
        and before.status == after.status
    ):
        return NOTHING
    return Changes(layers=frozenset({record.name}))


def images_changed(namespace_names: Iterable[tuple[str, str]]) -> dict[str, Changes | None]:
    """These Images (namespace, name) and everything below them, e.g. for a Job event."""
    gathered = ChangeSet()
    for namespace, name in namespace_names:
        gathered.add(namespace, Changes(frozenset({name}), frozenset({name})))
    return gathered.frozen()


def affected(view: NamespaceSnapshot, changes: Changes | None) -> tuple[set[str], set[str]]:
    """The Images and Layers of ``view`` whose status ``changes`` can change (all: None)."""
    if changes is None:
        return set(view.images), set(view.layers)
    images = {name for name in changes.images if name in view.images}
    for name in changes.subtrees:
        images.update(view.graph.descendants(name))
    layers = {name for name in changes.layers if name in view.layers}
    for name in changes.layers:
        layer = view.layers.get(name)
        if layer is None or layer.advisory is not None or not _spec_observed(layer):
            images.update(view.users(layer_digest(name)))
    return images, layers


def _spec_observed(layer: LayerRecord) -> bool:
    return layer.generation is None or layer.status.observed_generation == layer.generation
