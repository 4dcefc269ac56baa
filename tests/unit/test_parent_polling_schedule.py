"""The pure parts of parent polling: when a ref is due, its jitter, registry pauses, and when a
HEAD answer confirms the pin without fetching the manifest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lamina.domain.parent_polling import (
    MAX_JITTER,
    MAX_PAUSE,
    RegistryPause,
    TagAnswer,
    active_pause,
    pause_after_failure,
    pin_from_head,
    poll_due,
    poll_jitter,
    retry_after_seconds,
)

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
TEN_MINUTES = timedelta(minutes=10)


def due(
    ref: str, *, ago: float | None, digest: str | None = "sha256:a", other_ref: bool = False
) -> bool:
    return poll_due(
        ref,
        TEN_MINUTES,
        resolved_ref=("other" if other_ref else ref) if ago is not None else None,
        resolved_digest=digest,
        resolved_at=NOW - timedelta(seconds=ago) if ago is not None else None,
        now=NOW,
    )


def test_due_when_never_resolved_or_the_ref_changed() -> None:
    assert due("busybox", ago=None)
    assert due("busybox", ago=1, other_ref=True)


def test_due_after_the_interval_plus_its_jitter_never_before() -> None:
    jitter = poll_jitter("busybox", TEN_MINUTES).total_seconds()
    assert 0 <= jitter < 60  # 10% of 10 minutes
    assert not due("busybox", ago=599)
    assert not due("busybox", ago=600 + jitter - 1)
    assert due("busybox", ago=600 + jitter)


def test_an_unresolved_ref_is_retried_every_30_seconds() -> None:
    jitter = poll_jitter("busybox", timedelta(seconds=30)).total_seconds()
    assert not due("busybox", ago=29, digest=None)
    assert due("busybox", ago=30 + jitter, digest=None)


def test_jitter_spreads_refs_and_is_bounded() -> None:
    jitters = {poll_jitter(f"registry.example/app{i}:1", TEN_MINUTES) for i in range(200)}
    assert len(jitters) == 200  # no two of 200 refs share a slot
    assert max(jitters) < timedelta(minutes=1)
    assert max(poll_jitter(f"r{i}", timedelta(days=1)) for i in range(50)) < MAX_JITTER
    assert poll_jitter("same", TEN_MINUTES) == poll_jitter("same", TEN_MINUTES)


@pytest.mark.parametrize(
    ("retry_after", "failures_before", "wait"),
    [
        (None, 0, timedelta(seconds=30)),
        (None, 1, timedelta(seconds=60)),
        (None, 4, timedelta(seconds=480)),
        (None, 40, MAX_PAUSE),  # bounded
        (120.0, 0, timedelta(seconds=120)),  # honoured
        (0.0, 0, timedelta(seconds=5)),  # at least 5 s: "0" must not mean every pass
        (86400.0, 0, MAX_PAUSE),  # at most 30 minutes
    ],
)
def test_pauses(retry_after: float | None, failures_before: int, wait: timedelta) -> None:
    previous = (
        RegistryPause("r", NOW, failures_before, "HTTP 503 Service Unavailable", "X")
        if failures_before
        else None
    )
    pause = pause_after_failure(
        previous,
        registry="r",
        answer="answered HTTP 429 Too Many Requests",
        reason="RegistryRateLimited",
        retry_after=retry_after,
        now=NOW,
    )
    assert pause.until - NOW == wait
    assert pause.failures == failures_before + 1
    assert active_pause(pause, NOW + wait - timedelta(seconds=1)) is pause
    assert active_pause(pause, NOW + wait) is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Tue, 01 Dec 2026 10:01:30 GMT", 90.0),
        ("Tue, 01 Dec 2026 09:00:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        ("9" * 40, 1e9),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


INDEX, INDEX2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
IMAGE, IMAGE2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("head", "pinned", "last", "expected"),
    [
        # The index this resolver fetched last, unchanged: its image manifest, no GET.
        pytest.param(INDEX, {IMAGE}, TagAnswer(INDEX, IMAGE), IMAGE, id="same-index"),
        # The index moved (a rebuild's new attestations): fetch, even if the image did not.
        pytest.param(INDEX2, {IMAGE}, TagAnswer(INDEX, IMAGE), None, id="index-moved"),
        # After a restart the pinned image manifest is not what a HEAD of an index reports.
        pytest.param(INDEX, {IMAGE}, None, None, id="index-after-restart"),
        # A tag naming an image manifest: the pin itself, also after a restart.
        pytest.param(IMAGE, {IMAGE}, None, IMAGE, id="manifest-after-restart"),
        pytest.param(IMAGE, {IMAGE}, TagAnswer(IMAGE, IMAGE), IMAGE, id="manifest-unchanged"),
        pytest.param(IMAGE2, {IMAGE}, TagAnswer(IMAGE, IMAGE), None, id="manifest-moved"),
        # Pinned to the index by an earlier Lamina: kept until the tag moves (no rebuild for
        # an upgrade).
        pytest.param(INDEX, {INDEX}, None, INDEX, id="index-pinned-before"),
        # No digest in the HEAD answer: nothing is confirmed.
        pytest.param(None, {IMAGE}, TagAnswer(INDEX, IMAGE), None, id="no-head-digest"),
        pytest.param(INDEX, set(), None, None, id="nothing-known"),
    ],
)
def test_a_head_answer_confirms_the_pin_only_when_it_names_what_is_known(
    head: str | None, pinned: set[str], last: TagAnswer | None, expected: str | None
) -> None:
    assert pin_from_head(head, pinned, last) == expected
