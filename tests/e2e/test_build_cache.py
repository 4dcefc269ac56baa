"""The registry build cache (``LAMINA_BUILD_CACHE_TAG``, ``LAMINA_BUILD_CACHE_REPOSITORY``) on
the node tier.

An Image's first step writes a random value (``/proc/sys/kernel/random/uuid``), so running it
again can never give the same layer; its last step is then changed.  Each build runs in a
fresh daemonless buildkitd (an emptyDir state), so the only way the second build can keep the
first step's layer is the cache the first build exported to the registry.  Checked against
the registry itself (the manifests and the cache tag ``skopeo`` reads, in the cache repository
beside the image's, never in the image's own) and BuildKit's own progress log (the step is
``CACHED``).  The same for Buildah (``--cache-to``/``--cache-from``: one image per step in the
cache repository).  An Image that pushes to a cache repository is refused.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import NodeCluster, node_operator
from tests.e2e.test_buildah import BUILDAH_IMAGE
from tests.e2e.test_image_builds import image, ready, status

pytestmark = pytest.mark.e2e

CACHE_TAG = "lamina-buildcache"
CACHE_SUFFIX = "-buildcache"  # the default LAMINA_BUILD_CACHE_REPOSITORY, {repository}-buildcache
BUSYBOX = {"ref": "docker.io/library/busybox:latest", "pollInterval": "1h"}
RANDOM_STEP = "RUN cat /proc/sys/kernel/random/uuid > /stamp"


@pytest.fixture(scope="module")
def cache_operator(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NodeCluster, str]]:
    log = tmp_path_factory.mktemp("cache-operator") / "operator.log"
    with node_operator(
        node_cluster,
        log,
        LAMINA_BUILD_CACHE_TAG=CACHE_TAG,
        LAMINA_BUILD_POLL_SECONDS="2",
        LAMINA_BUILDAH_IMAGE=BUILDAH_IMAGE,
    ) as operator_ns:
        yield node_cluster, operator_ns


def raw_manifest(ref: str) -> dict[str, Any]:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def tags(repository: str) -> list[str]:
    out = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"docker://{repository}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return sorted(json.loads(out)["Tags"])


def not_cache(image_tags: list[str]) -> bool:
    """No tag of the image's repository is a cache's: neither the cache tag nor a step key
    (whatever else, such as attestations, the image's repository may hold)."""
    return "latest" in image_tags and not any(
        t == CACHE_TAG or re.fullmatch("[0-9a-f]{64}", t) for t in image_tags
    )


def layer_digests(ref: str) -> list[str]:
    return [layer["digest"] for layer in raw_manifest(ref)["layers"]]


def build_log(kube: NodeCluster, operator_ns: str, job: str) -> str:
    return kube.ok("logs", "-n", operator_ns, f"job/{job}", "-c", "build")


def test_a_changed_last_step_reuses_the_cached_earlier_step(
    cache_operator: tuple[NodeCluster, str], ns: str
) -> None:
    kube, operator_ns = cache_operator
    kube.apply_objects(
        ns, image("cached", BUSYBOX, [RANDOM_STEP, "RUN echo one > /last"], kube.registry, ns)
    )
    first = wait_for(lambda: ready(kube, ns, "cached"), timeout=600, what="first build")
    repository = f"{kube.registry}/e2e/{ns}/cached"
    first_layers = layer_digests(first["imageRef"])
    # The first build exported its cache to the Image's cache repository, under the cache tag,
    # and nothing but the image to the Image's own repository.
    # (BuildKit's cache manifest: a config of its own type, a layer per cached step, mode=max.)
    cache = raw_manifest(f"{repository}{CACHE_SUFFIX}:{CACHE_TAG}")
    assert not_cache(tags(repository))
    assert cache["config"]["mediaType"] == "application/vnd.buildkit.cacheconfig.v0", cache
    # One layer per step and the parent's (the pushed image's are the same files with their
    # times rewritten to the build epoch, so their digests differ from the cache's).
    assert len(cache["layers"]) >= len(first_layers), (first_layers, cache)
    assert "CACHED" not in build_log(kube, operator_ns, first["build"]["job"])

    kube.ok(
        "patch",
        "image",
        "cached",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"build": {"steps": [RANDOM_STEP, "RUN echo two > /last"]}}}),
    )

    def rebuilt() -> dict[str, Any] | None:
        found = ready(kube, ns, "cached")
        return found if found and found["digest"] != first["digest"] else None

    second = wait_for(rebuilt, timeout=600, what="the build of the changed step")
    second_layers = layer_digests(second["imageRef"])
    # The parent's layers, then the random step's, then the last step's.
    assert len(second_layers) == len(first_layers)
    assert second_layers[:-1] == first_layers[:-1], "the unchanged random step was run again"
    assert second_layers[-1] != first_layers[-1]
    log = build_log(kube, operator_ns, second["build"]["job"])
    step = re.search(r"^#(\d+) \[\d+/\d+\] " + re.escape(RANDOM_STEP) + "$", log, re.M)
    assert step, log[-3000:]
    # BuildKit says CACHED when it needs nothing of the step, and shows the cached layers being
    # pulled and extracted when the next (changed) step runs on them: either is the cache.
    # The proof that the step did not run again is its layer digest, asserted above.
    number = step.group(1)
    from_cache = re.search(rf"^#{number} CACHED$", log, re.M) or re.search(
        rf"^#{number} extracting sha256:", log, re.M
    )
    assert from_cache, log[-3000:]
    assert status(kube, ns, "cached")["layers"][-2]["digest"] == first_layers[-2]


