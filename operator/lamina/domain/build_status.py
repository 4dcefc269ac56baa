"""The build fields of an Image's status after each step of a build, as typed models.

Every writer of build fields (a resolution, a started, adopted, lost, failed, succeeded or
rebased build) goes through these functions, so the status a pass writes is always a model
the API types validate, never a hand-built dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lamina.api.attestation import AttestationStatus
from lamina.api.image import (
    BuildStatus,
    BuildWaiting,
    BuiltFromStatus,
    HistoryEntry,
    ImageLayer,
    ImageParentStatus,
    ImageSpec,
    ImageStatus,
    ResolvedParent,
    ResolvedSource,
)
from lamina.domain.attestation_index import AttestationFact
from lamina.domain.builds import BuildPlan
from lamina.domain.manifest_facts import LayerFact

REBASE_NOT_POSSIBLE = "RebaseNotPossible"


def resolved(
    status: ImageStatus, ref: str, digest: str | None, message: str | None, now: datetime
) -> ImageStatus:
    """The outcome of resolving ``ref``: the digest (the last known one on an error)."""
    before = status.resolved
    if digest is None and before is not None and before.ref == ref:
        digest = before.digest
    return status.model_copy(
        update={
            "resolved": ResolvedParent(ref=ref, digest=digest, resolved_at=now, message=message)
        }
    )


def source_resolved(
    status: ImageStatus,
    *,
    url: str,
    revision: str,
    commit: str | None,
    message: str | None,
    now: datetime,
) -> ImageStatus:
    """The outcome of resolving a git context's revision: the commit (the last known one on
    an error, so a flaky server does not stop the Image from being current)."""
    before = status.source
    if commit is None and before is not None and (before.url, before.revision) == (url, revision):
        commit = before.commit
    source = ResolvedSource(
        url=url, revision=revision, commit=commit, resolved_at=now, message=message
    )
    return status.model_copy(update={"source": source})


def _wanted(plan: BuildPlan) -> BuiltFromStatus:
    assert plan.wanted is not None
    return BuiltFromStatus(
        generation=plan.wanted.generation,
        parent_digest=plan.wanted.parent_digest,
        trigger=plan.wanted.trigger,
        source_commit=plan.wanted.source_commit,
    )


def build_started(
    status: ImageStatus, plan: BuildPlan, job: str, now: datetime, note: str | None = None
) -> ImageStatus:
    """A build Job runs for ``plan`` (just created, or found running: adopted)."""
    reasons = [str(reason) for reason in plan.reasons]
    if note:
        reasons.append(f"{REBASE_NOT_POSSIBLE}: {note}")
    build = BuildStatus(
        job=job,
        phase="Running",
        reasons=reasons,
        inputs=plan.inputs,
        wanted=_wanted(plan),
        started_at=now,
    )
    return status.model_copy(update={"build": build})


def build_waiting(status: ImageStatus, problem: tuple[str, str] | None) -> ImageStatus | None:
    """The status saying why the running build's pod cannot start (``(reason, message)``), or
    that it can (None); None when the status already says so."""
    build = status.build
    if build is None or build.phase != "Running":
        return None
    wanted = BuildWaiting(reason=problem[0], message=problem[1]) if problem else None
    if build.waiting == wanted:
        return None
    return status.model_copy(update={"build": build.model_copy(update={"waiting": wanted})})


def build_failed(
    status: ImageStatus,
    reason: str,
    message: str,
    now: datetime,
    build: BuildStatus | None = None,
) -> ImageStatus:
    """The build (``build``, default: the recorded one) failed for its inputs."""
    base = build or status.build or BuildStatus()
    failed = base.model_copy(
        update={
            "phase": "Failed",
            "failure": reason,
            "message": message,
            "completed_at": now,
            "waiting": None,
        }
    )
    return status.model_copy(update={"build": failed})


def refused_build(
    status: ImageStatus,
    plan: BuildPlan,
    *,
    job: str,
    reason: str,
    message: str,
    now: datetime,
    note: str | None = None,
) -> ImageStatus:
    """A build that could not start (its Dockerfile, context or push Secret is wrong)."""
    started = build_started(status, plan, job, now, note)
    return build_failed(started, reason, message, now)


def new_digest(
    status: ImageStatus,
    spec: ImageSpec,
    build: BuildStatus,
    *,
    digest: str,
    facts: Sequence[LayerFact],
    message: str,
    now: datetime,
    attestations: Sequence[AttestationFact] = (),
    index_digest: str | None = None,
) -> ImageStatus:
    """A verified new digest (from a build Job or a rebase), its layers and history.

    ``digest`` is the image manifest's; ``index_digest`` the index the tags point at, which
    holds it and the attestation manifests ``attestations`` were read from.
    """
    assert build.wanted is not None
    parent_digest = build.wanted.parent_digest
    entry = HistoryEntry(
        digest=digest,
        parent_digest=parent_digest,
        reason="; ".join(build.reasons or []),
        built_at=now,
    )
    history = [entry, *(status.history or [])][: spec.history_limit]
    done = build.model_copy(
        update={
            "phase": "Succeeded",
            "completed_at": now,
            "failure": None,
            "message": message,
            "started_at": build.started_at or now,
            "waiting": None,
        }
    )
    return status.model_copy(
        update={
            "digest": digest,
            "image_ref": f"{spec.output.repository}@{digest}",
            "parent": ImageParentStatus(
                image=spec.parent.image,
                ref=None if spec.parent.image else spec.parent.ref,
                digest=parent_digest,
            ),
            "built_from": build.wanted,
            "layers": [
                ImageLayer(digest=fact.digest, size=fact.size, own=fact.own) for fact in facts
            ],
            "history": history,
            "build": done,
            "index_digest": index_digest,
            "attestations": [
                AttestationStatus.model_validate(fact.status()) for fact in attestations
            ]
            or None,
        }
    )


def rebase_build(plan: BuildPlan, now: datetime) -> BuildStatus:
    """The ``status.build`` of a rebase (no Job)."""
    return BuildStatus(
        job=None,
        phase="Running",
        reasons=[str(reason) for reason in plan.reasons],
        inputs=plan.inputs,
        wanted=_wanted(plan),
        started_at=now,
    )
