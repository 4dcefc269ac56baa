"""A git context's commit in the build decisions: when it is polled, and what a moved branch
does (the same cascade as a moved parent), as tables over the pure reconcile pass."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lamina.api.image import (
    BuiltFromStatus,
    ImageSpec,
    ImageStatus,
    ResolvedParent,
    ResolvedSource,
)
from lamina.domain.build_status import source_resolved
from lamina.domain.builds import BuildState, inputs_key, plan_namespace
from lamina.domain.image_status import build_conditions
from lamina.domain.parent_polling import poll_jitter
from lamina.domain.rebuild import BuiltFrom, rebuild_reasons
from lamina.domain.reconcile import (
    ClusterState,
    RebaseImage,
    ResolveSource,
    StartBuild,
    decide,
    source_key,
)
from lamina.domain.snapshot import ImageRecord

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
P1 = "sha256:" + "1" * 64
D1 = "sha256:" + "d" * 64
D2 = "sha256:" + "e" * 64
C1 = "1" * 40
C2 = "2" * 40
URL = "https://git.example/team/app.git"
REF = "registry.example/library/base:1"


def git_spec(name: str, *, parent_image: str | None = None, **git: Any) -> ImageSpec:
    context = {"git": {"url": URL, "revision": "main", "pollInterval": "1m", **git}}
    return ImageSpec.model_validate(
        {
            "parent": {"image": parent_image} if parent_image else {"ref": REF},
            "build": {"steps": ["COPY . /"], "context": context},
            "output": {"repository": f"registry.example/team/{name}"},
        }
    )


def source(commit: str | None, at: datetime = NOW, message: str | None = None) -> ResolvedSource:
    return ResolvedSource(url=URL, revision="main", commit=commit, resolved_at=at, message=message)


def record(name: str, spec: ImageSpec, **status: Any) -> ImageRecord:
    return ImageRecord(
        "ns",
        name,
        uid=f"uid-{name}",
        generation=1,
        created="2026-01-01T00:00:00Z",
        spec=spec,
        status=ImageStatus(**status),
    )


def src(**status: Any) -> ImageRecord:
    return record(
        "src",
        git_spec("src"),
        resolved=ResolvedParent(ref=REF, digest=P1, resolved_at=NOW),
        **status,
    )


def built_on(commit: str) -> dict[str, Any]:
    return {
        "digest": D1,
        "built_from": BuiltFromStatus(generation=1, parent_digest=P1, source_commit=commit),
    }


def decided(*images: ImageRecord, polled: dict[str, datetime] | None = None) -> list[Any]:
    state = ClusterState(now=NOW, images={"ns": {i.name: i for i in images}}, polled=polled or {})
    return list(decide(state).actions)


# -- polling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "polled_ago", "due"),
    [
        pytest.param({}, None, True, id="never-resolved"),
        pytest.param({"source": source(C1)}, None, False, id="just-resolved"),
        pytest.param({"source": source(C1, NOW - timedelta(seconds=59))}, None, False, id="early"),
        pytest.param(
            {"source": source(C1, NOW - timedelta(minutes=2))}, None, True, id="interval-passed"
        ),
        pytest.param(
            # Asked 10 s ago (nothing new, so nothing written): the poll clock is the later.
            {"source": source(C1, NOW - timedelta(minutes=2))},
            timedelta(seconds=10),
            False,
            id="asked-recently",
        ),
        pytest.param(
            {"source": source(None, NOW - timedelta(seconds=34), "GitSourceUnavailable: x")},
            None,
            True,
            id="unresolved-retried-after-30s-plus-jitter",
        ),
        pytest.param(
            {"source": source(C1).model_copy(update={"revision": "other"})},
            None,
            True,
            id="revision-changed",
        ),
    ],
)
def test_when_a_git_source_is_polled(
    status: dict[str, Any], polled_ago: timedelta | None, due: bool
) -> None:
    polled = {source_key(URL, "main", "ns", "src"): NOW - polled_ago} if polled_ago else None
    actions = decided(src(**status), polled=polled)
    resolving = [a for a in actions if isinstance(a, ResolveSource)]
    assert bool(resolving) == due
    if due:
        assert resolving[0] == ResolveSource("ns", "src", URL, "main", None)


def test_the_poll_is_jittered_stably_and_only_later() -> None:
    key = source_key(URL, "main", "ns", "src")
    jitter = poll_jitter(key, timedelta(minutes=1))
    assert timedelta(0) < jitter < timedelta(seconds=6)  # at most 10% of the interval
    assert poll_jitter(key, timedelta(minutes=1)) == jitter  # no random state

    def due(resolved_at: datetime) -> bool:
        actions = decided(src(source=source(C1, resolved_at)))
        return any(isinstance(a, ResolveSource) for a in actions)

    assert not due(NOW - timedelta(minutes=1) - jitter / 2)
    assert due(NOW - timedelta(minutes=1) - jitter)


def test_the_secret_name_travels_with_the_resolution() -> None:
    image = record("p", git_spec("p", secret="creds"))
    image = replace(
        image, status=ImageStatus(resolved=ResolvedParent(ref=REF, digest=P1, resolved_at=NOW))
    )
    assert ResolveSource("ns", "p", URL, "main", "creds") in decided(image)


# -- what a commit does ------------------------------------------------------------------------


def state_of(commit: str | None, built: str | None, **extra: Any) -> BuildState:
    return BuildState(
        "src",
        "uid-src",
        1,
        None,
        REF,
        resolved_digest=P1,
        digest=D1 if built else None,
        built_from=BuiltFrom(1, P1, None, built) if built else None,
        source_url=URL,
        source_commit=commit,
        **extra,
    )


KID = BuildState("kid", "uid-kid", 1, "src", None, digest=D2, built_from=BuiltFrom(1, D1))


@pytest.mark.parametrize(
    ("src_state", "src_action", "kid_action", "reasons"),
    [
        pytest.param(state_of(None, None), "wait-parent", "wait-parent", [], id="not-resolved"),
        pytest.param(state_of(C1, None), "queued", "wait-parent", ["FirstBuild"], id="first"),
        pytest.param(state_of(C1, C1), "none", "none", [], id="same-commit"),
        pytest.param(
            state_of(C2, C1), "queued", "wait-parent", [f"SourceChanged {C1} -> {C2}"], id="moved"
        ),
        pytest.param(
            state_of(C2, C1, policy="Manual"),
            "hold",
            "none",
            [f"SourceChanged {C1} -> {C2}"],
            id="moved-manual-held",
        ),
        pytest.param(
            state_of(C2, C1, build_phase="Running"),
            "building",
            "wait-parent",
            [f"SourceChanged {C1} -> {C2}"],
            id="moved-while-building",
        ),
        pytest.param(
            # A poll that failed keeps the last commit (see source_resolved): nothing to do.
            state_of(C1, C1),
            "none",
            "none",
            [],
            id="server-down-keeps-commit",
        ),
    ],
)
def test_a_moved_branch_decides_like_a_moved_parent(
    src_state: BuildState, src_action: str, kid_action: str, reasons: list[str]
) -> None:
    plans = plan_namespace([src_state, KID])
    assert plans["src"].action == src_action
    assert plans["kid"].action == kid_action
    said = [r.kind if r.kind == "FirstBuild" else str(r) for r in plans["src"].reasons]
    assert said == reasons
    if src_action == "queued" and reasons[0].startswith("SourceChanged"):
        # Automatic, like a parent change: person-initiated builds go first.
        assert not plans["src"].user_initiated
        assert plans["src"].parent_current


def test_the_commit_is_a_build_input_and_other_contexts_keep_their_keys() -> None:
    with_c1 = inputs_key("u", BuiltFrom(1, P1, None, C1))
    assert with_c1 != inputs_key("u", BuiltFrom(1, P1, None, C2))
    # A key of an Image without a git context is what it was before commits existed (its
    # build Job's name too, so an upgrade adopts running Jobs instead of rebuilding).
    before = json.dumps(["u", 1, P1, None], separators=(",", ":"))
    assert inputs_key("u", BuiltFrom(1, P1)) == hashlib.sha256(before.encode()).hexdigest()[:12]
    assert rebuild_reasons(BuiltFrom(1, P1, None, C1), BuiltFrom(1, P1, None, C1)) == []


def test_a_moved_branch_starts_a_build_at_the_new_commit_never_a_rebase() -> None:
    spec = git_spec("src")
    spec = spec.model_copy(
        update={"rebuild": spec.rebuild.model_copy(update={"strategy": "Rebase"})}
    )
    image = record(
        "src",
        spec,
        resolved=ResolvedParent(ref=REF, digest=P1, resolved_at=NOW),
        source=source(C2),
        **built_on(C1),
    )
    actions = decided(image)
    assert not [a for a in actions if isinstance(a, RebaseImage)]
    (start,) = [a for a in actions if isinstance(a, StartBuild)]
    assert start.plan.wanted is not None and start.plan.wanted.source_commit == C2
    assert [str(r) for r in start.plan.reasons] == [f"SourceChanged {C1} -> {C2}"]


# -- what the Image says -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason", "stalled"),
    [
        (None, "WaitingForSource", False),
        (
            "GitAuthenticationFailed: u refused the credentials: HTTP 401",
            "GitAuthenticationFailed",
            True,
        ),
        ("GitRevisionNotFound: the server advertises no refs/heads/x", "GitRevisionNotFound", True),
        ("GitProtocolError: pkt-line length 3 is reserved", "GitProtocolError", True),
        ("GitSourceUnavailable: u: HTTP 503; ...", "GitSourceUnavailable", False),
        ("Nonsense: from a hand-edited status", "WaitingForSource", False),
    ],
)
def test_an_unresolved_source_says_why(message: str | None, reason: str, stalled: bool) -> None:
    (plan,) = plan_namespace([state_of(None, None)]).values()
    status = ImageStatus(source=source(None, message=message))
    verdicts = {v.type: v for v in build_conditions(plan, status)}
    assert verdicts["Ready"].reason == reason
    assert verdicts["Stalled"].status == ("True" if stalled else "False")
    if message:
        assert verdicts["Ready"].message == f"cannot resolve main of {URL}: {message}"


def test_a_failed_poll_keeps_the_last_commit_and_a_new_revision_forgets_it() -> None:
    before = ImageStatus(source=source(C1))
    failed = source_resolved(
        before, url=URL, revision="main", commit=None, message="GitSourceUnavailable: x", now=NOW
    )
    assert failed.source is not None and failed.source.commit == C1
    other = source_resolved(before, url=URL, revision="dev", commit=None, message="x", now=NOW)
    assert other.source is not None and other.source.commit is None


def test_a_held_source_change_says_what_moved() -> None:
    plan = plan_namespace([state_of(C2, C1, policy="Manual")])["src"]
    status = ImageStatus(
        digest=D1,
        built_from=BuiltFromStatus(generation=1, parent_digest=P1, source_commit=C1),
    )
    verdicts = {v.type: v for v in build_conditions(plan, status)}
    assert verdicts["Ready"].status == "True"
    assert verdicts["ParentCurrent"].message == (
        f"the git source moved to {C2} (built at {C1}); the Manual policy holds the rebuild: "
        "set annotation lamina.dev/rebuild to a new value to build"
    )


def test_another_images_short_poll_does_not_stop_this_one_being_due() -> None:
    """Tenant A's Image on the same public URL polls every second; B's own clock holds."""
    b = src(source=source(C1, NOW - timedelta(minutes=2)))
    others = {source_key(URL, "main", "tenant-a", "greedy"): NOW - timedelta(seconds=1)}
    assert any(isinstance(a, ResolveSource) for a in decided(b, polled=others))
