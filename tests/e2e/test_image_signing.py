"""Signed builds end to end on the node tier, verified by cosign itself.

The operator is installed by its Helm chart with ``signing.secret`` (its default key, a
Secret in its namespace that its Role may read by that name only).  A tenant's Image names its
own key (a Secret made from ``cosign generate-key-pair``); another Image names none and gets
the default; a third names a Secret that does not exist and is refused before any build Job.
cosign verifies each pushed digest against the right public key and refuses the other, and
``lamina verify`` says so both ways.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.cosign_tool import cosign, generate_key_pair, verify
from tests.e2e.conftest import NodeCluster, node_operator
from tests.e2e.test_image_builds import image, ready, status

pytestmark = pytest.mark.e2e


def create_key_secret(kube: NodeCluster, ns: str, name: str, key_dir: Path, pw: str) -> None:
    kube.ok(
        "create", "secret", "generic", name, "-n", ns,
        f"--from-file=cosign.key={key_dir / 'cosign.key'}",
        f"--from-file=cosign.pub={key_dir / 'cosign.pub'}",
        f"--from-literal=cosign.password={pw}",
    )  # fmt: skip


def lamina_verify(kube: NodeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina.cli.main", "verify", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "KUBECONFIG": kube.kubeconfig},
    )


def stalled(kube: NodeCluster, ns: str, name: str) -> dict[str, Any] | None:
    conditions = {c["type"]: c for c in status(kube, ns, name).get("conditions") or []}
    found = conditions.get("Stalled", {})
    return found if found.get("status") == "True" else None


def test_signed_images_verify_with_cosign_and_other_keys_do_not(
    node_cluster: NodeCluster, ns: str, tmp_path: Path
) -> None:
    kube = node_cluster
    tenant_dir, default_dir = tmp_path / "tenant", tmp_path / "default"
    _, tenant_pub = generate_key_pair(tenant_dir, "tenant-pw")
    _, default_pub = generate_key_pair(default_dir, "default-pw")
    create_key_secret(kube, ns, "team-signing", tenant_dir, "tenant-pw")
    busybox = {"ref": "docker.io/library/busybox:latest", "pollInterval": "1h"}
    registry = kube.registry
    with node_operator(
        kube,
        tmp_path / "operator.log",
        LAMINA_SIGNING_SECRET="lamina-signing",
        LAMINA_BUILD_POLL_SECONDS="2",
    ) as operator_ns:
        create_key_secret(kube, operator_ns, "lamina-signing", default_dir, "default-pw")
        signed_image = image("signed", busybox, ["RUN echo signed > /s"], registry, ns)
        signed_image["spec"]["output"]["sign"] = {"secretRef": {"name": "team-signing"}}
        no_key_image = image("no-key", busybox, ["RUN echo never > /n"], registry, ns)
        no_key_image["spec"]["output"]["sign"] = {"secretRef": {"name": "absent"}}
        kube.apply_objects(
            ns,
            signed_image,
            image("by-default", busybox, ["RUN echo default > /d"], registry, ns),
            no_key_image,
        )
        refused = wait_for(lambda: stalled(kube, ns, "no-key"), timeout=120, what="no-key stalled")
        built = {
            name: wait_for(lambda n=name: ready(kube, ns, n), timeout=600, what=f"{name} built")
            for name in ("signed", "by-default")
        }

    assert refused["reason"] == "SigningSecretNotFound"
    assert f'signing Secret "absent" in namespace "{ns}" not found' in refused["message"]
    no_key = status(kube, ns, "no-key")
    assert "digest" not in no_key and "signature" not in no_key
    job = (no_key.get("build") or {}).get("job")
    assert job and kube.kubectl("get", "job", job, "-n", operator_ns).returncode != 0

    signed = built["signed"]
    assert signed["signature"]["secret"] == "team-signing"
    # The tags point at the index (the image and its attestations): that is what is signed,
    # and the image manifest inside it too, so either name verifies.
    assert signed["signature"]["signedDigest"] == signed["indexDigest"]
    repository = signed["imageRef"].split("@")[0]
    for ref in (signed["imageRef"], f"{repository}@{signed['indexDigest']}"):
        ok = verify(ref, tenant_pub)
        assert ok.returncode == 0, ok.stderr
        assert verify(ref, default_pub).returncode != 0
    # Attestations the build pushed (BuildKit's attestation manifests) are signed too.
    assert signed["signature"].get("attestations"), signed["signature"]
    for attested in signed["signature"]["attestations"]:
        checked = cosign(
            "verify-attestation", "--key", str(tenant_pub), "--type", "slsaprovenance1",
            "--insecure-ignore-tlog=true", "--allow-http-registry=true",
            "--allow-insecure-registry=true", f"{repository}@{attested['subjectDigest']}",
            cwd=tmp_path,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr

    default = built["by-default"]
    assert default["signature"]["secret"] == "operator-default"
    assert verify(default["imageRef"], default_pub).returncode == 0
    assert verify(default["imageRef"], tenant_pub).returncode != 0

    shown = lamina_verify(kube, "signed", "-n", ns)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"Verified OK: {signed['imageRef']}" in shown.stdout
    other = lamina_verify(kube, default["imageRef"], "--key", str(tenant_pub), "--insecure")
    assert other.returncode == 1
    assert "NOT VERIFIED: none of the 1 signature(s)" in other.stdout
