"""What an Image's status should say about its place in the tree.

This is the part of an Image's status that follows from the tree alone: whether its parent can
be resolved, its lineage, and the kstatus summary while no build has run.  Reasons are
CamelCase words a user can grep for and alert on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from lamina.api.image import ImageStatus, LineageEntry
from lamina.domain import rebuild
from lamina.domain.builds import BuildPlan
from lamina.domain.conditions import (
    REASONS,
    RECONCILING,
    STALLED,
    Verdict,
    kstatus,
    merge_conditions,
    same_conditions,
)
from lamina.domain.graph import Ancestry, ImageGraph

# Reasons, shared with the docs and tests.
PARENT_NOT_FOUND = "ParentNotFound"
PARENT_CYCLE = "ParentCycle"
ANCESTOR_STALLED = "AncestorStalled"
BUILD_PENDING = "BuildPending"
COMMITTED = "Committed"
COMMIT_PENDING = "CommitPending"
UP_TO_DATE = "UpToDate"
WAITING_FOR_PARENT = "WaitingForParent"
WAITING_FOR_SOURCE = "WaitingForSource"
BUILD_QUEUED = "BuildQueued"
BUILDING = "Building"
PARENT_UPDATE_HELD = "ParentUpdateHeld"
PARENT_CURRENT = "ParentCurrent"
BUILD_FAILED = "BuildFailed"


@dataclass(frozen=True)
class TreeStatus:
    """The tree-derived part of an Image's status."""

    lineage: list[LineageEntry]
    conditions: tuple[Verdict, ...]

    @property
    def stalled(self) -> bool:
        return any(v.type == "Stalled" and v.status == "True" for v in self.conditions)


@lru_cache(maxsize=65536)
def _entry(name: str | None, ref: str | None, digest: str | None) -> LineageEntry:
    # Shared between the lineages of every descendant (a deep tree repeats each ancestor in
    # every lineage below it), and built without re-validating what the index validated.
    return LineageEntry.model_construct(name=name, ref=ref, digest=digest)


def lineage_of(ancestry: Ancestry) -> list[LineageEntry]:
    """Ancestors nearest first, ending at the root (an external ref when there is one)."""
    entries = [_entry(node.name, None, node.digest) for node in ancestry.chain]
    if ancestry.root_ref is not None:
        entries.append(_entry(None, ancestry.root_ref, ancestry.root_ref_digest))
    return entries


def _spell_cycle(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)


def decide_tree_status(
    name: str,
    graph: ImageGraph,
    namespace: str,
    plan: BuildPlan | None = None,
    status: ImageStatus | None = None,
) -> TreeStatus:
    """Lineage and kstatus conditions of ``name`` from the tree alone.

    An Image whose own parent reference is broken is Stalled with the reason; one whose
    ancestor is broken is Stalled with ``AncestorStalled`` naming that ancestor, since it cannot
    build either until the ancestor is fixed.  Otherwise the Image is Reconciling: waiting for
    its build.
    """
    node = graph.nodes[name]
    ancestry = graph.ancestry(name)
    lineage = lineage_of(ancestry)

    if ancestry.cycle is not None:
        spelled = _spell_cycle(ancestry.cycle)
        if name in ancestry.cycle:
            reason = PARENT_CYCLE
            message = f"parent references form a cycle: {spelled}"
        else:
            reason = ANCESTOR_STALLED
            message = f"ancestor {ancestry.cycle[0]} is in a parent cycle: {spelled}"
        return TreeStatus(
            lineage, kstatus(ready=False, progressing=False, reason=reason, message=message)
        )

    if ancestry.missing is not None:
        if ancestry.missing_from == name:
            reason = PARENT_NOT_FOUND
            message = f'parent Image "{ancestry.missing}" does not exist in namespace "{namespace}"'
        else:
            reason = ANCESTOR_STALLED
            message = (
                f"ancestor {ancestry.missing_from} is stalled: its parent Image "
                f'"{ancestry.missing}" does not exist in namespace "{namespace}"'
            )
        return TreeStatus(
            lineage, kstatus(ready=False, progressing=False, reason=reason, message=message)
        )

    if node.committed_by is not None:
        if node.digest is not None:
            verdicts = kstatus(
                ready=True,
                progressing=False,
                reason=COMMITTED,
                message=f"recorded from ContainerCommit {node.committed_by}: {node.digest}",
            )
        else:
            verdicts = kstatus(
                ready=False,
                progressing=True,
                reason=COMMIT_PENDING,
                message=f"waiting for ContainerCommit {node.committed_by} to record its result",
            )
        return TreeStatus(lineage, verdicts)

    if plan is None:
        waiting = (
            f"parent Image {node.parent_image} resolved; waiting for the build"
            if node.parent_image is not None
            else f"parent {node.parent_ref}; waiting for the build"
        )
        return TreeStatus(
            lineage, kstatus(ready=False, progressing=True, reason=BUILD_PENDING, message=waiting)
        )
    return TreeStatus(lineage, build_conditions(plan, status or ImageStatus()))


