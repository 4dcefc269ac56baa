"""Operator start-up and shutdown: kopf settings, the shared API client, the reconcile loop.

Lamina's handlers are level-triggered event handlers and indexes: they need no finalizer, no
progress annotations and no diff-base, so the operator writes nothing but ``status`` and
GitOps tools see no drift.  (Should a handler kind that needs them be added, kopf is told to
keep them under the lamina.dev prefix.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from lamina.config import OperatorConfig
from lamina.domain.build_job import BuildSettings
from lamina.handlers import kopf_readiness, resync
from lamina.handlers.builds import BuildExecutor, buildkitd_settings
from lamina.handlers.loop import Reconciler
from lamina.handlers.state import ClusterView, install
from lamina.handlers.tree import StatusWriter
from lamina.kube import Kube
from lamina.oci.hosts import RegistryHosts

# Before kopf starts: its start-up readiness wait is otherwise quadratic in the objects.
kopf_readiness.install()


def reconciler_for(memo: Any) -> Reconciler:
    config = memo.config
    hosts = (
        RegistryHosts.parse(config.registry_config) if config.registry_config else RegistryHosts()
    )
    view = ClusterView()
    install(view)
    return Reconciler(
        view=view,
        writer=StatusWriter(memo.kube, view),
        executor=BuildExecutor(
            kube=memo.kube,
            settings=BuildSettings(
                namespace=config.namespace,
                builder_image=config.builder_image,
                deadline_seconds=config.build_deadline_seconds,
                buildkitd_toml=buildkitd_settings(hosts),
            ),
            hosts=hosts,
        ),
        limit=config.max_concurrent_builds,
        poll_seconds=config.build_poll_seconds,
    )


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
    memo.reconciler = reconciler_for(memo)
    memo.reconciler_task = asyncio.create_task(memo.reconciler.run_forever(logger))
    resync.start(memo, logger)


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await resync.stop(memo)
    task: asyncio.Task[None] | None = getattr(memo, "reconciler_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    kube: Kube | None = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()
