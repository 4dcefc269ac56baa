"""Status transitions -> Events and finished builds/commits (what metrics count)."""

from __future__ import annotations

from typing import Any

from lamina.domain.transitions import (
    commit_events,
    commit_facts,
    finished_build,
    finished_commit,
    image_events,
    image_facts,
)

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def cond(kind: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def summary(reason: str, *, ready: bool = False, stalled: bool = False, msg: str = "") -> list[Any]:
    progressing = not ready and not stalled
    return [
        cond("Ready", str(ready), reason, msg),
        cond("Reconciling", str(progressing), reason, msg),
        cond("Stalled", str(stalled), reason, msg),
    ]


def image(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "app", "uid": "u1"},
        "spec": {"parent": {"image": "base"}, **spec},
        "status": status,
    }


def build(phase: str, **extra: Any) -> dict[str, Any]:
    return {
        "job": "build-app-1",
        "phase": phase,
        "reasons": ["ParentChanged sha256:a -> sha256:b"],
        "startedAt": "2026-01-01T00:00:00Z",
        **extra,
    }


QUEUED = image({"digest": A, "conditions": summary("BuildQueued")})
RUNNING = image({"digest": A, "build": build("Running"), "conditions": summary("Building")})


def reasons(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str]]:
    before = image_facts(old) if old is not None else None
    return [(e.type, e.reason) for e in image_events(before, image_facts(new))]


def test_first_sight_is_only_remembered() -> None:
    assert reasons(None, RUNNING) == []


def test_a_build_start_and_success_are_normal_events() -> None:
    assert reasons(QUEUED, RUNNING) == [("Normal", "BuildStarted")]
    done = image(
        {
            "digest": B,
            "build": build("Succeeded", completedAt="2026-01-01T00:01:30Z", message=f"pushed {B}"),
            "conditions": summary("UpToDate", ready=True),
        }
    )
    assert reasons(RUNNING, done) == [("Normal", "Built")]
    (event,) = image_events(image_facts(RUNNING), image_facts(done))
    assert event.message == f"pushed {B} in 90s"
    finished = finished_build(image_facts(RUNNING), image_facts(done))
    assert finished is not None and (finished.result, finished.seconds) == ("succeeded", 90.0)
    # The same status seen again is no new transition.
    assert reasons(done, done) == []
    assert finished_build(image_facts(done), image_facts(done)) is None


def test_a_failed_build_is_one_warning_with_its_reason() -> None:
    failed = image(
        {
            "digest": A,
            "build": build(
                "Failed",
                completedAt="2026-01-01T00:00:10Z",
                failure="PushDenied",
                message="denied: push to demo/app",
            ),
            "conditions": summary("PushDenied", stalled=True, msg="denied: push to demo/app"),
        }
    )
    assert reasons(RUNNING, failed) == [("Warning", "PushDenied")]
    # The Stalled condition often follows one watch event later: no second Warning.
    recorded = image(
        {"digest": A, "build": failed["status"]["build"], "conditions": summary("Building")}
    )
    assert reasons(RUNNING, recorded) == [("Warning", "PushDenied")]
    assert reasons(recorded, failed) == []
    finished = finished_build(image_facts(RUNNING), image_facts(failed))
    assert finished is not None and (finished.result, finished.reason) == ("failed", "PushDenied")


def test_a_rebase_and_a_refused_start_are_finished_builds_without_a_running_phase() -> None:
    rebased = image(
        {
            "digest": B,
            "build": {
                **build("Succeeded", completedAt="2026-01-01T00:00:01Z"),
                "job": None,
                "message": f"rebased onto {B} without a build",
            },
            "conditions": summary("UpToDate", ready=True),
        }
    )
    assert reasons(QUEUED, rebased) == [("Normal", "Rebased")]
    assert finished_build(image_facts(QUEUED), image_facts(rebased)).result == "rebased"  # type: ignore[union-attr]
    refused = image(
        {
            "digest": A,
            "build": build(
                "Failed",
                completedAt="2026-01-01T00:00:00Z",
                failure="DockerfileInvalid",
                message="no FROM",
            ),
            "conditions": summary("DockerfileInvalid", stalled=True),
        }
    )
    assert reasons(QUEUED, refused) == [("Warning", "DockerfileInvalid")]


