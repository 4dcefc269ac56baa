"""The reconcile loop on a real API server: writes converge at once, Layers are collected,
and one broken Image or namespace never blocks the others.

Writes are counted by the API server itself (``apiserver_request_total`` for PATCH of the
``status`` subresource), so every writer in the operator is counted, whatever code path it
takes.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_build_planning import build_jobs, push
from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api

ROOT_REF = "registry.invalid/library/base:1"
ROOT_DIGEST = "sha256:" + "0" * 64


def digest_of(name: str) -> str:
    return "sha256:" + uuid.uuid5(uuid.NAMESPACE_DNS, name).hex * 2


def layer_digest(n: int) -> str:
    return f"sha256:{n:064x}"


def status_patches(kube: KubeCluster) -> int:
    """PATCHes of Image and Layer status the API server has answered, all clients."""
    metrics = kube.kubectl("get", "--raw", "/metrics", check=True).stdout
    total = 0
    for line in metrics.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'verb="PATCH"' in line
            and 'subresource="status"' in line
            and re.search(r'resource="(images|layers)"', line)
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def quiet(kube: KubeCluster, seconds: float = 4.0, timeout: float = 90.0) -> int:
    """Wait until no status PATCH was answered for ``seconds``; the count then."""
    deadline = time.monotonic() + timeout
    last, since = status_patches(kube), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = status_patches(kube)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return now
    raise AssertionError("status writes never stopped")


def synced_tree(kube: KubeCluster, namespace: str, count: int) -> list[str]:
    """``count`` Images in a tree (binary fan-out), each as built and up to date, with its
    Layers: the state a restarted operator finds in a settled cluster."""
    names = [f"img-{n:03}" for n in range(count)]
    objects = []
    for n, name in enumerate(names):
        parent = (
            {"ref": ROOT_REF, "pollInterval": "1h"} if n == 0 else {"image": names[(n - 1) // 2]}
        )
        objects.append(
            {
                "apiVersion": "lamina.dev/v1alpha1",
                "kind": "Image",
                "metadata": {"name": name},
                "spec": {
                    "parent": parent,
                    "build": {"steps": ["RUN true"]},
                    "output": {"repository": f"registry.invalid/team/{name}"},
                },
            }
        )
    for n in range(count + 1):
        objects.append(
            {
                "apiVersion": "lamina.dev/v1alpha1",
                "kind": "Layer",
                "metadata": {
                    "name": layer_digest(n).replace(":", "-"),
                    "labels": {"app.kubernetes.io/managed-by": "lamina"},
                },
            }
        )
    kube.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        check=True,
    )
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    chains: dict[str, list[int]] = {}
    for n, name in enumerate(names):
        parent_layers = [0] if n == 0 else chains[names[(n - 1) // 2]]
        chains[name] = [*parent_layers, n + 1]
        parent_digest = ROOT_DIGEST if n == 0 else digest_of(names[(n - 1) // 2])
        status: dict[str, Any] = {
            "digest": digest_of(name),
            "builtFrom": {"generation": 1, "parentDigest": parent_digest},
            "layers": [
                {"digest": layer_digest(i), "size": 100, "own": i == n + 1} for i in chains[name]
            ],
        }
        if n == 0:
            status["resolved"] = {"ref": ROOT_REF, "digest": ROOT_DIGEST, "resolvedAt": now}
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
    return names


@pytest.fixture
def operator_env(crds_installed: KubeCluster) -> Iterator[dict[str, str]]:
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", operator_ns, check=True)
    yield {
        "LAMINA_NAMESPACE": operator_ns,
        "LAMINA_BUILD_POLL_SECONDS": "1",
        "LAMINA_BUILDER_IMAGE": "builder:test",
    }
    crds_installed.kubectl("delete", "namespace", operator_ns, "--wait=false")


def test_a_settled_cluster_costs_no_writes_and_a_change_costs_one_round(
    crds_installed: KubeCluster, namespace: str, operator_env: dict[str, str], tmp_path: Path
) -> None:
    kube = crds_installed
    names = synced_tree(kube, namespace, 15)
    log = tmp_path / "operator.log"
    process = start_operator(
        kube.kubeconfig,
        log,
        "--metrics-port=0",
        "--health-port=0",
        "-n",
        namespace,
        env=operator_env,
    )
    try:
        for name in names:
            wait_for(
                lambda name=name: (
                    (condition(kube.get("image", name, namespace), "Ready") or {}).get("reason")
                    == "UpToDate"
                ),
                what=f"{name} UpToDate",
            )
        settled = quiet(kube)
        # The first passes wrote conditions and lineage once per Image and usage once per Layer.
        # Now make passes happen over an unchanged cluster: metadata-only changes wake the
        # loop (an event per object) but change nothing any status depends on.
        for name in names[:5]:
            kube.kubectl(
                "label",
                "image",
                name,
                "-n",
                namespace,
                f"touched={uuid.uuid4().hex[:6]}",
                "--overwrite",
                check=True,
            )
        kube.kubectl(
            "label",
            "layer",
            layer_digest(1).replace(":", "-"),
            "-n",
            namespace,
            "touched=yes",
            check=True,
        )
        time.sleep(4)
        assert status_patches(kube) == settled, "passes over an unchanged cluster wrote statuses"

        # A new Image that shares every Layer of its parent: its own status, and the usage of
        # the Layers it shares (one write each), then quiet again.  It records a commit (as a
        # ContainerCommit's Image does), so it never builds and its status is what we set.
        parent = names[-1]
        parent_obj = kube.get("image", parent, namespace)
        kube.apply(
            "apiVersion: lamina.dev/v1alpha1\nkind: Image\nmetadata: {name: newcomer}\n"
            f"spec: {{parent: {{image: {parent}}}, commit: {{name: snap}}, "
            "output: {repository: registry.invalid/team/newcomer}}\n",
            namespace,
        )
        new_status = {
            "digest": digest_of("newcomer"),
            "builtFrom": {"generation": 1, "parentDigest": digest_of(parent)},
            "layers": [{**layer, "own": False} for layer in parent_obj["status"]["layers"]],  # type: ignore[index]
        }
        before = status_patches(kube)
        kube.kubectl(
            "patch",
            "image",
            "newcomer",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": new_status}),
            check=True,
        )
        wait_for(
            lambda: (
                (condition(kube.get("image", "newcomer", namespace), "Ready") or {}).get("reason")
                == "Committed"
            ),
            what="newcomer Committed",
        )
        after = quiet(kube)
        shared = len(new_status["layers"])
        # Our own patch, the newcomer's status written once or twice (the first pass may see it
        # before our status patch), and one usage write per shared Layer.
        assert after - before <= 1 + 2 + shared, (after - before, shared)
        root_layer = kube.get("layer", layer_digest(0).replace(":", "-"), namespace)
        assert root_layer["status"]["usedByCount"] == len(names) + 1  # type: ignore[index]
        assert len(root_layer["status"]["usedBy"]) == 10  # type: ignore[index]
    finally:
        stop_operator(process, log)
    assert "Traceback" not in log.read_text()


def test_an_unused_layer_the_operator_made_is_collected(
    crds_installed: KubeCluster, namespace: str, operator_env: dict[str, str], tmp_path: Path
) -> None:
    kube = crds_installed
    names = synced_tree(kube, namespace, 3)
    # img-002's own Layer is layer 3; a Layer nobody made (no label) is left alone.
    kube.apply(
        "apiVersion: lamina.dev/v1alpha1\nkind: Layer\n"
        f"metadata: {{name: {layer_digest(99).replace(':', '-')}}}\n",
        namespace,
    )
    log = tmp_path / "operator.log"
    process = start_operator(
        kube.kubeconfig,
        log,
        "--metrics-port=0",
        "--health-port=0",
        "-n",
        namespace,
        env=operator_env,
    )
    own = layer_digest(3).replace(":", "-")
    try:
        wait_for(
            lambda: (
                (kube.get("layer", own, namespace) or {}).get("status", {}).get("usedByCount") == 1
            ),
            what="layer used by img-002",
        )
        kube.kubectl("delete", "image", names[2], "-n", namespace, check=True)
        wait_for(
            lambda: kube.get("layer", own, namespace) is None, timeout=40, what="layer collected"
        )
        # Shared Layers stay while used; the unlabelled one is not the operator's to collect.
        assert kube.get("layer", layer_digest(0).replace(":", "-"), namespace) is not None
        assert kube.get("layer", layer_digest(99).replace(":", "-"), namespace) is not None
    finally:
        stop_operator(process, log)


def _chain(count: int) -> str:
    items = []
    for n in range(count):
        parent = {"ref": ROOT_REF} if n == 0 else {"image": f"c{n - 1:04}"}
        items.append(
            {
                "apiVersion": "lamina.dev/v1alpha1",
                "kind": "Image",
                "metadata": {"name": f"c{n:04}"},
                "spec": {
                    "parent": parent,
                    "build": {"steps": ["RUN true"]},
                    "output": {"repository": f"registry.invalid/c/c{n:04}"},
                },
            }
        )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def test_broken_images_never_block_a_normal_namespace(
    crds_installed: KubeCluster,
    registry: Registry,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    kube = crds_installed
    hostile, normal = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    for ns in (hostile, normal):
        kube.kubectl("create", "namespace", ns, check=True)
    settings = tmp_path / "registries.yaml"
    settings.write_text(f'registries:\n  "{registry.address}":\n    insecure: true\n')
    repository = f"parents/{uuid.uuid4().hex[:8]}"
    pushed = push(registry, repository, "1", "parent", tmp_path)
    ref = registry.ref(repository, "1")
    try:
        # A 1,000-Image chain, an Image whose poll interval would overflow a duration (the
        # schema refuses it now; the decision's own guard is unit-tested), and one whose 63+
        # character name needs a hashed Job label.
        kube.kubectl("apply", "-n", hostile, "-f", "-", input=_chain(1000), check=True)
        long_name = "x" * 70
        for name, poll in (("overflow", "99999999999999h"), (long_name, "10m")):
            applied = kube.apply(
                json.dumps(
                    {
                        "apiVersion": "lamina.dev/v1alpha1",
                        "kind": "Image",
                        "metadata": {"name": name},
                        "spec": {
                            "parent": {"ref": ref, "pollInterval": poll},
                            "build": {"steps": ["RUN true"]},
                            "output": {
                                "repository": f"{registry.address}/out/{name[:20]}",
                                "insecure": True,
                            },
                        },
                    }
                ),
                hostile,
            )
            if name == "overflow":
                assert applied.returncode != 0 and "pollInterval" in applied.stderr, applied
        kube.apply(
            json.dumps(
                {
                    "apiVersion": "lamina.dev/v1alpha1",
                    "kind": "Image",
                    "metadata": {"name": "app"},
                    "spec": {
                        "parent": {"ref": ref},
                        "build": {"steps": ["RUN true"]},
                        "output": {"repository": f"{registry.address}/out/app", "insecure": True},
                    },
                }
            ),
            normal,
        )
        log = tmp_path / "operator.log"
        env = {
            **operator_env,
            "LAMINA_REGISTRY_CONFIG": str(settings),
            "LAMINA_MAX_CONCURRENT_BUILDS": "5",
        }
        process = start_operator(
            kube.kubeconfig, log, "--metrics-port=0", "--health-port=0", env=env
        )
        try:
            operator_ns = env["LAMINA_NAMESPACE"]
            (job,) = wait_for(
                lambda: build_jobs(kube, operator_ns, normal), timeout=60, what="normal build Job"
            )
            assert job["metadata"]["labels"]["lamina.dev/image-name"] == "app"
            # The Job is created first, then the status says so.
            wanted = wait_for(
                lambda: (
                    ((kube.get("image", "app", normal) or {}).get("status") or {})
                    .get("build", {})
                    .get("wanted")
                ),
                what="app's build recorded",
            )
            assert wanted["parentDigest"] == pushed

            def stalled(name: str) -> dict[str, Any] | None:
                found = condition(kube.get("image", name, hostile), "Stalled")
                return found if found and found["status"] == "True" else None

            # The chain's last Image has its whole lineage (no recursion limit on the way).
            deepest = wait_for(
                lambda: (
                    len(
                        (kube.get("image", "c0999", hostile) or {}).get("status", {}).get("lineage")
                        or []
                    )
                    == 1000
                ),
                timeout=120,
                what="the chain's lineage",
            )
            assert deepest
            # The long name gets a valid (hashed) Job label: nothing refused it.
            assert stalled(long_name) is None
        finally:
            stop_operator(process, log)
    finally:
        for ns in (hostile, normal):
            kube.kubectl("delete", "namespace", ns, "--wait=false")
