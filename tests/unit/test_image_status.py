"""Tree-derived Image status: reasons, messages, lineage, and idempotent patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lamina.api.image import ImageStatus
from lamina.api.meta import Condition
from lamina.domain.graph import ImageGraph, ImageNode
from lamina.domain.image_status import decide_tree_status, image_status_patch

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DIGEST = "sha256:" + "1" * 64


def tree(*nodes: ImageNode) -> ImageGraph:
    return ImageGraph(nodes)


def summary(name: str, graph: ImageGraph) -> dict[str, tuple[str, str]]:
    decided = decide_tree_status(name, graph, "ns")
    return {v.type: (v.status, v.reason) for v in decided.conditions}


@pytest.mark.parametrize(
    ("nodes", "name", "ready", "reconciling", "stalled", "reason"),
    [
        ([ImageNode("a", parent_ref="busybox:1")], "a", "False", "True", "False", "BuildPending"),
        ([ImageNode("b", parent_image="a")], "b", "False", "False", "True", "ParentNotFound"),
        (
            [ImageNode("a", parent_image="b"), ImageNode("b", parent_image="a")],
            "a",
            "False",
            "False",
            "True",
            "ParentCycle",
        ),
        (
            [ImageNode("c", parent_image="b"), ImageNode("b", parent_image="gone")],
            "c",
            "False",
            "False",
            "True",
            "AncestorStalled",
        ),
    ],
)
def test_kstatus_summary(
    nodes: list[ImageNode], name: str, ready: str, reconciling: str, stalled: str, reason: str
) -> None:
    assert summary(name, tree(*nodes)) == {
        "Ready": (ready, reason),
        "Reconciling": (reconciling, reason),
        "Stalled": (stalled, reason),
    }


def test_lineage_carries_ancestor_digests_and_the_external_root() -> None:
    graph = tree(
        ImageNode("base", parent_ref="busybox:1", digest=DIGEST, parent_ref_digest=DIGEST),
        ImageNode("app", parent_image="base"),
    )
    lineage = decide_tree_status("app", graph, "ns").lineage
    assert [entry.wire() for entry in lineage] == [
        {"name": "base", "digest": DIGEST},
        {"ref": "busybox:1", "digest": DIGEST},
    ]


def test_patch_is_none_once_status_says_it_and_times_only_move_on_flips() -> None:
    graph = tree(ImageNode("b", parent_image="a"))
    decided = decide_tree_status("b", graph, "ns")
    first = image_status_patch(current=ImageStatus(), generation=3, tree=decided, now=NOW)
    assert first is not None
    written = ImageStatus.model_validate(first)
    # Writing the same decision again is a no-op: this is what ends the event loop.
    later = NOW + timedelta(minutes=5)
    assert image_status_patch(current=written, generation=3, tree=decided, now=later) is None

    # A new generation rewrites observedGeneration but keeps unchanged transition times.
    again = image_status_patch(current=written, generation=4, tree=decided, now=later)
    assert again is not None
    times = {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}
    assert set(times.values()) == {NOW.isoformat().replace("+00:00", "Z")}

    # The parent appears: Stalled flips, so its transition time moves.
    graph = tree(ImageNode("b", parent_image="a"), ImageNode("a", parent_ref="busybox:1"))
    fixed = image_status_patch(
        current=written, generation=3, tree=decide_tree_status("b", graph, "ns"), now=later
    )
    assert fixed is not None
    stalled = next(c for c in fixed["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "False"
    assert stalled["lastTransitionTime"] == later.isoformat().replace("+00:00", "Z")


def test_conditions_owned_by_others_are_kept() -> None:
    graph = tree(ImageNode("a", parent_ref="busybox:1"))
    other = Condition(type="ParentCurrent", status="True", reason="UpToDate")
    patch = image_status_patch(
        current=ImageStatus(conditions=[other]),
        generation=1,
        tree=decide_tree_status("a", graph, "ns"),
        now=NOW,
    )
    assert patch is not None
    assert "ParentCurrent" in [c["type"] for c in patch["conditions"]]
