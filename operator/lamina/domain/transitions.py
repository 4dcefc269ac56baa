"""Significant transitions of an Image or a ContainerCommit, read from two versions of status.

Events and metrics follow from what status says happened (a build started, a digest changed,
a commit failed), not from where in the code it happened: so every writer of status is
covered, and a transition is reported once however many times a handler runs.  The first
version seen of an object is only remembered: after an operator restart, what happened while
it was down is not re-announced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from lamina.domain.api_failures import API_UNAVAILABLE, FORBIDDEN, NAMESPACE_NOT_FOUND, REFUSED
from lamina.domain.conditions import PARENT_CURRENT, READY, STALLED, VULNERABLE
from lamina.domain.events import EventIntent
from lamina.domain.pod_problems import POD_PROBLEM_REASONS

BUILD_STARTED = "BuildStarted"
BUILT = "Built"
REBASED = "Rebased"
REMEDIATED = "Remediated"

# Reasons that are Warnings even while the object is still progressing.
WARNING_REASONS = POD_PROBLEM_REASONS | {API_UNAVAILABLE, NAMESPACE_NOT_FOUND, FORBIDDEN, REFUSED}

BuildResult = Literal["succeeded", "rebased", "failed"]
CommitResult = Literal["succeeded", "failed"]


@dataclass(frozen=True)
class ConditionFacts:
    status: str
    reason: str
    message: str


def _conditions(status: Mapping[str, Any]) -> dict[str, ConditionFacts]:
    found: dict[str, ConditionFacts] = {}
    for entry in status.get("conditions") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("type"), str):
            found[entry["type"]] = ConditionFacts(
                str(entry.get("status") or ""),
                str(entry.get("reason") or ""),
                str(entry.get("message") or ""),
            )
    return found


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


@dataclass(frozen=True)
class ImageFacts:
    """What transitions are read from, of one Image (status is hostile: parsed defensively)."""

    name: str
    uid: str
    parent_image: str | None = None
    automatic: bool = True
    committed: bool = False
    digest: str | None = None
    built_on: str | None = None
    built_at: datetime | None = None
    build_phase: str | None = None
    build_job: str | None = None
    build_started: str | None = None
    build_completed: str | None = None
    build_failure: str | None = None
    build_message: str = ""
    build_reasons: tuple[str, ...] = ()
    conditions: dict[str, ConditionFacts] = field(default_factory=dict)

    def condition(self, kind: str) -> ConditionFacts | None:
        return self.conditions.get(kind)

    @property
    def ready_reason(self) -> str | None:
        ready = self.conditions.get(READY)
        return ready.reason if ready else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def image_facts(obj: Mapping[str, Any]) -> ImageFacts:
    meta, spec, status = _map(obj.get("metadata")), _map(obj.get("spec")), _map(obj.get("status"))
    build, built_from = _map(status.get("build")), _map(status.get("builtFrom"))
    digest = status.get("digest") if isinstance(status.get("digest"), str) else None
    found = status.get("history")
    history: list[Any] = found if isinstance(found, list) else []
    latest = _map(history[0]) if history else {}
    listed = build.get("reasons")
    reasons: list[Any] = listed if isinstance(listed, list) else []
    return ImageFacts(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        parent_image=_map(spec.get("parent")).get("image"),
        automatic=_map(spec.get("rebuild")).get("policy", "Automatic") == "Automatic",
        committed=spec.get("commit") is not None,
        digest=digest,
        built_on=built_from.get("parentDigest"),
        built_at=parse_time(latest.get("builtAt")) if latest.get("digest") == digest else None,
        build_phase=build.get("phase"),
        build_job=build.get("job"),
        build_started=build.get("startedAt"),
        build_completed=build.get("completedAt"),
        build_failure=build.get("failure"),
        build_message=str(build.get("message") or ""),
        build_reasons=tuple(str(r) for r in reasons),
        conditions=_conditions(status),
    )


@dataclass(frozen=True)
class FinishedBuild:
    result: BuildResult
    seconds: float | None
    reason: str | None


def finished_build(old: ImageFacts | None, new: ImageFacts) -> FinishedBuild | None:
    """The build (or rebase) that finished between ``old`` and ``new``, if one did."""
    if old is None or new.build_phase not in ("Succeeded", "Failed"):
        return None
    key = (new.build_phase, new.build_started, new.build_completed)
    if key == (old.build_phase, old.build_started, old.build_completed):
        return None
    seconds = _seconds(parse_time(new.build_started), parse_time(new.build_completed))
    if new.build_phase == "Failed":
        return FinishedBuild("failed", seconds, new.build_failure or "BuildFailed")
    return FinishedBuild("succeeded" if new.build_job else "rebased", seconds, None)


def _started(old: ImageFacts, new: ImageFacts) -> bool:
    return new.build_phase == "Running" and (
        old.build_phase != "Running"
        or old.build_job != new.build_job
        or old.build_started != new.build_started
    )


def _flipped(old: ConditionFacts | None, new: ConditionFacts | None, status: str) -> bool:
    """``new`` has ``status`` and ``old`` did not have it with the same reason."""
    return (
        new is not None
        and new.status == status
        and (old is None or (old.status, old.reason) != (new.status, new.reason))
    )


def image_events(old: ImageFacts | None, new: ImageFacts) -> list[EventIntent]:
    """The Events an Image's change from ``old`` to ``new`` deserves (none on first sight)."""
    if old is None:
        return []
    events: list[EventIntent] = []
    if _started(old, new):
        why = "; ".join(new.build_reasons) or "build requested"
        events.append(EventIntent("Normal", BUILD_STARTED, f"build Job {new.build_job}: {why}"))
    done = finished_build(old, new)
    if done is not None:
        took = f" in {done.seconds:.0f}s" if done.seconds is not None else ""
        if done.result == "failed":
            message = new.build_message or "the build failed"
            events.append(EventIntent("Warning", done.reason or "BuildFailed", message))
        elif done.result == "rebased":
            events.append(EventIntent("Normal", REBASED, f"{new.build_message}: {new.digest}"))
        else:
            events.append(EventIntent("Normal", BUILT, f"pushed {new.digest}{took}"))
    parent = new.condition(PARENT_CURRENT)
    if _flipped(old.condition(PARENT_CURRENT), parent, "False"):
        assert parent is not None
        events.append(EventIntent("Normal", parent.reason, parent.message))
    vulnerable = new.condition(VULNERABLE)
    before = old.condition(VULNERABLE)
    if (
        vulnerable is not None
        and vulnerable.status == "True"
        and (before is None or (before.status, before.message) != ("True", vulnerable.message))
    ):
        events.append(EventIntent("Warning", vulnerable.reason, vulnerable.message))
    # A failed build is announced by its own transition; the Stalled condition that follows
    # it (often one watch event later) says the same.
    announced = new.build_failure if new.build_phase == "Failed" else None
    events += _summary_events(old.conditions, new.conditions, skip=announced)
    return events


