"""The event correlator: repeats counted, similar events combined, writes rate-limited."""

from __future__ import annotations

from lamina.domain.events import COMBINED_PREFIX, EventCorrelator, EventIntent

BUILT = EventIntent("Normal", "Built", "pushed sha256:aa")


def test_a_repeat_updates_the_first_event_with_a_count() -> None:
    correlator = EventCorrelator()
    first = correlator.observe("uid-1", BUILT, 100.0)
    again = correlator.observe("uid-1", BUILT, 160.0)
    assert first is not None and again is not None
    assert (first.action, first.count) == ("create", 1)
    assert (again.action, again.count, again.series) == ("update", 2, first.series)
    assert (again.first_seen, again.last_seen) == (100.0, 160.0)


def test_series_differ_by_object_type_reason_and_message() -> None:
    correlator = EventCorrelator()
    writes = [
        correlator.observe("uid-1", BUILT, 0.0),
        correlator.observe("uid-2", BUILT, 0.0),
        correlator.observe("uid-1", EventIntent("Warning", "Built", "pushed sha256:aa"), 0.0),
        correlator.observe("uid-1", EventIntent("Normal", "Rebased", "pushed sha256:aa"), 0.0),
        correlator.observe("uid-1", EventIntent("Normal", "Built", "pushed sha256:bb"), 0.0),
    ]
    assert all(w is not None and w.action == "create" for w in writes)
    assert len({w.series for w in writes if w is not None}) == 5


def test_many_similar_messages_are_combined_into_one_event() -> None:
    correlator = EventCorrelator(similar_limit=3)
    writes = [
        correlator.observe("uid-1", EventIntent("Warning", "VulnerableLayer", f"layer {i}"), i)
        for i in range(6)
    ]
    assert [w.message for w in writes[:3] if w] == ["layer 0", "layer 1", "layer 2"]
    combined = [w for w in writes[3:] if w]
    assert [w.message for w in combined] == [COMBINED_PREFIX + f"layer {i}" for i in (3, 4, 5)]
    assert [w.action for w in combined] == ["create", "update", "update"]
    assert len({w.series for w in combined}) == 1
    assert combined[-1].count == 3


def test_similar_messages_outside_the_window_are_not_combined() -> None:
    correlator = EventCorrelator(similar_limit=2, similar_window=10.0)
    for i in range(5):
        write = correlator.observe("uid-1", EventIntent("Normal", "Built", f"d{i}"), i * 20.0)
        assert write is not None and not write.message.startswith(COMBINED_PREFIX)


def test_one_object_is_rate_limited_and_its_count_survives_the_drops() -> None:
    correlator = EventCorrelator(object_burst=3, object_refill_seconds=60.0)
    written = [correlator.observe("uid-1", BUILT, 0.0) for _ in range(10)]
    assert sum(1 for w in written if w) == 3
    assert correlator.dropped["object-rate"] == 7
    # Another object has its own bucket.
    assert correlator.observe("uid-2", BUILT, 0.0) is not None
    # A minute later one token is back, and the write carries every occurrence.
    later = correlator.observe("uid-1", BUILT, 60.0)
    assert later is not None and later.count == 11


def test_a_cascade_is_bounded_by_the_global_limit() -> None:
    correlator = EventCorrelator(global_burst=50, global_refill_per_second=1.0)
    written = [
        correlator.observe(f"uid-{i}", EventIntent("Normal", "BuildStarted", "x"), 0.0)
        for i in range(500)
    ]
    assert sum(1 for w in written if w) == 50
    assert correlator.dropped["global-rate"] == 450
    # Ten seconds on: ten more.
    more = [
        correlator.observe(f"uid-{i}", EventIntent("Normal", "Built", "y"), 10.0)
        for i in range(100)
    ]
    assert sum(1 for w in more if w) == 10


def test_memory_stays_bounded() -> None:
    correlator = EventCorrelator(max_entries=100, global_burst=10**6)
    for i in range(10_000):
        correlator.observe(f"uid-{i}", EventIntent("Normal", "Built", f"m{i}"), float(i))
    assert len(correlator._series) == 100
    assert len(correlator._objects) == 100
    assert len(correlator._similar) == 100
