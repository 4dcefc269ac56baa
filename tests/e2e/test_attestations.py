"""Attestations on the node tier: every image Lamina makes says where it came from.

Real BuildKit Jobs build base (from busybox, through the local mirror) and app on it; app is
then rebased when base moves, and a pod running app is committed.  Everything is read back
from the registry without Lamina's client: ``skopeo inspect --raw`` for manifests and indexes,
plain HTTP GETs for the statement blobs, each checked against its digest.

- A build's tag names an index holding the image and one attestation manifest (BuildKit's
  layout) with an SPDX SBOM (made by the SBOM generator image, syft) and SLSA v1 provenance
  whose subject is the image and whose resolved dependencies pin the parent at the digest
  in the parent's status; the frontend inputs (the Dockerfile, the build args, the context's
  identity) are in it.
- After a Rebase the tag names a new index: the build's attestations are gone and the
  provenance is Lamina's rebase's, naming the new parent and the previous image.
- A committed image's provenance names the pod, the container, the image digest it ran and the
  ContainerCommit, and says it is not reproducible.
- ``status.attestations`` lists what the registry holds, digest for digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import NodeCluster, node_operator
from tests.e2e.conftest import lamina_image as built_lamina_image
from tests.e2e.test_image_builds import image, ready, status

pytestmark = pytest.mark.e2e

BUSYBOX = "docker.io/library/busybox:latest"
SLSA = "https://slsa.dev/provenance/v1"
SPDX = "https://spdx.dev/Document"
ATTESTATION = "attestation-manifest"
BUILDKIT_BUILDER = "https://lamina.dev/builders/buildkit"
REBASE_BUILDER = "https://lamina.dev/builders/rebase"
COMMIT_BUILDER = "https://lamina.dev/builders/container-commit"


@pytest.fixture(scope="module")
def attest_operator(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeCluster]:
    log = tmp_path_factory.mktemp("attest-operator") / "operator.log"
    committer = built_lamina_image(node_cluster.registry)
    with node_operator(
        node_cluster, log, LAMINA_BUILD_POLL_SECONDS="2", LAMINA_COMMITTER_IMAGE=committer
    ):
        yield node_cluster


def raw(ref: str) -> bytes:
    """The exact bytes the registry serves for a manifest or index (skopeo, not Lamina)."""
    return subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(registry: str, repository: str, digest: str) -> bytes:
    """A blob over the distribution API's plain GET, checked against its digest."""
    path = repository.removeprefix(registry + "/")
    with urllib.request.urlopen(f"http://{registry}/v2/{path}/blobs/{digest}", timeout=60) as reply:
        data: bytes = reply.read()
    assert sha256(data) == digest, f"blob {digest} has other bytes"
    return data


def attestations(
    registry: str, repository: str, tag: str, image_digest: str
) -> tuple[str, dict[str, dict[str, Any]], list[dict[str, str]]]:
    """(index digest, statement by predicate type, what status should say) for the tag."""
    index_bytes = raw(f"{repository}:{tag}")
    index = json.loads(index_bytes)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json", index
    images = [
        m
        for m in index["manifests"]
        if (m.get("annotations") or {}).get("vnd.docker.reference.type") != ATTESTATION
    ]
    assert [(m["digest"], m["platform"]["os"], m["platform"]["architecture"]) for m in images] == [
        (image_digest, "linux", "amd64")
    ], index
    found = [
        m
        for m in index["manifests"]
        if (m.get("annotations") or {}).get("vnd.docker.reference.type") == ATTESTATION
    ]
    assert len(found) == 1, index
    assert found[0]["annotations"]["vnd.docker.reference.digest"] == image_digest
    manifest = json.loads(raw(f"{repository}@{found[0]['digest']}"))
    statements: dict[str, dict[str, Any]] = {}
    recorded = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == "application/vnd.in-toto+json", layer
        statement = json.loads(blob(registry, repository, layer["digest"]))
        predicate_type = layer["annotations"]["in-toto.io/predicate-type"]
        assert statement["predicateType"] == predicate_type
        # Each statement is about the image, by digest.
        assert {s["digest"]["sha256"] for s in statement["subject"]} == {
            image_digest.removeprefix("sha256:")
        }, statement["subject"]
        statements[predicate_type] = statement
        recorded.append(
            {
                "predicateType": predicate_type,
                "digest": layer["digest"],
                "manifestDigest": found[0]["digest"],
                "subject": image_digest,
            }
        )
    return sha256(index_bytes), statements, recorded