def _summary_events(
    old: Mapping[str, ConditionFacts], new: Mapping[str, ConditionFacts], skip: str | None
) -> list[EventIntent]:
    """A Warning when the object becomes stuck, or cannot progress for a pod or API reason."""
    stalled, ready = new.get(STALLED), new.get(READY)
    if _flipped(old.get(STALLED), stalled, "True"):
        assert stalled is not None
        if stalled.reason != skip:
            return [EventIntent("Warning", stalled.reason, stalled.message)]
        return []
    before = old.get(READY)
    if (
        ready is not None
        and ready.reason in WARNING_REASONS
        and (before is None or before.reason != ready.reason)
    ):
        return [EventIntent("Warning", ready.reason, ready.message)]
    return []


@dataclass(frozen=True)
class CommitFacts:
    name: str
    uid: str
    phase: str | None = None
    conditions: dict[str, ConditionFacts] = field(default_factory=dict)
    started: datetime | None = None
    completed: datetime | None = None
    frozen_seconds: float | None = None
    image: str | None = None

    @property
    def ready_reason(self) -> str | None:
        ready = self.conditions.get(READY)
        return ready.reason if ready else None


def commit_facts(obj: Mapping[str, Any]) -> CommitFacts:
    meta, status = _map(obj.get("metadata")), _map(obj.get("status"))
    frozen = status.get("frozenSeconds")
    image = _map(status.get("image"))
    return CommitFacts(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        phase=status.get("phase"),
        conditions=_conditions(status),
        started=parse_time(status.get("startedAt")),
        completed=parse_time(status.get("completedAt")),
        frozen_seconds=float(frozen) if isinstance(frozen, int | float) else None,
        image=image.get("ref") if isinstance(image.get("ref"), str) else None,
    )


@dataclass(frozen=True)
class FinishedCommit:
    result: CommitResult
    seconds: float | None
    reason: str | None


def finished_commit(old: CommitFacts | None, new: CommitFacts) -> FinishedCommit | None:
    if old is None or old.phase == new.phase or new.phase not in ("Succeeded", "Failed"):
        return None
    seconds = _seconds(new.started, new.completed)
    if new.phase == "Failed":
        return FinishedCommit("failed", seconds, new.ready_reason)
    return FinishedCommit("succeeded", seconds, None)


def commit_events(old: CommitFacts | None, new: CommitFacts) -> list[EventIntent]:
    """One Event per change of what the commit is doing: each phase and each waiting reason."""
    if old is None:
        return []
    ready = new.conditions.get(READY)
    if ready is None or (old.phase, old.ready_reason) == (new.phase, ready.reason):
        return []
    stalled = new.conditions.get(STALLED)
    warning = new.phase == "Failed" or ready.reason in WARNING_REASONS
    if new.phase == "Pending" and stalled is not None and stalled.status == "True":
        # Waiting for the user's pod is normal; a missing pod or container is worth a Warning.
        warning = ready.reason in ("PodNotFound", "ContainerNotFound") or warning
    message = ready.message
    if new.phase == "Succeeded":
        took = _seconds(new.started, new.completed)
        parts = [f"{took:.1f}s" if took is not None else None]
        if new.frozen_seconds is not None:
            parts.append(f"container frozen {new.frozen_seconds:.2f}s")
        details = ", ".join(p for p in parts if p)
        message = f"{message} ({details})" if details else message
    return [EventIntent("Warning" if warning else "Normal", ready.reason, message)]
