"""Watch streams read from the raw response: one JSON event per line, whatever its size.

They serve lists: a watch with ``sendInitialEvents`` (Kubernetes' streaming list, KEP-3157)
sends every object as an ADDED event from the API server's watch cache, then a bookmark that
says the initial state is complete.  A paged LIST goes to etcd for every page (the cache does
not serve ``limit`` with ``continue``): at 17,683 Layers it took 4.5 s where the stream takes
1.5 s, and the objects arrive one at a time instead of 500 parsed at once.  kubernetes_asyncio's
generated client has no ``sendInitialEvents``, so the stream is read here, and the watches
that follow a list are read the same way.

Lines are cut from the byte stream by hand, up to the size of any object the API server can
store (etcd refuses requests over 1.5 MiB; with managed fields its JSON stays well under
:data:`MAX_EVENT_BYTES`): a tenant may make an Image of hundreds of KiB (100 steps of 4 KiB,
256 KiB of annotations), and its event must come out whole like any other.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast

from kubernetes_asyncio.client.exceptions import ApiException

MAX_EVENT_BYTES = 8 * 1024 * 1024
# The annotation on the bookmark that ends a streaming list's initial events.
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class EventTooLarge(Exception):
    """A watch event over :data:`MAX_EVENT_BYTES`: nothing the API server stores is."""


async def json_lines(
    chunks: AsyncIterator[bytes], limit: int = MAX_EVENT_BYTES
) -> AsyncIterator[bytes]:
    """The non-empty lines of a byte stream, without their newline."""
    pending = b""
    async for chunk in chunks:
        data = pending + chunk if pending else chunk
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            line = data[start:end]
            start = end + 1
            if line.strip():
                yield line
        pending = data[start:]
        if len(pending) > limit:
            raise EventTooLarge(f"a watch event over {limit} bytes")
    if pending.strip():
        yield pending


def event_of(line: bytes) -> tuple[str, dict[str, Any]]:
    """``(type, object)`` of one watch event; an ERROR event (410 Gone: relist) raises the
    API's status as an :class:`ApiException`, as a failed request would."""
    event = json.loads(line)
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise ValueError("a watch event that is not a JSON object with an object")
    kind, obj = str(event.get("type", "")), cast(dict[str, Any], event["object"])
    if kind == "ERROR":
        error = ApiException(status=int(obj.get("code") or 500), reason=str(obj.get("reason")))
        error.body = json.dumps(obj).encode()[:4096]  # the Status, as a failed request's
        raise error
    return kind, obj


def ends_initial_events(kind: str, obj: dict[str, Any]) -> bool:
    if kind != "BOOKMARK":
        return False
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(INITIAL_EVENTS_END) == "true")