def dependency_digests(provenance: dict[str, Any]) -> set[str]:
    return {
        "sha256:" + entry["digest"]["sha256"]
        for entry in provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
        if "sha256" in (entry.get("digest") or {})
    }


def sources(provenance: dict[str, Any]) -> str:
    """The frontend's source files (the Dockerfile) that mode=max provenance carries."""
    metadata = provenance["predicate"]["runDetails"]["metadata"]["buildkit_metadata"]
    return "\n".join(
        base64.b64decode(info["data"]).decode() for info in metadata["source"]["infos"]
    )


def key(entries: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((e["predicateType"], e["digest"]) for e in entries)


def test_builds_rebases_and_commits_carry_their_own_attestations(
    attest_operator: NodeCluster, ns: str
) -> None:
    kube = attest_operator
    busybox = {"ref": BUSYBOX, "pollInterval": "1h"}
    app = image("app", {"image": "base"}, ["RUN echo two > /two"], kube.registry, ns)
    app["spec"]["build"]["args"] = {"GREETING": "hello attestations"}
    app["spec"]["rebuild"] = {"strategy": "Rebase"}
    kube.apply_objects(ns, image("base", busybox, ["RUN echo one > /one"], kube.registry, ns), app)
    base = wait_for(lambda: ready(kube, ns, "base"), timeout=600, what="base built")
    built = wait_for(lambda: ready(kube, ns, "app"), timeout=600, what="app built")
    check_build(kube, ns, base, built)
    rebased = check_rebase(kube, ns, base, built)
    check_commit(kube, ns, rebased)


def check_build(kube: NodeCluster, ns: str, base: dict[str, Any], app: dict[str, Any]) -> None:
    """BuildKit's SBOM and provenance, the parent pinned in it, the inputs recorded."""
    registry = kube.registry
    index_digest, statements, recorded = attestations(
        registry, f"{registry}/e2e/{ns}/app", "latest", app["digest"]
    )
    assert set(statements) == {SPDX, SLSA}, list(statements)
    assert app["indexDigest"] == index_digest
    assert key(app["attestations"]) == key(recorded)
    sbom = statements[SPDX]["predicate"]
    assert sbom["spdxVersion"].startswith("SPDX-2."), sbom.get("spdxVersion")
    assert sbom["packages"], "the SBOM lists no package"
    provenance = statements[SLSA]
    assert provenance["predicate"]["runDetails"]["builder"]["id"] == BUILDKIT_BUILDER
    assert app["parent"]["digest"] == base["digest"]
    assert base["digest"] in dependency_digests(provenance), provenance["predicate"][
        "buildDefinition"
    ]["resolvedDependencies"]
    request = provenance["predicate"]["buildDefinition"]["externalParameters"]["request"]
    assert request["args"]["build-arg:GREETING"] == "hello attestations"
    assert request["args"]["build-arg:SOURCE_DATE_EPOCH"] == "0"
    assert request["args"]["build-arg:LAMINA_CONTEXT_DIGEST"].startswith("sha256:")
    dockerfile = sources(provenance)
    assert f"FROM {registry}/e2e/{ns}/base@{base['digest']}" in dockerfile, dockerfile
    assert "RUN echo two > /two" in dockerfile
    # The root's provenance pins busybox at the digest base's status records.
    _, base_statements, _ = attestations(
        registry, f"{registry}/e2e/{ns}/base", "latest", base["digest"]
    )
    assert base["parent"]["digest"] in dependency_digests(base_statements[SLSA])


def check_rebase(
    kube: NodeCluster, ns: str, base: dict[str, Any], app: dict[str, Any]
) -> dict[str, Any]:
    """base moves; app is rebased: the build's attestations dropped, the rebase's own."""
    kube.ok(
        "patch",
        "image",
        "base",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"build": {"steps": ["RUN echo one-fixed > /one"]}}}),
    )

    def moved(name: str, old: str) -> dict[str, Any] | None:
        found = ready(kube, ns, name)
        return found if found is not None and found["digest"] != old else None

    new_base = wait_for(lambda: moved("base", base["digest"]), timeout=600, what="base rebuilt")
    rebased: dict[str, Any] = wait_for(
        lambda: moved("app", app["digest"]), timeout=300, what="app rebased"
    )
    assert "rebased onto" in rebased["build"]["message"], rebased["build"]
    index_digest, statements, recorded = attestations(
        kube.registry, f"{kube.registry}/e2e/{ns}/app", "latest", rebased["digest"]
    )
    assert list(statements) == [SLSA], "a rebase carries the build's SBOM or provenance"
    assert rebased["indexDigest"] == index_digest
    assert key(rebased["attestations"]) == key(recorded)
    provenance = statements[SLSA]
    assert provenance["predicate"]["runDetails"]["builder"]["id"] == REBASE_BUILDER
    deps = {
        entry["name"]: "sha256:" + entry["digest"]["sha256"]
        for entry in provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
    }
    assert deps == {"parent": new_base["digest"], "previous": app["digest"]}
    assert rebased["parent"]["digest"] == new_base["digest"]
    return rebased


