"""The periodic resync on a real API server: with no watch events at all (no operator
running), one resync pass lists the objects and writes every status that differs."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from lamina.handlers.resync import resync_once
from lamina.kube import Kube
from tests.api.test_tree_reconcile import condition, image
from tests.conftest import KubeCluster

pytestmark = pytest.mark.api


def test_one_pass_fixes_every_status(crds_installed: KubeCluster, namespace: str) -> None:
    crds_installed.apply(image("base", "docker.io/library/busybox:1.36"), namespace)
    crds_installed.apply(image("app", "base"), namespace)
    crds_installed.apply(image("lost", "nowhere"), namespace)
    assert "status" not in crds_installed.get("image", "app", namespace)  # type: ignore[operator]

    async def one_pass() -> None:
        os.environ["KUBECONFIG"] = crds_installed.kubeconfig
        kube = await Kube.connect()
        try:
            await resync_once(kube, [namespace], logging.getLogger("test"))
        finally:
            await kube.close()

    asyncio.run(one_pass())
    app = crds_installed.get("image", "app", namespace)
    assert condition(app, "Ready")["reason"] == "WaitingForParent"  # type: ignore[index]
    assert app["status"]["lineage"][0] == {"name": "base"}  # type: ignore[index]
    lost = crds_installed.get("image", "lost", namespace)
    assert condition(lost, "Stalled")["reason"] == "ParentNotFound"  # type: ignore[index]

    # A second pass finds nothing to change: the same resourceVersion afterwards.
    before = app["metadata"]["resourceVersion"]  # type: ignore[index]
    asyncio.run(one_pass())
    after = crds_installed.get("image", "app", namespace)
    assert after["metadata"]["resourceVersion"] == before  # type: ignore[index]
