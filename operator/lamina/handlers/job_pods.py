"""The pods of a running Job, read for why they do not start (builds and commits alike)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.domain.pod_problems import PodProblem, job_pod_started
from lamina.domain.pod_problems import job_pod_problem as newest_pod_problem
from lamina.kube import Kube


async def job_pod_problem(kube: Kube, job: Mapping[str, Any]) -> PodProblem | None:
    """Why the Job's newest pod cannot start, or None while it starts or runs normally.

    One LIST of the Job's pods (by the ``job-name`` label the Job controller sets).
    """
    meta = job["metadata"]
    pods = await kube.list_pods(meta["namespace"], f"job-name={meta['name']}")
    return newest_pod_problem(pods)


async def build_pod_state(kube: Kube, job: Mapping[str, Any]) -> tuple[PodProblem | None, bool]:
    """The build Job's pod problem, and whether its pod got past starting (one LIST)."""
    meta = job["metadata"]
    pods = await kube.list_pods(meta["namespace"], f"job-name={meta['name']}")
    return newest_pod_problem(pods), job_pod_started(pods)
