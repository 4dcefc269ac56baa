"""The operator on a real API server: parents, cycles, lineage, layers, commit pre-checks.

Each test writes objects with kubectl, as a user or GitOps tool would, and asserts only what a
user can read back: conditions, reasons, messages and status fields.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import KubeCluster, wait_for

pytestmark = pytest.mark.api


def image(name: str, parent: str) -> str:
    key = "ref" if "/" in parent or ":" in parent else "image"
    return (
        "apiVersion: lamina.dev/v1alpha1\nkind: Image\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  parent: {{{key}: '{parent}'}}\n"
        "  build: {steps: ['RUN true']}\n"
        f"  output: {{repository: localhost:5000/demo/{name}}}\n"
    )


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for entry in ((obj or {}).get("status") or {}).get("conditions") or []:
        if entry["type"] == kind:
            return entry  # type: ignore[no-any-return]
    return None


def wait_reason(
    kube: KubeCluster,
    name: str,
    namespace: str,
    reason: str,
    kind: str = "image",
    *also: str,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = kube.get(kind, name, namespace)
        ready = condition(obj, "Ready")
        return obj if ready and ready["reason"] in (reason, *also) else None

    result: dict[str, Any] = wait_for(probe, what=f"{kind}/{name} reason {reason}")
    return result


def test_missing_parent_stalls_and_recovers_when_it_appears(
    operator: KubeCluster, namespace: str
) -> None:
    operator.apply(image("child", "base"), namespace)
    obj = wait_reason(operator, "child", namespace, "ParentNotFound")
    stalled = condition(obj, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert stalled["message"] == f'parent Image "base" does not exist in namespace "{namespace}"'
    assert condition(obj, "Reconciling")["status"] == "False"  # type: ignore[index]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

    operator.apply(image("base", "docker.io/library/busybox:1.36"), namespace)
    obj = wait_reason(operator, "child", namespace, "WaitingForParent")
    assert condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "Reconciling")["status"] == "True"  # type: ignore[index]
    assert obj["status"]["lineage"] == [
        {"name": "base"},
        {"ref": "docker.io/library/busybox:1.36"},
    ]
    # The operator writes only status: no finalizer (deletion never waits for it), no
    # annotations of its own (GitOps sees no drift).
    assert "finalizers" not in obj["metadata"]
    own = [a for a in obj["metadata"].get("annotations", {}) if "kubectl" not in a]
    assert own == []


def test_deleting_a_parent_stalls_its_children(operator: KubeCluster, namespace: str) -> None:
    operator.apply(image("base", "docker.io/library/busybox:1.36"), namespace)
    operator.apply(image("app", "base"), namespace)
    operator.apply(image("app-debug", "app"), namespace)
    wait_reason(operator, "app-debug", namespace, "WaitingForParent")
    operator.kubectl("delete", "image", "base", "-n", namespace, check=True)
    app = wait_reason(operator, "app", namespace, "ParentNotFound")
    assert "base" in condition(app, "Stalled")["message"]  # type: ignore[index]
    debug = wait_reason(operator, "app-debug", namespace, "AncestorStalled")
    assert condition(debug, "Stalled")["message"] == (  # type: ignore[index]
        "ancestor app is stalled: its parent Image "
        f'"base" does not exist in namespace "{namespace}"'
    )


def test_lineage_of_a_chain_names_every_ancestor_to_the_root(
    operator: KubeCluster, namespace: str
) -> None:
    for name, parent in [("d", "c"), ("c", "b"), ("b", "a"), ("a", "quay.io/org/base:1")]:
        operator.apply(image(name, parent), namespace)
    obj = wait_reason(operator, "d", namespace, "WaitingForParent")
    assert obj["status"]["lineage"] == [
        {"name": "c"},
        {"name": "b"},
        {"name": "a"},
        {"ref": "quay.io/org/base:1"},
    ]
    # A new generation of a middle Image re-parents everything below it.
    operator.apply(image("b", "quay.io/org/other:2"), namespace)
    wait_for(
        lambda: (
            (operator.get("image", "d", namespace) or {}).get("status", {}).get("lineage")
            == [{"name": "c"}, {"name": "b"}, {"ref": "quay.io/org/other:2"}]
        ),
        what="d's lineage to follow b's new parent",
    )
    b = operator.get("image", "b", namespace)
    assert b is not None
    assert b["metadata"]["generation"] == 2
    assert b["status"]["observedGeneration"] == 2


@pytest.mark.parametrize("members", [["a", "b"], ["a", "b", "c", "d"]], ids=["two", "four"])
def test_parent_cycle_stalls_every_member_without_hot_loops(
    operator: KubeCluster, namespace: str, members: list[str]
) -> None:
    for index, name in enumerate(members):
        operator.apply(image(name, members[(index + 1) % len(members)]), namespace)
    operator.apply(image("below", members[0]), namespace)
    for index, name in enumerate(members):
        obj = wait_reason(operator, name, namespace, "ParentCycle")
        loop = [*members[index:], *members[:index], name]
        assert condition(obj, "Stalled")["message"] == (  # type: ignore[index]
            "parent references form a cycle: " + " -> ".join(loop)
        )
    below = wait_reason(operator, "below", namespace, "AncestorStalled")
    assert "is in a parent cycle" in condition(below, "Stalled")["message"]  # type: ignore[index]

    # Stalled is a resting state: nothing keeps rewriting the objects.
    def versions() -> dict[str, str]:
        listed = operator.kubectl("get", "images", "-n", namespace, "-o", "json", check=True)
        return {
            item["metadata"]["name"]: item["metadata"]["resourceVersion"]
            for item in json.loads(listed.stdout)["items"]
        }

    before = versions()
    time.sleep(3)
    assert versions() == before

    # Breaking the cycle lets every member recover by itself.
    operator.apply(image(members[-1], "docker.io/library/busybox:1.36"), namespace)
    # The new root names docker.io, which no registry answers for here: it waits, then says
    # the registry's reason once it has asked; everything below it waits for it.
    wait_reason(
        operator, members[-1], namespace, "WaitingForParent", "image", "RegistryUnavailable"
    )
    for name in [*members[:-1], "below"]:
        wait_reason(operator, name, namespace, "WaitingForParent")


LAYER_A = "sha256:" + "a" * 64
LAYER_B = "sha256:" + "b" * 64


def set_layers(kube: KubeCluster, name: str, namespace: str, layers: list[dict[str, Any]]) -> None:
    """Stand in for a finished build: write status.layers the way the build handler does."""
    kube.kubectl(
        "patch",
        "image",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"layers": layers}}),
        check=True,
    )


def test_layer_usage_and_vulnerable_images(operator: KubeCluster, namespace: str) -> None:
    operator.apply(image("base", "docker.io/library/busybox:1.36"), namespace)
    operator.apply(image("app", "base"), namespace)
    set_layers(operator, "base", namespace, [{"digest": LAYER_A, "size": 10, "own": True}])
    set_layers(
        operator,
        "app",
        namespace,
        [
            {"digest": LAYER_A, "size": 10, "own": False},
            {"digest": LAYER_B, "size": 5, "own": True},
        ],
    )
    layer = (
        "apiVersion: lamina.dev/v1alpha1\nkind: Layer\n"
        f"metadata: {{name: sha256-{'a' * 64}}}\n"
        "spec: {advisory: {id: CVE-2024-3094, severity: Critical}}\n"
    )
    operator.apply(layer, namespace)

    def usage() -> dict[str, Any] | None:
        status = (operator.get("layer", f"sha256-{'a' * 64}", namespace) or {}).get("status", {})
        return status if status.get("usedByCount") == 2 else None

    status = wait_for(usage, what="layer usage")
    assert status["usedBy"] == ["app", "base"]
    assert status["introducedBy"] == "base"
    assert status["digest"] == LAYER_A

    def vulnerable(name: str) -> dict[str, Any] | None:
        found = condition(operator.get("image", name, namespace), "Vulnerable")
        return found if found and found["status"] == "True" else None

    assert (
        "CVE-2024-3094 (Critical), introduced by this image"
        in wait_for(lambda: vulnerable("base"))["message"]
    )
    assert (
        "CVE-2024-3094 (Critical), inherited from base"
        in wait_for(lambda: vulnerable("app"))["message"]
    )

    # Lifting the advisory clears the flag on every Image containing the layer.
    operator.kubectl(
        "patch",
        "layer",
        f"sha256-{'a' * 64}",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/advisory"}]',
        check=True,
    )
    wait_for(
        lambda: (
            (condition(operator.get("image", "app", namespace), "Vulnerable") or {}).get("reason")
            == "NoKnownAdvisory"
        ),
        what="app no longer vulnerable",
    )


def test_container_commit_reports_its_missing_pod_then_follows_it(
    operator: KubeCluster, namespace: str
) -> None:
    commit = (
        "apiVersion: lamina.dev/v1alpha1\nkind: ContainerCommit\nmetadata: {name: snap}\n"
        "spec: {pod: web, output: {repository: localhost:5000/demo/web}}\n"
    )
    operator.apply(commit, namespace)
    obj = wait_reason(operator, "snap", namespace, "PodNotFound", kind="containercommit")
    assert obj["status"]["phase"] == "Pending"
    assert condition(obj, "Stalled")["message"] == (  # type: ignore[index]
        f'pod "web" not found in namespace "{namespace}" '
        "(a commit can only target a pod in its own namespace)"
    )
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
        "spec: {containers: [{name: main, image: busybox}]}\n"
    )
    # The namespace's default ServiceAccount (which Pod admission needs) comes from the
    # controller-manager shortly after the namespace.
    wait_for(lambda: operator.apply(pod, namespace).returncode == 0, what="pod created")
    # The API tier has no scheduler: the Pod stays unscheduled, and the commit says so.
    wait_reason(operator, "snap", namespace, "PodNotScheduled", kind="containercommit")
