"""Commit slots, table-driven: the running commit Jobs by namespace in, a refusal or not out."""

from __future__ import annotations

import pytest

from lamina.domain.commit_slots import CommitSlots, commit_slot_refusal


@pytest.mark.parametrize(
    ("running", "slots", "refused"),
    [
        ({}, CommitSlots(1), None),
        (
            {"a": 1},
            CommitSlots(1),
            "1 of 1 commit Jobs are running (LAMINA_MAX_CONCURRENT_COMMITS)",
        ),
        ({"a": 2, "b": 1}, CommitSlots(4), None),
        ({"a": 2, "b": 2}, CommitSlots(4), "4 of 4 commit Jobs are running"),
        # The cap counts only the commit's own namespace.
        ({"b": 3}, CommitSlots(8, per_namespace=1), None),
        (
            {"a": 1},
            CommitSlots(8, per_namespace=1),
            "of namespace a are running, at most 1 (LAMINA_MAX_COMMITS_PER_NAMESPACE)",
        ),
        # Jobs whose commit namespace is unreadable still take a global slot.
        ({"": 2}, CommitSlots(2), "2 of 2 commit Jobs are running"),
    ],
)
def test_commit_slot_refusal(
    running: dict[str, int], slots: CommitSlots, refused: str | None
) -> None:
    refusal = commit_slot_refusal(running, "a", slots)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.startswith("waiting for a commit slot: ")
        assert refused in refusal
