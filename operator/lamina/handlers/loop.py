"""The reconcile loop: one pass at a time for the whole operator, woken by a dirty set.

Watch events only say what they changed (:mod:`lamina.domain.changes`) and wake the loop; a
burst of events (kopf's initial listing, a cascade) folds into one pass, which renders only
the objects those changes can affect; the echo of the loop's own write changes nothing.  A pass
decides once (:func:`lamina.domain.reconcile.decide`), carries out the actions, folds their
outcomes in, decides the statuses, and writes only what differs.  Being one loop is the
point: the global build limit and the parents-first order hold over the whole cluster, and no
two handlers race over the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lamina.domain.changes import Changes, ChangeSet, Dirty
from lamina.domain.reconcile import (
    ActionFailed,
    ClusterState,
    Decision,
    DeleteLayer,
    ImageChanged,
    JobCreated,
    JobDeleted,
    LayerDeleted,
    ObjectKey,
    Outcome,
    RebaseRefused,
    WriteStatus,
    apply,
    decide,
    decide_again,
    outcome_changes,
)
from lamina.domain.snapshot import Failure
from lamina.handlers.builds import BuildExecutor
from lamina.handlers.failures import report_failure
from lamina.handlers.heap import settle_heap
from lamina.handlers.state import ClusterView
from lamina.handlers.tree import StatusWriter

# How long a pass waits after the first event to gather the rest of a burst.
DEBOUNCE_SECONDS = 0.3
# At most this long between passes however long the last one took (a new Image must not
# wait behind a slow first pass twice).
MAX_WAIT_SECONDS = 1.0
# Seconds of status writing per pass: a namespace with thousands of statuses to write (a
# first start, a 1,000-Image chain) must not hold up the next decision (a build for another
# namespace).  What is left is written by the next passes, namespaces taking turns.
WRITE_SECONDS_PER_PASS = 5.0


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Reconciler:
    view: ClusterView
    writer: StatusWriter
    executor: BuildExecutor | None
    limit: int
    poll_seconds: float
    namespace_limit: int | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: ChangeSet = field(default_factory=ChangeSet)
    everything: bool = True  # the first pass renders every namespace
    # Writes decided but not made yet (the write budget ran out): still right until their
    # object changes (then the pass that renders it again replaces them).
    queued: dict[ObjectKey, WriteStatus] = field(default_factory=dict)
    last_pass_seconds: float = 0.0
    # The last decision left actions for the next pass (e.g. a build once its parent ref is
    # resolved): that pass must decide, not only write.
    acting: bool = False
    rebase_refused: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    failures: dict[tuple[str, str, str], Failure] = field(default_factory=dict)
    passes: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _logged: dict[tuple[str, str], str] = field(default_factory=dict)
    _decided_failing: list[ObjectKey] = field(default_factory=list)

    def touch(self, namespace: str | None, changes: Changes | None = None) -> None:
        """Something changed: in ``namespace`` (None: anywhere), ``changes`` (None: any of
        it).  An empty change (the echo of our own write) needs no pass."""
        if not namespace:
            self.everything = True
        elif changes is None or changes:
            self.dirty.add(namespace, changes)
        else:
            return
        self.wake.set()

    def touch_all(self, dirty: Dirty) -> None:
        for namespace, changes in dirty.items():
            self.touch(namespace, changes)

    def _take_dirty(self) -> Dirty | None:
        taken, self.dirty = self.dirty, ChangeSet()
        if self.everything:
            self.everything = False
            return None
        return taken.frozen()

    async def run_forever(self, logger: Any) -> None:
        while not self.view.attached:  # every scope's Images and Layers listed
            await self.wake.wait()
            self.wake.clear()
        settled = False
        while True:
            # Fold a burst of events into one pass; and wait at least as long as the last
            # pass took, so deciding never takes more than half of the loop's time.
            await asyncio.sleep(
                min(max(DEBOUNCE_SECONDS, self.last_pass_seconds), MAX_WAIT_SECONDS)
            )
            self.wake.clear()
            more = False
            try:
                more = await self.run_pass(self._take_dirty(), logger)
            except Exception as error:  # the loop must outlive any one failure
                report_failure("loop", "reconcile pass (retrying)", error, logger)
            if not settled:
                # After the first pass, not before it: an Image created during the start does
                # not wait for the collection (see lamina.handlers.heap).
                settle_heap()
                settled = True
            if more or self.dirty or self.everything or self.queued:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_seconds)

    async def run_pass(
        self, dirty: Dirty | None, logger: Any, state: ClusterState | None = None
    ) -> bool:
        """One pass; True when it left work for another pass right away.

        ``state``: decide on this (a resync's LIST) instead of the indexes.
        """
        async with self.lock:
            return await self._pass(dirty, logger, state)

    async def _pass(self, dirty: Dirty | None, logger: Any, given: ClusterState | None) -> bool:
        if given is None and dirty is not None and not dirty and self.queued and not self.acting:
            # Nothing changed since the last decision, only its writes are left: deciding
            # again (O(objects)) per batch of writes made a first start quadratic.  Time-driven
            # actions (a due poll, a retry) wait until the queue is written; actions the last
            # decision left for the next pass (``acting``) do not.
            await self._drain(logger)
            return False
        self.passes += 1
        began = time.monotonic()
        at = now()
        kept = {
            key: failure
            for key, failure in self.failures.items()
            if failure.retry_at is not None and failure.retry_at > at
        }
        if dirty is not None:
            # An object whose failure is over shows its status again; and what the last
            # decision found failing is rendered again (it may be fixed).
            over = [key for key in (*self.failures, *self._decided_failing) if key not in kept]
            dirty = _with_objects(dirty, over)
        self.failures = kept
        polled = self.executor.resolver.checked if self.executor is not None else {}
        state = given or self.view.state(
            at,
            self.limit,
            self.rebase_refused,
            self.failures,
            polled=polled,
            namespace_limit=self.namespace_limit,
        )
        decided = time.monotonic()
        first = decide(state, dirty)
        work = [a for a in first.actions if not isinstance(a, DeleteLayer)]
        final: Decision = first
        outcomes: list[Outcome] = []
        if work and self.executor is not None:
            outcomes = await self.executor.execute(work, state, logger)
        if self.executor is not None:
            # Running builds whose pods cannot start: asked every pass, acted on or not.
            outcomes += await self.executor.pods_that_cannot_start(state, work, logger)
        if outcomes:
            self._learn(outcomes)
            before, state = state, apply(state, outcomes)
            final = decide_again(first, state, outcome_changes(before, state, outcomes))
        self.last_pass_seconds = time.monotonic() - decided
        self._log_failures(first, logger)
        self._decided_failing = [("images", ns, name) for ns, name in final.failed]
        for key in final.rendered:
            self.queued.pop(key, None)
        # What this pass's actions changed is always written now (the next decision must
        # see it); the rest (with what earlier passes left) takes turns under the budget.
        acted = [w for w in final.writes if (w.namespace, w.name) in state.written]
        self.queued.update(
            ((w.plural, w.namespace, w.name), w)
            for w in final.writes
            if (w.namespace, w.name) not in state.written
        )
        await self.writer.write(acted, state, logger)
        rest, self.queued = list(self.queued.values()), {}
        later = await self.writer.write(
            take_turns(rest), state, logger, seconds=WRITE_SECONDS_PER_PASS
        )
        self.queued = {(w.plural, w.namespace, w.name): w for w in later}
        logger.debug(
            f"pass {self.passes}: decided in {self.last_pass_seconds:.2f}s, "
            f"{len(final.rendered)} rendered, {len(final.writes)} to write, "
            f"{len(later)} left, {time.monotonic() - began:.2f}s in all"
        )
        leftover: list[Outcome] = []
        if self.executor is not None:
            leftover = await self.executor.delete_layers(final.actions, at, logger)
            self._learn(leftover)
        if self.executor is None:
            return False
        again = [a for a in final.actions if not isinstance(a, DeleteLayer)]
        self.acting = bool(again) and again != work
        return self.acting

    async def _drain(self, logger: Any) -> None:
        rest, self.queued = list(self.queued.values()), {}
        state = self.view.state(now(), self.limit, self.rebase_refused, self.failures)
        later = await self.writer.write(
            take_turns(rest), state, logger, seconds=WRITE_SECONDS_PER_PASS
        )
        self.queued = {(w.plural, w.namespace, w.name): w for w in later}

    def _learn(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, RebaseRefused):
                self.rebase_refused[(outcome.namespace, outcome.name)] = (
                    outcome.inputs,
                    outcome.note,
                )
            elif isinstance(outcome, ActionFailed):
                self.failures[(outcome.plural, outcome.namespace, outcome.name)] = outcome.failure
            elif isinstance(outcome, ImageChanged):
                self.failures.pop(("images", outcome.namespace, outcome.name), None)
            elif isinstance(outcome, JobCreated):
                self.view.created_jobs[outcome.job.name] = outcome.job
            elif isinstance(outcome, JobDeleted):
                self.view.deleted_jobs.add(outcome.name)
            elif isinstance(outcome, LayerDeleted):
                gone = self.view.layers_of(outcome.namespace).get(outcome.name)
                self.view.layers.wrote(gone, None, (outcome.namespace, outcome.name))

    def _log_failures(self, decision: Decision, logger: Any) -> None:
        for (namespace, name), failure in decision.failed.items():
            if self._logged.get((namespace, name)) != failure.message:
                self._logged[(namespace, name)] = failure.message
                logger.warning(f"{namespace}/{name}: {failure.reason}: {failure.message}")


def take_turns(writes: Sequence[WriteStatus]) -> list[WriteStatus]:
    """The writes with namespaces in turn, so no namespace waits behind a big one."""
    queues: dict[str, list[WriteStatus]] = {}
    for write in writes:
        queues.setdefault(write.namespace, []).append(write)
    ordered: list[WriteStatus] = []
    longest = max((len(queue) for queue in queues.values()), default=0)
    for round_ in range(longest):
        ordered += [queue[round_] for queue in queues.values() if round_ < len(queue)]
    return ordered


def _with_objects(dirty: Dirty, keys: Sequence[ObjectKey]) -> Dirty:
    """``dirty`` and these objects."""
    if not keys:
        return dirty
    gathered = ChangeSet()
    for namespace, changes in dirty.items():
        gathered.add(namespace, changes)
    for plural, namespace, name in keys:
        one = frozenset({name})
        gathered.add(namespace, Changes(images=one) if plural == "images" else Changes(layers=one))
    return gathered.frozen()
