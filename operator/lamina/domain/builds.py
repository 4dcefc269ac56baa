"""When an Image builds, and in which order: pure decisions over the tree's state.

An Image needs a build when what its current digest was built from (generation, parent
digest, manual trigger) differs from what the spec and its parent say now.  Digests, never
tags, are compared, so a re-pushed tag or a restarted operator never rebuilds in a loop.

Ordering rules (kpack's lessons): a child builds only after its parent is Ready on its new
digest; one build per Image at a time; a global limit on concurrent builds, with builds a
person asked for (a spec edit, a trigger, a first build) ahead of automatic cascade rebuilds;
a build that failed is not retried until its inputs change or a rebuild is requested.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from lamina.domain.rebuild import (
    PARENT_CHANGED,
    SOURCE_CHANGED,
    BuiltFrom,
    RebuildReason,
    rebuild_reasons,
)

BuildAction = Literal[
    "none",  # up to date
    "wait-parent",  # the parent has no usable digest yet, or is itself about to change
    "hold",  # Manual policy: a new parent digest waits for a trigger
    "queued",  # needs a build, waiting for a slot
    "building",  # its Job runs
    "failed",  # the build for these inputs failed; waits for new inputs or a trigger
    "committed",  # a snapshot (spec.commit): never built
]


@dataclass(frozen=True)
class BuildState:
    """What the planner reads of one Image (spec, annotations, status)."""

    name: str
    uid: str
    generation: int | None
    parent_image: str | None
    parent_ref: str | None
    policy: str = "Automatic"
    strategy: str = "Rebuild"
    trigger: str | None = None
    committed: bool = False
    digest: str | None = None
    built_from: BuiltFrom | None = None
    resolved_digest: str | None = None
    build_phase: str | None = None
    build_inputs: str | None = None
    created: str = ""
    # A git context: its URL, and the commit its revision resolved to (None: not yet).
    source_url: str | None = None
    source_commit: str | None = None


@dataclass(frozen=True)
class BuildPlan:
    """The decision for one Image."""

    name: str
    action: BuildAction
    wanted: BuiltFrom | None = None
    reasons: tuple[RebuildReason, ...] = ()
    inputs: str | None = None
    waiting_on: str | None = None
    # True when waiting_on is an external reference not resolved yet (not an Image).
    resolving: bool = False
    # True when waiting_on is a git context's URL whose revision is not resolved yet.
    source: bool = False

    @property
    def user_initiated(self) -> bool:
        return any(reason.user_initiated for reason in self.reasons)

    @property
    def parent_current(self) -> bool:
        return not any(reason.kind == PARENT_CHANGED for reason in self.reasons)


def inputs_key(uid: str, wanted: BuiltFrom) -> str:
    """A short, stable name for one set of build inputs (also names its Job)."""
    fields: list[object] = [uid, wanted.generation, wanted.parent_digest, wanted.trigger]
    if wanted.source_commit is not None:  # absent for other contexts: their keys stay as they were
        fields.append(wanted.source_commit)
    payload = json.dumps(fields, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def plan_image(
    state: BuildState, parent: BuildState | None, parent_plan: BuildPlan | None
) -> BuildPlan:
    """The decision for one Image, given its parent's state and decision (None for a ref)."""
    if state.committed:
        return BuildPlan(state.name, "committed")
    if state.parent_image is not None:
        if parent is None or parent.digest is None:
            return BuildPlan(state.name, "wait-parent", waiting_on=state.parent_image)
        if parent_plan is not None and parent_plan.action in ("queued", "building", "wait-parent"):
            # The parent is about to get a new digest: build once, on that one.
            return BuildPlan(state.name, "wait-parent", waiting_on=state.parent_image)
        parent_digest = parent.digest
    else:
        if state.resolved_digest is None:
            return BuildPlan(state.name, "wait-parent", waiting_on=state.parent_ref, resolving=True)
        parent_digest = state.resolved_digest
    if state.source_url is not None and state.source_commit is None:
        return BuildPlan(
            state.name, "wait-parent", waiting_on=state.source_url, resolving=True, source=True
        )
    wanted = BuiltFrom(state.generation, parent_digest, state.trigger, state.source_commit)
    reasons = tuple(rebuild_reasons(state.built_from, wanted))
    inputs = inputs_key(state.uid, wanted)
    if state.build_phase == "Running":
        # One build per Image at a time: what changed meanwhile folds into the next build.
        return BuildPlan(state.name, "building", wanted, reasons, inputs)
    if not reasons:
        return BuildPlan(state.name, "none", wanted, reasons, inputs)
    if state.build_inputs == inputs and state.build_phase == "Failed":
        return BuildPlan(state.name, "failed", wanted, reasons, inputs)
    if state.policy == "Manual" and all(
        r.kind in (PARENT_CHANGED, SOURCE_CHANGED) for r in reasons
    ):
        return BuildPlan(state.name, "hold", wanted, reasons, inputs)
    return BuildPlan(state.name, "queued", wanted, reasons, inputs)


