"""ContainerCommit handlers: check the target Pod and report it in status.

A Pod changes without any event on the ContainerCommit, so a commit that is waiting on its
Pod is re-checked by a timer until the Pod is there and running.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from lamina.api.commit import ContainerCommitStatus
from lamina.api.meta import GROUP, VERSION
from lamina.domain.commit_preflight import preflight
from lamina.domain.conditions import merge_conditions, same_conditions
from lamina.handlers.metrics import EVENTS, STATUS_PATCHES
from lamina.kube import Kube

RECHECK_SECONDS = 10.0
TERMINAL_PHASES = {"Succeeded", "Failed"}


def _waiting(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in TERMINAL_PHASES


async def _check(
    kube: Kube, namespace: str, name: str, *, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta
) -> None:
    pod = await kube.get_pod(namespace, spec["pod"])
    result = preflight(spec["pod"], spec.get("container"), namespace, pod)
    current = ContainerCommitStatus.model_validate(dict(status))
    generation = meta.get("generation")
    conditions = merge_conditions(
        current.conditions, result.conditions, generation=generation, now=datetime.now(UTC)
    )
    unchanged = (
        current.phase == "Pending"
        and current.observed_generation == generation
        and same_conditions(current.conditions, conditions)
        and all(status.get(key) == value for key, value in result.fields.items())
    )
    if not unchanged:
        STATUS_PATCHES.labels("containercommits").inc()
        await kube.patch_status(
            "containercommits",
            namespace,
            name,
            {
                "phase": "Pending",
                "observedGeneration": generation,
                "conditions": [c.wire() for c in conditions],
                **result.fields,
            },
        )


@kopf.on.event(GROUP, VERSION, "containercommits", when=_waiting)
async def commit_event(
    *,
    type: str,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: Any,
    **_: Any,
) -> None:
    EVENTS.labels("containercommits").inc()
    if type == "DELETED":
        return
    await _check(memo.kube, namespace or "", name, spec=spec, status=status, meta=meta)


@kopf.timer(GROUP, VERSION, "containercommits", interval=RECHECK_SECONDS, when=_waiting)
async def commit_recheck(
    *,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: Any,
    **_: Any,
) -> None:
    await _check(memo.kube, namespace or "", name, spec=spec, status=status, meta=meta)