def build_conditions(plan: BuildPlan, status: ImageStatus) -> tuple[Verdict, ...]:
    """kstatus and ParentCurrent from the build decision and the recorded build."""
    reasons = "; ".join(str(reason) for reason in plan.reasons)
    build = status.build
    built_on = status.built_from.parent_digest if status.built_from else None
    wanted_parent = plan.wanted.parent_digest if plan.wanted else None
    current = Verdict(PARENT_CURRENT, "True", UP_TO_DATE, f"built on parent {built_on}")
    if plan.action == "none":
        summary = kstatus(
            ready=True, progressing=False, reason=UP_TO_DATE, message=f"{status.digest}"
        )
        return (*summary, current)
    if plan.action == "wait-parent" and plan.source:
        return _source_conditions(plan, status)
    if plan.action == "wait-parent":
        resolved = status.resolved
        reason = WAITING_FOR_PARENT
        if resolved is not None and resolved.message:
            why = f"cannot resolve {resolved.ref}: {resolved.message}"
            # The registry's answer ("ManifestTooLarge: registry ..."), as the reason itself.
            said = resolved.message.split(":", 1)[0]
            reason = said if REASONS.get(said) == RECONCILING else WAITING_FOR_PARENT
        elif plan.resolving:
            why = f"resolving {plan.waiting_on}"
        else:
            why = f"waiting for parent {plan.waiting_on} to have a new digest"
        return kstatus(ready=False, progressing=True, reason=reason, message=why)
    if plan.action == "hold":
        moved = [
            f"the git source moved to {r.new} (built at {r.old})"
            for r in plan.reasons
            if r.kind == rebuild.SOURCE_CHANGED
        ]
        if wanted_parent != built_on:
            moved.insert(0, f"parent has a new digest {wanted_parent} (built on {built_on})")
        held = Verdict(
            PARENT_CURRENT,
            "False",
            PARENT_UPDATE_HELD,
            f"{'; '.join(moved)}; the Manual policy holds the rebuild: set annotation "
            "lamina.dev/rebuild to a new value to build",
        )
        ready = kstatus(
            ready=status.digest is not None,
            progressing=status.digest is None,
            reason=PARENT_UPDATE_HELD,
            message=f"{status.digest} (parent update held)",
        )
        return (*ready, held)
    stale = Verdict(
        PARENT_CURRENT,
        "True" if plan.parent_current else "False",
        UP_TO_DATE if plan.parent_current else "ParentChanged",
        f"built on {built_on}, parent is {wanted_parent}",
    )
    waiting = build.waiting if build else None
    if plan.action == "building":
        job = build.job if build else None
        if waiting is not None:
            # The build pod cannot start (ImagePullBackOff, ...): say so, still progressing;
            # the last good digest stays, and the kubelet keeps retrying.
            message = f"build Job {job} cannot start: {waiting.message}"
            return (
                *kstatus(ready=False, progressing=True, reason=waiting.reason, message=message),
                stale,
            )
        return (
            *kstatus(
                ready=False, progressing=True, reason=BUILDING, message=f"{reasons} (Job {job})"
            ),
            stale,
        )
    if plan.action == "failed":
        reason = (build.failure if build else None) or BUILD_FAILED
        message = (build.message if build else None) or "the build failed"
        return (*kstatus(ready=False, progressing=False, reason=reason, message=message), stale)
    return (*kstatus(ready=False, progressing=True, reason=BUILD_QUEUED, message=reasons), stale)


def _source_conditions(plan: BuildPlan, status: ImageStatus) -> tuple[Verdict, ...]:
    """A git context whose revision has no commit yet: resolving, or why it cannot be (the
    reason is the resolver's, e.g. GitAuthenticationFailed: Stalled until the spec, the Secret
    or the server changes; GitSourceUnavailable: still trying)."""
    source = status.source
    if source is None or not source.message:
        return kstatus(
            ready=False,
            progressing=True,
            reason=WAITING_FOR_SOURCE,
            message=f"resolving {plan.waiting_on}",
        )
    said = source.message.split(":", 1)[0]
    kind = REASONS.get(said)
    reason = said if kind in (RECONCILING, STALLED) else WAITING_FOR_SOURCE
    message = f"cannot resolve {source.revision} of {source.url}: {source.message}"
    return kstatus(ready=False, progressing=kind != STALLED, reason=reason, message=message)


def image_status_patch(
    *,
    current: ImageStatus,
    generation: int | None,
    tree: TreeStatus,
    extra: Sequence[Verdict] = (),
    now: datetime,
) -> dict[str, Any] | None:
    """The merge patch for ``status`` that makes it say ``tree``, or None when it already does.

    Only the fields this decision owns are written (conditions, lineage, observedGeneration), so
    a build's fields are never clobbered.  Returning None for an up-to-date status is what stops
    the event -> patch -> event loop after one round.
    """
    conditions = merge_conditions(
        current.conditions, [*tree.conditions, *extra], generation=generation, now=now
    )
    if (
        current.observed_generation == generation
        and same_conditions(current.conditions, conditions)
        and (current.lineage or []) == tree.lineage
    ):
        return None
    return {
        "observedGeneration": generation,
        "conditions": [c.wire() for c in conditions],
        "lineage": [entry.wire() for entry in tree.lineage],
    }
