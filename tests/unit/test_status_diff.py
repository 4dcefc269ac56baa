"""Merge patches between statuses: only what differs, removed keys as null."""

from __future__ import annotations

from lamina.api.image import BuildStatus, ImageStatus, LineageEntry
from lamina.domain.reconcile import WriteStatus
from lamina.domain.status_diff import merge_patch, model_patch
from lamina.handlers.loop import take_turns


def test_merge_patch_recurses_into_objects_and_nulls_what_is_gone() -> None:
    old = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2], "gone": True}
    new = {"a": 1, "b": {"x": 1, "z": 3}, "c": [1, 2, 3]}
    assert merge_patch(old, new) == {"gone": None, "b": {"y": None, "z": 3}, "c": [1, 2, 3]}


def test_equal_models_give_no_patch_and_a_changed_field_only_itself() -> None:
    status = ImageStatus(
        digest="sha256:" + "a" * 64,
        lineage=[LineageEntry(name="base", digest="sha256:" + "b" * 64)],
        build=BuildStatus(phase="Failed", failure="BuildFailed", message="boom"),
    )
    assert model_patch(status, status.model_copy()) is None
    retried = status.model_copy(
        update={"build": BuildStatus(phase="Running", job="lamina-build-1")}
    )
    # A nested field that went away is written as null, so a merge patch really removes it.
    assert model_patch(status, retried) == {
        "build": {"phase": "Running", "job": "lamina-build-1", "failure": None, "message": None}
    }


def test_namespaces_take_turns_so_none_waits_behind_a_big_one() -> None:
    big = [WriteStatus("images", "big", f"i{n}", {}) for n in range(5)]
    small = [WriteStatus("images", "small", "app", {})]
    ordered = take_turns([*big, *small])
    assert [w.namespace for w in ordered[:2]] == ["big", "small"]
    assert len(ordered) == 6
