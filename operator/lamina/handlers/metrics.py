"""Prometheus metrics of the operator's own work.

They answer "is the operator keeping up, and is it quiet when nothing changes?": events seen,
status patches written (which should stay near zero in a steady state) and patches that failed.
"""

from __future__ import annotations

from prometheus_client import Counter

EVENTS = Counter("lamina_events_total", "Watch events handled, by resource kind.", ["kind"])
STATUS_PATCHES = Counter(
    "lamina_status_patches_total", "Status patches written, by resource kind.", ["kind"]
)
STATUS_PATCH_FAILURES = Counter(
    "lamina_status_patch_failures_total", "Status patches the API refused, by kind.", ["kind"]
)