def check_commit(kube: NodeCluster, ns: str, app: dict[str, Any]) -> None:
    """A pod running app is committed: which pod, container and image, by which commit."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "runner"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "image": app["imageRef"], "command": ["sleep", "3600"]}
            ],
        },
    }
    kube.apply_objects(ns, pod)
    kube.wait(ns, "pod/runner", "condition=Ready")
    kube.ok("exec", "-n", ns, "runner", "--", "sh", "-c", "echo changed > /changed")
    commit_repo = f"{kube.registry}/e2e/{ns}/snap"
    kube.apply_objects(
        ns,
        {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "ContainerCommit",
            "metadata": {"name": "snap"},
            "spec": {
                "pod": "runner",
                "output": {"repository": commit_repo, "tag": "v1", "insecure": True},
            },
        },
    )

    def committed() -> dict[str, Any] | None:
        found: dict[str, Any] = (kube.get("containercommit", "snap", ns) or {}).get("status") or {}
        if found.get("phase") == "Failed":
            raise AssertionError(f"commit failed: {json.dumps(found, indent=1)}")
        return found if found.get("phase") == "Succeeded" else None

    commit = wait_for(committed, timeout=300, what="the commit pushed")
    uid = kube.ok("get", "containercommit", "snap", "-n", ns, "-o", "jsonpath={.metadata.uid}")
    index_digest, statements, recorded = attestations(
        kube.registry, commit_repo, "v1", commit["image"]["digest"]
    )
    assert list(statements) == [SLSA]
    assert commit["indexDigest"] == index_digest
    assert key(commit["attestations"]) == key(recorded)
    assert key(status(kube, ns, "snap")["attestations"]) == key(recorded)
    provenance = statements[SLSA]["predicate"]
    assert provenance["runDetails"]["builder"]["id"] == COMMIT_BUILDER
    parameters = provenance["buildDefinition"]["externalParameters"]
    assert parameters["containerCommit"] == {"namespace": ns, "name": "snap", "uid": uid}
    assert parameters["source"]["namespace"] == ns
    assert parameters["source"]["pod"] == "runner"
    assert parameters["source"]["container"] == "main"
    assert parameters["source"]["imageDigest"] == commit["parent"]["digest"] == app["digest"]
    assert provenance["buildDefinition"]["internalParameters"]["reproducible"] is False
    assert dependency_digests(statements[SLSA]) == {app["digest"]}
