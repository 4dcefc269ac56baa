"""Reading a finished Job the way both commit and build handlers need it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.domain.commit_outcome import JobOutcome
from lamina.kube import Kube


def finished(job: Mapping[str, Any]) -> bool:
    status = job.get("status") or {}
    return bool(status.get("succeeded")) or any(
        c.get("type") == "Failed" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


async def job_outcome(kube: Kube, job: Mapping[str, Any]) -> JobOutcome:
    """The Job's state and its container's last words (the termination message)."""
    status = job.get("status") or {}
    failed = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ),
        None,
    )
    if not status.get("succeeded") and failed is None:
        return JobOutcome("running")
    name = job["metadata"]["name"]
    pods = await kube.list_pods(job["metadata"]["namespace"], f"job-name={name}")
    terminated: dict[str, Any] = {}
    evicted = False
    for pod in pods:
        evicted = evicted or (pod.get("status") or {}).get("reason") == "Evicted"
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or terminated
    return JobOutcome(
        "succeeded" if status.get("succeeded") else "failed",
        job_reason=failed.get("reason") if failed else None,
        exit_reason="Evicted" if evicted else terminated.get("reason"),
        termination_message=terminated.get("message"),
    )
