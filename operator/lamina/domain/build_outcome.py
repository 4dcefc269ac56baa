"""What a finished build Job means: the pushed digest, or why it failed, in words users grep.

The builder writes the pushed digest alone to its termination message; a failed builder
leaves the tail of its log there instead (``FallbackToLogsOnError``), which is where BuildKit
prints the failing step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lamina.domain.commit_outcome import JobOutcome

BUILD_FAILED = "BuildFailed"
PUSH_DENIED = "PushDenied"
OOM_KILLED = "OOMKilled"
EVICTED = "Evicted"
DEADLINE_EXCEEDED = "DeadlineExceeded"
INVALID_RESULT = "InvalidResult"

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_DENIED = re.compile(r"\b(denied|unauthorized|401 Unauthorized|403 Forbidden)\b", re.IGNORECASE)
_LAST_LINES = 12


@dataclass(frozen=True)
class BuildResult:
    digest: str | None
    reason: str | None = None
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.digest is not None


def _last_lines(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return "\n".join(lines[-_LAST_LINES:])


def judge_build(outcome: JobOutcome) -> BuildResult:
    message = (outcome.termination_message or "").strip()
    if outcome.state == "succeeded":
        if _DIGEST.match(message):
            return BuildResult(message)
        return BuildResult(
            None, INVALID_RESULT, "the build Job succeeded but reported no digest: " + message[:200]
        )
    if outcome.job_reason == "DeadlineExceeded":
        return BuildResult(
            None,
            DEADLINE_EXCEEDED,
            "the build ran past its deadline: spec.build.timeout, at most the operator's "
            "LAMINA_BUILD_DEADLINE_SECONDS",
        )
    if outcome.exit_reason == "OOMKilled":
        return BuildResult(None, OOM_KILLED, "the builder ran out of memory")
    if outcome.exit_reason == "Evicted" or outcome.job_reason == "Evicted":
        return BuildResult(None, EVICTED, "the build pod was evicted from its node")
    if _DENIED.search(message) and ("push" in message.lower() or "export" in message.lower()):
        return BuildResult(None, PUSH_DENIED, _last_lines(message))
    return BuildResult(None, BUILD_FAILED, _last_lines(message) or "the build failed")
