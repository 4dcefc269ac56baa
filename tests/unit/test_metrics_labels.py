"""Every metric's label set is closed (no object names), so the series count is bounded."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from lamina.handlers import metrics

EXPECTED = {
    "lamina_events": ("kind",),
    "lamina_status_patches": ("kind",),
    "lamina_status_patch_failures": ("kind",),
    "lamina_builds": ("result",),
    "lamina_build_failures": ("reason",),
    "lamina_build_duration_seconds": ("result",),
    "lamina_build_queue_length": (),
    "lamina_builds_running": (),
    "lamina_commits": ("result",),
    "lamina_commit_failures": ("reason",),
    "lamina_commit_duration_seconds": ("result",),
    "lamina_commit_frozen_seconds": (),
    "lamina_cascade_size": (),
    "lamina_cascade_depth": (),
    "lamina_time_to_remediate_seconds": (),
    "lamina_cascades_superseded": (),
    "lamina_cascades_in_progress": (),
    "lamina_reconcile_errors": ("handler", "reason"),
    "lamina_kube_events_written": ("type", "kind"),
    "lamina_kube_events_dropped": ("limit",),
}


def declared() -> dict[str, MetricWrapperBase]:
    return {
        metric._name: metric
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
    }


def test_the_metrics_are_exactly_the_documented_ones() -> None:
    assert sorted(declared()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_label_sets(name: str) -> None:
    assert tuple(declared()[name]._labelnames) == EXPECTED[name]
    assert not {"name", "namespace", "image", "pod"} & set(EXPECTED[name])


def test_exposition_has_the_histograms_and_counters() -> None:
    metrics.BUILD_DURATION.labels("succeeded").observe(42.0)
    metrics.RECONCILE_ERRORS.labels("commits", "NotFound").inc()
    text = generate_latest(REGISTRY).decode()
    assert 'lamina_build_duration_seconds_bucket{le="60.0",result="succeeded"}' in text
    assert 'lamina_reconcile_errors_total{handler="commits",reason="NotFound"}' in text
    assert "# TYPE lamina_time_to_remediate_seconds histogram" in text
    assert "# TYPE lamina_build_queue_length gauge" in text
