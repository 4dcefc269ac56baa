"""Regressions from the tenant-attack review: one tenant must not stall or flood the others.

Each case reproduced a hole on the day of the review (branch h/attack, as xfail(strict)) and
passes now:

- A chain of 1,100 Images (each naming the next as its parent, the leaf's name sorting first)
  made planning recurse past Python's limit, and the RecursionError stopped every build pass
  in every namespace.
- An Image whose context copy is over the API server's object limit made the build pass fail
  on its ConfigMap, every pass, for every namespace.
- 25 ContainerCommits on one pod made 25 privileged commit Jobs at once, on the node the
  tenant picked, none with resource limits.

Each operator watches only its test's namespaces (LAMINA_NAMESPACES): an earlier test's
namespaces may still be terminating, with objects that would take slots.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api.build_loop import build_loop_operator
from tests.api.test_build_planning import build_jobs, image, push
from tests.api.test_commit_flow import commit, jobs_in, reason_of, running_pod
from tests.api.test_failures_visible import Operator
from tests.api.test_tree_reconcile import condition
from tests.conftest import REPO, KubeCluster, start_operator, stop_operator, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api

CHAIN = 1100
COMMITS = 25
# What the operator logs when a whole pass fails (every namespace waits for the next one).
PASS_FAILED = "reconcile pass (retrying) failed"


class Tenants:
    def __init__(self, operator: Operator, registry: Registry, ref: str, **names: str) -> None:
        self.operator, self.registry, self.ref = operator, registry, ref
        self.chain, self.big, self.victim = names["chain"], names["big"], names["victim"]

    def victim_job(self, name: str) -> bool:
        return bool(image_jobs(self.operator.kube, self.operator.home, self.victim, name))


def image_jobs(kube: KubeCluster, home: str, namespace: str, name: str) -> list[dict[str, Any]]:
    """The build Jobs (in the operator's namespace ``home``) of one Image."""
    return [
        job
        for job in build_jobs(kube, home, namespace)
        if job["metadata"]["annotations"].get("lamina.dev/image-name") == name
    ]


@pytest.fixture(scope="module")
def tenants(
    crds_installed: KubeCluster, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tenants]:
    """Two attacking namespaces and a victim's, and an operator with build slots to spare."""
    kube = crds_installed
    tag = uuid.uuid4().hex[:6]
    names = {"chain": f"aaa-{tag}", "big": f"aab-{tag}", "victim": f"victim-{tag}"}
    home = f"lamina-{tag}"
    for namespace in (home, *names.values()):
        kube.kubectl("create", "namespace", namespace, check=True)
    work = tmp_path_factory.mktemp("stalls")
    repository = f"parents/{tag}"
    push(registry, repository, "1", "one", work)
    try:
        with build_loop_operator(
            kube,
            registry,
            work,
            home,
            LAMINA_MAX_CONCURRENT_BUILDS="10",
            LAMINA_NAMESPACES=",".join(names.values()),
        ) as operator:
            yield Tenants(operator, registry, registry.ref(repository, "1"), **names)
    finally:
        for namespace in (home, *names.values()):
            kube.kubectl("delete", "namespace", namespace, "--wait=false")


def _chain_manifest(registry: Registry) -> str:
    items = [
        json.loads(
            image(
                f"c{k:04d}",
                {"image": f"c{k + 1:04d}" if k + 1 < CHAIN else "missing"},
                registry,
            )
        )
        for k in reversed(range(CHAIN))  # root first: each event sees a short chain
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def test_a_deep_chain_in_one_namespace_does_not_stop_builds_elsewhere(tenants: Tenants) -> None:
    kube, registry = tenants.operator.kube, tenants.registry
    # Baseline: the victim's builds start while the attacker has nothing.
    kube.apply(image("before", {"ref": tenants.ref}, registry), tenants.victim)
    wait_for(lambda: tenants.victim_job("before"), timeout=60, what="baseline Job")

    kube.kubectl(
        "apply", "-n", tenants.chain, "-f", "-", input=_chain_manifest(registry), check=True
    )
    # The operator decided the whole chain: the leaf (sorting first, 1,099 ancestors above
    # it) is stalled on the missing root like every other link.
    leaf = wait_for(
        lambda: condition(kube.get("image", "c0000", tenants.chain), "Stalled"),
        timeout=120,
        what="the chain's leaf decided",
    )
    assert (leaf["status"], leaf["reason"]) == ("True", "AncestorStalled")
    assert leaf["message"] == (
        f'ancestor c1099 is stalled: its parent Image "missing" does not exist in namespace '
        f'"{tenants.chain}"'
    )
    kube.apply(image("after", {"ref": tenants.ref}, registry), tenants.victim)
    # What SECURITY.md promises: the victim's second Image gets its build Job.
    wait_for(
        lambda: tenants.victim_job("after"),
        timeout=60,
        what="the victim's build Job while the attacker's chain exists",
    )
    said = tenants.operator.log.read_text(errors="replace")
    assert "RecursionError" not in said
    assert PASS_FAILED not in said


def test_an_oversized_build_context_does_not_stop_builds_elsewhere(tenants: Tenants) -> None:
    kube, registry = tenants.operator.kube, tenants.registry
    # A valid ConfigMap (just under the 1 MiB limit) and a valid 60 KiB Dockerfile: the copy
    # Lamina makes of both in its namespace is over the limit.
    context = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ctx"},
        "data": {"blob.txt": "x" * 1_040_000},
    }
    kube.kubectl("create", "-n", tenants.big, "-f", "-", input=json.dumps(context), check=True)
    big = json.loads(image("big", {"ref": tenants.ref}, registry))
    big["spec"]["build"] = {
        "dockerfile": "FROM base\n" + ("# " + "y" * 998 + "\n") * 60 + "RUN true\n",
        "context": {"configMap": {"name": "ctx"}},
    }
    kube.kubectl("create", "-n", tenants.big, "-f", "-", input=json.dumps(big), check=True)

    # The attacker's Image says why its context cannot travel, and no Job is made for it;
    # nobody else notices.
    def refused() -> dict[str, Any] | None:
        ready = condition(kube.get("image", "big", tenants.big), "Ready") or {}
        return ready if ready.get("reason") == "ContextTooLarge" else None

    ready = wait_for(refused, timeout=60, what="the big Image refused")
    assert "one ConfigMap carries at most 1,048,576" in ready["message"], ready
    assert not image_jobs(kube, tenants.operator.home, tenants.big, "big"), (
        "a Job was created for a context that cannot travel"
    )
    kube.apply(image("after-big", {"ref": tenants.ref}, registry), tenants.victim)
    wait_for(
        lambda: tenants.victim_job("after-big"),
        timeout=60,
        what="the victim's build Job while the attacker's Image exists",
    )
    assert PASS_FAILED not in tenants.operator.log.read_text(errors="replace")


def _huge(name: str, ref: str, registry: Registry) -> str:
    huge = json.loads(image(name, {"ref": ref}, registry))
    huge["metadata"]["annotations"] = {"example.com/notes": "n" * 200_000}
    huge["spec"]["build"]["args"] = {f"ARG_{k}": "v" * 3_000 for k in range(64)}
    return json.dumps(huge)


def test_images_of_hundreds_of_kib_are_listed_and_watched_like_any_other(
    crds_installed: KubeCluster, registry: Registry, tmp_path: Path
) -> None:
    """The operator reads its lists and watches of Images as raw event streams
    (lamina.kube.streams): an event line of hundreds of KiB (over aiohttp's default line
    limit of 128 KiB) must come out whole, or one tenant's Image would stop the list or the
    watch that every tenant's Images come through.  200 KiB of annotations and 64 build
    arguments of 3 KiB (which the build Job carries too): one such Image exists before the
    operator starts (it comes through the streaming list), one is created after (the watch)."""
    kube = crds_installed
    tag = uuid.uuid4().hex[:6]
    home, big, victim = f"lamina-{tag}", f"big-{tag}", f"victim-{tag}"
    for namespace in (home, big, victim):
        kube.kubectl("create", "namespace", namespace, check=True)
    repository = f"parents/{tag}"
    push(registry, repository, "1", "one", tmp_path)
    ref = registry.ref(repository, "1")
    create = ("create", "-n", big, "-f", "-")
    kube.kubectl(*create, input=_huge("listed", ref, registry), check=True)
    try:
        with build_loop_operator(
            kube,
            registry,
            tmp_path,
            home,
            LAMINA_NAMESPACES=f"{big},{victim}",
            # Build Jobs never finish on this tier: the two huge ones must leave a slot.
            LAMINA_MAX_CONCURRENT_BUILDS="10",
        ) as operator:

            def job_of(name: str, namespace: str) -> list[dict[str, Any]]:
                return image_jobs(kube, home, namespace, name)

            def building(name: str) -> bool:
                ready = condition(kube.get("image", name, big), "Ready") or {}
                return ready.get("reason") == "Building"

            listed = wait_for(lambda: job_of("listed", big), timeout=60, what="listed's Job")
            assert len(json.dumps(listed[0])) > 128 * 1024
            wait_for(lambda: building("listed"), timeout=60, what="listed's status")
            kube.kubectl(*create, input=_huge("watched", ref, registry), check=True)
            wait_for(lambda: job_of("watched", big), timeout=60, what="watched's Job")
            wait_for(lambda: building("watched"), timeout=60, what="watched's status")
            kube.apply(image("after-huge", {"ref": ref}, registry), victim)
            wait_for(
                lambda: job_of("after-huge", victim),
                timeout=60,
                what="the victim's build Job after the huge Images",
            )
            said = operator.log.read_text(errors="replace")
            assert "watching images" not in said and "watching layers" not in said, said[-3000:]
    finally:
        for namespace in (home, big, victim):
            kube.kubectl("delete", "namespace", namespace, "--wait=false")


def test_commits_of_one_tenant_are_bounded(
    crds_installed: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    """The operator as the chart starts it (its default commit slots and resources): a flood
    of commits gets a bounded number of Jobs, each with limits; the others wait, saying so."""
    kube = crds_installed
    values = yaml.safe_load((REPO / "charts" / "lamina" / "values.yaml").read_text())
    limit = int(values["maxConcurrentCommits"])
    home = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", home, check=True)
    log = tmp_path / "operator.log"
    env = {
        "LAMINA_NAMESPACE": home,
        "LAMINA_NAMESPACES": namespace,
        "LAMINA_COMMITTER_IMAGE": "lamina:test",
        "LAMINA_MAX_CONCURRENT_COMMITS": str(limit),
        "LAMINA_COMMIT_RESOURCES": json.dumps(values["commitResources"]),
    }
    process = start_operator(kube.kubeconfig, log, "--metrics-port=0", "--health-port=0", env=env)
    try:
        running_pod(kube, namespace)  # a tenant may set spec.nodeName: it picks the node
        kube.apply("---\n".join(commit(f"flood-{k}") for k in range(COMMITS)), namespace)

        def reasons() -> list[str | None]:
            return [reason_of(kube, f"flood-{k}", namespace) for k in range(COMMITS)]

        wait_for(
            lambda: (
                sorted(map(str, reasons()))
                == ["CommitQueued"] * (COMMITS - limit) + ["Committing"] * limit
            ),
            timeout=90,
            what=f"{limit} commits running, the others queued",
        )
        jobs = jobs_in(kube, home)
        assert len(jobs) == limit
        containers = [job["spec"]["template"]["spec"]["containers"][0] for job in jobs]
        assert all(c["securityContext"]["privileged"] for c in containers)
        assert all(c["resources"] == values["commitResources"] for c in containers)
    finally:
        stop_operator(process, log)
        kube.kubectl("delete", "namespace", home, "--wait=false")
        # No kubelet confirms the pod's end: without this its namespace (and the 25 commits
        # in it, which any later operator would give slots to) stays Terminating.
        kube.kubectl("delete", "pod", "web", "-n", namespace, "--force", "--grace-period=0")
