"""Which Kubernetes Events to write, so that a cascade informs without flooding.

The same idea as client-go's event correlator, decided here with the clock passed in:

- **repeats** of one event (same object, type, reason and message) update one Event object's
  ``count`` instead of creating new ones;
- **similar** events (same object, type and reason, differing messages, e.g. one per layer)
  are combined into one once more than ``similar_limit`` distinct messages arrive within
  ``similar_window`` seconds: its message becomes "(combined from similar events): ...";
- a **per-object** token bucket (``object_burst`` writes, then one per
  ``object_refill_seconds``) and a **global** one (``global_burst``, then
  ``global_refill_per_second``) bound the writes; a write over either limit is dropped, but
  the occurrence is still counted, so the next write of that event carries the true count.

State is bounded (least recently used entries are forgotten beyond ``max_entries``), so a
long-running operator with many objects holds a fixed amount of memory.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

EventType = Literal["Normal", "Warning"]
Drop = Literal["object-rate", "global-rate"]

COMBINED_PREFIX = "(combined from similar events): "

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True)
class EventIntent:
    """What a handler wants to tell the users of one object."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class EventWrite:
    """What to write: create a new Event object or update the existing one of ``series``."""

    action: Literal["create", "update"]
    series: str
    type: EventType
    reason: str
    message: str
    count: int
    first_seen: float
    last_seen: float


@dataclass
class _Series:
    count: int
    first_seen: float
    written: bool = False


@dataclass
class _Bucket:
    tokens: float
    at: float

    def take(self, now: float, burst: float, per_second: float) -> bool:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.at) * per_second)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _Lru(Generic[_K, _V]):
    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._limit = limit

    def get(self, key: _K) -> _V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: _K, value: _V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def series_id(obj: str, type_: str, reason: str, message: str) -> str:
    """A stable short id for one event series (it names the Event object)."""
    key = "\x00".join((obj, type_, reason, message))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class EventCorrelator:
    object_burst: int = 25
    object_refill_seconds: float = 300.0
    global_burst: int = 100
    global_refill_per_second: float = 2.0
    similar_limit: int = 10
    similar_window: float = 600.0
    max_entries: int = 4096
    dropped: dict[Drop, int] = field(default_factory=lambda: {"object-rate": 0, "global-rate": 0})

    def __post_init__(self) -> None:
        self._series: _Lru[str, _Series] = _Lru(self.max_entries)
        self._similar: _Lru[tuple[str, str, str], dict[str, float]] = _Lru(self.max_entries)
        self._objects: _Lru[str, _Bucket] = _Lru(self.max_entries)
        self._global = _Bucket(float(self.global_burst), 0.0)
        self._global_started = False

    def _message(self, obj: str, intent: EventIntent, now: float) -> str:
        """The message as written: itself, or combined when too many similar ones arrive."""
        group = (obj, intent.type, intent.reason)
        seen = self._similar.get(group) or {}
        seen = {m: t for m, t in seen.items() if now - t <= self.similar_window}
        seen[intent.message] = now
        if len(seen) > self.similar_limit:
            # Keep the group at the limit: it stays combined while the burst lasts.
            for stale in sorted(seen, key=seen.__getitem__)[: len(seen) - self.similar_limit]:
                del seen[stale]
            self._similar.put(group, seen)
            return COMBINED_PREFIX + intent.message
        self._similar.put(group, seen)
        return intent.message

    def _allowed(self, obj: str, now: float) -> Drop | None:
        bucket = self._objects.get(obj)
        if bucket is None:
            bucket = _Bucket(float(self.object_burst), now)
            self._objects.put(obj, bucket)
        if not bucket.take(now, self.object_burst, 1.0 / self.object_refill_seconds):
            return "object-rate"
        if not self._global_started:
            self._global = _Bucket(float(self.global_burst), now)
            self._global_started = True
        if not self._global.take(now, self.global_burst, self.global_refill_per_second):
            return "global-rate"
        return None

    def observe(self, obj: str, intent: EventIntent, now: float) -> EventWrite | None:
        """Count one occurrence of ``intent`` on ``obj`` (a uid); what to write, if anything."""
        message = self._message(obj, intent, now)
        combined = message.startswith(COMBINED_PREFIX)
        sid = series_id(obj, intent.type, intent.reason, COMBINED_PREFIX if combined else message)
        series = self._series.get(sid)
        if series is None:
            series = _Series(count=0, first_seen=now)
            self._series.put(sid, series)
        series.count += 1
        dropped = self._allowed(obj, now)
        if dropped is not None:
            self.dropped[dropped] += 1
            return None
        action: Literal["create", "update"] = "update" if series.written else "create"
        series.written = True
        return EventWrite(
            action,
            sid,
            intent.type,
            intent.reason,
            message,
            series.count,
            series.first_seen,
            now,
        )
