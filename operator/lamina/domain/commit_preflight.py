"""Can a ContainerCommit act on its target?  Decided from the observed Pod alone.

A commit may only target a Pod in its own namespace: the spec names a Pod, never a namespace,
so the lookup is always in the commit's namespace and credentials come from there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamina.domain.conditions import Verdict, kstatus

POD_NOT_FOUND = "PodNotFound"
POD_NOT_SCHEDULED = "PodNotScheduled"
CONTAINER_NOT_FOUND = "ContainerNotFound"
CONTAINER_NOT_RUNNING = "ContainerNotRunning"
TARGET_READY = "TargetReady"


@dataclass(frozen=True)
class Preflight:
    """What the commit's status should say after looking at the Pod."""

    conditions: tuple[Verdict, ...]
    ready_to_commit: bool
    fields: dict[str, Any] = field(default_factory=dict)
    # The target container's name, once found (the provenance names it).
    container: str | None = None


def _stalled(reason: str, message: str) -> Preflight:
    return Preflight(kstatus(ready=False, progressing=False, reason=reason, message=message), False)


def _digest_of(image_id: str) -> str | None:
    """The digest in a runtime's imageID (``docker.io/x@sha256:...`` or ``sha256:...``)."""
    _, _, digest = image_id.rpartition("@")
    return digest if digest.startswith("sha256:") else None


def _image_ref(observed: dict[str, Any], spec: dict[str, Any], container: str | None) -> str:
    """The container's image by name.  For an image pulled by digest only, containerd reports
    ``status.image`` as the bare ``sha256:`` ID, so fall back to ``imageID``'s repository, then
    to the pod spec's image."""
    image = str(observed.get("image") or "")
    if image and not image.startswith("sha256:"):
        return image
    image_id = str(observed.get("imageID") or "")
    if "@" in image_id:
        return image_id.split("@", 1)[0]
    for entry in spec.get("containers") or []:
        if entry.get("name") == container:
            return str(entry.get("image") or image)
    return image


def preflight(
    pod_name: str, container: str | None, namespace: str, pod: dict[str, Any] | None
) -> Preflight:
    """Checks in the order a user would fix them: the Pod, its node, the container, its state."""
    if pod is None:
        return _stalled(
            POD_NOT_FOUND,
            f'pod "{pod_name}" not found in namespace "{namespace}" '
            "(a commit can only target a pod in its own namespace)",
        )
    spec = pod.get("spec") or {}
    containers = [c.get("name") for c in spec.get("containers") or []]
    target = container or (containers[0] if containers else None)
    if target not in containers:
        return _stalled(
            CONTAINER_NOT_FOUND,
            f'pod "{pod_name}" has no container "{target}"; '
            f"it has: {', '.join(map(str, containers))}",
        )
    node = spec.get("nodeName")
    if not node:
        return _stalled(POD_NOT_SCHEDULED, f'pod "{pod_name}" is not scheduled to a node yet')
    statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or []}
    observed = statuses.get(target) or {}
    state = observed.get("state") or {}
    if "running" not in state:
        detail: dict[str, Any] = next(iter(state.values()), {}) if state else {}
        why = detail.get("reason") or next(iter(state), "unknown")
        return _stalled(
            CONTAINER_NOT_RUNNING,
            f'container "{target}" of pod "{pod_name}" is not running ({why})',
        )
    fields: dict[str, Any] = {
        "node": node,
        "containerID": observed.get("containerID"),
        "parent": {
            "ref": _image_ref(observed, spec, target),
            "digest": _digest_of(observed.get("imageID") or ""),
        },
    }
    return Preflight(
        kstatus(
            ready=False,
            progressing=True,
            reason=TARGET_READY,
            message=f'container "{target}" of pod "{pod_name}" runs on node {node}',
        ),
        True,
        fields,
        str(target),
    )
