"""ContainerCommit handlers: check the target Pod and report it in status.

A Pod changes without any event on the ContainerCommit, so the operator also watches Pods, but
handles only those a waiting commit targets (an index maps each Pod to its commits).  No
timers: kopf puts a finalizer on every object with a timer, and a commit must stay deletable
while the operator is down.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from lamina.api.commit import ContainerCommitStatus
from lamina.api.meta import GROUP, VERSION
from lamina.domain.commit_preflight import preflight
from lamina.domain.conditions import merge_conditions, same_conditions
from lamina.handlers.metrics import EVENTS, STATUS_PATCHES
from lamina.kube import Kube

TERMINAL_PHASES = {"Succeeded", "Failed"}


def _waiting(status: Mapping[str, Any]) -> bool:
    return status.get("phase") not in TERMINAL_PHASES


async def _check(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
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


@kopf.index(GROUP, VERSION, "containercommits")
def commit_targets(
    *, namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str | None, str], str] | None:
    """(namespace, pod) -> the waiting commits that target it."""
    return {(namespace, spec["pod"]): name} if _waiting(status) else None


@kopf.on.event(GROUP, VERSION, "containercommits")
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
    if type == "DELETED" or not _waiting(status):
        return
    await _check(memo.kube, namespace or "", name, spec=spec, status=status, meta=meta)


def _targeted(namespace: str | None, name: str, commit_targets: Any, **_: Any) -> bool:
    return (namespace, name) in commit_targets


@kopf.on.event("", "v1", "pods", when=_targeted)  # type: ignore[arg-type]
async def target_pod_event(
    *, namespace: str | None, name: str, memo: Any, commit_targets: Any, **_: Any
) -> None:
    EVENTS.labels("pods").inc()
    kube: Kube = memo.kube
    for commit in list(commit_targets.get((namespace, name), ())):
        found = await kube.get_object("containercommits", namespace or "", commit)
        if found is None or not _waiting(found.get("status") or {}):
            continue
        await _check(
            kube,
            namespace or "",
            commit,
            spec=found["spec"],
            status=found.get("status") or {},
            meta=found["metadata"],
        )
