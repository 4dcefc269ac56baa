"""Signing on a real API server and registry: a rebased Image is signed with the key its
spec names (or the operator's default), and a key that cannot sign is a condition, never a
Ready unsigned image.  cosign itself verifies the result.

As in test_rebase_flow, each child image is made by `lamina snapshot` and its status says it
was built on the parent's first digest; moving the parent makes the operator rebase in the
registry (no Job, so no node is needed) and sign what it pushed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from lamina.oci.cosign_keys import signing_key
from tests.api.build_loop import as_built, build_loop_operator
from tests.api.test_build_planning import push
from tests.api.test_commit_flow import (
    commit,
    committing_operator,
    jobs_in,
    operator_namespace,
    reason_of,
    running_pod,
)
from tests.api.test_helm_chart import CHART, IMAGE, can, helm, restricted_namespace, run_helm
from tests.conftest import KubeCluster, wait_for
from tests.cosign_tool import generate_key_pair, verify
from tests.integration.conftest import Registry, lamina_snapshot

pytestmark = pytest.mark.api
# Fixtures shared with test_commit_flow and test_helm_chart.
__all__ = ["committing_operator", "helm", "operator_namespace"]
PASSWORD = "api-tier-pw"


def secret(kube: KubeCluster, namespace: str, name: str, **files: Path | str) -> None:
    args = [
        f"--from-file={key}={value}" if isinstance(value, Path) else f"--from-literal={key}={value}"
        for key, value in files.items()
    ]
    kube.kubectl("create", "secret", "generic", name, "-n", namespace, *args, check=True)


def child(
    kube: KubeCluster,
    registry: Registry,
    namespace: str,
    name: str,
    parent_ref: str,
    first: str,
    tmp_path: Path,
    sign: dict[str, Any] | None,
) -> tuple[str, str]:
    upper = tmp_path / f"upper-{name}"
    upper.mkdir()
    (upper / "own-file").write_text(name)
    repository = f"{registry.address}/signing/{uuid.uuid4().hex[:8]}"
    made = lamina_snapshot(
        "--upper", str(upper), "--parent", parent_ref, "--to", f"{repository}:latest", "--insecure"
    )
    assert made.returncode == 0, made.stderr
    digest = json.loads(made.stdout)["digest"]
    output: dict[str, Any] = {"repository": repository, "insecure": True}
    if sign is not None:
        output["sign"] = sign
    kube.apply(
        json.dumps(
            {
                "apiVersion": "lamina.dev/v1alpha1",
                "kind": "Image",
                "metadata": {"name": name},
                "spec": {
                    "parent": {"ref": parent_ref, "pollInterval": "1s"},
                    "build": {"steps": ["RUN echo never-run"]},
                    "output": output,
                    "rebuild": {"strategy": "Rebase"},
                },
            }
        ),
        namespace,
    )
    as_built(
        kube,
        name,
        namespace,
        {"digest": digest, "builtFrom": {"generation": 1, "parentDigest": first}},
    )
    return repository, digest


def condition(kube: KubeCluster, name: str, namespace: str, kind: str) -> dict[str, Any]:
    status = (kube.get("image", name, namespace) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def test_rebased_images_are_signed_and_unusable_keys_are_conditions(  # noqa: PLR0915
    crds_installed: KubeCluster, registry: Registry, namespace: str, tmp_path: Path
) -> None:
    kube = crds_installed
    key, pub = generate_key_pair(tmp_path / "tenant", PASSWORD)
    default_key, default_pub = generate_key_pair(tmp_path / "default", "default-pw")
    secret(
        kube,
        namespace,
        "tenant-key",
        **{"cosign.key": key, "cosign.password": PASSWORD, "cosign.pub": pub},
    )
    secret(
        kube, namespace, "locked-key", **{"cosign.key": key, "cosign.password": "not-the-pw-7731"}
    )
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    secret(kube, namespace, "garbage-key", **{"cosign.key": garbage})

    parents = f"parents/{uuid.uuid4().hex[:8]}"
    first = push(registry, parents, "1", "one", tmp_path)
    parent_ref = registry.ref(parents, "1")
    made = {
        name: child(kube, registry, namespace, name, parent_ref, first, tmp_path, sign)
        for name, sign in {
            "signed": {"secretRef": {"name": "tenant-key"}},
            "by-default": None,
            "no-secret": {"secretRef": {"name": "absent"}},
            "locked": {"secretRef": {"name": "locked-key"}},
            "garbage": {"secretRef": {"name": "garbage-key"}},
        }.items()
    }

    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", operator_ns, check=True)
    secret(
        kube,
        operator_ns,
        "lamina-signing",
        **{"cosign.key": default_key, "cosign.password": "default-pw"},
    )
    try:
        with build_loop_operator(
            kube,
            registry,
            tmp_path,
            operator_ns,
            LAMINA_SIGNING_SECRET="lamina-signing",
        ):
            for name in made:
                wait_for(
                    lambda name=name: (
                        condition(kube, name, namespace, "Ready").get("reason") == "UpToDate"
                    ),
                    what=f"{name} up to date on the first parent",
                )
            moved = push(registry, parents, "1", "two", tmp_path)

            def settled(name: str) -> dict[str, Any] | None:
                status = (kube.get("image", name, namespace) or {}).get("status") or {}
                if status.get("digest") != made[name][1]:
                    return status  # rebased and recorded
                if (status.get("build") or {}).get("phase") == "Failed":
                    return status
                return None

            statuses = {
                name: wait_for(lambda name=name: settled(name), timeout=90, what=f"{name} settled")
                for name in made
            }
    finally:
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")

    # Signed with the tenant's key: status says so, cosign agrees, another key does not.
    repository, _ = made["signed"]
    status = statuses["signed"]
    assert status["builtFrom"]["parentDigest"] == moved
    assert condition(kube, "signed", namespace, "Ready")["status"] == "True"
    signature = status["signature"]
    tenant = signing_key(key.read_bytes(), PASSWORD.encode())
    # The tags' target (the index holding the rebase's provenance) is signed; so is the image.
    assert signature["signedDigest"] == status.get("indexDigest", status["digest"])
    assert signature["keyFingerprint"] == tenant.fingerprint
    assert signature["secret"] == "tenant-key"
    assert signature["tag"] == signature["signedDigest"].replace(":", "-") + ".sig"
    for digest in {status["digest"], signature["signedDigest"]}:
        ok = verify(f"{repository}@{digest}", pub)
        assert ok.returncode == 0, ok.stderr
        assert verify(f"{repository}@{digest}", default_pub).returncode != 0

    # With no spec.output.sign: the operator's default key.
    repository, _ = made["by-default"]
    status = statuses["by-default"]
    assert status["signature"]["secret"] == "operator-default"
    assert verify(f"{repository}@{status['digest']}", default_pub).returncode == 0
    assert verify(f"{repository}@{status['digest']}", pub).returncode != 0

    # A key that cannot sign: Stalled with its reason, the digest stays, nothing signed.
    for name, reason, said in (
        (
            "no-secret",
            "SigningSecretNotFound",
            f'signing Secret "absent" in namespace "{namespace}" not found',
        ),
        ("locked", "SigningPasswordIncorrect", "does not decrypt with the password"),
        ("garbage", "SigningKeyInvalid", "is not a valid private key"),
    ):
        status = statuses[name]
        assert status["digest"] == made[name][1], name
        assert "signature" not in status, name
        assert condition(kube, name, namespace, "Ready")["status"] == "False", name
        stalled = condition(kube, name, namespace, "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", reason), (name, stalled)
        assert said in stalled["message"], (name, stalled["message"])
        assert PASSWORD not in stalled["message"] and "not-the-pw-7731" not in stalled["message"]

    # `lamina verify IMAGE` with the key from the Secret spec.output.sign names.
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig}
    shown = subprocess.run(
        [sys.executable, "-m", "lamina.cli.main", "verify", "signed", "-n", namespace],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"Verified OK: {made['signed'][0]}@{statuses['signed']['digest']}" in shown.stdout
    unsigned = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina.cli.main",
            "verify",
            "no-secret",
            "-n",
            namespace,
            "--key",
            str(pub),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert unsigned.returncode == 1
    assert "has no signature" in unsigned.stdout


@pytest.mark.parametrize(
    ("secret_name", "reason", "fragment"),
    [
        ("absent", "SigningSecretNotFound", 'signing Secret "absent"'),
        ("locked-key", "SigningPasswordIncorrect", "does not decrypt with the password"),
    ],
)
def test_a_commit_whose_key_cannot_sign_fails_before_any_job(
    committing_operator: tuple[KubeCluster, Path],
    operator_namespace: str,
    namespace: str,
    tmp_path: Path,
    secret_name: str,
    reason: str,
    fragment: str,
) -> None:
    kube, _ = committing_operator
    key, _ = generate_key_pair(tmp_path / "k", PASSWORD)
    secret(kube, namespace, "locked-key", **{"cosign.key": key, "cosign.password": "nope-1234"})
    running_pod(kube, namespace)
    kube.apply(
        commit("signed-commit", f", sign: {{secretRef: {{name: {secret_name}}}}}"), namespace
    )
    wait_for(lambda: reason_of(kube, "signed-commit", namespace) == reason, what=reason)
    found = kube.get("containercommit", "signed-commit", namespace) or {}
    assert found["status"]["phase"] == "Failed"
    stalled = next(c for c in found["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and fragment in stalled["message"]
    assert "nope-1234" not in stalled["message"]
    labels = [j["metadata"]["labels"] for j in jobs_in(kube, operator_namespace)]
    assert all(label["lamina.dev/commit-name"] != "signed-commit" for label in labels)


def test_the_chart_lets_the_operator_read_its_default_signing_secret_only(
    crds_installed: KubeCluster, helm: str
) -> None:
    """With watchNamespaces set (so no cluster-wide Secret read), signing.secret grants a get
    of that one Secret in the operator's namespace, and nothing else there."""
    kube = crds_installed
    namespace = restricted_namespace(kube)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", tenant, check=True)
    release = f"signing-{uuid.uuid4().hex[:4]}"
    installed = run_helm(
        helm, kube, "install", release, str(CHART), "-n", namespace, *IMAGE,
        "--set", f"watchNamespaces={{{tenant}}}", "--set", "signing.secret=lamina-signing",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    try:
        account = f"system:serviceaccount:{namespace}:{release}-lamina"
        here = ("-n", namespace)
        assert can(kube, account, "get", "secret/lamina-signing", *here)
        assert not can(kube, account, "get", "secret/some-other-secret", *here)
        assert not can(kube, account, "list", "secrets", *here)
        assert not can(kube, account, "get", "secret/lamina-signing", "-n", "default")
        assert can(kube, account, "get", "secret/team-key", "-n", tenant)  # output.sign's
        deployment = kube.kubectl(
            "get", "deployment", "-n", namespace, "-o", "json", check=True
        ).stdout
        env = json.loads(deployment)["items"][0]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "LAMINA_SIGNING_SECRET", "value": "lamina-signing"} in env
    finally:
        run_helm(helm, kube, "uninstall", release, "-n", namespace)
        kube.kubectl("delete", "namespace", namespace, tenant, "--wait=false")
