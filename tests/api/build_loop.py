"""An operator with a working build loop for API-tier tests: its own namespace, a registry it
may reach over plain HTTP, a one-second poll, and /metrics on a free port.

The API tier has no node, so the build Jobs it creates never run; what a test sees is the
loop's decisions (Jobs, statuses, events, metrics).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.api.test_failures_visible import Operator, _up, free_port
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for
from tests.integration.conftest import Registry


@contextmanager
def build_loop_operator(
    kube: KubeCluster, registry: Registry, work: Path, home: str, **env: str
) -> Iterator[Operator]:
    """``lamina operator`` with ``home`` as its namespace (which must exist at start);
    ``env`` adds or overrides settings (``LAMINA_MAX_CONCURRENT_BUILDS="3"``)."""
    settings = work / "registries.yaml"
    settings.write_text(f'registries:\n  "{registry.address}":\n    insecure: true\n')
    port = free_port()
    log = work / "operator.log"
    process = start_operator(
        kube.kubeconfig,
        log,
        f"--metrics-port={port}",
        "--health-port=0",
        env={
            "LAMINA_NAMESPACE": home,
            "LAMINA_REGISTRY_CONFIG": str(settings),
            "LAMINA_BUILD_POLL_SECONDS": "1",
            "LAMINA_BUILDER_IMAGE": "builder:test",
            **env,
        },
    )
    operator = Operator(kube, log, port, home)
    try:
        wait_for(lambda: _up(operator), timeout=30, what="operator /metrics")
        yield operator
    finally:
        stop_operator(process, log)


def as_built(kube: KubeCluster, name: str, namespace: str, status: dict[str, Any]) -> None:
    """Write the Image's status as a finished build would have left it (``digest``,
    ``builtFrom``, ...), before an operator starts, so it plans no first build."""
    kube.kubectl(
        "patch",
        "image",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        check=True,
    )
