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
  provenance is Lamina's rebase's, naming the new parent and the previous image; then the
  operator's scan Job (syft, ``LAMINA_SBOM_SCANNER_IMAGE``) gives the rebased image an SPDX
  SBOM of its own, in the same attestation manifest, whose packages are the NEW parent's (a
  package the old parent had at 1.0.0 and the new one at 2.0.0), signed with the app's key:
  ``cosign verify-attestation --type spdxjson`` verifies it.
- A committed image's provenance names the pod, the container, the image digest it ran and the
  ContainerCommit, and says it is not reproducible; it gets its SBOM the same way.
- ``status.attestations`` lists what the registry holds, digest for digest, and the ``SBOM``
  condition says ``Scanned``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.cosign_tool import cosign, generate_key_pair
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
PROBE = "/usr/lib/python3/dist-packages"


def probe_step(version: str) -> str:
    """A RUN step installing a Python package's metadata (what syft catalogues in an image
    and in a directory alike) at ``version``."""
    metadata = f"{PROBE}/lamina_probe-{version}.dist-info"
    return (
        f"RUN mkdir -p {metadata} && printf "
        f"'Metadata-Version: 2.1\\nName: lamina-probe\\nVersion: {version}\\n' "
        f"> {metadata}/METADATA"
    )


def with_sbom(kube: NodeCluster, ns: str, name: str, digest: str) -> dict[str, Any]:
    """The Image's status once an SPDX statement about ``digest`` is recorded (and its SBOM
    condition says so); a failed scan fails at once with its message."""

    def attached() -> dict[str, Any] | None:
        found = status(kube, ns, name)
        condition = {c["type"]: c for c in found.get("conditions") or []}.get("SBOM") or {}
        if condition.get("reason") == "ScanFailed":
            raise AssertionError(f"{name}: {condition['message']}")
        recorded = [
            entry
            for entry in found.get("attestations") or []
            if entry["predicateType"] == SPDX and entry["subject"] == digest
        ]
        return found if recorded and condition.get("reason") == "Scanned" else None

    result: dict[str, Any] = wait_for(attached, timeout=300, what=f"{name}'s SBOM attached")
    ready_condition = {c["type"]: c for c in result["conditions"]}["Ready"]
    assert ready_condition["status"] == "True", ready_condition  # a scan never unreadies it
    assert result["digest"] == digest  # the image is the same: only its index moved
    return result


