"""Image builds end to end on the node tier: a tree builds, a fix in the root is inherited.

base (from docker.io/library/busybox, through the local mirror) <- app <- app-debug, and
base <- tool (Manual policy).  Real BuildKit Jobs build and push to the local registry; the
test watches the Jobs to check the global build limit, changes base's steps, and checks that
every Automatic descendant is rebuilt on its parent's new digest, in order, and that a pod
from the grandchild's new digest sees the fixed file.  tool waits for a trigger.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import NodeCluster, node_operator

pytestmark = pytest.mark.e2e

LIMIT = 2


@pytest.fixture(scope="module")
def build_operator(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NodeCluster, str]]:
    log = tmp_path_factory.mktemp("build-operator") / "operator.log"
    with node_operator(
        node_cluster, log, LAMINA_MAX_CONCURRENT_BUILDS=str(LIMIT), LAMINA_BUILD_POLL_SECONDS="2"
    ) as operator_ns:
        yield node_cluster, operator_ns


class JobWatcher:
    """Samples the build Jobs running at once, for the whole test."""

    def __init__(self, kube: NodeCluster, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.peak = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            listed = self.kube.kubectl(
                "get", "jobs", "-n", self.namespace, "-l", "lamina.dev/purpose=build", "-o", "json"
            )
            if listed.returncode == 0:
                items = json.loads(listed.stdout)["items"]
                self.seen |= {job["metadata"]["name"] for job in items}
                active = sum(1 for job in items if (job.get("status") or {}).get("active"))
                self.peak = max(self.peak, active)
            time.sleep(0.5)

    def __enter__(self) -> JobWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def image(
    name: str, parent: dict[str, str], steps: list[str], registry: str, ns: str, **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": "Image",
        "metadata": {"name": name},
        "spec": {
            "parent": parent,
            "build": {"steps": steps},
            "output": {"repository": f"{registry}/e2e/{ns}/{name}", "insecure": True},
            **extra,
        },
    }


def status(kube: NodeCluster, ns: str, name: str) -> dict[str, Any]:
    return (kube.get("image", name, ns) or {}).get("status") or {}


def ready(kube: NodeCluster, ns: str, name: str) -> dict[str, Any] | None:
    found = status(kube, ns, name)
    conditions = {c["type"]: c for c in found.get("conditions") or []}
    build = found.get("build") or {}
    if build.get("phase") == "Failed":
        raise AssertionError(
            f"{name}: build failed: {build.get('failure')}: {build.get('message')}"
        )
    if (
        conditions.get("Ready", {}).get("status") == "True"
        and conditions["Ready"]["reason"] == "UpToDate"
    ):
        return found
    return None


def run_pod(kube: NodeCluster, ns: str, name: str, image_ref: str, command: str) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image_ref, "command": ["sh", "-c", command]}],
        },
    }
    kube.apply_objects(ns, pod)
    kube.wait(ns, f"pod/{name}", "jsonpath={.status.phase}=Succeeded")
    return kube.ok("logs", "-n", ns, name)


def test_tree_builds_and_a_fix_in_the_root_is_inherited(
    build_operator: tuple[NodeCluster, str], ns: str
) -> None:
    kube, operator_ns = build_operator
    registry = kube.registry
    busybox = {"ref": "docker.io/library/busybox:latest", "pollInterval": "1h"}
    with JobWatcher(kube, operator_ns) as jobs:
        kube.apply_objects(
            ns,
            image("base", busybox, ["RUN echo vulnerable-1.0 > /lib-version"], registry, ns),
            image("app", {"image": "base"}, ["RUN echo app > /app"], registry, ns),
            image("app-debug", {"image": "app"}, ["RUN echo debug > /debug"], registry, ns),
            image(
                "tool",
                {"image": "base"},
                ["RUN echo tool > /tool"],
                registry,
                ns,
                rebuild={"policy": "Manual"},
            ),
        )
        first = {
            name: wait_for(lambda n=name: ready(kube, ns, n), timeout=600, what=f"{name} built")
            for name in ("base", "app", "tool", "app-debug")
        }
        debug = first["app-debug"]
        assert [entry.get("name") for entry in debug["lineage"][:2]] == ["app", "base"]
        assert debug["lineage"][0]["digest"] == first["app"]["digest"]
        assert debug["lineage"][-1]["ref"] == "docker.io/library/busybox:latest"
        assert debug["layers"][-1]["own"] is True
        assert first["app"]["builtFrom"]["parentDigest"] == first["base"]["digest"]
        before = run_pod(kube, ns, "before", debug["imageRef"], "cat /lib-version /app /debug")
        assert before.split() == ["vulnerable-1.0", "app", "debug"]

        # The fix: base's steps change; Automatic descendants rebuild on the new digests.
        fixed = image("base", busybox, ["RUN echo fixed-1.1 > /lib-version"], registry, ns)
        kube.apply_objects(ns, fixed)

        def rebuilt(name: str) -> dict[str, Any] | None:
            found = ready(kube, ns, name)
            return found if found and found["digest"] != first[name]["digest"] else None

        after = {
            name: wait_for(lambda n=name: rebuilt(n), timeout=600, what=f"{name} rebuilt")
            for name in ("base", "app", "app-debug")
        }
    assert jobs.peak <= LIMIT, f"{jobs.peak} builds ran at once; the limit is {LIMIT}"
    assert after["app"]["builtFrom"]["parentDigest"] == after["base"]["digest"]
    assert after["app-debug"]["builtFrom"]["parentDigest"] == after["app"]["digest"]
    # Parents first: each child's build started after its parent's build completed.
    for parent, child in (("base", "app"), ("app", "app-debug")):
        assert after[child]["build"]["startedAt"] >= after[parent]["build"]["completedAt"]
    assert after["app"]["build"]["reasons"] == [
        f"ParentChanged {first['base']['digest']} -> {after['base']['digest']}"
    ]
    fixed_out = run_pod(kube, ns, "after", after["app-debug"]["imageRef"], "cat /lib-version")
    assert fixed_out.strip() == "fixed-1.1"
    assert len(after["app-debug"]["history"]) == 2

    # tool is Manual: it waits, saying which parent digest it waits for.
    tool = status(kube, ns, "tool")
    conditions = {c["type"]: c for c in tool["conditions"]}
    assert tool["digest"] == first["tool"]["digest"]
    assert conditions["ParentCurrent"]["status"] == "False"
    assert conditions["ParentCurrent"]["reason"] == "ParentUpdateHeld"
    assert after["base"]["digest"] in conditions["ParentCurrent"]["message"]
    # A trigger releases it.
    kube.ok("annotate", "image", "tool", "-n", ns, "lamina.dev/rebuild=now")
    released = wait_for(
        lambda: (
            (found := ready(kube, ns, "tool"))
            and found["digest"] != first["tool"]["digest"]
            and found
        ),
        timeout=600,
        what="tool rebuilt after the trigger",
    )
    assert released["builtFrom"]["parentDigest"] == after["base"]["digest"]
    assert released["builtFrom"]["trigger"] == "now"
