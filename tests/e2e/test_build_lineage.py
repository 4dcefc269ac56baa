"""Lineage in the pushed manifests, and reproducible builds, on the node tier.

Real BuildKit Jobs build base (from busybox, through the local mirror) and its child app.
``skopeo inspect --raw`` reads the manifests the registry serves: each names its base and pins
it to the digest its parent was built on, and says it was created at the build's epoch.  Then
base is rebuilt by the ``lamina.dev/rebuild`` trigger, which changes no build input: a new
Job runs and pushes the same digest, so app sees no parent change and is not rebuilt.  So does
an Image that copies a whole ConfigMap context (the kubelet writes that volume under a
timestamped directory, which must not reach the image).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import NodeCluster, node_operator
from tests.e2e.test_image_builds import image, ready, run_pod, status

pytestmark = pytest.mark.e2e

BUSYBOX = "docker.io/library/busybox:latest"
EPOCH_0 = "1970-01-01T00:00:00Z"
POLL_SECONDS = 2


@pytest.fixture(scope="module")
def build_operator(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NodeCluster, str]]:
    log = tmp_path_factory.mktemp("lineage-operator") / "operator.log"
    with node_operator(
        node_cluster, log, LAMINA_BUILD_POLL_SECONDS=str(POLL_SECONDS)
    ) as operator_ns:
        yield node_cluster, operator_ns


def skopeo(ref: str, *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def build_jobs(kube: NodeCluster, operator_ns: str, uid: str) -> list[str]:
    listed = kube.ok(
        "get", "jobs", "-n", operator_ns, "-l", f"lamina.dev/image-uid={uid}", "-o", "json"
    )
    return sorted(job["metadata"]["name"] for job in json.loads(listed)["items"])


def test_manifests_carry_lineage_and_a_rebuild_without_changes_moves_no_child(
    build_operator: tuple[NodeCluster, str], ns: str
) -> None:
    kube, operator_ns = build_operator
    busybox = {"ref": BUSYBOX, "pollInterval": "1h"}
    files = image("files", busybox, ["COPY . /ctx/"], kube.registry, ns)
    files["spec"]["build"]["context"] = {"configMap": {"name": "files"}}
    kube.apply_objects(
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "files"},
            "data": {"app.conf": "x=1\n", ".dockerignore": "*.tmp\n", "skip.tmp": "no\n"},
        },
        image("base", busybox, ["RUN echo one > /one"], kube.registry, ns),
        image("app", {"image": "base"}, ["RUN echo two > /two"], kube.registry, ns),
        files,
    )
    base = wait_for(lambda: ready(kube, ns, "base"), timeout=600, what="base built")
    app = wait_for(lambda: ready(kube, ns, "app"), timeout=600, what="app built")
    copied = wait_for(lambda: ready(kube, ns, "files"), timeout=600, what="files built")

    # The manifests the registry serves name and pin each parent.
    base_manifest = skopeo(base["imageRef"], "--raw")
    assert base_manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert base_manifest["annotations"] == {
        "org.opencontainers.image.base.name": BUSYBOX,
        "org.opencontainers.image.base.digest": base["parent"]["digest"],
        "org.opencontainers.image.created": EPOCH_0,
    }
    assert base["parent"]["digest"] == base["builtFrom"]["parentDigest"]
    app_manifest = skopeo(app["imageRef"], "--raw")
    assert app_manifest["annotations"] == {
        "org.opencontainers.image.base.name": f"{kube.registry}/e2e/{ns}/base",
        "org.opencontainers.image.base.digest": base["digest"],
        "org.opencontainers.image.created": EPOCH_0,
    }
    assert app["parent"] == {"image": "base", "digest": base["digest"]}
    assert skopeo(app["imageRef"], "--config")["created"] == EPOCH_0

    # A rebuild that changes no input: a new Job, the same digest.
    base_uid = kube.ok("get", "image", "base", "-n", ns, "-o", "jsonpath={.metadata.uid}")
    app_uid = kube.ok("get", "image", "app", "-n", ns, "-o", "jsonpath={.metadata.uid}")
    app_jobs = build_jobs(kube, operator_ns, app_uid)
    assert len(app_jobs) == 1
    for name in ("base", "files"):
        kube.ok("annotate", "image", name, "-n", ns, "lamina.dev/rebuild=same-inputs")

    def rebuilt(name: str) -> dict[str, Any] | None:
        found = ready(kube, ns, name)
        if found and (found.get("builtFrom") or {}).get("trigger") == "same-inputs":
            return found
        return None

    again = wait_for(lambda: rebuilt("base"), timeout=600, what="base rebuilt by the trigger")
    copied_again = wait_for(lambda: rebuilt("files"), timeout=600, what="files rebuilt")
    assert copied_again["build"]["job"] != copied["build"]["job"]
    assert copied_again["digest"] == copied["digest"], "a ConfigMap context is not reproducible"
    listing = run_pod(kube, ns, "ls-ctx", copied_again["imageRef"], "ls -A /ctx").split()
    assert "app.conf" in listing and "skip.tmp" not in listing, listing
    assert not [name for name in listing if name.startswith("..")], listing
    assert "buildkitd.toml" not in listing, listing
    assert again["build"]["job"] != base["build"]["job"]  # the build really ran again
    assert len(build_jobs(kube, operator_ns, base_uid)) == 2
    assert again["build"]["reasons"] == ["ManualTrigger - -> same-inputs"]
    assert again["digest"] == base["digest"], "the same inputs pushed a different image"
    assert [entry["digest"] for entry in again["history"]] == [base["digest"]] * 2

    # app sees no parent change: give the build loop several passes to (not) start a build.
    time.sleep(5 * POLL_SECONDS)
    after = status(kube, ns, "app")
    assert build_jobs(kube, operator_ns, app_uid) == app_jobs
    assert after["digest"] == app["digest"]
    assert after["build"] == app["build"]
    assert len(after["history"]) == 1
    conditions = {c["type"]: c for c in after["conditions"]}
    assert conditions["Ready"]["reason"] == "UpToDate"
    assert conditions["ParentCurrent"]["status"] == "True"