def test_a_buildah_build_reuses_the_cached_earlier_step(
    cache_operator: tuple[NodeCluster, str], ns: str
) -> None:
    kube, operator_ns = cache_operator
    cached = image("bcached", BUSYBOX, [RANDOM_STEP, "RUN echo one > /last"], kube.registry, ns)
    cached["spec"]["build"]["engine"] = "buildah"
    kube.apply_objects(ns, cached)
    first = wait_for(lambda: ready(kube, ns, "bcached"), timeout=600, what="first buildah build")
    repository = f"{kube.registry}/e2e/{ns}/bcached"
    first_layers = layer_digests(first["imageRef"])
    # One image per step in the cache repository, tagged by its cache key; none in the image's.
    step_images = tags(repository + CACHE_SUFFIX)
    assert len(step_images) == 2 and all(re.fullmatch("[0-9a-f]{64}", t) for t in step_images)
    assert not_cache(tags(repository))

    kube.ok(
        "patch",
        "image",
        "bcached",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"build": {"steps": [RANDOM_STEP, "RUN echo two > /last"]}}}),
    )

    def rebuilt() -> dict[str, Any] | None:
        found = ready(kube, ns, "bcached")
        return found if found and found["digest"] != first["digest"] else None

    second = wait_for(rebuilt, timeout=600, what="the buildah build of the changed step")
    second_layers = layer_digests(second["imageRef"])
    assert len(second_layers) == len(first_layers)
    assert second_layers[:-1] == first_layers[:-1], "the unchanged random step was run again"
    assert second_layers[-1] != first_layers[-1]
    log = build_log(kube, operator_ns, second["build"]["job"])
    # Buildah's words for the random step, taken from the cache repository.
    pulled = re.search(
        rf"^STEP 2/3: {re.escape(RANDOM_STEP)}\n--> Cache pulled from remote "
        rf"{re.escape(repository + CACHE_SUFFIX)}:[0-9a-f]{{64}}\n--> Using cache [0-9a-f]{{64}}$",
        log,
        re.M,
    )
    assert pulled, log[-3000:]
    assert len(tags(repository + CACHE_SUFFIX)) == 3


def test_an_image_that_pushes_to_a_cache_repository_is_refused(
    cache_operator: tuple[NodeCluster, str], ns: str
) -> None:
    kube, operator_ns = cache_operator
    clash = image("clash", BUSYBOX, ["RUN true"], kube.registry, ns)
    clash["spec"]["output"]["repository"] = f"{kube.registry}/e2e/{ns}/other{CACHE_SUFFIX}"
    kube.apply_objects(ns, clash)

    def refused() -> dict[str, Any] | None:
        build = status(kube, ns, "clash").get("build") or {}
        return build if build.get("phase") == "Failed" else None

    build = wait_for(refused, timeout=120, what="the clashing Image refused")
    assert build["failure"] == "DockerfileInvalid", build
    assert "is a build cache repository" in build["message"], build
    assert "digest" not in status(kube, ns, "clash")
    listed = kube.ok(
        "get",
        "jobs",
        "-n",
        operator_ns,
        "-l",
        f"lamina.dev/image-name=clash,lamina.dev/image-namespace={ns}",
        "-o",
        "json",
    )
    assert json.loads(listed)["items"] == [], "a Job was created for a refused Image"
