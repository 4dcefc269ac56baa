"""The build pass's registry-bound actions: concurrent, each under a deadline, none waited for
past the pass's wait.

The registry work itself is replaced by a stand-in that sleeps as long as the test says (the
API-tier test ``tests/api/test_slow_registry.py`` does the same against a real operator, API
server and a slow-drip registry); what is checked here is the scheduling: which pass gets
which outcome, the deadline's condition and its back-off, and that an action still running is
not started twice nor its outcome given to a re-created Image of the same name.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp

from lamina.api.image import ImageSpec, ImageStatus
from lamina.domain.build_job import BuildSettings
from lamina.domain.conditions import REASONS, REGISTRY_TIMEOUT
from lamina.domain.reconcile import (
    Action,
    ActionFailed,
    ClusterState,
    CollectBuild,
    ImageChanged,
    Outcome,
)
from lamina.domain.sbom_scan import ScanImage, ScanSettings, scan_job_name
from lamina.domain.snapshot import ImageRecord
from lamina.handlers.builds import BuildExecutor
from lamina.oci.hosts import RegistryHosts

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOG = logging.getLogger("test")


def record(namespace: str, name: str, uid: str, registry: str) -> ImageRecord:
    spec = ImageSpec.model_validate(
        {
            "parent": {"ref": "base.example/base:1"},
            "build": {"steps": ["RUN true"]},
            "output": {"repository": f"{registry}/{namespace}/{name}"},
        }
    )
    return ImageRecord(namespace, name, uid=uid, spec=spec)


class Sleepy(BuildExecutor):
    """An executor whose registry work takes ``seconds[(namespace, name)]``."""

    seconds: dict[tuple[str, str], float]
    started: list[tuple[str, str]]

    async def _one(
        self, session: aiohttp.ClientSession, action: Action, state: ClusterState, logger: Any
    ) -> list[Outcome]:
        assert isinstance(action, CollectBuild)
        self.started.append((action.namespace, action.name))
        await asyncio.sleep(self.seconds[(action.namespace, action.name)])
        return [
            ImageChanged(action.namespace, action.name, ImageStatus(digest="sha256:" + "a" * 64))
        ]


def executor(seconds: dict[tuple[str, str], float], **timing: float) -> Sleepy:
    made = Sleepy(
        kube=None,  # type: ignore[arg-type]  # the stand-in asks no API
        settings=BuildSettings(namespace="ops", builder_image="b", deadline_seconds=600),
        hosts=RegistryHosts(),
        **timing,  # type: ignore[arg-type]
    )
    made.seconds, made.started = seconds, []
    return made


def state(*records: ImageRecord) -> ClusterState:
    images: dict[str, dict[str, ImageRecord]] = {}
    for found in records:
        images.setdefault(found.namespace, {})[found.name] = found
    return ClusterState(now=NOW, images=images)


def test_a_slow_action_is_not_waited_for_and_its_outcome_comes_with_a_later_pass() -> None:
    slow = record("slow", "app", "u1", "drip.example:5000")
    quick = record("quick", "web", "u2", "registry.example")
    ran = executor({("slow", "app"): 0.6, ("quick", "web"): 0.0}, pass_wait_seconds=0.1)
    woken: list[str] = []
    ran.on_finished = woken.append
    actions = [CollectBuild("slow", "app", "j1"), CollectBuild("quick", "web", "j2")]

    async def scenario() -> None:
        first = await ran.execute(actions, state(slow, quick), LOG)
        # The quick one's outcome is in this pass; the slow one is still running.
        assert [(o.namespace, o.name) for o in first] == [("quick", "web")]  # type: ignore[union-attr]
        # Decided again meanwhile: not started a second time.
        second = await ran.execute(actions[:1], state(slow, quick), LOG)
        assert second == [] and ran.started.count(("slow", "app")) == 1
        await asyncio.sleep(0.8)
        assert woken == ["slow"]  # its end woke a pass for its namespace
        late = await ran.execute([], state(slow, quick), LOG)
        assert [(o.namespace, o.name) for o in late] == [("slow", "app")]  # type: ignore[union-attr]
        assert await ran.execute([], state(slow, quick), LOG) == []  # given once

    asyncio.run(scenario())


def test_a_late_outcome_is_not_given_to_a_recreated_image_of_the_same_name() -> None:
    slow = record("slow", "app", "u1", "drip.example:5000")
    ran = executor({("slow", "app"): 0.3}, pass_wait_seconds=0.05)

    async def scenario() -> None:
        assert await ran.execute([CollectBuild("slow", "app", "j1")], state(slow), LOG) == []
        await asyncio.sleep(0.5)
        recreated = record("slow", "app", "u-new", "drip.example:5000")
        assert await ran.execute([], state(recreated), LOG) == []
        # And it may act for the new one at once.
        ran.seconds[("slow", "app")] = 0.0
        assert len(await ran.execute([CollectBuild("slow", "app", "j9")], state(recreated), LOG))

    asyncio.run(scenario())


def test_past_its_deadline_an_action_is_that_images_registry_timeout_with_back_off() -> None:
    slow = record("slow", "app", "u1", "drip.example:5000")
    ran = executor({("slow", "app"): 10.0}, action_seconds=0.2, pass_wait_seconds=1.0)

    async def scenario() -> list[ActionFailed]:
        failures = []
        for _ in range(3):
            (outcome,) = await ran.execute([CollectBuild("slow", "app", "j1")], state(slow), LOG)
            assert isinstance(outcome, ActionFailed)
            failures.append(outcome)
        return failures

    started = datetime.now(UTC)
    failures = asyncio.run(scenario())
    assert REGISTRY_TIMEOUT in REASONS
    for failure, wait in zip(failures, (30, 60, 120), strict=True):
        assert (failure.plural, failure.namespace, failure.name) == ("images", "slow", "app")
        assert failure.failure.reason == REGISTRY_TIMEOUT
        assert failure.failure.message == (
            "collect the finished build did not finish within 0.2 s: the registry "
            f"drip.example:5000 answers too slowly (other Images went on; retried in {wait}s)"
        )
        retry = failure.failure.retry_at
        assert retry is not None
        assert wait - 2 <= (retry - started).total_seconds() <= wait + 5


def test_one_namespaces_registry_actions_take_only_their_share_of_places() -> None:
    """A cascade of rebases in one namespace starts at most its share at once; another
    namespace's action still gets a place; the rest are decided again later."""
    busy = [record("busy", f"i{n}", f"u{n}", "drip.example:5000") for n in range(6)]
    other = record("other", "web", "w", "registry.example")
    seconds = {(r.namespace, r.name): 5.0 for r in busy} | {("other", "web"): 0.0}
    ran = executor(
        seconds,
        pass_wait_seconds=0.1,
        max_registry_actions=3,
        max_registry_actions_per_namespace=2,
    )
    actions = [CollectBuild(r.namespace, r.name, "j") for r in [*busy, other]]

    async def scenario() -> None:
        outcomes = await ran.execute(actions, state(*busy, other), LOG)
        assert ran.started == [("busy", "i0"), ("busy", "i1"), ("other", "web")]
        assert [(o.namespace, o.name) for o in outcomes] == [("other", "web")]  # type: ignore[union-attr]
        # The next pass: both places of "busy" still taken, the global one free again.
        await ran.execute(actions, state(*busy, other), LOG)
        assert ran.started[3:] == [("other", "web")]
        for task in ran._in_flight.values():
            task.cancel()

    asyncio.run(scenario())


