"""Events and metrics from what Images' and ContainerCommits' status says happened.

These handlers read; they never write status.  Each watch event is compared with the last
version seen of the same object (kept in memory), and :mod:`lamina.domain.transitions` says
which Events the change deserves and which build or commit finished; cascades and time to
remediate come from :mod:`lamina.domain.remediation` over the namespace's Images.  Because
the input is status, every writer of status (the build loop, the tree handler, the commit
handler) is covered without calling into this module.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from lamina.api.meta import GROUP, VERSION
from lamina.domain.events import EventIntent
from lamina.domain.remediation import Cascade, progress, start_cascade
from lamina.domain.transitions import (
    REMEDIATED,
    CommitFacts,
    ImageFacts,
    commit_events,
    commit_facts,
    finished_build,
    finished_commit,
    image_events,
    image_facts,
)
from lamina.handlers.events import ObjectRef, recorder
from lamina.handlers.metrics import (
    BUILD_DURATION,
    BUILD_FAILURES,
    BUILD_QUEUE,
    BUILDS,
    BUILDS_RUNNING,
    CASCADE_DEPTH,
    CASCADE_SIZE,
    CASCADES_OPEN,
    CASCADES_SUPERSEDED,
    COMMIT_DURATION,
    COMMIT_FAILURES,
    COMMIT_FROZEN,
    COMMITS,
    TIME_TO_REMEDIATE,
)

QUEUED = "BuildQueued"


@dataclass
class Observed:
    """The last version seen of every Image and ContainerCommit, and the open cascades."""

    images: dict[str, dict[str, ImageFacts]] = field(default_factory=lambda: defaultdict(dict))
    commits: dict[tuple[str, str], CommitFacts] = field(default_factory=dict)
    cascades: dict[str, dict[str, Cascade]] = field(default_factory=lambda: defaultdict(dict))

    # Kept as counts, changed by each Image's change: counting over every Image on every
    # event made a start on 5,000 Images quadratic (most of its CPU).
    queued: int = 0
    running: int = 0

    def count(self, facts: ImageFacts | None, sign: int) -> None:
        if facts is not None:
            self.queued += sign * (facts.ready_reason == QUEUED)
            self.running += sign * (facts.build_phase == "Running")

    def gauges(self) -> None:
        BUILD_QUEUE.set(self.queued)
        BUILDS_RUNNING.set(self.running)
        CASCADES_OPEN.set(sum(len(c) for c in self.cascades.values()))


def observed(memo: Any) -> Observed:
    found: Observed | None = getattr(memo, "observed", None)
    if found is None:
        found = Observed()
        memo.observed = found
    return found


def image_change(
    state: Observed, namespace: str, old: ImageFacts | None, new: ImageFacts | None
) -> list[tuple[str, EventIntent]]:
    """Update ``state`` and the metrics for one Image's change; the Events to write, by Image.

    ``new`` None: the Image was deleted.
    """
    images = state.images[namespace]
    cascades = state.cascades[namespace]
    events: list[tuple[str, EventIntent]] = []
    if new is None:
        state.count(images.pop(old.name if old else "", None), -1)
    else:
        state.count(images.get(new.name), -1)
        state.count(new, +1)
        images[new.name] = new
        done = finished_build(old, new)
        if done is not None:
            BUILDS.labels(done.result).inc()
            if done.seconds is not None:
                BUILD_DURATION.labels(done.result).observe(done.seconds)
            if done.reason is not None:
                BUILD_FAILURES.labels(done.reason).inc()
        events += [(new.name, intent) for intent in image_events(old, new)]
        cascade = start_cascade(old, new, images, set(cascades))
        if cascade is not None:
            CASCADE_SIZE.observe(cascade.size)
            CASCADE_DEPTH.observe(cascade.depth)
            cascades[cascade.root] = cascade
    for root, cascade in list(cascades.items()):
        reached = progress(cascade, images)
        if reached.superseded:
            CASCADES_SUPERSEDED.inc()
            del cascades[root]
        elif reached.done:
            took = ""
            if reached.seconds is not None:
                TIME_TO_REMEDIATE.observe(reached.seconds)
                took = f" in {reached.seconds:.0f}s"
            message = f"all {cascade.size} Automatic descendants are on {cascade.digest}{took}"
            events.append((root, EventIntent("Normal", REMEDIATED, message)))
            del cascades[root]
    state.gauges()
    return events


# Called by the operator's own watch of Images (handlers.image_watch), not by kopf: a kopf
# handler on Images would make kopf watch (and hold) every Image too.
async def image_transition(
    *, type: str, namespace: str | None, name: str, body: Mapping[str, Any], memo: Any, **_: Any
) -> None:
    state = observed(memo)
    ns = namespace or ""
    old = state.images[ns].get(name)
    new = None if type == "DELETED" else image_facts(body)
    writes = image_change(state, ns, old, new)
    for image, intent in writes:
        if image == name:
            ref = ObjectRef.of(body)
        else:
            facts = state.images[ns].get(image)
            if facts is None:
                continue
            ref = ObjectRef(f"{GROUP}/{VERSION}", "Image", ns, image, facts.uid)
        await recorder(memo).emit(ref, intent)


def commit_change(
    state: Observed, namespace: str, old: CommitFacts | None, new: CommitFacts | None
) -> list[EventIntent]:
    if new is None:
        if old is not None:
            state.commits.pop((namespace, old.name), None)
        return []
    state.commits[(namespace, new.name)] = new
    done = finished_commit(old, new)
    if done is not None:
        COMMITS.labels(done.result).inc()
        if done.seconds is not None:
            COMMIT_DURATION.labels(done.result).observe(done.seconds)
        if done.reason is not None:
            COMMIT_FAILURES.labels(done.reason).inc()
        if done.result == "succeeded" and new.frozen_seconds is not None:
            COMMIT_FROZEN.observe(new.frozen_seconds)
    return commit_events(old, new)


@kopf.on.event(GROUP, VERSION, "containercommits")
async def commit_transition(
    *, type: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    state = observed(memo)
    ns = namespace or ""
    old = state.commits.get((ns, name))
    new = None if type == "DELETED" else commit_facts(body)
    for intent in commit_change(state, ns, old, new):
        await recorder(memo).emit(ObjectRef.of(body), intent)
