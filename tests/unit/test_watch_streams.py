"""Watch streams cut into events by hand: a line of any size an object can have, split across
chunks anywhere; an ERROR event raises the API's status; the bookmark that ends a streaming
list's initial events is told apart from others.  (The API tier reads real streams.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from lamina.kube.client import api_failure
from lamina.kube.streams import (
    EventTooLarge,
    ends_initial_events,
    event_of,
    json_lines,
)


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _lines(data: bytes, size: int, limit: int = 8 << 20) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [line async for line in json_lines(_chunks(data, size), limit)]

    return asyncio.run(collect())


def _event(kind: str, name: str, padding: int = 0) -> bytes:
    body = {"metadata": {"name": name, "annotations": {"pad": "x" * padding}}}
    return json.dumps({"type": kind, "object": body}).encode()


@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 20])
def test_lines_of_any_size_come_out_whole_however_the_stream_is_cut(size: int) -> None:
    # 300 KiB: over aiohttp's default line limit (128 KiB); a tenant's Image may be larger.
    events = [_event("ADDED", "a"), _event("MODIFIED", "big", 300 * 1024), _event("DELETED", "c")]
    data = b"\n".join(events) + b"\n\n"
    assert _lines(data, size) == events


def test_a_last_line_without_its_newline_is_kept() -> None:
    assert _lines(_event("ADDED", "a") + b"\n" + _event("ADDED", "b"), 5) == [
        _event("ADDED", "a"),
        _event("ADDED", "b"),
    ]


def test_a_line_over_the_limit_is_refused_without_holding_the_rest() -> None:
    with pytest.raises(EventTooLarge):
        _lines(b"x" * 5000, 1000, limit=4096)


def test_an_error_event_raises_the_apis_status() -> None:
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource"}
    with pytest.raises(ApiException) as raised:
        event_of(json.dumps({"type": "ERROR", "object": gone}).encode())
    assert raised.value.status == 410
    failure = api_failure(raised.value)
    assert failure is not None and (failure.reason, failure.message) == (
        "Expired",
        "too old resource",
    )


def test_an_event_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError):
        event_of(b'["ADDED"]')
    with pytest.raises(ValueError):
        event_of(b'{"type": "ADDED", "object": "x"}')


def test_only_the_annotated_bookmark_ends_the_initial_events() -> None:
    ended = {
        "metadata": {"resourceVersion": "9", "annotations": {"k8s.io/initial-events-end": "true"}}
    }
    assert ends_initial_events("BOOKMARK", ended)
    assert not ends_initial_events("BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert not ends_initial_events("ADDED", ended)
