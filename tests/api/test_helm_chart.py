"""The Helm chart on a real API server: installs under the "restricted" Pod Security profile,
and its RBAC is enough for the operator to work, and no more.

The operator here runs outside the cluster but with the chart's ServiceAccount token, so every
request it makes is authorised exactly as it would be in its pod.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, KubeCluster, start_operator, stop_operator, wait_for

pytestmark = pytest.mark.api

CHART = REPO / "charts" / "lamina"


@pytest.fixture(scope="module")
def helm() -> str:
    """The harness's helm (built from Go modules and cached like the cluster's binaries)."""
    script = (
        f"source {REPO}/e2e/lib/versions.sh && "
        f"bash {REPO}/e2e/lib/build-binaries.sh helm >&2 && "
        'echo "$LAMINA_CACHE/bin/helm-$HELM_VERSION/helm"'
    )
    path = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(path).is_file(), path
    return path


@pytest.fixture(scope="module")
def release(crds_installed: KubeCluster, helm: str) -> Iterator[tuple[str, str]]:
    namespace = f"lamina-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", namespace, check=True)
    crds_installed.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        check=True,
    )
    env_kubeconfig = ["--kubeconfig", crds_installed.kubeconfig]
    installed = subprocess.run(
        [
            helm,
            "install",
            "lamina",
            str(CHART),
            "-n",
            namespace,
            *env_kubeconfig,
            "--set",
            "image.repository=localhost:5000/lamina",
            "--set",
            "image.tag=dev",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    yield namespace, "lamina"
    subprocess.run([helm, "uninstall", "lamina", "-n", namespace, *env_kubeconfig], check=False)
    crds_installed.kubectl("delete", "namespace", namespace, "--wait=false")


def test_chart_lints(helm: str) -> None:
    result = subprocess.run([helm, "lint", str(CHART)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_pod_is_admitted_under_restricted(
    crds_installed: KubeCluster, release: tuple[str, str]
) -> None:
    namespace, _ = release

    # The ReplicaSet controller creates the Pod only if Pod Security admission accepts it.
    def pods() -> list[dict[str, object]]:
        listed = crds_installed.kubectl("get", "pods", "-n", namespace, "-o", "json", check=True)
        return json.loads(listed.stdout)["items"]  # type: ignore[no-any-return]

    created = wait_for(pods, what="operator pod created by the Deployment")
    container = created[0]["spec"]["containers"][0]  # type: ignore[index]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"] == "localhost:5000/lamina:dev"


def test_rbac_is_least_privilege(crds_installed: KubeCluster, release: tuple[str, str]) -> None:
    namespace, name = release
    account = f"system:serviceaccount:{namespace}:{name}"

    def can(verb: str, resource: str, *extra: str) -> bool:
        result = crds_installed.kubectl(
            "auth", "can-i", verb, resource, "--as", account, "-A", *extra
        )
        return result.stdout.strip() == "yes"

    assert can("watch", "images.lamina.dev")
    assert can("patch", "images.lamina.dev", "--subresource=status")
    assert can("get", "pods")
    # Push Secrets are read by name, never listed; Jobs and Secrets are created only in the
    # operator's own namespace; user objects are never deleted (but for commit TTLs).
    assert can("get", "secrets")
    assert not can("list", "secrets")
    assert not can("create", "secrets")
    assert (
        crds_installed.kubectl(
            "auth", "can-i", "create", "jobs", "--as", account, "-n", namespace
        ).stdout.strip()
        == "yes"
    )
    assert not can("create", "jobs")
    assert not can("delete", "images.lamina.dev")
    assert not can("delete", "layers.lamina.dev")
    assert not can("create", "pods")
    assert not can("update", "containercommits.lamina.dev")
    assert not can("patch", "images.lamina.dev")


def test_operator_works_with_the_charts_service_account(
    crds_installed: KubeCluster, release: tuple[str, str], tmp_path: Path
) -> None:
    namespace, name = release
    token = crds_installed.kubectl("create", "token", name, "-n", namespace, check=True)
    admin = yaml.safe_load(Path(crds_installed.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    kubeconfig = tmp_path / "sa.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "sa", "user": {"token": token.stdout.strip()}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
                "current-context": "c",
            }
        )
    )
    workspace = f"t-{uuid.uuid4().hex[:8]}"
    crds_installed.kubectl("create", "namespace", workspace, check=True)
    log = tmp_path / "operator.log"
    process = start_operator(str(kubeconfig), log, "--metrics-port=0", "--health-port=0")
    try:
        crds_installed.apply(
            "apiVersion: lamina.dev/v1alpha1\nkind: Image\nmetadata: {name: orphan}\n"
            "spec: {parent: {image: nobody}, build: {steps: ['RUN true']},"
            " output: {repository: localhost:5000/x}}\n",
            workspace,
        )
        crds_installed.apply(
            "apiVersion: lamina.dev/v1alpha1\nkind: ContainerCommit\nmetadata: {name: snap}\n"
            "spec: {pod: web, output: {repository: localhost:5000/x}}\n",
            workspace,
        )

        def reason(kind: str, obj: str) -> str | None:
            found = crds_installed.get(kind, obj, workspace) or {}
            for condition in (found.get("status") or {}).get("conditions") or []:
                if condition["type"] == "Ready":
                    return str(condition["reason"])
            return None

        wait_for(lambda: reason("image", "orphan") == "ParentNotFound", what="image status")
        wait_for(lambda: reason("containercommit", "snap") == "PodNotFound", what="commit status")
    finally:
        stop_operator(process, log)
        crds_installed.kubectl("delete", "namespace", workspace, "--wait=false")
    assert "Forbidden" not in log.read_text()
