"""A parent tag naming an index (as Lamina pushes its images) pins the image manifest in it.

Issue 9, 6: Lamina tags an image it built with an index of the image manifest and an
attestation manifest whose statements carry timestamps, so the index digest moves on every
rebuild even when the image manifest is byte for byte the same (a reproducible build).  An
Image whose ``spec.parent.ref`` names such a tag must see no parent change then, and must
when the image manifest itself changes, with the build pinned (FROM and the base
annotations) to that image manifest.  Real API server, real registry (Debian's), the index
pushed over the registry's HTTP API; the API tier has no node, so a rebuild shows as its Job.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.domain.attestation_index import attested_image
from tests.api.build_loop import as_built, build_loop_operator
from tests.api.test_build_planning import build_jobs, push, status_of
from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _send(url: str, method: str, data: bytes, content_type: str) -> Any:
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": content_type}
    )
    return urllib.request.urlopen(request, timeout=30)


def _push_blob(registry: Registry, repository: str, data: bytes) -> None:
    base = f"http://{registry.address}/v2/{repository}/blobs/uploads/"
    with _send(base, "POST", b"", "application/octet-stream") as started:
        location = started.headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry.address}{location}"
    joiner = "&" if "?" in location else "?"
    with _send(f"{location}{joiner}digest={sha(data)}", "PUT", data, "application/octet-stream"):
        pass


def _put_manifest(
    registry: Registry, repository: str, reference: str, data: bytes, media_type: str
) -> None:
    url = f"http://{registry.address}/v2/{repository}/manifests/{reference}"
    with _send(url, "PUT", data, media_type):
        pass


def raw_manifest(registry: Registry, repository: str, tag: str) -> bytes:
    request = urllib.request.Request(
        f"http://{registry.address}/v2/{repository}/manifests/{tag}",
        headers={"Accept": OCI_MANIFEST},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.read()  # type: ignore[no-any-return]


def tag_as_lamina_does(
    registry: Registry, repository: str, tag: str, image: bytes, built_at: str
) -> str:
    """Tag the image manifest ``image`` (already in ``repository``) with an index of it and a
    provenance attestation made ``built_at``, the layout Lamina pushes; the index digest."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": repository, "digest": {"sha256": sha(image)[7:]}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"runDetails": {"metadata": {"startedOn": built_at}}},
    }
    documents = attested_image(
        manifest_digest=sha(image),
        manifest_size=len(image),
        manifest_media_type=OCI_MANIFEST,
        platform={"architecture": "amd64", "os": "linux"},
        statement=statement,
    )
    _push_blob(registry, repository, documents.statement.data)
    _push_blob(registry, repository, documents.attestation_config)
    attestation = documents.attestation_manifest
    _put_manifest(registry, repository, sha(attestation), attestation, OCI_MANIFEST)
    _put_manifest(registry, repository, tag, documents.index, OCI_INDEX)
    return documents.index_digest


def image_object(name: str, ref: str, repository: str) -> str:
    return json.dumps(
        {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "Image",
            "metadata": {"name": name},
            "spec": {
                "parent": {"ref": ref, "pollInterval": "1s"},
                "build": {"steps": ["RUN echo built > /built"]},
                "output": {"repository": repository, "insecure": True},
            },
        }
    )


def create_built_child(
    kube: KubeCluster,
    namespace: str,
    ref: str,
    repository: str,
    digest: str,
    built_from: dict[str, Any],
) -> None:
    """The Image "child" on ``ref``, its status as a finished build on ``built_from`` would
    have left it (written before the operator starts, so it never plans a first build)."""
    kube.apply(image_object("child", ref, repository), namespace)
    as_built(kube, "child", namespace, {"digest": digest, "builtFrom": built_from})


