"""Kubernetes Events for Lamina's objects, written through the correlator.

``kubectl describe image NAME`` and ``kubectl get events`` show them.  The correlator
(:mod:`lamina.domain.events`) decides what to write: a repeat updates the count of the Event
it repeats, too many similar ones are combined, and per-object and global rate limits bound
what a cascade writes.  An Event that cannot be written is logged and dropped: Events are
for users, and must never stop a reconcile.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lamina.domain.events import EventCorrelator, EventIntent, EventWrite
from lamina.handlers.metrics import EVENTS_DROPPED, EVENTS_WRITTEN
from lamina.kube import Kube
from lamina.kube.client import api_failure, describe_error

COMPONENT = "lamina-operator"
REPORTING_CONTROLLER = "lamina.dev/operator"

log = logging.getLogger("lamina.events")


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about (``involvedObject``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        meta = body.get("metadata") or {}
        return cls(
            str(body.get("apiVersion") or ""),
            str(body.get("kind") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            str(meta.get("uid") or ""),
        )

    def wire(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=0).isoformat()


def event_name(ref: ObjectRef, write: EventWrite) -> str:
    # Object names are up to 253 characters, and so are Event names.
    return f"{ref.name[:230]}.{write.series}"


def event_body(ref: ObjectRef, write: EventWrite, instance: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(ref, write), "namespace": ref.namespace},
        "involvedObject": ref.wire(),
        "type": write.type,
        "reason": write.reason,
        "message": write.message[:1024],
        "count": write.count,
        "firstTimestamp": _stamp(write.first_seen),
        "lastTimestamp": _stamp(write.last_seen),
        "source": {"component": COMPONENT},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": instance,
    }


@dataclass
class EventRecorder:
    kube: Kube
    correlator: EventCorrelator = field(default_factory=EventCorrelator)
    instance: str = field(default_factory=lambda: os.environ.get("HOSTNAME") or "lamina")

    async def emit(self, ref: ObjectRef, intent: EventIntent) -> None:
        dropped_before = dict(self.correlator.dropped)
        write = self.correlator.observe(
            ref.uid or f"{ref.namespace}/{ref.name}", intent, time.time()
        )
        for why, count in self.correlator.dropped.items():
            if count > dropped_before.get(why, 0):
                EVENTS_DROPPED.labels(why).inc(count - dropped_before.get(why, 0))
        if write is None:
            return
        body = event_body(ref, write, self.instance)
        try:
            await self._write(ref, write, body)
        except Exception as error:  # an Event must never stop a reconcile
            failure = api_failure(error)
            if failure is not None and "is being terminated" in failure.message:
                # The namespace is being deleted, and its Events with it: nothing to tell.
                log.debug("no Event in terminating namespace %s", ref.namespace)
                return
            log.warning(
                "could not write Event %s %s on %s %s/%s: %s",
                write.type,
                write.reason,
                ref.kind,
                ref.namespace,
                ref.name,
                describe_error(error),
            )
            return
        EVENTS_WRITTEN.labels(write.type, ref.kind).inc()

    async def _write(self, ref: ObjectRef, write: EventWrite, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        update = {"message": body["message"], "lastTimestamp": body["lastTimestamp"]}
        if write.action == "update":
            if await self.kube.patch_event(ref.namespace, name, {**update, "count": write.count}):
                return
            await self.kube.create_event(body)  # it expired (the API server's event TTL)
            return
        if await self.kube.create_event(body):
            return
        # The same series, left by an earlier run of the operator: continue its count.
        existing = await self.kube.get_event(ref.namespace, name) or {}
        count = int(existing.get("count") or 0) + write.count
        await self.kube.patch_event(ref.namespace, name, {**update, "count": count})


def recorder(memo: Any) -> EventRecorder:
    """The operator's one recorder (one correlator, so the limits hold process-wide)."""
    found: EventRecorder | None = getattr(memo, "events", None)
    if found is None:
        found = EventRecorder(memo.kube)
        memo.events = found
    return found
