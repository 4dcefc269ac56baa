"""When an external parent is polled, and how long a registry that pushed back is left alone.

Pure: the clock is passed in.  The I/O (HEAD, then GET only when the digest moved) lives in
:mod:`lamina.handlers.parent_resolver`.

- **Due**: a ``parent.ref`` is polled every ``pollInterval`` after its last resolution (every
  30 s while it has never resolved), plus a jitter.
- **Jitter** spreads the polls: Images created together (a GitOps sync of hundreds) would
  otherwise poll their registries in the same second forever.  It is derived from the ref's
  text (a stable hash, up to 10% of the interval and at most 5 minutes), so it needs no random
  state, every Image naming one ref shares one schedule (one request serves them all), and two
  refs rarely share a second.  It only ever delays: a poll is never earlier than asked for.
- **Backoff** per registry on 429 and 5xx (and on no answer within the poll's timeout): the
  registry is not asked again until its pause ends: its ``Retry-After`` when it gave one (at
  least 5 s, at most 30 minutes), else 30 s doubling per consecutive failure up to 30
  minutes.  The pause remembers what the registry answered (status and standard reason
  phrase, never a body), which the affected Images' conditions quote.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

RETRY_UNRESOLVED = timedelta(seconds=30)
JITTER_FRACTION = 0.1
MAX_JITTER = timedelta(minutes=5)
BACKOFF_FIRST = timedelta(seconds=30)
MIN_PAUSE = timedelta(seconds=5)
MAX_PAUSE = timedelta(minutes=30)


def poll_jitter(ref: str, interval: timedelta) -> timedelta:
    """A stable delay in ``[0, min(10% of interval, 5 min))`` for this ref."""
    fraction = int.from_bytes(hashlib.sha256(ref.encode()).digest()[:8], "big") / 2**64
    return min(interval * JITTER_FRACTION, MAX_JITTER) * fraction


def poll_due(
    ref: str,
    interval: timedelta,
    *,
    resolved_ref: str | None,
    resolved_digest: str | None,
    resolved_at: datetime | None,
    now: datetime,
) -> bool:
    """Whether ``ref`` should be resolved again, from what ``status.resolved`` says.

    A resolution of another ref (the spec changed) or none at all is due at once.
    """
    if resolved_ref != ref or resolved_at is None:
        return True
    wait = interval if resolved_digest else RETRY_UNRESOLVED
    return now - resolved_at >= wait + poll_jitter(ref, wait)


@dataclass(frozen=True)
class RegistryPause:
    """A registry that answered 429 or 5xx: not asked again before ``until``."""

    registry: str
    until: datetime
    failures: int
    # What it did: "answered HTTP 429 Too Many Requests" (the standard phrase, never a body),
    # or "did not answer within 10 s".
    answer: str
    # The condition reason of the failure (RegistryRateLimited, RegistryUnavailable).
    reason: str

    def message(self) -> str:
        return (
            f"{self.reason}: registry {self.registry} {self.answer}; it is not asked "
            f"again before {self.until.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} "
            f"({self.failures} failed poll{'s' if self.failures != 1 else ''} in a row)"
        )


def pause_after_failure(
    previous: RegistryPause | None,
    *,
    registry: str,
    answer: str,
    reason: str,
    retry_after: float | None,
    now: datetime,
) -> RegistryPause:
    """The pause after one more 429/5xx: Retry-After when given (bounded), else exponential."""
    failures = (previous.failures if previous is not None else 0) + 1
    if retry_after is not None:
        wait = timedelta(seconds=retry_after)
    else:
        wait = BACKOFF_FIRST * 2 ** min(failures - 1, 16)
    wait = min(max(wait, MIN_PAUSE), MAX_PAUSE)
    return RegistryPause(registry, now + wait, failures, answer, reason)


def active_pause(pause: RegistryPause | None, now: datetime) -> RegistryPause | None:
    """The pause if it still holds at ``now``."""
    return pause if pause is not None and now < pause.until else None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if absent
    or unreadable (a date in the past is 0)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(min(int(text[:12]), 10**9))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - now).total_seconds(), 0.0)
