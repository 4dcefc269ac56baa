"""What an event changes, and that a pass renders only that: as tables over pure functions.

The point of the change set is that an event on one object costs work on the objects it can
affect, not on the namespace: so each case checks both that the partial pass renders only
those objects, and that it wants exactly the writes a pass rendering everything would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from lamina.api.image import ImageLayer, ImageStatus
from lamina.domain.changes import (
    NOTHING,
    Changes,
    ChangeSet,
    affected,
    image_changes,
    layer_changes,
)
from lamina.domain.layers import Advisory, layer_name
from lamina.domain.reconcile import ClusterState, decide
from lamina.domain.snapshot import ImageRecord, NamespaceSnapshot
from tests.unit.test_reconcile import (
    D1,
    L1,
    L2,
    P1,
    built,
    img,
    lyr,
    resolved,
    settled,
    state,
)

D2 = "sha256:" + "e" * 64
L3 = "sha256:" + "c" * 64


def names(*items: str) -> frozenset[str]:
    return frozenset(items)


def base() -> ImageRecord:
    return img("base", resolved=resolved(), **built(P1, layers=(L1,)))


# -- what one event changes ------------------------------------------------------------------


@dataclass
class EventCase:
    id: str
    before: ImageRecord | None
    after: ImageRecord | None
    changes: Changes


def _with(record: ImageRecord, **status: object) -> ImageRecord:
    return replace(
        record, resource_version="2", status=record.status.model_copy(update=dict(status))
    )


B = base()
EVENT_CASES = [
    EventCase(
        "the echo of our own write changes nothing", B, replace(B, resource_version="2"), NOTHING
    ),
    EventCase(
        "a status change outside the tree facts is the Image alone",
        B,
        _with(B, observed_generation=7),
        Changes(images=names("base")),
    ),
    EventCase(
        "a new digest re-renders the subtree",
        B,
        _with(B, digest=D2),
        Changes(images=names("base"), subtrees=names("base")),
    ),
    EventCase(
        "a changed layer list re-renders the layers that gained or lost a user",
        B,
        _with(
            B,
            layers=[
                ImageLayer(digest=L1, size=1, own=True),
                ImageLayer(digest=L2, size=1, own=False),
            ],
        ),
        Changes(images=names("base"), layers=names(layer_name(L2))),
    ),
    EventCase(
        "a layer that became the Image's own changes its introducer",
        B,
        _with(B, layers=[ImageLayer(digest=L1, size=1, own=False)]),
        Changes(images=names("base"), layers=names(layer_name(L1))),
    ),
    EventCase(
        "a new Image: itself, the Images waiting for it, its layers",
        None,
        B,
        Changes(names("base"), names("base"), names(layer_name(L1))),
    ),
    EventCase(
        "a deleted Image: the same",
        B,
        None,
        Changes(names("base"), names("base"), names(layer_name(L1))),
    ),
]


@pytest.mark.parametrize("case", EVENT_CASES, ids=lambda case: case.id)
def test_what_an_image_event_changes(case: EventCase) -> None:
    assert image_changes(case.before, case.after) == case.changes


def test_what_a_layer_event_changes() -> None:
    layer = lyr(L1)
    assert layer_changes(layer, replace(layer, resource_version="2")) == NOTHING
    flagged = replace(layer, generation=2, advisory=Advisory("CVE-1", "High"))
    assert layer_changes(layer, flagged) == Changes(layers=names(layer.name))
    assert layer_changes(None, layer) == Changes(layers=names(layer.name))


def test_a_burst_of_events_folds_into_one_change_per_namespace() -> None:
    gathered = ChangeSet()
    gathered.add("ns", Changes(images=names("a")))
    gathered.add("ns", NOTHING)
    gathered.add("ns", Changes(layers=names("l")))
    gathered.add("other", None)
    gathered.add("other", Changes(images=names("b")))  # all of it stays all of it
    assert gathered.frozen() == {"ns": Changes(names("a"), frozenset(), names("l")), "other": None}


# -- which statuses a change can affect --------------------------------------------------------


def tree() -> ClusterState:
    """base <- mid <- leaf, and a sibling of mid; layers L1 (all), L2 (mid and leaf), L3."""
    return settled(
        state(
            base(),
            img("mid", "base", **built(D1, layers=(L1, L2))),
            img("leaf", "mid", **built(D1, layers=(L1, L2, L3))),
            img("sibling", "base", **built(D1, layers=(L1,))),
            layers=(lyr(L1), lyr(L2), lyr(L3)),
        )
    )


def snapshot(current: ClusterState) -> NamespaceSnapshot:
    return NamespaceSnapshot("ns", current.images["ns"].values(), current.layers["ns"].values())


@pytest.mark.parametrize(
    ("changes", "images", "layers"),
    [
        (Changes(images=names("mid")), {"mid"}, set()),
        (Changes(images=names("mid"), subtrees=names("mid")), {"mid", "leaf"}, set()),
        (Changes(subtrees=names("base")), {"mid", "leaf", "sibling"}, set()),
        # A Layer's own status write (its spec observed, no advisory) reaches no Image.
        (Changes(layers=names(layer_name(L2))), set(), {layer_name(L2)}),
        # A Layer that is gone: its users' advisories may have changed.
        (Changes(layers=names(layer_name(D2))), set(), set()),
        (Changes(images=names("nobody"), subtrees=names("nobody")), set(), set()),
    ],
)
def test_what_a_change_can_affect(changes: Changes, images: set[str], layers: set[str]) -> None:
    assert affected(snapshot(tree()), changes) == (images, layers)


def test_a_layer_whose_spec_is_not_observed_yet_reaches_its_users() -> None:
    current = tree()
    flagged = replace(
        current.layers["ns"][layer_name(L2)], generation=2, advisory=Advisory("CVE-1", "High")
    )
    view = snapshot(
        replace(current, layers={"ns": {**current.layers["ns"], flagged.name: flagged}})
    )
    assert affected(view, Changes(layers=names(flagged.name))) == (
        {"mid", "leaf"},
        {flagged.name},
    )


# -- a pass renders only what changed, and wants what a whole pass would -----------------------


def _newcomer(current: ClusterState) -> ClusterState:
    new = img("zz-new", "mid", **built(D1, layers=(L1, L2)))
    return replace(current, images={"ns": {**current.images["ns"], new.name: new}})


def _rebuilt_mid(current: ClusterState) -> ClusterState:
    mid = current.images["ns"]["mid"]
    moved = replace(
        mid,
        resource_version="9",
        status=mid.status.model_copy(
            update={
                "digest": D2,
                "layers": [
                    ImageLayer(digest=L1, size=1, own=False),
                    ImageLayer(digest=L3, size=1, own=True),
                ],
            }
        ),
    )
    return replace(current, images={"ns": {**current.images["ns"], "mid": moved}})


def _deleted_leaf(current: ClusterState) -> ClusterState:
    images = dict(current.images["ns"])
    del images["leaf"]
    return replace(current, images={"ns": images})


def _advisory_on_l3(current: ClusterState) -> ClusterState:
    layer = current.layers["ns"][layer_name(L3)]
    flagged = replace(layer, generation=2, advisory=Advisory("CVE-9", "Critical"))
    return replace(current, layers={"ns": {**current.layers["ns"], flagged.name: flagged}})


def _mangled_sibling(current: ClusterState) -> ClusterState:
    sibling = current.images["ns"]["sibling"]
    mangled = replace(sibling, resource_version="5", status=ImageStatus(**built(D1, layers=(L1,))))
    return replace(current, images={"ns": {**current.images["ns"], "sibling": mangled}})


def _changes_between(before: ClusterState, after: ClusterState) -> Changes:
    found = NOTHING
    for name in set(before.images["ns"]) | set(after.images["ns"]):
        found |= image_changes(before.images["ns"].get(name), after.images["ns"].get(name))
    for name in set(before.layers["ns"]) | set(after.layers["ns"]):
        was, now = before.layers["ns"].get(name), after.layers["ns"].get(name)
        if was is not now:
            found |= layer_changes(was, now)
    return found


@pytest.mark.parametrize(
    ("mutate", "rendered"),
    [
        (_newcomer, {"images/zz-new", f"layers/{layer_name(L1)}", f"layers/{layer_name(L2)}"}),
        (
            _rebuilt_mid,
            {"images/mid", "images/leaf", f"layers/{layer_name(L2)}", f"layers/{layer_name(L3)}"},
        ),
        (
            _deleted_leaf,
            {f"layers/{layer_name(L1)}", f"layers/{layer_name(L2)}", f"layers/{layer_name(L3)}"},
        ),
        (_advisory_on_l3, {"images/leaf", f"layers/{layer_name(L3)}"}),
        (_mangled_sibling, {"images/sibling"}),
    ],
    ids=["new image", "rebuilt parent", "deleted image", "advisory", "mangled status"],
)
def test_an_event_renders_only_what_it_affects_and_writes_what_a_whole_pass_would(
    mutate: Callable[[ClusterState], ClusterState], rendered: set[str]
) -> None:
    before = tree()
    after = mutate(before)
    partial = decide(after, {"ns": _changes_between(before, after)})
    whole = decide(after)
    assert {f"{plural}/{name}" for plural, _, name in partial.rendered} == rendered
    assert partial.writes  # the mutation needs writing
    assert sorted(partial.writes, key=repr) == sorted(whole.writes, key=repr)


def test_a_namespace_nothing_happened_in_renders_nothing() -> None:
    current = tree()
    decision = decide(current, {})
    assert decision.rendered == frozenset()
    assert decision.writes == ()
