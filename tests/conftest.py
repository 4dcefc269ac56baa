"""Fixtures shared by the tiers.

The API tier runs against a real etcd + kube-apiserver + kube-controller-manager started by
``e2e/cluster up --tier api`` (once per session; a cluster that is already up is reused and
left running).  Tests talk to it with the real kubectl, the way users do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "e2e" / "cluster"
SETUP = REPO / "e2e" / "setup"


def require_setup(*steps: str) -> None:
    """Fail fast when set-up has not been done: tests never build (their timeouts would cover
    a cold Go build), ``e2e/setup`` does, before anything is timed."""
    check = subprocess.run(
        [str(SETUP), "--check", *steps], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        pytest.fail(f"run e2e/setup first (make test does): {check.stderr.strip()}", False)


@dataclass
class KubeCluster:
    kubeconfig: str

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(CLUSTER), "kubectl", *args],
            input=input,
            text=True,
            capture_output=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def apply(self, manifest: str, namespace: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True, check=False)
    already_up = status.returncode == 0
    # Only the api tier is reused as it is: a running node tier (which has a scheduler and a
    # node) is switched to the api tier in place (etcd and its data stay).
    if not (already_up and "(api tier): up and healthy" in status.stdout):
        require_setup("binaries")
        subprocess.run([str(CLUSTER), "up", "--tier", "api"], check=True)
    kubeconfig = subprocess.run(
        [str(CLUSTER), "kubeconfig"], capture_output=True, text=True, check=True
    ).stdout.strip()
    yield KubeCluster(kubeconfig)
    if not already_up and not os.environ.get("LAMINA_KEEP_CLUSTER"):
        subprocess.run([str(CLUSTER), "down"], check=False)


def wait_for(
    probe: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.3, what: str = ""
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}: last={last!r}")


@pytest.fixture(scope="session")
def crds_installed(kube_cluster: KubeCluster) -> KubeCluster:
    kube_cluster.kubectl("apply", "-f", str(REPO / "crds"), check=True)
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=lamina",
        check=True,
    )
    return kube_cluster


def start_operator(
    kubeconfig: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``lamina operator`` as a user runs it, logging to ``log``."""
    env = {**os.environ, "KUBECONFIG": kubeconfig, **(env or {})}
    with log.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "lamina.cli.main", "operator", "--verbose", *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def stop_operator(process: subprocess.Popen[bytes], log: Path) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    text = log.read_text()
    if "Traceback" in text or process.returncode not in (0, -15):
        sys.stderr.write("operator log (tail):\n" + "\n".join(text.splitlines()[-40:]) + "\n")


# Module scope: a test module that runs its own operator (e.g. under the chart's RBAC) must
# not share the cluster with this one.
@pytest.fixture(scope="module")
def operator(
    crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    """``lamina operator`` running against the cluster with admin credentials, with its own
    operator namespace (it checks at start that the namespace exists)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", operator_ns, check=True)
    process = start_operator(
        crds_installed.kubeconfig,
        log,
        "--metrics-port=0",
        "--health-port=0",
        env={"LAMINA_NAMESPACE": operator_ns},
    )
    try:
        yield crds_installed
    finally:
        stop_operator(process, log)
        crds_installed.kubectl("delete", "namespace", operator_ns, "--wait=false")


@pytest.fixture
def namespace(crds_installed: KubeCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    crds_installed.kubectl("create", "namespace", name, check=True)
    yield name
    crds_installed.kubectl("delete", "namespace", name, "--wait=false")


def service_account_kubeconfig(kube: KubeCluster, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount."""
    token = kube.kubectl("create", "token", name, "-n", namespace, check=True)
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
                "users": [{"name": "sa", "user": {"token": token.stdout.strip()}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
                "current-context": "c",
            }
        )
    )
    return path
