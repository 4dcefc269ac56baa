"""`lamina plan`, `tree` and `history`, and the rebuild reasons behind them."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.cli.views import human_size, render_history, render_plan, render_tree
from lamina.domain.graph import ImageGraph, ImageNode
from lamina.domain.plan import RebuildPolicy, plan_cascade
from lamina.domain.rebuild import BuiltFrom, rebuild_reasons

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def graph() -> ImageGraph:
    return ImageGraph(
        [
            ImageNode("base", parent_ref="busybox:1"),
            ImageNode("app", parent_image="base"),
            ImageNode("tool", parent_image="base"),
            ImageNode("app-debug", parent_image="app"),
            ImageNode("app-debug-x", parent_image="app-debug"),
        ]
    )


def test_plan_lists_descendants_parents_first_with_their_action() -> None:
    policies = {
        "app": RebuildPolicy("Manual", "Rebuild"),
        "tool": RebuildPolicy("Automatic", "Rebase"),
    }
    steps = plan_cascade("base", graph(), policies)
    assert [(s.name, s.depth, s.action) for s in steps] == [
        ("app", 1, "waits (Manual)"),
        ("tool", 1, "rebase"),
        ("app-debug", 2, "blocked by app"),
        ("app-debug-x", 3, "blocked by app"),
    ]
    lines = render_plan("base", steps)
    assert lines[0].split() == ["IMAGE", "DEPTH", "PARENT", "POLICY", "STRATEGY", "ACTION"]
    assert render_plan("app-debug-x", []) == [
        "nothing below app-debug-x: a new digest of app-debug-x rebuilds nothing else"
    ]


@pytest.mark.parametrize(
    ("built", "wanted", "expected"),
    [
        (None, BuiltFrom(1, D1), ["FirstBuild - -> " + D1]),
        (BuiltFrom(1, D1), BuiltFrom(1, D1), []),
        (BuiltFrom(1, D1), BuiltFrom(2, D1), ["SpecChanged 1 -> 2"]),
        (BuiltFrom(1, D1), BuiltFrom(1, D2), [f"ParentChanged {D1} -> {D2}"]),
        (BuiltFrom(1, D1, "a"), BuiltFrom(1, D1, "b"), ["ManualTrigger a -> b"]),
        (
            BuiltFrom(1, D1),
            BuiltFrom(3, D2),
            ["SpecChanged 1 -> 3", f"ParentChanged {D1} -> {D2}"],
        ),
    ],
)
def test_rebuild_reasons_compare_digests_and_generations(
    built: BuiltFrom | None, wanted: BuiltFrom, expected: list[str]
) -> None:
    assert [str(r) for r in rebuild_reasons(built, wanted)] == expected


def test_automatic_reasons_are_not_user_initiated() -> None:
    (reason,) = rebuild_reasons(BuiltFrom(1, D1), BuiltFrom(1, D2))
    assert not reason.user_initiated


def image(name: str, parent: dict[str, str], reason: str, digest: str | None = None) -> Any:
    return {
        "metadata": {"name": name},
        "spec": {"parent": parent},
        "status": {
            "digest": digest,
            "conditions": [{"type": "Ready", "status": "False", "reason": reason}],
        },
    }


def test_tree_shows_roots_missing_parents_and_cycles() -> None:
    lines = render_tree(
        [
            image("base", {"ref": "busybox:1"}, "WaitingForParent", D1),
            image("app", {"image": "base"}, "WaitingForParent"),
            image("tool", {"image": "base"}, "WaitingForParent"),
            image("dbg", {"image": "app"}, "WaitingForParent"),
            image("orphan", {"image": "gone"}, "ParentNotFound"),
            image("a", {"image": "b"}, "ParentCycle"),
            image("b", {"image": "a"}, "ParentCycle"),
        ]
    )
    assert lines == [
        "[busybox:1]",
        "base  111111111111  WaitingForParent",
        "├── app  -  WaitingForParent",
        "│   └── dbg  -  WaitingForParent",
        "└── tool  -  WaitingForParent",
        "[missing parent gone]",
        "orphan  -  ParentNotFound",
        "[in a parent cycle]",
        "a  -  ParentCycle",
        "b  -  ParentCycle",
    ]


def test_history_is_top_first_with_origin_and_created_by() -> None:
    subject = {
        "status": {
            "lineage": [{"name": "base"}, {"ref": "busybox:1"}],
            "layers": [
                {"digest": D1, "size": 2_500_000, "own": False},
                {"digest": D2, "size": 512, "own": True},
            ],
        }
    }
    layers = {
        D1: {"status": {"introducedBy": "base", "createdBy": "RUN apk add openssl"}},
        D2: {"status": {"createdBy": "COPY . /app"}},
    }
    assert render_history(subject, layers) == [
        "LAYER         SIZE   FROM        CREATED BY",
        "222222222222  512B   this image  COPY . /app",
        "111111111111  2.5MB  base        RUN apk add openssl",
    ]


def test_human_size() -> None:
    assert [human_size(n) for n in (None, 0, 999, 1000, 1_234_567, 5 * 10**9)] == [
        "-",
        "0B",
        "999B",
        "1.0kB",
        "1.2MB",
        "5.0GB",
    ]
