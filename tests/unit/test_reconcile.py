"""The reconcile pass as a table: input objects -> the actions and writes wanted (kpack style).

Each case builds a ClusterState from objects as the indexes would hold them and checks what
:func:`decide` answers; then the writes are applied as the API server would, and a second
pass over the result must want nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lamina.api.image import (
    BuildStatus,
    BuiltFromStatus,
    ImageLayer,
    ImageSpec,
    ImageStatus,
    ResolvedParent,
)
from lamina.api.layer import LayerStatus
from lamina.domain.build_status import build_started
from lamina.domain.builds import inputs_key
from lamina.domain.layers import layer_name
from lamina.domain.rebuild import BuiltFrom
from lamina.domain.reconcile import (
    ClusterState,
    Decision,
    ImageChanged,
    JobCreated,
    RebaseImage,
    StartBuild,
    WriteStatus,
    apply,
    decide,
    decide_again,
    outcome_changes,
)
from lamina.domain.snapshot import BuildJobRecord, ImageRecord, LayerRecord

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
P1 = "sha256:" + "1" * 64
P2 = "sha256:" + "2" * 64
D1 = "sha256:" + "d" * 64
L1 = "sha256:" + "a" * 64
L2 = "sha256:" + "b" * 64
REF = "registry.example/library/base:1"


def spec(name: str, parent_image: str | None = None, **extra: Any) -> ImageSpec:
    body: dict[str, Any] = {
        "parent": {"image": parent_image} if parent_image else {"ref": REF},
        "build": {"steps": ["RUN true"]},
        "output": {"repository": f"registry.example/team/{name}"},
        **extra,
    }
    return ImageSpec.model_validate(body)


def resolved(digest: str = P1, at: datetime = NOW) -> ResolvedParent:
    return ResolvedParent(ref=REF, digest=digest, resolved_at=at)


def built(parent_digest: str, digest: str = D1, layers: tuple[str, ...] = ()) -> dict[str, Any]:
    """Status fields of an Image built on ``parent_digest`` at generation 1."""
    return {
        "digest": digest,
        "built_from": BuiltFromStatus(generation=1, parent_digest=parent_digest),
        "layers": [
            ImageLayer(digest=d, size=1, own=i == len(layers) - 1) for i, d in enumerate(layers)
        ],
    }


def img(
    name: str, parent: str | None = None, spec_extra: Mapping[str, Any] | None = None, **status: Any
) -> ImageRecord:
    return ImageRecord(
        "ns",
        name,
        uid=f"uid-{name}",
        generation=1,
        resource_version="1",
        created=f"2026-01-01T00:00:{len(name):02}Z",
        spec=spec(name, parent, **(spec_extra or {})),
        status=ImageStatus(**status),
    )


def lyr(digest: str, *, managed: bool = True, age: timedelta = timedelta(hours=1)) -> LayerRecord:
    return LayerRecord(
        "ns",
        layer_name(digest),
        generation=1,
        resource_version="1",
        created=NOW - age,
        managed=managed,
    )


def job(name: str, image: ImageRecord, inputs: str, finished: bool = False) -> BuildJobRecord:
    return BuildJobRecord(name, image.namespace, image.name, image.uid, inputs, finished)


def state(
    *images: ImageRecord,
    layers: tuple[LayerRecord, ...] = (),
    jobs: tuple[BuildJobRecord, ...] = (),
    limit: int = 2,
    **extra: Any,
) -> ClusterState:
    return ClusterState(
        now=NOW,
        images={"ns": {i.name: i for i in images}} if images else {},
        layers={"ns": {layer.name: layer for layer in layers}} if layers else {},
        jobs={j.name: j for j in jobs},
        limit=limit,
        **extra,
    )


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a merge patch."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def written(current: ClusterState, decision: Decision) -> ClusterState:
    """The state after the API server applied the decision's writes."""
    images = {ns: dict(records) for ns, records in current.images.items()}
    layers = {ns: dict(records) for ns, records in current.layers.items()}
    for write in decision.writes:
        if write.plural == "images":
            record = images[write.namespace][write.name]
            base = current.written.get((write.namespace, write.name)) or record.status
            body = merge(base.wire(), write.patch)
            images[write.namespace][write.name] = replace(
                record, status=ImageStatus.model_validate(body)
            )
        else:
            record_l = layers[write.namespace][write.name]
            body = merge(record_l.status.wire(), write.patch)
            layers[write.namespace][write.name] = replace(
                record_l, status=LayerStatus.model_validate(body)
            )
    return replace(current, images=images, layers=layers, written={})


