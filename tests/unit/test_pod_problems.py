"""A Job pod's state -> the reason and message an Image or ContainerCommit shows."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.domain.pod_problems import job_pod_problem, job_pod_started, problem_of_pod


def pod(
    name: str = "build-x-abcde",
    *,
    phase: str = "Pending",
    waiting: tuple[str, str] | None = None,
    init_waiting: tuple[str, str] | None = None,
    running: bool = False,
    unschedulable: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    def status_of(container: str, state: tuple[str, str] | None) -> dict[str, Any]:
        if running:
            return {"name": container, "state": {"running": {"startedAt": created}}}
        reason, message = state or ("ContainerCreating", "")
        return {"name": container, "state": {"waiting": {"reason": reason, "message": message}}}

    status: dict[str, Any] = {"phase": phase, "containerStatuses": [status_of("build", waiting)]}
    if init_waiting is not None:
        status["initContainerStatuses"] = [status_of("setup", init_waiting)]
    if unschedulable is not None:
        status = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": unschedulable,
                }
            ],
        }
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = created
    return {"metadata": meta, "status": status}


PULL = 'Back-off pulling image "10.213.0.1:5000/moby/buildkit:nope"'


@pytest.mark.parametrize(
    ("observed", "reason", "fragment"),
    [
        (pod(waiting=("ImagePullBackOff", PULL)), "ImagePullBackOff", PULL),
        (pod(waiting=("ErrImagePull", "manifest unknown")), "ErrImagePull", "manifest unknown"),
        (pod(waiting=("InvalidImageName", "bad ref")), "InvalidImageName", "bad ref"),
        (
            pod(waiting=("CreateContainerConfigError", 'secret "push" not found')),
            "CreateContainerConfigError",
            'secret "push" not found',
        ),
        (
            pod(waiting=("CreateContainerError", "context deadline exceeded")),
            "CreateContainerError",
            "context deadline exceeded",
        ),
        (pod(waiting=("RunContainerError", "exec: no such file")), "RunContainerError", "exec"),
        (
            pod(unschedulable="0/1 nodes are available: 1 node(s) didn't match node selector."),
            "Unschedulable",
            "didn't match node selector",
        ),
        (
            pod(init_waiting=("ImagePullBackOff", PULL), waiting=("PodInitializing", "")),
            "ImagePullBackOff",
            'container "setup"',
        ),
    ],
)
def test_a_pod_that_cannot_start_names_its_reason(
    observed: dict[str, Any], reason: str, fragment: str
) -> None:
    problem = problem_of_pod(observed)
    assert problem is not None
    assert problem.reason == reason
    assert fragment in problem.message
    assert "build-x-abcde" in problem.message
    (ready, reconciling, stalled) = problem.verdicts("the build Job lamina-system/build-x")
    assert (ready.status, reconciling.status, stalled.status) == ("False", "True", "False")
    assert reconciling.reason == reason
    assert reconciling.message.startswith("the build Job lamina-system/build-x cannot start: ")


@pytest.mark.parametrize(
    "observed",
    [
        pod(),  # ContainerCreating: the normal wait
        pod(waiting=("PodInitializing", "")),
        pod(running=True, phase="Running"),
        pod(phase="Succeeded", waiting=("ImagePullBackOff", PULL)),  # history
        pod(phase="Failed", waiting=("ErrImagePull", "x")),
        pod(waiting=("ImagePullBackOff", PULL), deleting=True),
        {"metadata": {"name": "bare"}},  # no status yet
    ],
)
def test_a_pod_starting_normally_or_finished_is_no_problem(observed: dict[str, Any]) -> None:
    assert problem_of_pod(observed) is None


def test_the_newest_live_pod_of_a_job_speaks_for_it() -> None:
    old = pod("old", waiting=("ErrImagePull", "x"), created="2026-01-01T00:00:00Z")
    new = pod("new", running=True, phase="Running", created="2026-01-01T00:05:00Z")
    assert job_pod_problem([old, new]) is None
    stuck = pod("new", waiting=("ImagePullBackOff", PULL), created="2026-01-01T00:05:00Z")
    done = pod("old", phase="Failed", created="2026-01-01T00:00:00Z")
    problem = job_pod_problem([stuck, done])
    assert problem is not None and problem.pod == "new"
    assert job_pod_problem([]) is None


def test_long_and_multi_line_kubelet_messages_are_cut_to_one_line() -> None:
    noisy = pod(waiting=("ErrImagePull", "line one\n" + "x" * 5000))
    problem = problem_of_pod(noisy)
    assert problem is not None
    assert "\n" not in problem.message
    assert len(problem.message) <= 480
    assert problem.message.endswith("...")


def _init_pod(state: dict[str, object]) -> dict[str, object]:
    return {
        "metadata": {"name": "b-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [{"name": "context", "state": state}],
            "containerStatuses": [
                {"name": "buildkit", "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
        },
    }


def test_a_pod_between_pull_retries_has_not_started_so_a_problem_stands() -> None:
    between = _init_pod({"waiting": {"reason": "PodInitializing"}})
    assert job_pod_problem([between]) is None
    assert job_pod_started([between]) is False
    backing_off = _init_pod({"waiting": {"reason": "ImagePullBackOff", "message": "no"}})
    assert job_pod_problem([backing_off]) is not None
    ran = _init_pod({"terminated": {"exitCode": 0}})
    assert job_pod_started([ran]) is True
    assert job_pod_started([]) is True  # gone: nothing stands
