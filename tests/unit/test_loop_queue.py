"""The loop's write queue: a pass that leaves writes for later, and the passes that follow.

The writer is a stand-in that records what it is asked to write (these tests are about which
writes the loop hands it, pass by pass, not about the API server).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lamina.domain.changes import Changes
from lamina.domain.reconcile import ClusterState, WriteStatus
from lamina.handlers.loop import Reconciler
from lamina.handlers.state import ClusterView
from tests.unit.test_reconcile import L1, built, img, lyr, resolved

LOG = logging.getLogger("test")


@dataclass
class BudgetWriter:
    """Writes at most ``per_call`` each call and leaves the rest, like a spent budget."""

    per_call: int
    written: list[list[str]] = field(default_factory=list)

    async def write(
        self,
        writes: Sequence[WriteStatus],
        state: ClusterState,
        logger: Any,
        seconds: float | None = None,
    ) -> list[WriteStatus]:
        if seconds is None:  # what this pass's actions changed: always all of it
            self.written.append([w.name for w in writes])
            return []
        self.written.append([w.name for w in writes[: self.per_call]])
        return list(writes[self.per_call :])


def reconciler(writer: BudgetWriter) -> Reconciler:
    images = [
        img(f"i{n}", resolved=resolved(), **built("sha256:" + "1" * 64, layers=(L1,)))
        for n in range(5)
    ]
    view = ClusterView()
    view.attach({"ns": images}, {"ns": [lyr(L1)]})
    return Reconciler(view, writer, None, limit=0, poll_seconds=60)  # type: ignore[arg-type]


def test_writes_left_by_one_pass_are_written_by_the_next_without_deciding_again() -> None:
    writer = BudgetWriter(per_call=2)
    loop = reconciler(writer)
    asyncio.run(loop.run_pass(None, LOG))  # the first pass renders everything
    assert loop.passes == 1
    first, calls = writer.written[-1], len(writer.written)
    assert len(first) == 2 and len(loop.queued) == 4  # 5 Images and 1 Layer to write
    asyncio.run(loop.run_pass({}, LOG))  # nothing changed since: only the queue
    assert loop.passes == 1  # no second decision
    asyncio.run(loop.run_pass({}, LOG))
    assert not loop.queued
    drained = [name for call in writer.written[calls:] for name in call]
    assert sorted(first + drained) == sorted([f"i{n}" for n in range(5)] + [lyr(L1).name])


def test_a_change_decides_again_and_replaces_the_queued_write_of_that_object() -> None:
    writer = BudgetWriter(per_call=1)
    loop = reconciler(writer)
    asyncio.run(loop.run_pass(None, LOG))
    queued_before = set(loop.queued)
    changed = next(key for key in queued_before if key[0] == "images")
    asyncio.run(loop.run_pass({"ns": Changes(images=frozenset({changed[2]}))}, LOG))
    assert loop.passes == 2
    # Each object is written once: the queue holds no object twice and loses none.
    every = [name for call in writer.written for name in call] + [k[2] for k in loop.queued]
    assert sorted(every) == sorted({*every})
    assert len(every) == 6