def packages(sbom: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["name"], p.get("versionInfo", "")) for p in sbom["predicate"]["packages"]}


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
    attest_operator: NodeCluster, ns: str, tmp_path: Path
) -> None:
    kube = attest_operator
    _, public_key = generate_key_pair(tmp_path / "key", "app-pw")
    kube.ok(
        "create", "secret", "generic", "app-signing", "-n", ns,
        f"--from-file=cosign.key={tmp_path / 'key' / 'cosign.key'}",
        "--from-literal=cosign.password=app-pw",
    )  # fmt: skip
    busybox = {"ref": BUSYBOX, "pollInterval": "1h"}
    app = image("app", {"image": "base"}, ["RUN echo two > /two"], kube.registry, ns)
    app["spec"]["build"]["args"] = {"GREETING": "hello attestations"}
    app["spec"]["rebuild"] = {"strategy": "Rebase"}
    app["spec"]["output"]["sign"] = {"secretRef": {"name": "app-signing"}}
    base = image("base", busybox, [probe_step("1.0.0")], kube.registry, ns)
    kube.apply_objects(ns, base, app)
    base = wait_for(lambda: ready(kube, ns, "base"), timeout=600, what="base built")
    built = wait_for(lambda: ready(kube, ns, "app"), timeout=600, what="app built")
    check_build(kube, ns, base, built)
    rebased = check_rebase(kube, ns, base, built, public_key)
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
    kube: NodeCluster, ns: str, base: dict[str, Any], app: dict[str, Any], public_key: Path
) -> dict[str, Any]:
    """base moves; app is rebased: the build's attestations dropped, the rebase's own, then
    an SBOM of the rebased image (the new parent's packages), signed."""
    # The BuildKit build's SBOM (made by BuildKit's generator) lists the old parent's package.
    _, built_statements, _ = attestations(
        kube.registry, f"{kube.registry}/e2e/{ns}/app", "latest", app["digest"]
    )
    assert ("lamina-probe", "1.0.0") in packages(built_statements[SPDX])
    kube.ok(
        "patch",
        "image",
        "base",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"build": {"steps": [probe_step("2.0.0")]}}}),
    )

    def moved(name: str, old: str) -> dict[str, Any] | None:
        found = ready(kube, ns, name)
        return found if found is not None and found["digest"] != old else None

    new_base = wait_for(lambda: moved("base", base["digest"]), timeout=600, what="base rebuilt")
    rebased: dict[str, Any] = wait_for(
        lambda: moved("app", app["digest"]), timeout=300, what="app rebased"
    )
    assert "rebased onto" in rebased["build"]["message"], rebased["build"]
    # The rebase's own provenance is in the index at once; the build's SBOM never is (its
    # packages were the old parent's): the SBOM that follows is the rebased image's own.
    assert SLSA in {entry["predicateType"] for entry in rebased["attestations"]}
    assert all(entry["subject"] == rebased["digest"] for entry in rebased["attestations"]), (
        "a rebase carries the build's SBOM or provenance"
    )
    rebased = with_sbom(kube, ns, "app", rebased["digest"])
    index_digest, statements, recorded = attestations(
        kube.registry, f"{kube.registry}/e2e/{ns}/app", "latest", rebased["digest"]
    )
    assert set(statements) == {SLSA, SPDX}
    assert rebased["indexDigest"] == index_digest
    assert key(rebased["attestations"]) == key(recorded)
    found = packages(statements[SPDX])
    assert ("lamina-probe", "2.0.0") in found and ("lamina-probe", "1.0.0") not in found, found
    assert statements[SPDX]["predicate"]["spdxVersion"].startswith("SPDX-2.")
    # Signed with the app's key, the new index and the SBOM statement: cosign verifies both.
    assert rebased["signature"]["signedDigest"] == index_digest
    repository = f"{kube.registry}/e2e/{ns}/app"
    checked = cosign(
        "verify-attestation", "--key", str(public_key), "--type", "spdxjson",
        "--insecure-ignore-tlog=true", "--allow-http-registry=true",
        "--allow-insecure-registry=true", f"{repository}@{rebased['digest']}",
        cwd=public_key.parent,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    envelopes = [json.loads(line) for line in checked.stdout.splitlines() if line.strip()]
    verified = [json.loads(base64.b64decode(e["payload"])) for e in envelopes]
    assert any(
        v["predicateType"] == SPDX
        and {s["digest"]["sha256"] for s in v["subject"]} == {rebased["digest"][7:]}
        and ("lamina-probe", "2.0.0")
        in {(p["name"], p.get("versionInfo", "")) for p in v["predicate"]["packages"]}
        for v in verified
    ), "cosign verified no SBOM of the rebased image"
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
    # The commit records what it pushed (its provenance); the committed Image then gets its
    # SBOM beside it, and the tag moves to that index.
    assert [e["predicateType"] for e in commit["attestations"]] == [SLSA]
    snap = with_sbom(kube, ns, "snap", commit["image"]["digest"])
    index_digest, statements, recorded = attestations(
        kube.registry, commit_repo, "v1", commit["image"]["digest"]
    )
    assert set(statements) == {SLSA, SPDX}
    assert snap["indexDigest"] == index_digest
    assert key(snap["attestations"]) == key(recorded)
    assert set(key(commit["attestations"])) < set(key(recorded))
    # The committed image is app's (rebased on the new base) plus the container's layer.
    assert ("lamina-probe", "2.0.0") in packages(statements[SPDX])
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
