"""Why a Job's pod is not starting, in the words the kubelet and the scheduler use.

A build or commit Job whose pod cannot start (its image cannot be pulled, no node fits, a
Secret it mounts is missing) does not fail: the kubelet keeps retrying until the Job's
deadline.  Meanwhile the Image or ContainerCommit must say why it is not progressing, with the
pod's own reason, and go back to saying ``Building``/``Committing`` once the cause is gone.
So a problem here is always "still progressing" (Reconciling), never a terminal failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lamina.domain.conditions import Verdict, kstatus

IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
ERR_IMAGE_PULL = "ErrImagePull"
INVALID_IMAGE_NAME = "InvalidImageName"
UNSCHEDULABLE = "Unschedulable"
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
CREATE_CONTAINER_ERROR = "CreateContainerError"
RUN_CONTAINER_ERROR = "RunContainerError"

# Waiting reasons that mean "this will not start without help"; ContainerCreating and
# PodInitializing are the normal ones and say nothing.
STUCK_WAITING_REASONS = frozenset(
    {
        IMAGE_PULL_BACK_OFF,
        ERR_IMAGE_PULL,
        INVALID_IMAGE_NAME,
        CREATE_CONTAINER_CONFIG_ERROR,
        CREATE_CONTAINER_ERROR,
        RUN_CONTAINER_ERROR,
    }
)
POD_PROBLEM_REASONS = STUCK_WAITING_REASONS | {UNSCHEDULABLE}

# Kubelet and scheduler messages are long (every node's verdict) and not ours: keep the head.
_MESSAGE_LIMIT = 480


@dataclass(frozen=True)
class PodProblem:
    """One pod's reason for not starting, and the sentence that explains it."""

    reason: str
    message: str
    pod: str

    def verdicts(self, doing: str) -> tuple[Verdict, ...]:
        """kstatus for an object whose ``doing`` (e.g. "build Job x") waits on this pod."""
        return kstatus(
            ready=False,
            progressing=True,
            reason=self.reason,
            message=f"{doing} cannot start: {self.message}",
        )


def _cut(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _finished(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") in ("Succeeded", "Failed") or bool(
        (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def _unschedulable(pod: Mapping[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == UNSCHEDULABLE
        ):
            return str(condition.get("message") or "no node fits the pod")
    return None


def problem_of_pod(pod: Mapping[str, Any]) -> PodProblem | None:
    """The reason this pod cannot start, or None when it runs, finished or starts normally."""
    if _finished(pod):
        return None
    name = str((pod.get("metadata") or {}).get("name") or "")
    why = _unschedulable(pod)
    if why is not None:
        return PodProblem(UNSCHEDULABLE, _cut(f"pod {name} is unschedulable: {why}"), name)
    status = pod.get("status") or {}
    containers = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in STUCK_WAITING_REASONS:
            detail = waiting.get("message") or ""
            text = f'pod {name}, container "{container.get("name")}": {reason}'
            return PodProblem(str(reason), _cut(f"{text}: {detail}" if detail else text), name)
    return None


def job_pod_problem(pods: Sequence[Mapping[str, Any]]) -> PodProblem | None:
    """The problem of a Job's newest live pod (older pods of a retried Job are history)."""
    live = [pod for pod in pods if not _finished(pod)]
    live.sort(key=lambda pod: str((pod.get("metadata") or {}).get("creationTimestamp") or ""))
    for pod in reversed(live):
        return problem_of_pod(pod)
    return None


def job_pod_started(pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the Job's newest live pod got past starting: a container (init containers
    included) runs or ran.  Between pull retries the kubelet shows a neutral waiting reason
    (``PodInitializing``, ``ContainerCreating``): that is not a start, so a problem already
    reported stands until the pod really starts."""
    live = [pod for pod in pods if not _finished(pod)]
    if not live:
        return True  # finished or gone: whatever was reported is over
    newest = max(
        live, key=lambda pod: str((pod.get("metadata") or {}).get("creationTimestamp") or "")
    )
    status = newest.get("status") or {}
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        state = container.get("state") or {}
        if state.get("running") or state.get("terminated"):
            return True
    return False