def test_a_new_index_around_the_same_image_manifest_is_no_parent_change(
    crds_installed: KubeCluster, registry: Registry, namespace: str, tmp_path: Path
) -> None:
    kube = crds_installed
    parents = f"parents/{uuid.uuid4().hex[:8]}"
    # The image manifest, pushed by digest (its own tag is only how skopeo pushes it).
    push(registry, parents, "image-one", "one", tmp_path)
    image = raw_manifest(registry, parents, "image-one")
    first_index = tag_as_lamina_does(registry, parents, "1", image, "2026-12-01T09:00:00Z")
    ref = registry.ref(parents, "1")
    # A second Image on another parent: its moves show the operator's polls go on meanwhile.
    witnessed = f"parents/{uuid.uuid4().hex[:8]}"
    push(registry, witnessed, "1", "w0", tmp_path)
    child_repo = f"{registry.address}/children/{uuid.uuid4().hex[:8]}"
    child_digest = push(registry, child_repo.split("/", 1)[1], "latest", "child", tmp_path)

    built_from = {"generation": 1, "parentDigest": sha(image)}
    create_built_child(kube, namespace, ref, child_repo, child_digest, built_from)
    kube.apply(
        image_object("witness", registry.ref(witnessed, "1"), f"{child_repo}-witness"), namespace
    )
    home = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", home, check=True)

    def child_jobs() -> list[dict[str, Any]]:
        return [
            job
            for job in build_jobs(kube, home, namespace)
            if job["metadata"]["annotations"].get("lamina.dev/image-name") == "child"
        ]

    def ready_reason() -> str | None:
        return (condition(kube.get("image", "child", namespace), "Ready") or {}).get("reason")

    def witness_at(digest: str) -> Callable[[], bool]:
        return lambda: (
            status_of(kube, "witness", namespace).get("resolved", {}).get("digest") == digest
        )

    try:
        with build_loop_operator(kube, registry, tmp_path, home, LAMINA_MAX_CONCURRENT_BUILDS="4"):
            wait_for(lambda: ready_reason() == "UpToDate", what="child up to date")
            resolved = status_of(kube, "child", namespace)["resolved"]
            assert resolved["digest"] == sha(image) != first_index
            assert resolved.get("message") is None

            # The parent is rebuilt reproducibly: the same image manifest, a new index.
            second_index = tag_as_lamina_does(registry, parents, "1", image, "2026-12-01T10:00:00Z")
            assert second_index != first_index
            for step in ("w1", "w2"):  # two polls of the witness after the new index
                moved = push(registry, witnessed, "1", step, tmp_path)
                wait_for(witness_at(moved), what=f"witness at {step}")
            status = status_of(kube, "child", namespace)
            assert status["resolved"]["digest"] == sha(image)
            assert status["builtFrom"] == built_from
            assert status["digest"] == child_digest
            assert ready_reason() == "UpToDate"
            assert child_jobs() == []

            # The image manifest itself changes: that is a parent change, pinned to it.
            push(registry, parents, "image-two", "two", tmp_path)
            changed = raw_manifest(registry, parents, "image-two")
            tag_as_lamina_does(registry, parents, "1", changed, "2026-12-01T11:00:00Z")
            (job,) = wait_for(child_jobs, timeout=60, what="the child's rebuild Job")
            build = wait_for(
                lambda: (
                    status_of(kube, "child", namespace).get("build")
                    if status_of(kube, "child", namespace).get("build", {}).get("reasons")
                    else None
                ),
                what="the rebuild recorded",
            )
            assert build["reasons"] == [f"ParentChanged {sha(image)} -> {sha(changed)}"]
            assert build["wanted"]["parentDigest"] == sha(changed)
            context = kube.kubectl(
                "get", "configmap", job["metadata"]["name"], "-n", home, "-o", "json", check=True
            )
            dockerfile = json.loads(context.stdout)["data"]["Dockerfile"]
            assert dockerfile.splitlines()[0] == f"FROM {registry.address}/{parents}@{sha(changed)}"
            job_text = json.dumps(job["spec"])
            assert f"org.opencontainers.image.base.digest={sha(changed)}" in job_text
            assert f"org.opencontainers.image.base.name={ref}" in job_text
    finally:
        kube.kubectl("delete", "namespace", home, "--wait=false")
