"""Build decisions, table-driven: when an Image builds, in which order, and on what."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lamina.api.durations import duration_seconds
from lamina.api.image import ImageStatus
from lamina.domain.build_outcome import judge_build
from lamina.domain.builds import (
    BuildPlan,
    BuildState,
    Candidate,
    choose_builds,
    depth_of,
    inputs_key,
    plan_namespace,
)
from lamina.domain.commit_outcome import JobOutcome
from lamina.domain.image_status import build_conditions
from lamina.domain.rebuild import BuiltFrom

P1 = "sha256:" + "1" * 64
P2 = "sha256:" + "2" * 64
B1 = "sha256:" + "b" * 64

BASE = BuildState(
    "base",
    "u-base",
    1,
    None,
    "busybox:1",
    resolved_digest=P1,
    digest=B1,
    built_from=BuiltFrom(1, P1),
)
APP = BuildState("app", "u-app", 1, "base", None)


def plans(*states: BuildState) -> dict[str, str]:
    return {name: plan.action for name, plan in plan_namespace(states).items()}


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param([BASE], {"base": "none"}, id="up-to-date"),
        pytest.param(
            [replace(BASE, digest=None, built_from=None)], {"base": "queued"}, id="first-build"
        ),
        pytest.param(
            [replace(BASE, resolved_digest=None)], {"base": "wait-parent"}, id="unresolved-ref"
        ),
        pytest.param([replace(BASE, resolved_digest=P2)], {"base": "queued"}, id="tag-moved"),
        pytest.param([replace(BASE, generation=2)], {"base": "queued"}, id="spec-edited"),
        pytest.param([replace(BASE, trigger="now")], {"base": "queued"}, id="manual-trigger"),
        pytest.param(
            [replace(BASE, resolved_digest=P2, policy="Manual")],
            {"base": "hold"},
            id="manual-holds",
        ),
        pytest.param(
            [replace(BASE, resolved_digest=P2, policy="Manual", generation=2)],
            {"base": "queued"},
            id="manual-still-builds-spec-edits",
        ),
        pytest.param([BASE, APP], {"base": "none", "app": "queued"}, id="child-first-build"),
        pytest.param(
            [
                replace(BASE, resolved_digest=P2),
                replace(APP, digest=B1, built_from=BuiltFrom(1, B1)),
            ],
            {"base": "queued", "app": "wait-parent"},
            id="child-waits-for-rebuilding-parent",
        ),
        pytest.param(
            [replace(BASE, digest=None, built_from=None), APP],
            {"base": "queued", "app": "wait-parent"},
            id="no-parent-digest-yet",
        ),
        pytest.param(
            [BuildState("a", "ua", 1, "b", None), BuildState("b", "ub", 1, "a", None)],
            {"a": "wait-parent", "b": "wait-parent"},
            id="cycle-never-builds",
        ),
        pytest.param([replace(APP, committed=True)], {"app": "committed"}, id="snapshot"),
    ],
)
def test_plan(states: list[BuildState], expected: dict[str, str]) -> None:
    assert plans(*states) == expected


def test_parent_rebuilt_then_child_rebuilds_on_the_new_digest() -> None:
    base = replace(BASE, digest=P2, built_from=BuiltFrom(1, P1))  # base just rebuilt
    app = replace(APP, digest=B1, built_from=BuiltFrom(1, B1))
    plan = plan_namespace([base, app])["app"]
    assert plan.action == "queued"
    assert [str(r) for r in plan.reasons] == [f"ParentChanged {B1} -> {P2}"]
    assert not plan.user_initiated


def test_running_and_failed_builds_are_not_started_again() -> None:
    fresh = replace(BASE, generation=2)
    key = inputs_key("u-base", BuiltFrom(2, P1))
    assert plans(replace(fresh, build_phase="Running", build_inputs=key)) == {"base": "building"}
    assert plans(replace(fresh, build_phase="Failed", build_inputs=key)) == {"base": "failed"}
    # New inputs (another edit) or a trigger retry a failed build.
    assert plans(replace(fresh, generation=3, build_phase="Failed", build_inputs=key)) == {
        "base": "queued"
    }
    assert plans(replace(fresh, trigger="retry", build_phase="Failed", build_inputs=key)) == {
        "base": "queued"
    }


def test_choose_builds_respects_the_limit_and_puts_people_first() -> None:
    queued = plan_namespace(
        [
            replace(BASE, name="auto", uid="1", resolved_digest=P2),  # automatic
            replace(BASE, name="edited", uid="2", generation=2),  # a person edited it
            replace(BASE, name="deep", uid="3", generation=2),
        ]
    )
    candidates = [
        Candidate("ns", queued["auto"], 0, "2026-01-01"),
        Candidate("ns", queued["deep"], 2, "2026-01-01"),
        Candidate("ns", queued["edited"], 0, "2026-01-02"),
    ]
    chosen = choose_builds(candidates, running={"ns": 1}, limit=3)
    assert [c.plan.name for c in chosen] == ["edited", "deep"]
    assert choose_builds(candidates, running={"ns": 3}, limit=3) == []


def tenant(namespace: str, count: int) -> list[Candidate]:
    """``count`` queued automatic builds of one namespace (a cascade)."""
    return [
        Candidate(namespace, BuildPlan(f"{namespace}-{n}", "queued"), 1, f"2026-01-01T00:{n:02}")
        for n in range(count)
    ]


@pytest.mark.parametrize(
    ("running", "per_namespace", "wanted"),
    [
        # A hundred-Image cascade in "big" does not take every slot from "small"'s one build.
        ({}, None, {"big": 2, "small": 1}),
        # "big" already runs two: the free slots go to the others first.
        ({"big": 2}, None, {"small": 1}),
        # A per-namespace cap holds even with slots to spare.
        ({}, 1, {"big": 1, "small": 1}),
        ({"other": 3}, None, {}),
    ],
)
def test_slots_are_shared_between_namespaces(
    running: dict[str, int], per_namespace: int | None, wanted: dict[str, int]
) -> None:
    chosen = choose_builds(tenant("big", 100) + tenant("small", 1), running, 3, per_namespace)
    counts: dict[str, int] = {}
    for candidate in chosen:
        counts[candidate.namespace] = counts.get(candidate.namespace, 0) + 1
    assert counts == wanted
    # Within a namespace, its own order holds (the oldest first here).
    big = [c.plan.name for c in chosen if c.namespace == "big"]
    assert big == [f"big-{n}" for n in range(len(big))]


def test_a_chain_of_1100_images_whose_leaf_sorts_first_is_planned() -> None:
    """Finding 1 of the attack review: planning recursed once per ancestor, and a chain
    whose leaf is planned first (its name sorts first) raised RecursionError, which stopped
    the build pass for every namespace (SECURITY.md: graph algorithms are iterative)."""
    chain = [
        replace(
            APP,
            name=f"c{k:04d}",
            uid=f"u{k}",
            parent_image=f"c{k + 1:04d}" if k + 1 < 1100 else "missing",
        )
        for k in range(1100)
    ]
    plans = plan_namespace(chain)
    assert len(plans) == 1100
    assert {plan.action for plan in plans.values()} == {"wait-parent"}
    assert plans["c0000"].waiting_on == "c0001"
    assert plans["c1099"].waiting_on == "missing"


def test_depth_survives_cycles() -> None:
    assert depth_of("c", {"a": None, "b": "a", "c": "b"}) == 2
    assert depth_of("a", {"a": "b", "b": "a"}) == 1


@pytest.mark.parametrize(
    ("outcome", "digest", "reason"),
    [
        (JobOutcome("succeeded", termination_message=P1 + "\n"), P1, None),
        (JobOutcome("succeeded", termination_message="oops"), None, "InvalidResult"),
        (JobOutcome("failed", job_reason="DeadlineExceeded"), None, "DeadlineExceeded"),
        (JobOutcome("failed", exit_reason="OOMKilled"), None, "OOMKilled"),
        (JobOutcome("failed", exit_reason="Evicted"), None, "Evicted"),
        (
            JobOutcome(
                "failed",
                termination_message="error: failed to push registry/x: unauthorized: "
                "authentication required",
            ),
            None,
            "PushDenied",
        ),
        (
            JobOutcome(
                "failed",
                termination_message='#5 ERROR: process "/bin/sh -c false" did not complete',
            ),
            None,
            "BuildFailed",
        ),
    ],
)
def test_judge_build(outcome: JobOutcome, digest: str | None, reason: str | None) -> None:
    result = judge_build(outcome)
    assert (result.digest, result.reason) == (digest, reason)


def test_durations() -> None:
    assert [duration_seconds(t) for t in ("10m", "1h30m", "45s", "500ms", "1.5h")] == [
        600,
        5400,
        45,
        0.5,
        5400,
    ]


def test_conditions_from_the_plan() -> None:
    up = plan_namespace([BASE])["base"]
    summary = {v.type: (v.status, v.reason) for v in build_conditions(up, ImageStatus(digest=B1))}
    assert summary["Ready"] == ("True", "UpToDate")
    assert summary["ParentCurrent"] == ("True", "UpToDate")
    held = plan_namespace([replace(BASE, resolved_digest=P2, policy="Manual")])["base"]
    summary = {
        v.type: (v.status, v.reason, v.message)
        for v in build_conditions(held, ImageStatus(digest=B1))
    }
    assert summary["Ready"][:2] == ("True", "ParentUpdateHeld")
    assert summary["ParentCurrent"][:2] == ("False", "ParentUpdateHeld")
    assert P2 in summary["ParentCurrent"][2]
