"""Commit slots, table-driven: the running commit Jobs by namespace in, a refusal or not out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lamina.domain.commit_slots import (
    CommitSlots,
    QueuedCommit,
    choose_commits,
    commit_slot_refusal,
)


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


T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def q(namespace: str, name: str, seconds: int) -> QueuedCommit:
    return QueuedCommit(namespace, name, T0 + timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("queued", "running", "slots", "served", "chosen"),
    [
        # One slot: the busy tenant's older commits do not go first; namespaces take turns.
        ([q("a", "a1", 0), q("a", "a2", 1), q("b", "b1", 9)], {}, CommitSlots(1),
         {"a": T0}, ["b1"]),
        # Never served goes before served, whatever the age.
        ([q("a", "a1", 0), q("b", "b1", 9)], {}, CommitSlots(1), {"a": T0}, ["b1"]),
        # Both served: the one served longest ago.
        ([q("a", "a1", 0), q("b", "b1", 9)], {}, CommitSlots(1),
         {"a": T0 + timedelta(seconds=5), "b": T0}, ["b1"]),
        # Nobody served yet: the namespace whose first commit waited longest.
        ([q("a", "a1", 0), q("b", "b1", 9)], {}, CommitSlots(1), {}, ["a1"]),
        # Fewest running first: b has none running, a has two.
        ([q("a", "a3", 0), q("b", "b1", 9)], {"a": 2}, CommitSlots(3), {}, ["b1"]),
        # Two free slots: one each, not both to the namespace with more queued.
        ([q("a", "a1", 0), q("a", "a2", 1), q("a", "a3", 2), q("b", "b1", 9)], {},
         CommitSlots(2), {}, ["a1", "b1"]),
        # Slots left after every namespace had its turn go round again.
        ([q("a", "a1", 0), q("a", "a2", 1), q("b", "b1", 9)], {}, CommitSlots(3), {},
         ["a1", "b1", "a2"]),
        # The per-namespace cap leaves a slot free rather than exceed it.
        ([q("a", "a1", 0), q("a", "a2", 1)], {"a": 1}, CommitSlots(4, per_namespace=2), {},
         ["a1"]),
        # No free slot: nothing chosen.
        ([q("a", "a1", 0)], {"x": 4}, CommitSlots(4), {}, []),
        # Within a namespace the longest waiting first, whatever the names.
        ([q("a", "z", 0), q("a", "b", 5)], {}, CommitSlots(1), {}, ["z"]),
    ],
)  # fmt: skip
def test_free_commit_slots_are_shared_between_namespaces(
    queued: list[QueuedCommit],
    running: dict[str, int],
    slots: CommitSlots,
    served: dict[str, datetime],
    chosen: list[str],
) -> None:
    assert [c.name for c in choose_commits(queued, running, slots, served)] == chosen
    # The order the commits happen to be listed in changes nothing.
    assert [c.name for c in choose_commits(queued[::-1], running, slots, served)] == chosen


def test_a_commit_whose_namespace_has_had_its_turn_waits_and_says_why() -> None:
    waiting = [q("b", "b1", 9)]
    asking = q("a", "a2", 1)
    refusal = commit_slot_refusal(
        {}, "a", CommitSlots(1), asking=asking, queued=waiting, served={"a": T0}
    )
    assert refusal == (
        "waiting for a commit slot: 0 of 1 commit Jobs are running; the free slot goes first "
        "to commits of namespaces with fewer commit Jobs running, or whose turn it is (fair "
        "share)"
    )
    assert "b1" not in refusal and '"b"' not in refusal  # another tenant is not named
    # The other namespace's commit, asking, takes the slot; alone, the asking commit does.
    served = {"a": T0}
    assert (
        commit_slot_refusal(
            {}, "b", CommitSlots(1), asking=waiting[0], queued=[asking], served=served
        )
        is None
    )
    assert commit_slot_refusal({}, "a", CommitSlots(1), asking=asking, queued=[]) is None


def test_the_queue_remembers_when_each_commit_first_asked_and_forgets_the_silent() -> None:
    from lamina.handlers.commit_queue import FORGET_AFTER, CommitQueue  # noqa: PLC0415

    queue = CommitQueue()
    first = queue.asking("a", "a1", "uid-1", T0)
    again = queue.asking("a", "a1", "uid-1", T0 + timedelta(seconds=5))
    assert again.since == first.since == T0
    # Deleted and created again under the same name: a new commit, at the back.
    assert queue.asking("a", "a1", "uid-2", T0 + timedelta(seconds=6)).since > T0
    queue.asking("b", "b1", "uid-3", T0 + timedelta(seconds=6))
    assert [c.name for c in queue.others("x", "x", T0 + timedelta(seconds=6))] == ["a1", "b1"]
    # b1 stopped asking (deleted, its pod gone): it holds no turn.
    later = T0 + timedelta(seconds=6) + FORGET_AFTER + timedelta(seconds=1)
    queue.asking("a", "a1", "uid-2", later)
    assert [c.name for c in queue.others("x", "x", later)] == ["a1"]
    queue.started("a", "a1", later)
    assert queue.others("x", "x", later) == [] and queue.served == {"a": later}
