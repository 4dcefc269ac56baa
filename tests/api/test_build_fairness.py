"""Build slots shared between tenants, on a real API server and a real registry.

One namespace's cascade must not take every slot while another namespace's build waits.  The
Images of both namespaces exist before the operator starts, so its first decision sees every
candidate at once, and no Job ever finishes here (no node), so the slots it handed out are
the whole story.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.api.build_loop import build_loop_operator
from tests.api.test_build_planning import image, push
from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api


@pytest.mark.parametrize(
    ("limit", "per_namespace", "busy_slots"),
    [
        # Without sharing, the busy tenant's older roots would take all three slots.
        ("3", None, 2),
        # With a per-namespace cap, a slot stays free rather than going to the busy tenant.
        ("4", "2", 2),
    ],
)
def test_a_cascade_in_one_namespace_leaves_a_slot_for_another(
    crds_installed: KubeCluster,
    registry: Registry,
    tmp_path: Path,
    limit: str,
    per_namespace: str | None,
    busy_slots: int,
) -> None:
    kube = crds_installed
    suffix = uuid.uuid4().hex[:6]
    operator_ns, busy, quiet = f"lamina-{suffix}", f"busy-{suffix}", f"quiet-{suffix}"
    for namespace in (operator_ns, busy, quiet):
        kube.kubectl("create", "namespace", namespace, check=True)
    repository = f"parents/{suffix}"
    push(registry, repository, "1", "one", tmp_path)
    ref = registry.ref(repository, "1")
    # The busy tenant's four roots are older than the quiet tenant's one.
    for name in ("a", "b", "c", "d"):
        kube.apply(image(name, {"ref": ref}, registry), busy)
    kube.apply(image("solo", {"ref": ref}, registry), quiet)

    # Only these two namespaces: an earlier case's namespaces may still be terminating, with
    # their Images, and would take slots.
    extra = {"LAMINA_MAX_CONCURRENT_BUILDS": limit, "LAMINA_NAMESPACES": f"{busy},{quiet}"}
    if per_namespace:
        extra["LAMINA_MAX_BUILDS_PER_NAMESPACE"] = per_namespace

    def jobs_by_namespace() -> dict[str, int] | None:
        listed = kube.kubectl("get", "jobs", "-n", operator_ns, "-o", "json", check=True)
        counts: dict[str, int] = {}
        for job in json.loads(listed.stdout)["items"]:
            owner = job["metadata"]["labels"]["lamina.dev/image-namespace"]
            counts[owner] = counts.get(owner, 0) + 1
        return counts if sum(counts.values()) >= 3 else None

    try:
        with build_loop_operator(kube, registry, tmp_path, operator_ns, **extra):
            counts = wait_for(jobs_by_namespace, timeout=90, what="three build Jobs")
            assert counts == {busy: busy_slots, quiet: 1}
            wait_for(
                lambda: (
                    (condition(kube.get("image", "solo", quiet), "Reconciling") or {}).get("reason")
                    == "Building"
                ),
                what="the quiet tenant's Image building",
            )
            queued = [
                name
                for name in ("a", "b", "c", "d")
                if (condition(kube.get("image", name, busy), "Reconciling") or {}).get("reason")
                == "BuildQueued"
            ]
            assert len(queued) == 4 - busy_slots
            # Later passes (one a second) do not hand the spare slot to the capped tenant.
            time.sleep(3)
            assert jobs_by_namespace() == {busy: busy_slots, quiet: 1}
    finally:
        for namespace in (operator_ns, busy, quiet):
            kube.kubectl("delete", "namespace", namespace, "--wait=false")
