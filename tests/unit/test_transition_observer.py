"""The observer's bookkeeping: a cascade measured from status changes, gauges kept."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from lamina.domain.transitions import ConditionFacts, ImageFacts
from lamina.handlers.transitions import Observed, image_change

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def facts(name: str, parent: str | None, digest: str, built_on: str | None, at: int) -> ImageFacts:
    return ImageFacts(
        name=name,
        uid=f"uid-{name}",
        parent_image=parent,
        digest=digest,
        built_on=built_on,
        built_at=T0 + timedelta(seconds=at),
    )


def test_a_cascade_is_timed_from_the_roots_new_digest_to_the_last_descendant() -> None:
    state = Observed()
    base, app, web = (
        facts("base", None, "b1", "x", 0),
        facts("app", "base", "a1", "b1", 0),
        facts("web", "app", "w1", "a1", 0),
    )
    for item in (base, app, web):
        assert image_change(state, "ns", None, item) == []
    count = sample("lamina_time_to_remediate_seconds_count")
    size_sum = sample("lamina_cascade_size_sum")

    new_base = replace(base, digest="b2", built_at=T0 + timedelta(seconds=100))
    image_change(state, "ns", base, new_base)
    assert sample("lamina_cascade_size_sum") == size_sum + 2
    assert sample("lamina_cascades_in_progress") == 1
    new_app = replace(app, digest="a2", built_on="b2", built_at=T0 + timedelta(seconds=130))
    assert image_change(state, "ns", app, new_app) == []  # inside the cascade: no new one
    assert sample("lamina_cascades_in_progress") == 1
    new_web = replace(web, digest="w2", built_on="a2", built_at=T0 + timedelta(seconds=160))
    events = image_change(state, "ns", web, new_web)
    assert [(name, e.reason, e.message) for name, e in events] == [
        ("base", "Remediated", "all 2 Automatic descendants are on b2 in 60s")
    ]
    assert sample("lamina_time_to_remediate_seconds_count") == count + 1
    assert sample("lamina_cascades_in_progress") == 0


def test_queue_and_running_gauges_follow_the_images() -> None:
    state = Observed()
    queued = ImageFacts(name="q", uid="q", conditions={})
    queued = replace(queued, conditions={"Ready": ConditionFacts("False", "BuildQueued", "")})
    running = ImageFacts(name="r", uid="r", build_phase="Running")
    image_change(state, "ns", None, queued)
    image_change(state, "ns", None, running)
    assert sample("lamina_build_queue_length") == 1
    assert sample("lamina_builds_running") == 1
    image_change(state, "ns", queued, None)
    assert sample("lamina_build_queue_length") == 0


def test_the_gauges_count_each_image_once_however_often_it_is_seen() -> None:
    state = Observed()
    running = ImageFacts(name="r", uid="r", build_phase="Running")
    image_change(state, "ns", None, running)
    image_change(state, "ns", running, running)  # the echo of a write: the same facts
    assert sample("lamina_builds_running") == 1
    done = replace(running, build_phase="Succeeded")
    image_change(state, "ns", running, done)
    assert sample("lamina_builds_running") == 0
    image_change(state, "ns", done, None)
    assert (state.queued, state.running) == (0, 0)
