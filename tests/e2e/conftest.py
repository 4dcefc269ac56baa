"""The node tier: a real single-node cluster (kubelet, containerd, runc, CNI bridge,
kube-proxy, scheduler) with a local registry, started by ``e2e/cluster up``.

The ``node_cluster`` session fixture brings the node tier up once, or reuses one that is
already up, and leaves a cluster it started running only when ``LAMINA_KEEP_CLUSTER`` is set.

Lamina runs in the cluster as users run it: ``node_operator`` builds the operator image inside
the cluster from the Dockerfile (e2e/lib/build-lamina-image.sh, a BuildKit Job) and installs
the Helm chart with it; a failed test gets the operator pod's log in its report.

The tier runs its own cluster instance (``E2E_DEFAULTS``: state in ``.state/e2e``, device
``lamina-e2e`` with 10.213.0.2, its own ports), so an API-tier session (``.state/cluster``,
``lamina0``, 10.213.0.1) and this one never restart each other's cluster, in one ``make test``
or in two terminals.  Setting ``LAMINA_STATE_DIR`` in the environment opts out: then every
``e2e/cluster`` setting comes from the environment as it is (e.g. to run against the cluster
``e2e/cluster up`` made for ``make run``).  Only one node tier can run on a machine at a time
(the pods' bridge, cgroups and kube-proxy rules are machine-wide).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLUSTER, REPO, KubeCluster, require_setup

START_TIMEOUT = 1800  # a cold machine builds containerd, BuildKit and the images first

E2E_DEFAULTS = {
    "LAMINA_STATE_DIR": str(REPO / ".state" / "e2e"),
    "LAMINA_NETDEV": "lamina-e2e",
    "LAMINA_ADVERTISE_ADDRESS": "10.213.0.2",
    "LAMINA_ETCD_PORT": "23791",
    "LAMINA_ETCD_PEER_PORT": "23801",
    "LAMINA_APISERVER_PORT": "16444",
    "LAMINA_KCM_PORT": "16258",
    "LAMINA_SCHEDULER_PORT": "16260",
}
E2E_ENV = (
    dict(os.environ)
    if os.environ.get("LAMINA_STATE_DIR")
    else {**os.environ, **E2E_DEFAULTS, "KUBECONFIG": ""}
)


def cluster_cmd(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``e2e/cluster ARGS`` for this tier's cluster instance."""
    return subprocess.run(
        [str(CLUSTER), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=E2E_ENV,
    )


def node_tier_up() -> bool:
    status = cluster_cmd("status")
    return status.returncode == 0 and "(node tier): up and healthy" in status.stdout


def state_dir() -> Path:
    for line in cluster_cmd("status").stdout.splitlines():
        if line.startswith("state dir: "):
            return Path(line.removeprefix("state dir: ").strip())
    raise AssertionError("e2e/cluster status printed no state dir")


@dataclass
class NodeCluster(KubeCluster):
    registry: str
    state: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(CLUSTER), "kubectl", *args],
            input=input,
            text=True,
            capture_output=True,
            check=False,
            env=E2E_ENV,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    @property
    def on_kind(self) -> bool:
        """kind (hosts with Docker): the node is a container, its processes and files are not
        the host's, so the tests that look at the node from the host are skipped."""
        return (self.state / "run" / "kind.json").exists()

    def skip_on_kind(self) -> None:
        if self.on_kind:
            pytest.skip("looks at the node from the host: not on kind")

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self.kubectl(*args, input=input)
        assert result.returncode == 0, (
            f"kubectl {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return result.stdout

    def apply_objects(self, namespace: str, *objects: dict[str, Any]) -> None:
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.ok("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))

    def wait(self, namespace: str, what: str, condition: str, timeout: int = 180) -> None:
        result = self.kubectl(
            "wait", "-n", namespace, f"--for={condition}", f"--timeout={timeout}s", what
        )
        if result.returncode != 0:
            describe = self.kubectl("describe", "-n", namespace, what).stdout
            pods = self.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout
            raise AssertionError(
                f"{what} did not reach {condition} in {timeout}s: {result.stderr}\n"
                f"{describe[-3000:]}\n{pods}"
            )

    def container_init_pid(self, namespace: str, pod: str) -> int:
        """The host PID of the pod's first container's init process, from containerd's
        task state (what a committer on the node finds from the containerID)."""
        cid = self.ok(
            "get",
            "pod",
            pod,
            "-n",
            namespace,
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ).strip()
        assert cid.startswith("containerd://"), cid
        task = (
            self.state
            / "containerd"
            / "state"
            / "io.containerd.runtime.v2.task"
            / "k8s.io"
            / cid.removeprefix("containerd://")
        )
        return int((task / "init.pid").read_text())


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[NodeCluster]:
    already_up = node_tier_up()
    if not already_up:
        require_setup("packages", "binaries", "images", "wheels")
        t0 = time.monotonic()
        up = cluster_cmd("up", timeout=START_TIMEOUT)
        assert up.returncode == 0, f"e2e/cluster up failed:\n{up.stdout}\n{up.stderr[-5000:]}"
        print(f"\nnode tier up in {time.monotonic() - t0:.1f}s")
    kubeconfig = cluster_cmd("kubeconfig").stdout.strip()
    registry = cluster_cmd("registry").stdout.strip()
    assert registry, "e2e/cluster registry printed nothing"
    yield NodeCluster(kubeconfig, registry, state_dir())
    if not already_up and not os.environ.get("LAMINA_KEEP_CLUSTER"):
        cluster_cmd("down")


@pytest.fixture
def ns(node_cluster: NodeCluster) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    node_cluster.ok("create", "namespace", name)
    # Pods need the namespace's default ServiceAccount, made asynchronously.
    deadline = time.monotonic() + 30
    while node_cluster.kubectl("get", "sa", "default", "-n", name).returncode != 0:
        assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
        time.sleep(0.2)
    yield name
    node_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def helm_binary() -> str:
    script = (
        f'source {REPO}/e2e/lib/versions.sh && echo "$LAMINA_CACHE/bin/helm-$HELM_VERSION/helm"'
    )
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()


@functools.cache
def lamina_image(registry: str) -> str:
    """The operator image, built in the cluster from the Dockerfile (once per source tree:
    the tag is a hash of it, and a registry that has the tag is not built again)."""
    built = subprocess.run(
        [
            str(REPO / "e2e" / "lib" / "build-lamina-image.sh"),
            "--namespace",
            "lamina-build",
            registry,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env=E2E_ENV,
    )
    assert built.returncode == 0, f"the operator image did not build:\n{built.stderr[-4000:]}"
    return built.stdout.strip().splitlines()[-1]


# Chart values for the operator settings the tests change; any other LAMINA_* goes to extraEnv.
CHART_VALUES = {
    "LAMINA_MAX_CONCURRENT_BUILDS": "maxConcurrentBuilds",
    "LAMINA_COMMITTER_IMAGE": "committerImage",
    "LAMINA_BUILDER_IMAGE": "builderImage",
    "LAMINA_CONTAINERD_ROOT": "containerd.root",
    "LAMINA_CONTAINERD_STATE": "containerd.state",
    "LAMINA_SIGNING_SECRET": "signing.secret",
    "LAMINA_BUILDAH_ENABLED": "buildahEnabled",
}
# The operators installed now, for the failure report: (namespace, deployment).
RUNNING: list[tuple[NodeCluster, str, str]] = []


def operator_log(kube: NodeCluster, namespace: str, deployment: str) -> str:
    logs = kube.kubectl("logs", "-n", namespace, f"deployment/{deployment}", "--tail=400")
    pods = kube.kubectl("get", "pods", "-n", namespace, "-o", "wide")
    # Which image each container ran and how it ended: "Completed" alone says neither.
    containers = kube.kubectl(
        "get",
        "pods",
        "-n",
        namespace,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{range .status.initContainerStatuses[*]}"
        " init:{.image}={.state}{end}{range .status.containerStatuses[*]} {.image}={.state}{end}"
        "{'\\n'}{end}",
    )
    return f"{logs.stdout}{logs.stderr}\n{pods.stdout}\n{containers.stdout}"


def objects_of(kube: NodeCluster, namespace: str) -> str:
    """The test namespace's Lamina objects with their status, for a failure report."""
    found = kube.kubectl(
        "get", "images,containercommits", "-n", namespace, "-o", "yaml", "--ignore-not-found"
    )
    return f"{found.stdout}{found.stderr}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and RUNNING:
        for kube, namespace, deployment in RUNNING:
            report.sections.append(
                (f"operator log ({namespace})", operator_log(kube, namespace, deployment))
            )
        tenant = item.funcargs.get("ns") if isinstance(item, pytest.Function) else None
        if isinstance(tenant, str):
            kube = RUNNING[0][0]
            report.sections.append((f"objects in {tenant}", objects_of(kube, tenant)))
    return report


@contextlib.contextmanager
def node_operator(kube: NodeCluster, log: Path, **settings: str) -> Iterator[str]:
    """Lamina installed by its Helm chart into a namespace of its own, with the image built in
    the cluster and the cluster's registry settings (``e2e/cluster env``); yields that
    namespace.  ``settings`` are LAMINA_* operator settings.  The pod's log is kept in ``log``."""
    if not kube.on_kind:
        # The built-in node's containerd keeps its root and state under the cluster's state
        # dir; the committer's mounts must name them (on kind, the defaults are right).
        runtime = kube.state / "containerd"
        settings = {
            "LAMINA_CONTAINERD_ROOT": str(runtime / "root"),
            "LAMINA_CONTAINERD_STATE": str(runtime / "state"),
            **settings,
        }
    if RUNNING:
        # Two operators at once both reconcile every Image, each with its own settings: a
        # test would watch whichever won (a builder that pulls built what the test wanted to
        # see fail to pull).
        raise AssertionError(f"an operator is still installed in {RUNNING[0][1]}")
    image = lamina_image(kube.registry)
    kube.kubectl("apply", "--server-side", "-f", str(REPO / "charts" / "lamina" / "crds"))
    kube.ok(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=lamina",
    )
    env = {
        line.split("=", 1)[0].removeprefix("export "): shlex.split(line.split("=", 1)[1])[0]
        for line in cluster_cmd("env").stdout.splitlines()
        if line.startswith("export ")
    }
    suffix = uuid.uuid4().hex[:6]
    operator_ns, release = f"lamina-{suffix}", f"lamina-{suffix}"
    values = [
        f"image.repository={image.rsplit(':', 1)[0]}",
        f"image.tag={image.rsplit(':', 1)[1]}",
    ]
    extra_env = []
    for key, value in settings.items():
        if key in CHART_VALUES:
            values.append(f"{CHART_VALUES[key]}={value}")
        else:
            extra_env.append({"name": key, "value": value})
    values_file = log.with_name("values.json")
    values_file.write_text(json.dumps({"extraEnv": extra_env}))
    helm = helm_binary()
    t0 = time.monotonic()
    installed = subprocess.run(
        [helm, "install", release, str(REPO / "charts" / "lamina"), "--kubeconfig", kube.kubeconfig]
        + ["-n", operator_ns, "--create-namespace", "--wait", "--timeout", "3m"]
        + ["-f", str(values_file), "--set-file", f"registryConfig={env['LAMINA_REGISTRY_CONFIG']}"]
        + [arg for value in values for arg in ("--set", value)],
        capture_output=True,
        text=True,
        check=False,
    )
    deployment = release  # the chart's full name: the release's, which contains "lamina"
    if installed.returncode != 0:
        text = operator_log(kube, operator_ns, deployment)
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")
        raise AssertionError(f"helm install failed:\n{installed.stderr}\n{text}")
    print(f"\noperator {image} installed by helm in {time.monotonic() - t0:.1f}s")
    RUNNING.append((kube, operator_ns, deployment))
    try:
        yield operator_ns
    finally:
        text = operator_log(kube, operator_ns, deployment)
        log.write_text(text)
        if "Traceback" in text:
            sys.stderr.write(f"operator log (tail):\n{text[-4000:]}\n")
        subprocess.run(
            # --wait: the operator is gone before the next test's starts (two operators at
            # once would both reconcile every Image).
            [
                helm,
                "uninstall",
                release,
                "-n",
                operator_ns,
                "--kubeconfig",
                kube.kubeconfig,
                "--wait",
                "--timeout",
                "2m",
            ],
            capture_output=True,
            check=False,
        )
        # helm's --wait ends with the Deployment; its pod may still be acting for its grace
        # period.  Until it is gone this operator counts as running (the next install fails).
        selector = ("-l", f"app.kubernetes.io/instance={release}", "-n", operator_ns)
        kube.kubectl("wait", "--for=delete", "pod", *selector, "--timeout=90s")
        if not kube.kubectl("get", "pods", *selector, "-o", "name").stdout.strip():
            RUNNING.remove((kube, operator_ns, deployment))
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")
