"""Operator start-up and shutdown: the pre-flight check, kopf settings, the shared API
client, the reconcile loop and the watch on the operator's own Jobs.

Lamina's handlers are level-triggered event handlers and indexes: they need no finalizer, no
progress annotations and no diff-base, so the operator writes nothing but ``status`` and
GitOps tools see no drift, and kopf builds no diff base at all (see ``no_diffbase``).  (Should
a handler kind that needs them be added, kopf is told to keep them under the lamina.dev
prefix.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import kopf

from lamina.config import OperatorConfig
from lamina.domain.build_cache import BuildCache
from lamina.domain.build_job import LABEL_PURPOSE, BuildSettings
from lamina.domain.buildah_job import BuildahSettings
from lamina.domain.changes import Changes
from lamina.domain.sbom_scan import ScanSettings
from lamina.handlers import commits, kopf_readiness, no_diffbase, resync, transitions
from lamina.handlers.builds import BuildExecutor, buildkitd_settings
from lamina.handlers.image_watch import ImageStore, watch_images
from lamina.handlers.indexes import OwnBuildJobs
from lamina.handlers.jobs import watch_own_jobs
from lamina.handlers.layer_watch import LayerStore, watch_layers
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
    view.job_index = memo.own_build_jobs
    view.layer_index = memo.layer_store
    view.image_index = memo.image_store
    install(view)
    view.scanning = bool(config.sbom_scanner_image)
    reconciler = Reconciler(
        view=view,
        writer=StatusWriter(memo.kube, view),
        executor=BuildExecutor(
            kube=memo.kube,
            settings=BuildSettings(
                namespace=config.namespace,
                builder_image=config.builder_image,
                sbom_generator_image=config.sbom_generator_image,
                deadline_seconds=config.build_deadline_seconds,
                buildkitd_toml=buildkitd_settings(hosts),
                resources=config.build_resources,
                state_size_limit=config.build_state_size_limit,
                default_engine=config.default_build_engine,
                buildah=BuildahSettings(
                    image=config.buildah_image,
                    storage_driver=config.buildah_storage_driver,
                    enabled=config.buildah_enabled,
                    mirrors=dict(hosts.mirrors),
                    insecure=hosts.insecure,
                ),
                cache=(
                    BuildCache(config.build_cache_tag, config.build_cache_repository)
                    if config.build_cache_tag
                    else None
                ),
            ),
            hosts=hosts,
            signing_secret=config.signing_secret,
            action_seconds=config.registry_action_seconds,
            scan_settings=ScanSettings(
                namespace=config.namespace,
                image=config.sbom_scanner_image,
                deadline_seconds=config.scan_deadline_seconds,
                limit=config.max_concurrent_scans,
                insecure=hosts.insecure,
                resources=config.build_resources,
                scratch_size_limit=config.build_state_size_limit,
            ),
        ),
        limit=config.max_concurrent_builds,
        namespace_limit=config.max_builds_per_namespace,
        poll_seconds=config.build_poll_seconds,
    )
    assert reconciler.executor is not None
    # A registry action that outlived its pass wakes a pass for its Image's namespace.
    reconciler.executor.on_finished = reconciler.touch
    return reconciler


# What the operator does in its own namespace (build and commit Jobs, the copies of contexts
# and push credentials they mount): each must be allowed there, or nothing can be built.
OWN_NAMESPACE_ACCESS = (
    ("create", "batch", "jobs"),
    ("list", "batch", "jobs"),
    ("watch", "batch", "jobs"),
    ("delete", "batch", "jobs"),
    ("create", "", "secrets"),
    ("create", "", "configmaps"),
)


async def preflight(kube: Kube, namespace: str) -> list[str]:
    """What is missing for the operator to work in its namespace, one sentence each with the
    fix; empty when nothing is."""
    if not await kube.namespace_exists(namespace):
        return [
            f'the operator\'s namespace "{namespace}" (LAMINA_NAMESPACE) does not exist: build '
            f"and commit Jobs run there. Create it (kubectl create namespace {namespace}), or "
            "set LAMINA_NAMESPACE to the namespace the Helm chart was installed in."
        ]
    denied = [
        f"{verb} {resource}"
        for verb, group, resource in OWN_NAMESPACE_ACCESS
        if not await kube.can_i(verb, group, resource, namespace)
    ]
    if not denied:
        return []
    return [
        f"these credentials may not {', '.join(denied)} in the operator's namespace "
        f'"{namespace}" (LAMINA_NAMESPACE). Grant them (the Helm chart\'s Role '
        '"<release>-jobs" does), or run the operator with credentials that have them.'
    ]


async def check_before_start(namespace: str) -> list[str]:
    """The pre-flight check on a connection of its own (before kopf starts)."""
    kube = await Kube.connect()
    try:
        return await preflight(kube, namespace)
    finally:
        await kube.close()


JOBS_LOG = logging.getLogger("lamina.jobs")


async def _on_own_jobs(memo: Any, event: str, jobs: list[Mapping[str, Any]]) -> None:
    """The operator's own Jobs changed: build Jobs feed the loop's index, commit Jobs wake
    their ContainerCommit."""
    builds = [j for j in jobs if (j["metadata"].get("labels") or {}).get(LABEL_PURPOSE) == "build"]
    index: OwnBuildJobs = memo.own_build_jobs
    reconciler = getattr(memo, "reconciler", None)
    if event == "LISTED":
        index.replace(builds)
        if reconciler is not None:
            reconciler.touch(None)
    else:
        for job in builds:
            namespace, name = index.update(event, job)
            if reconciler is not None and namespace:
                # A build Job's phase is its Image's (and so its descendants' plans).
                one = frozenset({name}) if name else None
                reconciler.touch(namespace, Changes(one, one) if one else None)
    executor = reconciler.executor if reconciler is not None else None
    if reconciler is not None and executor is not None:
        # A scan Job changed: its Image's next ScanImage collects it, or takes its slot.
        for namespace, name in executor.scans.saw_jobs(event, jobs):
            one = frozenset({name})
            reconciler.touch(namespace, Changes(one, one))
    for job in jobs:
        metadata = job["metadata"]
        labels = metadata.get("labels") or {}
        JOBS_LOG.debug(
            "own Job %s/%s (%s) changed: %s",
            metadata.get("namespace"),
            metadata["name"],
            labels.get(LABEL_PURPOSE),
            event,
        )
        if labels.get(LABEL_PURPOSE) == "commit":
            await commits.commit_job_event(
                labels=labels, annotations=metadata.get("annotations") or {}, memo=memo
            )


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    settings.persistence.finalizer = "lamina.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="lamina.dev")
    settings.persistence.diffbase_storage = (
        kopf.AnnotationsDiffBaseStorage(prefix="lamina.dev", key="last-handled-configuration")
        if no_diffbase.needed()
        else no_diffbase.NoDiffBase()
    )
    # Kubernetes Events are for what users need to see, not for every handler run.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # The initial listing in pages: 20,000 Layers in one response is tens of MB of JSON and
    # its parsed objects at once, the operator's peak memory.
    settings.watching.chunk_size = 500
    memo.kube = await Kube.connect()
    if not hasattr(memo, "config"):
        memo.config = OperatorConfig.from_env()
    memo.own_build_jobs = OwnBuildJobs()
    memo.layer_store = LayerStore(memo.config.namespaces or [None])
    memo.image_store = ImageStore(memo.config.namespaces or [None])
    memo.reconciler = reconciler_for(memo)
    reconciler = memo.reconciler

    def touch_loop(namespace: str, changes: Changes) -> None:
        reconciler.touch(namespace or None, changes)

    async def image_event(event: str, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        await transitions.image_transition(
            type=event,
            namespace=meta.get("namespace"),
            name=str(meta.get("name", "")),
            body=body,
            memo=memo,
        )

    # Layers and Images are kept by the operator's own watches, not kopf's (see layer_watch
    # and image_watch: kopf's per-object machinery was most of a start's time and memory).
    memo.layer_tasks = [
        asyncio.create_task(
            watch(
                memo.kube,
                scope,
                store=store,
                saw=reconciler.view,
                touch=touch_loop,
                logger=logger,
            )
        )
        for watch, store in (
            (watch_layers, memo.layer_store),
            (partial(watch_images, on_event=image_event), memo.image_store),
        )
        for scope in store.scopes
    ]
    memo.reconciler_task = asyncio.create_task(memo.reconciler.run_forever(logger))
    memo.jobs_task = asyncio.create_task(
        watch_own_jobs(
            memo.kube,
            memo.config.namespace,
            lambda event, jobs: _on_own_jobs(memo, event, jobs),
            logger,
        )
    )
    resync.start(memo, logger)


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await resync.stop(memo)
    for layer_task in getattr(memo, "layer_tasks", []):
        layer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await layer_task
    for name in ("jobs_task", "reconciler_task"):
        task: asyncio.Task[None] | None = getattr(memo, name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    kube: Kube | None = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()
