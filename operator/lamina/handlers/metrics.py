"""Prometheus metrics of the operator's own work.

They answer "is the operator keeping up, and is it quiet when nothing changes?": events seen,
status patches written (which should stay near zero in a steady state) and patches that failed;
and "what did it do for users?": builds and commits by result and duration, the build queue,
cascades and how long a fix takes to reach every Automatic descendant
(:mod:`lamina.domain.remediation` defines it), reconcile errors by handler and reason.

Every label takes values from a closed set (results, kinds, catalogued reasons, API reasons),
never object names, so the series count stays bounded however many objects there are.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("lamina_events_total", "Watch events handled, by resource kind.", ["kind"])
STATUS_PATCHES = Counter(
    "lamina_status_patches_total", "Status patches written, by resource kind.", ["kind"]
)
STATUS_PATCH_FAILURES = Counter(
    "lamina_status_patch_failures_total", "Status patches the API refused, by kind.", ["kind"]
)

# Seconds: a rebase takes well under one, a commit a few, a build minutes.
_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)

BUILDS = Counter(
    "lamina_builds_total",
    "Finished builds, by result (succeeded, rebased, failed).",
    ["result"],
)
BUILD_FAILURES = Counter(
    "lamina_build_failures_total", "Failed builds, by the catalogued reason.", ["reason"]
)
BUILD_DURATION = Histogram(
    "lamina_build_duration_seconds",
    "From a build's start to its result (status.build startedAt -> completedAt).",
    ["result"],
    buckets=_DURATION_BUCKETS,
)
BUILD_QUEUE = Gauge(
    "lamina_build_queue_length", "Images waiting for a build slot (Ready reason BuildQueued)."
)
BUILDS_RUNNING = Gauge("lamina_builds_running", "Images whose build is running.")
COMMITS = Counter(
    "lamina_commits_total", "Finished ContainerCommits, by result (succeeded, failed).", ["result"]
)
COMMIT_FAILURES = Counter(
    "lamina_commit_failures_total", "Failed ContainerCommits, by the catalogued reason.", ["reason"]
)
COMMIT_DURATION = Histogram(
    "lamina_commit_duration_seconds",
    "From the commit Job's start to the verified result.",
    ["result"],
    buckets=_DURATION_BUCKETS,
)
COMMIT_FROZEN = Histogram(
    "lamina_commit_frozen_seconds",
    "How long committed containers stayed frozen.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CASCADE_SIZE = Histogram(
    "lamina_cascade_size",
    "Automatic descendants a new root digest is to reach.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
CASCADE_DEPTH = Histogram(
    "lamina_cascade_depth",
    "Levels below a new root digest that a cascade rebuilds.",
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20),
)
TIME_TO_REMEDIATE = Histogram(
    "lamina_time_to_remediate_seconds",
    "From a root's new digest until every Automatic descendant is on it.",
    buckets=_DURATION_BUCKETS,
)
CASCADES_SUPERSEDED = Counter(
    "lamina_cascades_superseded_total",
    "Cascades whose root moved to another digest before they completed.",
)
CASCADES_OPEN = Gauge("lamina_cascades_in_progress", "Cascades not yet remediated.")
RECONCILE_ERRORS = Counter(
    "lamina_reconcile_errors_total",
    "Reconcile passes that failed, by handler and reason (the API's reason, or the error class).",
    ["handler", "reason"],
)
EVENTS_WRITTEN = Counter(
    "lamina_kube_events_written_total",
    "Kubernetes Events written (created or updated), by type and involved kind.",
    ["type", "kind"],
)
EVENTS_DROPPED = Counter(
    "lamina_kube_events_dropped_total",
    "Kubernetes Events not written because of a rate limit (object-rate, global-rate).",
    ["limit"],
)
