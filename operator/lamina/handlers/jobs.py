"""Lamina's Jobs: reading a finished one the way both commit and build handlers need it, and
watching them where they live.

Lamina creates its Jobs only in its own namespace, so it watches Jobs only there (its RBAC
grants Jobs nowhere else).  A Job elsewhere that carries Lamina's labels (any tenant can
create one in their namespace) is never seen, so it can neither be taken for a build's or a
commit's result nor make the operator act on the names its labels carry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from lamina.domain.build_job import CONTEXT_COMMAND, LABEL_PURPOSE, MANAGED_BY
from lamina.domain.commit_outcome import JobOutcome
from lamina.domain.git_fetch import git_fetch_failure
from lamina.kube import Kube

OWN_JOBS = f"app.kubernetes.io/managed-by={MANAGED_BY}"
RETRY_SECONDS = 5.0


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
        pod_status = pod.get("status") or {}
        evicted = evicted or pod_status.get("reason") == "Evicted"
        # An init container that failed (a build's git fetch) is the pod's last word; one
        # that succeeded says nothing.
        for container in pod_status.get("initContainerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated") or {}
            if ended and ended.get("exitCode") != 0:
                terminated = ended
                if _fetches_git(pod, container.get("name")):
                    # git's stderr carries what the (tenant's) git server said: never shown.
                    message = git_fetch_failure(ended.get("message"), ended.get("exitCode"))
                    terminated = {**ended, "message": message}
        for container in pod_status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or terminated
    return JobOutcome(
        "succeeded" if status.get("succeeded") else "failed",
        job_reason=failed.get("reason") if failed else None,
        exit_reason="Evicted" if evicted else terminated.get("reason"),
        termination_message=terminated.get("message"),
    )


async def watch_own_jobs(
    kube: Kube,
    namespace: str,
    handle: Callable[[str, list[Mapping[str, Any]]], Awaitable[None]],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Call ``handle("LISTED", every Lamina Job)`` for ``namespace`` (the operator's), then
    ``handle(event, [job])`` on every change, forever; a failed watch is relisted after a
    pause."""
    while True:
        try:
            async for event, jobs in kube.watch_jobs(namespace, OWN_JOBS):
                try:
                    await handle(event, list(jobs))
                except Exception:
                    logger.exception("handling %s of %d Job(s) in %s", event, len(jobs), namespace)
        except ApiException as error:
            if error.status != 410:  # 410 Gone: the watch is too old; relist at once
                logger.warning(
                    "watching Jobs in %s: %s %s; again in %.0fs",
                    namespace,
                    error.status,
                    error.reason,
                    RETRY_SECONDS,
                )
                await asyncio.sleep(RETRY_SECONDS)
        except Exception as error:  # a lost connection, a timeout: the watch must go on
            logger.warning(
                "watching Jobs in %s: %r; again in %.0fs", namespace, error, RETRY_SECONDS
            )
            await asyncio.sleep(RETRY_SECONDS)


def _fetches_git(pod: Mapping[str, Any], name: object) -> bool:
    """Whether the build pod's init container ``name`` may have talked to a git server:
    any but the ConfigMap copy (failing closed: an unknown one is treated as git's)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_PURPOSE) != "build":
        return False
    for container in (pod.get("spec") or {}).get("initContainers") or []:
        if container.get("name") == name:
            return list(container.get("command") or []) != CONTEXT_COMMAND
    return True
