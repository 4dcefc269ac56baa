"""The Image tree: ancestry walks end at a root, a missing parent, or a cycle."""

from __future__ import annotations

import pytest

from lamina.domain.graph import Ancestry, ImageGraph, ImageNode


def graph(*edges: tuple[str, str]) -> ImageGraph:
    """Nodes from (name, parent) pairs; a parent with ':' or '/' is an external ref."""
    return ImageGraph(
        ImageNode(name, parent_ref=parent)
        if ":" in parent or "/" in parent
        else ImageNode(name, parent_image=parent)
        for name, parent in edges
    )


@pytest.mark.parametrize(
    ("edges", "start", "chain", "root_ref", "missing", "cycle"),
    [
        pytest.param([("a", "busybox:1")], "a", [], "busybox:1", None, None, id="root"),
        pytest.param(
            [("a", "busybox:1"), ("b", "a"), ("c", "b")],
            "c",
            ["b", "a"],
            "busybox:1",
            None,
            None,
            id="chain",
        ),
        pytest.param([("b", "a")], "b", [], None, "a", None, id="missing-parent"),
        pytest.param([("c", "b"), ("b", "a")], "c", ["b"], None, "a", None, id="missing-ancestor"),
        pytest.param([("a", "a")], "a", [], None, None, ("a", "a"), id="self-cycle"),
        pytest.param(
            [("a", "b"), ("b", "a")], "a", ["b"], None, None, ("a", "b", "a"), id="two-cycle"
        ),
        pytest.param(
            [("x", "a"), ("a", "b"), ("b", "c"), ("c", "a")],
            "x",
            ["a", "b", "c"],
            None,
            None,
            ("a", "b", "c", "a"),
            id="walk-into-cycle",
        ),
    ],
)
def test_ancestry(
    edges: list[tuple[str, str]],
    start: str,
    chain: list[str],
    root_ref: str | None,
    missing: str | None,
    cycle: tuple[str, ...] | None,
) -> None:
    found: Ancestry = graph(*edges).ancestry(start)
    assert [node.name for node in found.chain] == chain
    assert (found.root_ref, found.missing, found.cycle) == (root_ref, missing, cycle)


def test_descendants_are_breadth_first_and_survive_cycles() -> None:
    tree = graph(("base", "busybox:1"), ("app", "base"), ("tool", "base"), ("dbg", "app"))
    assert tree.descendants("base") == ["app", "tool", "dbg"]
    assert tree.descendants("dbg") == []
    looped = graph(("a", "b"), ("b", "a"), ("c", "a"))
    assert sorted(looped.descendants("a")) == ["b", "c"]


def test_children_of_a_missing_image_are_known() -> None:
    # Needed so that creating the missing parent reaches the children waiting for it.
    assert graph(("b", "a"), ("c", "a")).children("a") == ("b", "c")


def test_a_chain_of_five_thousand_is_walked_without_recursion() -> None:
    nodes = [ImageNode("n0", parent_ref="base:1", parent_ref_digest="sha256:r")]
    nodes += [ImageNode(f"n{i}", parent_image=f"n{i - 1}") for i in range(1, 5000)]
    graph = ImageGraph(nodes)
    deepest = graph.ancestry("n4999")
    assert len(deepest.chain) == 4999
    assert deepest.chain[0].name == "n4998" and deepest.chain[-1].name == "n0"
    assert deepest.root_ref == "base:1"
    assert len(graph.ancestry("n2500").chain) == 2500  # memoised on the way up
    assert len(graph.descendants("n0")) == 4999


def test_a_chain_below_a_cycle_reports_the_cycle_where_the_walk_entered_it() -> None:
    nodes = [ImageNode("a", parent_image="b"), ImageNode("b", parent_image="a")]
    nodes += [ImageNode("c0", parent_image="a")]
    nodes += [ImageNode(f"c{i}", parent_image=f"c{i - 1}") for i in range(1, 300)]
    graph = ImageGraph(nodes)
    below = graph.ancestry("c299")
    assert below.cycle == ("a", "b", "a")
    assert len(below.chain) == 301  # c298 .. c0, a, b
    assert graph.ancestry("b").cycle == ("b", "a", "b")
