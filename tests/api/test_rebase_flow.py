"""Rebase on a real API server and registry: a moved parent re-points the Image, no build.

The child image is made by `lamina snapshot` (the parent's layers plus one of its own), and
its Image's status says it was built on the parent's first digest, as a finished build would
have left it.  Then the parent's tag moves; the operator must rebase: a new manifest with the
new parent's layers under the child's own, pushed without any Job.  skopeo checks the result.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.api.build_loop import as_built, build_loop_operator
from tests.api.test_build_planning import push
from tests.conftest import KubeCluster, wait_for
from tests.integration.conftest import Registry, lamina_snapshot

pytestmark = pytest.mark.api


def inspect(ref: str, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_moved_parent_is_rebased_without_a_build(
    crds_installed: KubeCluster, registry: Registry, namespace: str, tmp_path: Path
) -> None:
    kube = crds_installed
    parents = f"parents/{uuid.uuid4().hex[:8]}"
    first = push(registry, parents, "1", "one", tmp_path)
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "own-file").write_text("mine")
    child_repo = f"{registry.address}/children/{uuid.uuid4().hex[:8]}"
    made = lamina_snapshot(
        "--upper",
        str(upper),
        "--parent",
        registry.ref(parents, "1"),
        "--to",
        f"{child_repo}:latest",
        "--insecure",
    )
    assert made.returncode == 0, made.stderr
    child_digest = json.loads(made.stdout)["digest"]
    own_layer = json.loads(made.stdout)["layer"]["digest"]

    image = {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": "Image",
        "metadata": {"name": "child"},
        "spec": {
            "parent": {"ref": registry.ref(parents, "1"), "pollInterval": "1s"},
            "build": {"steps": ["RUN echo never-run"]},
            "output": {"repository": child_repo, "insecure": True},
            "rebuild": {"strategy": "Rebase"},
        },
    }
    kube.apply(json.dumps(image), namespace)
    as_built(
        kube,
        "child",
        namespace,
        {"digest": child_digest, "builtFrom": {"generation": 1, "parentDigest": first}},
    )
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", operator_ns, check=True)
    try:
        # Only this test's namespace: an earlier test's Image whose namespace is still being
        # deleted would otherwise get a build Job here, and "no Job ran" would be false.
        with build_loop_operator(
            kube, registry, tmp_path, operator_ns, LAMINA_NAMESPACES=namespace
        ):

            def ready_reason() -> str | None:
                for c in (kube.get("image", "child", namespace) or {}).get("status", {}).get(
                    "conditions"
                ) or []:
                    if c["type"] == "Ready":
                        return str(c["reason"])
                return None

            wait_for(
                lambda: ready_reason() == "UpToDate", what="child up to date on the first parent"
            )
            moved = push(registry, parents, "1", "two", tmp_path)

            def rebased() -> dict[str, object] | None:
                status = (kube.get("image", "child", namespace) or {}).get("status") or {}
                return status if status.get("digest") not in (None, child_digest) else None

            status = wait_for(rebased, timeout=60, what="child rebased")
    finally:
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")

    assert status["builtFrom"] == {"generation": 1, "parentDigest": moved}
    build = status["build"]
    assert "job" not in build  # no Job ran
    assert build["message"] == f"rebased onto {moved} without a build"
    assert build["reasons"] == [f"ParentChanged {first} -> {moved}"]
    jobs = kube.kubectl("get", "jobs", "-n", operator_ns, "-o", "json")
    assert jobs.returncode != 0 or json.loads(jobs.stdout)["items"] == []

    new_parent = inspect(registry.ref(parents, "1"))
    result = inspect(f"{child_repo}@{status['digest']}")
    # The rebased manifest names its new base, as a build on it would.
    annotations = inspect(f"{child_repo}@{status['digest']}", "--raw")["annotations"]
    assert annotations["org.opencontainers.image.base.digest"] == moved  # type: ignore[index]
    assert annotations["org.opencontainers.image.base.name"] == registry.ref(parents, "1")  # type: ignore[index]
    assert result["Layers"] == [*new_parent["Layers"], own_layer]
    config = inspect(f"{child_repo}@{status['digest']}", "--config")
    parent_config = inspect(registry.ref(parents, "1"), "--config")
    assert config["rootfs"]["diff_ids"][:-1] == parent_config["rootfs"]["diff_ids"]  # type: ignore[index]
    assert [entry["own"] for entry in status["layers"]] == [False] * len(new_parent["Layers"]) + [
        True
    ]
    check_rebase_provenance(registry, child_repo, status, moved, child_digest)


def check_rebase_provenance(
    registry: Registry, child_repo: str, status: dict[str, Any], moved: str, previous: str
) -> None:
    """The tag names an index of the rebased image and the rebase's own provenance (read
    with skopeo and plain HTTP, not Lamina's client): no Job ran, so no build's statement."""
    index: dict[str, Any] = inspect(f"{child_repo}:latest", "--raw")
    assert status["indexDigest"] == registry_digest(f"{child_repo}:latest")
    entries = index["manifests"]
    assert [e["digest"] for e in entries if "annotations" not in e] == [status["digest"]]
    (attestation,) = [e for e in entries if "annotations" in e]
    assert attestation["annotations"] == {
        "vnd.docker.reference.digest": status["digest"],
        "vnd.docker.reference.type": "attestation-manifest",
    }
    manifest: dict[str, Any] = inspect(f"{child_repo}@{attestation['digest']}", "--raw")
    (layer,) = manifest["layers"]
    assert layer["annotations"] == {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"}
    repository = child_repo.removeprefix(registry.address + "/")
    with urllib.request.urlopen(
        f"http://{registry.address}/v2/{repository}/blobs/{layer['digest']}", timeout=30
    ) as reply:
        data = reply.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
    statement = json.loads(data)
    assert statement["subject"][0]["digest"] == {"sha256": status["digest"][7:]}
    predicate = statement["predicate"]
    assert predicate["runDetails"]["builder"]["id"] == "https://lamina.dev/builders/rebase"
    assert {
        d["name"]: "sha256:" + d["digest"]["sha256"]
        for d in predicate["buildDefinition"]["resolvedDependencies"]
    } == {"parent": moved, "previous": previous}
    assert status["attestations"] == [
        {
            "predicateType": "https://slsa.dev/provenance/v1",
            "digest": layer["digest"],
            "manifestDigest": attestation["digest"],
            "subject": status["digest"],
        }
    ]


def registry_digest(ref: str) -> str:
    data = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
        capture_output=True,
        check=True,
    ).stdout
    return "sha256:" + hashlib.sha256(data).hexdigest()
