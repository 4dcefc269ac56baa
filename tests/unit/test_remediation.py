"""Cascade size and depth, and time to remediate, from Images' status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from lamina.domain.remediation import automatic_descendants, progress, start_cascade
from lamina.domain.transitions import ImageFacts

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64


def img(
    name: str, parent: str | None, digest: str, built_on: str | None, **kw: object
) -> ImageFacts:
    return ImageFacts(
        name=name,
        uid=name,
        parent_image=parent,
        digest=digest,
        built_on=built_on,
        built_at=T0,
        **kw,
    )  # type: ignore[arg-type]


def tree() -> dict[str, ImageFacts]:
    #   base -> app -> web
    #        -> tool (Manual) -> cli
    #        -> snap (committed)
    return {
        "base": img("base", None, OLD, "ext"),
        "app": img("app", "base", "app1", OLD),
        "web": img("web", "app", "web1", "app1"),
        "tool": img("tool", "base", "tool1", OLD, automatic=False),
        "cli": img("cli", "tool", "cli1", "tool1"),
        "snap": img("snap", "base", "snap1", OLD, committed=True),
    }


def test_automatic_descendants_stop_at_manual_and_committed_images() -> None:
    assert automatic_descendants("base", tree()) == {"app": 1, "web": 2}
    assert automatic_descendants("web", tree()) == {}


def test_descendants_of_a_cycle_are_finite() -> None:
    loop = {"a": img("a", "b", "a1", "b1"), "b": img("b", "a", "b1", "a1")}
    assert automatic_descendants("a", loop) == {"b": 1}


def test_a_new_root_digest_starts_a_cascade_and_its_time_is_measured() -> None:
    images = tree()
    old = images["base"]
    images["base"] = replace(old, digest=NEW, built_at=T0 + timedelta(seconds=10))
    cascade = start_cascade(old, images["base"], images, set())
    assert cascade is not None
    assert (cascade.root, cascade.digest, cascade.size, cascade.depth) == ("base", NEW, 2, 2)

    reached = progress(cascade, images)
    assert (reached.done, reached.pending) == (False, ("app", "web"))
    # app rebuilt on NEW: web is now behind app.
    images["app"] = replace(
        images["app"], digest="app2", built_on=NEW, built_at=T0 + timedelta(seconds=40)
    )
    assert progress(cascade, images).pending == ("web",)
    # A rebuilt child inside the cascade does not start its own.
    assert start_cascade(tree()["app"], images["app"], images, {"base"}) is None
    images["web"] = replace(
        images["web"], digest="web2", built_on="app2", built_at=T0 + timedelta(seconds=75)
    )
    reached = progress(cascade, images)
    assert reached.done and reached.seconds == 65.0  # 75 s - 10 s


def test_a_root_that_moves_again_supersedes_its_cascade() -> None:
    images = tree()
    old = images["base"]
    images["base"] = replace(old, digest=NEW)
    cascade = start_cascade(old, images["base"], images, set())
    assert cascade is not None
    images["base"] = replace(old, digest="sha256:" + "2" * 64)
    assert progress(cascade, images).superseded


def test_first_builds_and_leaves_start_no_cascade() -> None:
    images = tree()
    first = replace(images["base"], digest=None)
    assert start_cascade(first, images["base"], images, set()) is None
    assert start_cascade(None, images["base"], images, set()) is None
    leaf = images["web"]
    assert start_cascade(leaf, replace(leaf, digest="web9"), images, set()) is None