def test_a_late_outcome_keeps_what_a_poll_wrote_while_its_action_ran() -> None:
    from dataclasses import replace  # noqa: PLC0415

    from lamina.api.image import ResolvedParent  # noqa: PLC0415

    slow = record("slow", "app", "u1", "drip.example:5000")
    ran = executor({("slow", "app"): 0.3}, pass_wait_seconds=0.05)
    polled = ResolvedParent(ref="base.example/base:1", digest="sha256:" + "b" * 64)

    async def scenario() -> None:
        assert await ran.execute([CollectBuild("slow", "app", "j1")], state(slow), LOG) == []
        await asyncio.sleep(0.5)
        now = replace(slow, status=slow.status.model_copy(update={"resolved": polled}))
        (late,) = await ran.execute([], state(now), LOG)
        assert isinstance(late, ImageChanged)
        assert late.status.digest == "sha256:" + "a" * 64  # the action's result
        assert late.status.resolved == polled  # and the newer poll, not the old status's

    asyncio.run(scenario())


def test_waiting_scans_take_no_place_from_another_namespaces_collect() -> None:
    """Four early namespaces with Images waiting for a scan slot: they hold none of the 16
    registry places, the victim's finished build is collected in the same pass, and a scan
    with a finished Job to collect goes first among the scans, one at a time."""
    waiting = [
        record(f"a-{n}", f"i{m}", f"u{n}{m}", "r.example") for n in range(4) for m in range(5)
    ]
    done = record("b-done", "app", "ud", "r.example")
    victim = record("victim", "app", "uv", "r.example")
    ran = executor({("victim", "app"): 0.0, ("b-done", "app"): 0.0})
    ran.scan_settings = ScanSettings(namespace="ops", image="syft:test", limit=2)
    ran.__post_init__()
    # Both scan slots are taken by running Jobs; b-done's Job has finished.
    for running in waiting[:2]:
        ran.scans.jobs[scan_job_name(running.uid, "sha256:" + "1" * 64)] = {"status": {}}
    ran.scans.jobs[scan_job_name(done.uid, "sha256:" + "2" * 64)] = {
        "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    }
    scans = [ScanImage(r.namespace, r.name, "sha256:" + "1" * 64) for r in waiting]
    scans.append(ScanImage("b-done", "app", "sha256:" + "2" * 64))
    everything = state(*waiting, done, victim)
    actionable = ran.scans.actionable(scans, everything.images, NOW)
    assert [(a.namespace, a.name) for a in actionable] == [("b-done", "app")]

    seen: list[tuple[str, str]] = []

    async def one(
        session: aiohttp.ClientSession, action: Action, state: ClusterState, logger: Any
    ) -> list[Outcome]:
        seen.append((action.namespace, action.name))  # type: ignore[union-attr]
        return []

    ran._one = one  # type: ignore[method-assign]
    asyncio.run(ran.execute([*scans, CollectBuild("victim", "app", "j")], everything, LOG))
    assert sorted(seen) == [("b-done", "app"), ("victim", "app")]
