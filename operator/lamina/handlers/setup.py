"""Operator start-up and shutdown: kopf settings and the shared API client.

Progress and diff-base are kept in annotations under lamina.dev (never in ``spec``), and
Lamina's handlers are level-triggered event handlers that need neither, so GitOps tools see no
drift in what they own.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from lamina.kube import Kube


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.finalizer = "lamina.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="lamina.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="lamina.dev", key="last-handled-configuration"
    )
    # Kubernetes Events are for what users need to see, not for every handler run.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    memo.kube = await Kube.connect()


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    kube: Kube | None = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()
