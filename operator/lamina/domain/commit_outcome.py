"""What a finished (or running) commit Job means for the ContainerCommit's status.

The committer prints its result as JSON into the container's termination message; a failed
committer leaves its error there instead (``FallbackToLogsOnError``).  Reasons are the words
users alert on; messages carry the committer's own words, e.g. the registry's refusal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from lamina.domain.conditions import Verdict, kstatus

JobState = Literal["running", "succeeded", "failed"]

COMMITTING = "Committing"
COMMITTED = "Committed"
COMMIT_FAILED = "CommitFailed"
DEADLINE_EXCEEDED = "DeadlineExceeded"
COMMITTER_KILLED = "CommitterKilled"
INVALID_RESULT = "InvalidResult"
VERIFICATION_FAILED = "VerificationFailed"

# A termination message is cut at 4 KiB; keep the tail, where the error usually is.
_MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class JobOutcome:
    """A commit Job as observed: its state and its committer container's last words."""

    state: JobState
    job_reason: str | None = None
    exit_reason: str | None = None
    termination_message: str | None = None


@dataclass(frozen=True)
class CommitResult:
    """The committer's JSON result, reduced to what status records."""

    image: str
    digest: str
    parent_ref: str | None
    parent_digest: str | None
    layer: dict[str, Any]
    timings: dict[str, Any]
    # The index the tag names (the image and its provenance); None from an older committer.
    index_digest: str | None = None


@dataclass(frozen=True)
class CommitVerdict:
    phase: str
    conditions: tuple[Verdict, ...]
    result: CommitResult | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def parse_result(message: str | None) -> CommitResult | None:
    """The result JSON, or None when the message is not one (an error, or cut short)."""
    try:
        data = json.loads(message or "")
        return CommitResult(
            image=data["image"],
            digest=data["digest"],
            parent_ref=(data.get("parent") or {}).get("ref"),
            parent_digest=(data.get("parent") or {}).get("digest"),
            layer=dict(data["layer"]),
            timings=dict(data.get("timings") or {}),
            index_digest=_digest(data.get("indexDigest")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _digest(value: Any) -> str | None:
    """A sha256 digest from the committer's words, or None (a digest goes into a URL)."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^sha256:[a-f0-9]{64}$", value):
        raise ValueError("indexDigest is not a sha256 digest")
    return value


def _tail(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= _MESSAGE_LIMIT else "..." + text[-_MESSAGE_LIMIT:]


def _failed(reason: str, message: str) -> CommitVerdict:
    return CommitVerdict(
        "Failed", kstatus(ready=False, progressing=False, reason=reason, message=message)
    )


def judge_commit_job(outcome: JobOutcome) -> CommitVerdict:
    """Phase and conditions from the Job; a success still awaits verification (see below)."""
    if outcome.state == "running":
        return CommitVerdict(
            "Running",
            kstatus(
                ready=False,
                progressing=True,
                reason=COMMITTING,
                message="the commit Job is snapshotting the container and pushing the image",
            ),
        )
    if outcome.state == "failed":
        if outcome.job_reason == "DeadlineExceeded":
            return _failed(DEADLINE_EXCEEDED, "the commit Job ran past its deadline")
        if outcome.exit_reason in ("OOMKilled", "Error") and not outcome.termination_message:
            return _failed(COMMITTER_KILLED, f"the committer was killed ({outcome.exit_reason})")
        return _failed(COMMIT_FAILED, _tail(outcome.termination_message) or "the commit failed")
    result = parse_result(outcome.termination_message)
    if result is None:
        return _failed(
            INVALID_RESULT,
            "the commit Job succeeded but left no readable result: "
            + _tail(outcome.termination_message),
        )
    return CommitVerdict(
        "Succeeded",
        kstatus(ready=True, progressing=False, reason=COMMITTED, message=f"pushed {result.image}"),
        result,
        status_fields(result),
    )


def status_fields(result: CommitResult) -> dict[str, Any]:
    """The ContainerCommit status fields a verified result fills."""
    layer = result.layer
    timings = result.timings
    fields: dict[str, Any] = {
        "image": {"ref": result.image, "digest": result.digest},
        "parent": {"ref": result.parent_ref, "digest": result.parent_digest},
        "layer": {
            "digest": layer.get("digest"),
            "diffID": layer.get("diffID"),
            "size": layer.get("size"),
            "entries": layer.get("entries"),
        },
    }
    for key in ("frozenSeconds", "diffSeconds", "pushSeconds"):
        if timings.get(key) is not None:
            fields[key] = timings[key]
    return fields


def verification_failed(message: str) -> CommitVerdict:
    """The registry does not hold what the committer said it pushed."""
    return _failed(VERIFICATION_FAILED, message)