def settled(current: ClusterState) -> ClusterState:
    """Written until nothing is left to write (at most a few rounds)."""
    for _ in range(3):
        decision = decide(current)
        if not decision.writes:
            return current
        current = written(current, decision)
    raise AssertionError(f"writes did not converge: {decision.writes}")


def kinds(decision: Decision) -> list[tuple[str, str]]:
    return [(type(a).__name__, getattr(a, "name", "")) for a in decision.actions]


def ready_reason(status_patch: Mapping[str, Any]) -> str:
    return next(c["reason"] for c in status_patch["conditions"] if c["type"] == "Ready")


def image_write(decision: Decision, name: str) -> WriteStatus:
    return next(w for w in decision.writes if w.plural == "images" and w.name == name)


# -- the table -------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    state: ClusterState
    actions: list[tuple[str, str]]
    ready: Mapping[str, str] = field(default_factory=dict)


UP_TO_DATE = img("base", resolved=resolved(), **built(P1))
APP = img("app", "base", **built(D1))
QUEUED = img("base", resolved=resolved())
REBASING = img(
    "base", spec_extra={"rebuild": {"strategy": "Rebase"}}, resolved=resolved(P2), **built(P1)
)
INPUTS = inputs_key("uid-base", BuiltFrom(1, P1, None))

