"""Operator start-up and shutdown: kopf settings and the shared API client.

Lamina's handlers are level-triggered event handlers and indexes: they need no finalizer, no
progress annotations and no diff-base, so the operator writes nothing but ``status`` and
GitOps tools see no drift.  (Should a handler kind that needs them be added, kopf is told to
keep them under the lamina.dev prefix.)
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from lamina.config import OperatorConfig
from lamina.handlers import builds, resync
from lamina.kube import Kube


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    settings.persistence.finalizer = "lamina.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="lamina.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="lamina.dev", key="last-handled-configuration"
    )
    # Kubernetes Events are for what users need to see, not for every handler run.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    memo.kube = await Kube.connect()
    if not hasattr(memo, "config"):
        memo.config = OperatorConfig.from_env()
    resync.start(memo, logger)
    builds.start(memo, logger)


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await resync.stop(memo)
    await builds.stop(memo)
    kube: Kube | None = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()
