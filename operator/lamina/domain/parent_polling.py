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
- **What a parent is pinned to**: the ``linux/amd64`` image manifest, not the index a tag may
  name.  An index also holds attestation manifests (BuildKit's SBOM and provenance, Lamina's
  own, each with a timestamp), so the index digest of an image Lamina built moves on every
  rebuild even when the image is byte for byte the same (a reproducible build): pinned by the
  index, every child would see a parent change and rebuild for nothing.  Pinned by the image
  manifest, an unchanged image is no parent change, as for a parent Image (whose
  ``status.digest`` is its image manifest's).  A HEAD reports the digest of what the tag names
  (the index), so :func:`pin_from_head` says when that answer alone confirms the pin and when
  the index must be fetched to read the image manifest's digest from it.
- **Backoff** per registry on 429 and 5xx (and on no answer within the poll's timeout): the
  registry is not asked again until its pause ends: its ``Retry-After`` when it gave one (at
  least 5 s, at most 30 minutes), else 30 s doubling per consecutive failure up to 30
  minutes.  The pause remembers what the registry answered (status and standard reason
  phrase, never a body), which the affected Images' conditions quote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
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
class TagAnswer:
    """What a GET of a parent reference found.

    ``named``: the digest of the document the reference names (an index or an image
    manifest), which is what a HEAD reports; ``image``: the digest of the platform image
    manifest the parent is pinned to (``named`` itself when that is an image manifest).
    """

    named: str
    image: str


def pin_from_head(
    head_digest: str | None, pinned: Collection[str], last_fetched: TagAnswer | None
) -> str | None:
    """The pin a HEAD answer confirms without a GET, or None when the manifest must be fetched.

    ``pinned``: the digests the Images naming the reference are pinned to now (their
    ``status.resolved.digest``); ``last_fetched``: what this resolver's last GET of it found
    (None after a restart).

    - HEAD names what the last GET fetched: its image manifest is still the pin, with no GET
      (an unchanged index costs one HEAD, like an unchanged manifest).
    - HEAD names a digest the Images are already pinned to: a tag naming an image manifest
      that did not move (also after a restart), or an index pinned as such by an earlier
      version of Lamina, which stays as it is until the tag moves (no rebuild for an upgrade).
    - Otherwise (the digest moved, an index not fetched since a restart, or no digest in the
      HEAD answer): fetch, and pin the image manifest the answer names, which is the old pin
      again when only the index around it changed.
    """
    if head_digest is None:
        return None
    if last_fetched is not None and last_fetched.named == head_digest:
        return last_fetched.image
    return head_digest if head_digest in pinned else None


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
