"""Records of Images, Layers and build Jobs as the operator keeps them in memory.

They are the operator's one source of truth: the reconcile pass decides from them (with the
operator's own writes the watches have not echoed yet, see :mod:`lamina.handlers.state`), so
no pass lists anything from the API; the periodic resync is the only relist.  The operator's
own watches keep them current (:mod:`lamina.handlers.image_watch`,
:mod:`lamina.handlers.layer_watch`, :class:`OwnBuildJobs`), and the loop starts only once every
scope has been listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lamina.api.layer import LayerStatus
from lamina.domain.build_job import (
    ANNOTATION_IMAGE_NAME,
    LABEL_IMAGE_NAME,
    LABEL_IMAGE_NAMESPACE,
    LABEL_IMAGE_UID,
    LABEL_INPUTS,
    MANAGED_BY,
)
from lamina.domain.layers import Advisory
from lamina.domain.snapshot import BuildJobRecord, ImageRecord, LayerRecord, parse_status
from lamina.handlers.jobs import finished

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
BUILD_JOBS = "build"  # the key all build Jobs are indexed under


def image_record(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Any
) -> ImageRecord:
    return ImageRecord.parse(namespace, name, spec or {}, status or {}, meta)


def _timestamp(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def layer_record(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Any
) -> LayerRecord:
    """What usage, advisories and collection need of one Layer object."""
    advisory = (spec or {}).get("advisory")
    return LayerRecord(
        namespace=namespace,
        name=name,
        generation=meta.get("generation"),
        resource_version=str(meta.get("resourceVersion", "")),
        created=_timestamp(meta.get("creationTimestamp")),
        managed=(meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY,
        advisory=Advisory(str(advisory.get("id", "")), str(advisory.get("severity", "Unknown")))
        if isinstance(advisory, Mapping)
        else None,
        status=parse_status(LayerStatus, status or {}),
    )


def job_record(name: str, labels: Mapping[str, str], body: Mapping[str, Any]) -> BuildJobRecord:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return BuildJobRecord(
        name=name,
        image_namespace=labels.get(LABEL_IMAGE_NAMESPACE),
        # The whole name: the label holds a hashed stand-in for names over 63 characters.
        image_name=annotations.get(ANNOTATION_IMAGE_NAME) or labels.get(LABEL_IMAGE_NAME),
        image_uid=labels.get(LABEL_IMAGE_UID),
        inputs=labels.get(LABEL_INPUTS),
        finished=finished(body),
    )


class OwnBuildJobs:
    """The build Jobs in the operator's own namespace, as the index the loop reads.

    Fed by the operator's watch of its own namespace (``handlers.jobs.watch_own_jobs``), not
    by kopf: kopf watches a resource in every namespace it serves, which would need the right
    to list Jobs cluster-wide, and would let a tenant's Job with Lamina's labels be taken for
    a build.  The operator may only list Jobs in its namespace (the chart's Role).
    """

    def __init__(self) -> None:
        self._jobs: dict[str, BuildJobRecord] = {}

    def get(self, key: str, default: Any = ()) -> Any:
        return list(self._jobs.values()) if key == BUILD_JOBS else default

    def replace(self, jobs: list[Mapping[str, Any]]) -> None:
        """A fresh listing: every Job not in it is gone."""
        self._jobs = {}
        for job in jobs:
            self.update("ADDED", job)

    def update(self, event: str, job: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """One watch event; returns the namespace and name of the Image the Job builds."""
        metadata = job["metadata"]
        labels = metadata.get("labels") or {}
        record = job_record(metadata["name"], labels, job)
        if event == "DELETED":
            self._jobs.pop(metadata["name"], None)
        else:
            self._jobs[metadata["name"]] = record
        return record.image_namespace or None, record.image_name or None
