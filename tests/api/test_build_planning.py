"""The build loop on a real API server and a real registry, up to the build Jobs.

External parents are resolved against a real registry (a moved tag is noticed), and the loop
creates build Jobs in the operator's namespace under the global limit.  The API tier has no
node, so the Jobs never run: building for real is the node tier's e2e test.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for
from tests.integration.conftest import Registry, push_parent

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def setup(
    crds_installed: KubeCluster, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KubeCluster, str, Registry]]:
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", operator_ns, check=True)
    work = tmp_path_factory.mktemp("builds")
    settings = work / "registries.yaml"
    settings.write_text(f'registries:\n  "{registry.address}":\n    insecure: true\n')
    env = {
        "LAMINA_NAMESPACE": operator_ns,
        "LAMINA_REGISTRY_CONFIG": str(settings),
        "LAMINA_MAX_CONCURRENT_BUILDS": "2",
        "LAMINA_BUILD_POLL_SECONDS": "1",
        "LAMINA_BUILDER_IMAGE": "builder:test",
    }
    log = work / "operator.log"
    process = start_operator(
        crds_installed.kubeconfig, log, "--metrics-port=0", "--health-port=0", env=env
    )
    try:
        yield crds_installed, operator_ns, registry
    finally:
        stop_operator(process, log)
        crds_installed.kubectl("delete", "namespace", operator_ns, "--wait=false")


def push(registry: Registry, repository: str, tag: str, content: str, work: Path) -> str:
    rootfs = work / f"rootfs-{uuid.uuid4().hex[:6]}"
    rootfs.mkdir()
    (rootfs / "marker").write_text(content)
    ref = registry.ref(repository, tag)
    push_parent(rootfs, ref, work / uuid.uuid4().hex[:6])
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(inspected.stdout)["Digest"])


def image(name: str, parent: dict[str, str], registry: Registry) -> str:
    return json.dumps(
        {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "Image",
            "metadata": {"name": name},
            "spec": {
                "parent": parent,
                "build": {"steps": ["RUN echo built > /built"]},
                "output": {"repository": f"{registry.address}/out/{name}", "insecure": True},
            },
        }
    )


def status_of(kube: KubeCluster, name: str, namespace: str) -> dict[str, Any]:
    return (kube.get("image", name, namespace) or {}).get("status") or {}


def build_jobs(kube: KubeCluster, operator_ns: str, namespace: str) -> list[dict[str, Any]]:
    listed = kube.kubectl(
        "get",
        "jobs",
        "-n",
        operator_ns,
        "-l",
        f"lamina.dev/image-namespace={namespace}",
        "-o",
        "json",
        check=True,
    )
    return json.loads(listed.stdout)["items"]  # type: ignore[no-any-return]


def test_external_parent_resolves_and_a_moved_tag_is_noticed(
    setup: tuple[KubeCluster, str, Registry], namespace: str, tmp_path: Path
) -> None:
    kube, operator_ns, registry = setup
    repository = f"parents/{uuid.uuid4().hex[:8]}"
    first = push(registry, repository, "1", "one", tmp_path)
    ref = registry.ref(repository, "1")
    kube.apply(image("base", {"ref": ref, "pollInterval": "1s"}, registry), namespace)

    wait_for(
        lambda: status_of(kube, "base", namespace).get("resolved", {}).get("digest") == first,
        what="ref resolved",
    )
    # A first build is started for it, on the parent pinned by digest.
    # The Job is created first, then status says so: wait for both.
    wait_for(
        lambda: status_of(kube, "base", namespace).get("build", {}).get("phase") == "Running",
        timeout=60,
        what="build recorded as running",
    )
    (job,) = wait_for(lambda: build_jobs(kube, operator_ns, namespace), what="build Job")
    status = status_of(kube, "base", namespace)
    assert status["build"]["phase"] == "Running"
    assert status["build"]["reasons"] == [f"FirstBuild - -> {first}"]
    assert status["build"]["wanted"]["parentDigest"] == first
    # Conditions follow the build fields one event later.
    wait_for(
        lambda: (
            (condition(kube.get("image", "base", namespace), "Reconciling") or {}).get("reason")
            == "Building"
        ),
        what="Reconciling=Building",
    )
    context = kube.kubectl(
        "get", "configmap", job["metadata"]["name"], "-n", operator_ns, "-o", "json", check=True
    )
    dockerfile = json.loads(context.stdout)["data"]["Dockerfile"]
    assert dockerfile == f"FROM {registry.address}/{repository}@{first}\nRUN echo built > /built\n"
    wait_for(
        lambda: (
            status_of(kube, "base", namespace).get("lineage") == [{"ref": ref, "digest": first}]
        ),
        what="lineage with the resolved digest",
    )

    moved = push(registry, repository, "1", "two", tmp_path)
    assert moved != first
    wait_for(
        lambda: status_of(kube, "base", namespace).get("resolved", {}).get("digest") == moved,
        what="moved tag noticed",
    )
    wait_for(
        lambda: (
            status_of(kube, "base", namespace).get("lineage") == [{"ref": ref, "digest": moved}]
        ),
        what="lineage follows the moved tag",
    )


def test_unresolvable_parent_says_why(
    setup: tuple[KubeCluster, str, Registry], namespace: str
) -> None:
    kube, _, registry = setup
    kube.apply(image("lost", {"ref": registry.ref("nothing/here", "1")}, registry), namespace)

    def why() -> str | None:
        reconciling = condition(kube.get("image", "lost", namespace), "Reconciling") or {}
        message = str(reconciling.get("message", ""))
        return message if "cannot resolve" in message else None

    message = wait_for(why, what="WaitingForParent with a reason")
    assert message.startswith(f"cannot resolve {registry.ref('nothing/here', '1')}:")


def test_global_build_limit_and_children_wait(
    setup: tuple[KubeCluster, str, Registry], namespace: str, tmp_path: Path
) -> None:
    kube, operator_ns, registry = setup
    repository = f"parents/{uuid.uuid4().hex[:8]}"
    push(registry, repository, "1", "one", tmp_path)
    ref = registry.ref(repository, "1")
    for name in ("r1", "r2", "r3"):
        kube.apply(image(name, {"ref": ref}, registry), namespace)
    kube.apply(image("child", {"image": "r1"}, registry), namespace)

    def reasons() -> dict[str, str]:
        found = {}
        for name in ("r1", "r2", "r3", "child"):
            reconciling = condition(kube.get("image", name, namespace), "Reconciling") or {}
            found[name] = reconciling.get("reason", "")
        return found

    def settled() -> dict[str, str] | None:
        found = reasons()
        roots = [found[name] for name in ("r1", "r2", "r3")]
        if "Building" in roots and "BuildQueued" in roots:
            return found
        return None

    found = wait_for(settled, what="some roots building, the rest queued")
    assert found["child"] == "WaitingForParent"
    # No Job ever finishes here, so the limit must hold at every look: never more than 2.
    for _ in range(10):
        jobs = kube.kubectl("get", "jobs", "-n", operator_ns, "-o", "json", check=True)
        assert len(json.loads(jobs.stdout)["items"]) <= 2
        time.sleep(0.3)
    queued = [name for name in ("r1", "r2", "r3") if reasons()[name] == "BuildQueued"]
    message = condition(kube.get("image", queued[0], namespace), "Reconciling")["message"]  # type: ignore[index]
    assert message.startswith("FirstBuild")


def test_the_build_context_copy_keeps_the_tenants_binary_files(
    setup: tuple[KubeCluster, str, Registry], namespace: str, tmp_path: Path
) -> None:
    kube, operator_ns, registry = setup
    repository = f"parents/{uuid.uuid4().hex[:8]}"
    push(registry, repository, "1", "one", tmp_path)
    logo = base64.b64encode(bytes(range(256))).decode()
    kube.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "files"},
                "data": {"app.py": "print('hi')\n"},
                "binaryData": {"logo.bin": logo},
            }
        ),
        namespace,
    )
    body = json.loads(image("ctx", {"ref": registry.ref(repository, "1")}, registry))
    body["spec"]["build"]["context"] = {"configMap": {"name": "files"}}
    kube.apply(json.dumps(body), namespace)

    (job,) = wait_for(lambda: build_jobs(kube, operator_ns, namespace), timeout=60, what="Job")
    copy = wait_for(
        lambda: kube.get("configmap", job["metadata"]["name"], operator_ns),
        what="the context copy next to the Job",
    )
    assert copy["data"]["app.py"] == "print('hi')\n"
    assert copy["binaryData"] == {"logo.bin": logo}