def plan_namespace(states: Iterable[BuildState]) -> dict[str, BuildPlan]:
    """Decisions for every Image of a namespace, parents decided before children.

    Images in a cycle or below a missing parent never get past ``wait-parent``.  Iterative:
    each Image is decided once, after walking up to the nearest decided ancestor, so a chain
    of thousands of Images costs linear time and no recursion.
    """
    by_name = {state.name: state for state in states}
    plans: dict[str, BuildPlan] = {}
    for start in sorted(by_name):
        chain: list[str] = []
        on_chain: set[str] = set()
        current: str | None = start
        while current is not None and current in by_name and current not in plans:
            if current in on_chain:
                break
            chain.append(current)
            on_chain.add(current)
            current = by_name[current].parent_image
        for name in reversed(chain):
            state = by_name[name]
            parent = by_name.get(state.parent_image) if state.parent_image else None
            if parent is not None and parent.name not in plans:
                # Its parent is above it on this walk and not decided: a cycle.
                plans[name] = BuildPlan(name, "wait-parent", waiting_on=parent.name)
                continue
            parent_plan = plans.get(parent.name) if parent is not None else None
            plans[name] = plan_image(state, parent, parent_plan)
    return plans


@dataclass(frozen=True)
class Candidate:
    namespace: str
    plan: BuildPlan
    depth: int
    created: str
    # Why a Rebase was not possible, when this build replaces one.
    note: str | None = None
    # The parent ref whose periodic re-poll is due: resolved instead when no slot is free.
    resolve: str | None = None


def choose_builds(
    candidates: Sequence[Candidate],
    running: Mapping[str, int],
    limit: int,
    per_namespace: int | None = None,
) -> list[Candidate]:
    """Which queued builds start now under the global limit, shared fairly between tenants.

    ``running``: the builds running now, by the namespace of their Image.  Each free slot
    goes to the namespace with the fewest builds running or just chosen (a tenant with a
    hundred-Image cascade cannot hold every slot while another tenant's one build waits),
    never beyond ``per_namespace`` builds of one namespace.  Within a namespace:
    person-initiated builds first (a spec edit should not wait behind a cascade), then
    shallower Images, then the oldest; the order is total, so the choice is stable.
    """
    free = max(0, limit - sum(running.values()))
    queues: dict[str, list[Candidate]] = {}
    for candidate in sorted(candidates, key=_priority):
        queues.setdefault(candidate.namespace, []).append(candidate)
    counts = dict(running)
    chosen: list[Candidate] = []
    while free > 0:
        open_namespaces = [
            namespace
            for namespace, queue in queues.items()
            if queue and (per_namespace is None or counts.get(namespace, 0) < per_namespace)
        ]
        if not open_namespaces:
            break
        namespace = min(open_namespaces, key=lambda n: (counts.get(n, 0), _priority(queues[n][0])))
        chosen.append(queues[namespace].pop(0))
        counts[namespace] = counts.get(namespace, 0) + 1
        free -= 1
    return chosen


def _priority(candidate: Candidate) -> tuple[bool, int, str, str, str]:
    plan = candidate.plan
    return (
        not plan.user_initiated,
        candidate.depth,
        candidate.created,
        candidate.namespace,
        plan.name,
    )


def depth_of(name: str, parents: Mapping[str, str | None]) -> int:
    """How many Image ancestors ``name`` has (bounded by the tree's size, cycles included)."""
    depth, seen, current = 0, {name}, parents.get(name)
    while current is not None and current in parents and current not in seen:
        seen.add(current)
        depth += 1
        current = parents.get(current)
    return depth