CASES = [
    Case(
        "up to date: nothing to do",
        state(UP_TO_DATE, APP),
        [],
        {"base": "UpToDate", "app": "UpToDate"},
    ),
    Case(
        "a new ref is resolved first",
        state(img("base")),
        [("ResolveParent", "base")],
        {"base": "WaitingForParent"},
    ),
    Case(
        "a ref due again is re-resolved",
        state(img("base", resolved=resolved(at=NOW - timedelta(hours=1)), **built(P1))),
        [("ResolveParent", "base")],
    ),
    Case(
        "resolved, never built: the build starts",
        state(QUEUED),
        [("StartBuild", "base")],
        {"base": "BuildQueued"},
    ),
    Case(
        "the limit holds; the parent first, the child waits for it",
        state(QUEUED, img("app", "base"), img("other", resolved=resolved()), limit=1),
        [("StartBuild", "base")],
        {"app": "WaitingForParent", "other": "BuildQueued"},
    ),
    Case(
        "Rebase strategy, only the parent moved: a rebase and no build",
        state(REBASING),
        [("RebaseImage", "base")],
    ),
    Case(
        "a refused rebase for these inputs: a build and no rebase",
        state(
            REBASING,
            rebase_refused={
                ("ns", "base"): (inputs_key("uid-base", BuiltFrom(1, P2, None)), "not a prefix")
            },
        ),
        [("StartBuild", "base")],
    ),
    Case(
        "a running build whose Job finished is collected",
        state(
            img(
                "base",
                resolved=resolved(),
                build=BuildStatus(job="lamina-build-x", phase="Running", inputs=INPUTS),
            ),
            jobs=(job("lamina-build-x", QUEUED, INPUTS, finished=True),),
        ),
        [("CollectBuild", "base")],
    ),
    Case(
        "a running build whose Job is gone is lost",
        state(
            img(
                "base",
                resolved=resolved(),
                build=BuildStatus(job="lamina-build-x", phase="Running", inputs=INPUTS),
            )
        ),
        [],
        {"base": "BuildJobLost"},
    ),
    Case(
        "a Job for exactly these inputs is adopted, not started again",
        state(QUEUED, jobs=(job(f"lamina-build-{INPUTS}", QUEUED, INPUTS),)),
        [],
        {"base": "Building"},
    ),
    Case(
        "a running Job whose Image is gone is deleted",
        state(
            UP_TO_DATE,
            jobs=(BuildJobRecord("lamina-build-y", "ns", "gone", "uid-gone", "i", False),),
        ),
        [("DeleteJob", "lamina-build-y")],
    ),
    Case(
        "unused Layers the operator made are collected after their grace",
        state(
            img("base", resolved=resolved(), **built(P1, layers=(L1,))),
            layers=(
                lyr(L1),
                lyr(L2),
                lyr("sha256:" + "c" * 64, age=timedelta(seconds=1)),
                lyr("sha256:" + "e" * 64, managed=False),
            ),
        ),
        [("DeleteLayer", layer_name(L2))],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision_table(case: Case) -> None:
    decision = decide(case.state)
    assert kinds(decision) == case.actions
    for name, reason in case.ready.items():
        assert ready_reason(image_write(decision, name).patch) == reason


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_second_pass_over_the_written_state_writes_nothing(case: Case) -> None:
    after = written(case.state, decide(case.state))
    again = decide(after)
    assert again.writes == ()


def test_start_then_the_next_pass_sees_the_build_in_flight() -> None:
    """The outcome of a StartBuild (status Running, the Job) is what the next decision sees,
    so it never starts a second build or a rebase for the same change."""
    first = decide(state(QUEUED))
    (start,) = first.actions
    assert isinstance(start, StartBuild)
    assert start.parent == f"registry.example/library/base@{P1}"
    running = build_started(QUEUED.status, start.plan, "lamina-build-1", NOW)
    after = apply(
        state(QUEUED),
        [
            ImageChanged("ns", "base", running),
            JobCreated(job("lamina-build-1", QUEUED, start.plan.inputs or "")),
        ],
    )
    second = decide(after)
    assert second.actions == ()
    assert ready_reason(image_write(second, "base").patch) == "Building"
    # The write carries the build fields and the conditions in one patch.
    assert image_write(second, "base").patch["build"]["phase"] == "Running"


def test_after_outcomes_only_what_they_changed_is_rendered_again() -> None:
    """A first pass renders everything; one build's start must not render everything again,
    and the writes it ends with are those a whole second rendering would give."""
    others = [img(f"app-{n}", "base") for n in range(3)]  # no status yet: each is a write
    lone = img("lone", "elsewhere")  # not below base: untouched by its build
    before = state(QUEUED, *others, lone)
    first = decide(before)
    (start,) = first.actions
    assert isinstance(start, StartBuild)
    outcomes = [
        ImageChanged("ns", "base", build_started(QUEUED.status, start.plan, "lamina-b", NOW)),
        JobCreated(job("lamina-b", QUEUED, start.plan.inputs or "")),
    ]
    after = apply(before, outcomes)
    changed = outcome_changes(before, after, outcomes)
    final = decide_again(first, after, changed)
    whole = decide(after)
    key = lambda w: (w.plural, w.namespace, w.name)  # noqa: E731
    assert sorted(map(key, final.writes)) == sorted(map(key, whole.writes))
    assert {key(w): w.patch for w in final.writes} == {key(w): w.patch for w in whole.writes}
    assert final.rendered == whole.rendered
    assert final.actions == whole.actions
    # base's subtree (base and the apps below it) is what was rendered again, not lone.
    below = {("images", "ns", name) for name in ("base", *(o.name for o in others))}
    assert decide(after, changed).rendered == below
    assert ("images", "ns", "lone") in final.rendered


def test_rebase_and_build_are_never_both_decided_for_one_image() -> None:
    for refused in ({}, {("ns", "base"): (inputs_key("uid-base", BuiltFrom(1, P2, None)), "x")}):
        actions = decide(state(REBASING, rebase_refused=refused)).actions
        assert len([a for a in actions if isinstance(a, RebaseImage | StartBuild)]) == 1


def test_one_image_that_raises_does_not_stop_the_others() -> None:
    broken = img("broken", resolved=resolved(), **built(P1))
    # A value the schema bounds now, stored before the bound existed: read without checks,
    # it overflows in the decision.
    assert broken.spec is not None
    parent = broken.spec.parent.model_construct(ref=REF, poll_interval="99999999999999h")
    broken = replace(broken, spec=broken.spec.model_copy(update={"parent": parent}))
    decision = decide(state(broken, img("fine", resolved=resolved())))
    assert kinds(decision) == [("StartBuild", "fine")]
    assert decision.failed[("ns", "broken")].reason == "ReconcileFailed"
    patch = image_write(decision, "broken").patch
    stalled = next(c for c in patch["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "ReconcileFailed"
    assert "InvalidDuration" in stalled["message"] and "99999999999999h" in stalled["message"]


def test_an_unreadable_spec_is_that_image_s_condition() -> None:
    bad = replace(img("bad"), spec=None, spec_error="spec cannot be read: 1 error(s)")
    decision = decide(state(bad, img("fine", resolved=resolved())))
    assert kinds(decision) == [("StartBuild", "fine")]
    assert ready_reason(image_write(decision, "bad").patch) == "SpecInvalid"


def test_a_chain_of_a_thousand_images_is_decided_without_recursion() -> None:
    chain = [img("i0000", resolved=resolved())]
    chain += [img(f"i{n:04}", f"i{n - 1:04}") for n in range(1, 1000)]
    decision = decide(state(*chain))
    assert kinds(decision) == [("StartBuild", "i0000")]
    deepest = image_write(decision, "i0999").patch
    assert len(deepest["lineage"]) == 1000
    assert deepest["lineage"][-1] == {"ref": REF, "digest": P1}


def test_a_new_image_costs_one_write_per_shared_layer() -> None:
    """Usage is a count and a bounded sample: a new user changes the count only."""
    base = img("base", resolved=resolved(), **built(P1, layers=(L1,)))
    users = [img(f"u{n:03}", "base", **built(D1, layers=(L1, L2))) for n in range(50)]
    before = settled(state(base, *users, layers=(lyr(L1), lyr(L2))))
    newcomer = img("zz-new", "base", **built(D1, layers=(L1, L2)))
    grown = replace(before, images={"ns": {**before.images["ns"], "zz-new": newcomer}})
    decision = decide(grown)
    layer_writes = [w for w in decision.writes if w.plural == "layers"]
    assert sorted(w.name for w in layer_writes) == [layer_name(L1), layer_name(L2)]
    assert all(set(w.patch) == {"usedByCount"} for w in layer_writes)


def test_a_due_resolution_comes_before_any_build() -> None:
    """Never a build on a digest about to be replaced: resolve first, decide next pass."""
    due = img("base", resolved=resolved(at=NOW - timedelta(days=1)))
    assert kinds(decide(state(due))) == [("ResolveParent", "base")]


def test_a_just_resolved_parent_builds_though_a_short_poll_is_due_again() -> None:
    """A 1 s poll interval is due on every pass: the build must still start, not starve."""
    fresh = img(
        "base",
        spec_extra={"parent": {"ref": REF, "pollInterval": "1s"}},
        resolved=resolved(at=NOW - timedelta(seconds=2)),
    )
    assert kinds(decide(state(fresh))) == [("StartBuild", "base")]


def test_a_build_queued_behind_the_limit_still_re_polls_its_parent() -> None:
    """No slot free: the due re-poll goes on, so a moved tag is seen while the build waits."""
    fresh = img(
        "base",
        spec_extra={"parent": {"ref": REF, "pollInterval": "1s"}},
        resolved=resolved(at=NOW - timedelta(seconds=2)),
    )
    assert kinds(decide(state(fresh, limit=0))) == [("ResolveParent", "base")]


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in CASES
        if c.id
        in (
            "a running build whose Job is gone is lost",
            "a Job for exactly these inputs is adopted, not started again",
        )
    ],
    ids=lambda c: c.id,
)
def test_what_the_jobs_change_in_memory_is_in_the_patch(case: Case) -> None:
    """The patch is against what the cluster holds, not the record the Jobs changed in memory
    (a lost build, an adopted Job): the build record itself must be written."""
    decision = decide(case.state)
    (name,) = case.ready
    patch = image_write(decision, name).patch
    assert "build" in patch
    if case.ready[name] == "BuildJobLost":
        assert patch["build"]["failure"] == "BuildJobLost"
    else:
        assert patch["build"]["phase"] == "Running"