def test_parent_changed_held_and_vulnerable() -> None:
    current = cond("ParentCurrent", "True", "UpToDate")
    ready = summary("UpToDate", ready=True)
    before = image({"digest": A, "conditions": [*ready, current]})
    changed = image(
        {
            "digest": A,
            "conditions": [
                *summary("BuildQueued"),
                cond("ParentCurrent", "False", "ParentChanged", "new"),
            ],
        }
    )
    held = image(
        {
            "digest": A,
            "conditions": [
                *summary("ParentUpdateHeld", ready=True),
                cond("ParentCurrent", "False", "ParentUpdateHeld", "held"),
            ],
        },
        rebuild={"policy": "Manual"},
    )
    assert reasons(before, changed) == [("Normal", "ParentChanged")]
    assert reasons(before, held) == [("Normal", "ParentUpdateHeld")]
    assert reasons(held, held) == []
    flagged = image(
        {
            "digest": A,
            "conditions": [*ready, current, cond("Vulnerable", "True", "VulnerableLayer", "CVE-1")],
        }
    )
    assert reasons(before, flagged) == [("Warning", "VulnerableLayer")]
    assert reasons(flagged, flagged) == []


def test_a_pod_problem_and_an_api_refusal_are_warnings_once() -> None:
    stuck = image(
        {
            "digest": A,
            "build": build("Running"),
            "conditions": summary("ImagePullBackOff", msg="pull"),
        }
    )
    assert reasons(RUNNING, stuck) == [("Warning", "ImagePullBackOff")]
    assert reasons(stuck, stuck) == []
    assert reasons(stuck, RUNNING) == []  # recovering says nothing new
    lost = image({"conditions": summary("ParentNotFound", stalled=True, msg="no base")})
    assert reasons(QUEUED, lost) == [("Warning", "ParentNotFound")]


def commit(phase: str | None, conditions: list[Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "snap", "uid": "c1"},
        "status": {"phase": phase, "conditions": conditions, **status} if phase else {},
    }


def test_each_commit_phase_and_waiting_reason_is_one_event() -> None:
    created = commit(None, [])
    waiting = commit("Pending", summary("PodNotScheduled", stalled=True, msg="not scheduled"))
    missing = commit("Pending", summary("PodNotFound", stalled=True, msg="no pod"))
    running = commit(
        "Running",
        summary("Committing", msg="Job started on node n1"),
        startedAt="2026-01-01T00:00:00Z",
    )
    stuck = commit(
        "Running", summary("ImagePullBackOff", msg="pull"), startedAt="2026-01-01T00:00:00Z"
    )
    done = commit(
        "Succeeded",
        summary("Committed", ready=True, msg="pushed r/web:v1"),
        startedAt="2026-01-01T00:00:00Z",
        completedAt="2026-01-01T00:00:04Z",
        frozenSeconds=0.25,
    )
    failed = commit("Failed", summary("CommitFailed", stalled=True, msg="denied"))

    def said(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [
            (e.type, e.reason, e.message)
            for e in commit_events(commit_facts(old), commit_facts(new))
        ]

    assert commit_events(None, commit_facts(waiting)) == []
    assert said(created, waiting) == [("Normal", "PodNotScheduled", "not scheduled")]
    assert said(created, missing) == [("Warning", "PodNotFound", "no pod")]
    assert said(waiting, waiting) == []
    assert said(waiting, running) == [("Normal", "Committing", "Job started on node n1")]
    assert said(running, stuck) == [("Warning", "ImagePullBackOff", "pull")]
    assert said(stuck, done) == [
        ("Normal", "Committed", "pushed r/web:v1 (4.0s, container frozen 0.25s)")
    ]
    assert said(running, failed) == [("Warning", "CommitFailed", "denied")]
    finished = finished_commit(commit_facts(running), commit_facts(done))
    assert finished is not None and (finished.result, finished.seconds) == ("succeeded", 4.0)
    lost = finished_commit(commit_facts(running), commit_facts(failed))
    assert lost is not None and (lost.result, lost.reason) == ("failed", "CommitFailed")
    assert finished_commit(commit_facts(done), commit_facts(done)) is None


def test_hostile_status_reads_as_nothing_happened() -> None:
    garbage = {
        "metadata": {"name": "x"},
        "spec": "no",
        "status": {"conditions": "oops", "build": ["x"], "history": 5},
    }
    facts = image_facts(garbage)
    assert facts.conditions == {} and facts.build_phase is None
    assert image_events(facts, facts) == []
