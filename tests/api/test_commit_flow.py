"""The ContainerCommit flow on a real API server, up to the commit Job.

The API tier has no kubelet, so the target Pod is bound to a Node object and given a running
container status by hand, as a kubelet would report it.  What is checked is what the operator
does with that: the Job it creates (where, how privileged, with which command), that a
restarted operator adopts it, and the conditions for each failure it can see.  The Job really
running on a node is the node tier's e2e test.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for

pytestmark = pytest.mark.api

DIGEST = "sha256:" + "c" * 64
NODE = "fake-node-1"


@pytest.fixture(scope="module")
def operator_namespace(crds_installed: KubeCluster) -> Iterator[str]:
    name = f"lamina-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", name, check=True)
    yield name
    crds_installed.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def committing_operator(
    crds_installed: KubeCluster,
    operator_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KubeCluster, Path]]:
    log = tmp_path_factory.mktemp("commit-operator") / "operator.log"
    env = {"LAMINA_NAMESPACE": operator_namespace, "LAMINA_COMMITTER_IMAGE": "lamina:test"}

    process = start_operator(
        crds_installed.kubeconfig, log, "--metrics-port=0", "--health-port=0", env=env
    )
    try:
        yield crds_installed, log
    finally:
        stop_operator(process, log)


def running_pod(kube: KubeCluster, namespace: str, name: str = "web") -> None:
    # A Node object for the Pod to be bound to (without it, pod GC removes the Pod).
    kube.kubectl(
        "apply", "-f", "-", input=f"apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}}}\n"
    )
    pod = (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n"
        f"spec: {{nodeName: {NODE}, containers: [{{name: main, image: busybox}}]}}\n"
    )
    wait_for(lambda: kube.apply(pod, namespace).returncode == 0, what="pod created")
    status = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": True,
                    "restartCount": 0,
                    "image": "docker.io/library/busybox:1.36",
                    "imageID": f"docker.io/library/busybox@{DIGEST}",
                    "containerID": "containerd://0123abcd",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        }
    }
    kube.kubectl(
        "patch",
        "pod",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
        check=True,
    )


def commit(name: str, extra_output: str = "") -> str:
    return (
        "apiVersion: lamina.dev/v1alpha1\nkind: ContainerCommit\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n  pod: web\n  message: tools\n"
        "  output: {repository: 10.213.0.1:5000/demo/web, tag: v1, insecure: true"
        f"{extra_output}}}\n"
    )


def reason_of(kube: KubeCluster, name: str, namespace: str) -> str | None:
    ready = condition(kube.get("containercommit", name, namespace), "Ready")
    return ready["reason"] if ready else None


def jobs_in(kube: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    listed = kube.kubectl("get", "jobs", "-n", namespace, "-o", "json", check=True)
    return json.loads(listed.stdout)["items"]  # type: ignore[no-any-return]


def test_commit_job_is_created_on_the_targets_node(
    committing_operator: tuple[KubeCluster, Path], operator_namespace: str, namespace: str
) -> None:
    kube, _ = committing_operator
    running_pod(kube, namespace)
    kube.apply(commit("snap"), namespace)
    wait_for(lambda: reason_of(kube, "snap", namespace) == "Committing", what="Committing")
    status = kube.get("containercommit", "snap", namespace)["status"]  # type: ignore[index]
    assert status["phase"] == "Running"
    assert status["node"] == NODE
    assert status["containerID"] == "containerd://0123abcd"
    assert status["parent"] == {"ref": "docker.io/library/busybox:1.36", "digest": DIGEST}
    assert "startedAt" in status

    (job,) = [
        j
        for j in jobs_in(kube, operator_namespace)
        if j["metadata"]["labels"]["lamina.dev/commit-namespace"] == namespace
    ]
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeName"] == NODE
    assert pod["hostPID"] is True
    container = pod["containers"][0]
    assert container["image"] == "lamina:test"
    assert container["securityContext"]["privileged"] is True
    args = container["args"]
    assert f"--parent=docker.io/library/busybox@{DIGEST}" in args
    assert "--to=10.213.0.1:5000/demo/web:v1" in args


def test_a_lost_job_fails_the_commit(
    committing_operator: tuple[KubeCluster, Path], operator_namespace: str, namespace: str
) -> None:
    kube, _ = committing_operator
    running_pod(kube, namespace)
    kube.apply(commit("lost"), namespace)
    wait_for(lambda: reason_of(kube, "lost", namespace) == "Committing", what="Committing")
    for job in jobs_in(kube, operator_namespace):
        if job["metadata"]["labels"]["lamina.dev/commit-namespace"] == namespace:
            kube.kubectl("delete", "job", job["metadata"]["name"], "-n", operator_namespace)
    wait_for(lambda: reason_of(kube, "lost", namespace) == "CommitJobLost", what="CommitJobLost")
    status = kube.get("containercommit", "lost", namespace)["status"]  # type: ignore[index]
    assert status["phase"] == "Failed"
    assert (
        "was deleted before it finished"
        in condition(  # type: ignore[index]
            {"status": status}, "Stalled"
        )["message"]
    )


@pytest.mark.parametrize(
    ("secret", "reason", "fragment"),
    [
        (None, "PushSecretNotFound", 'push Secret "creds" not found'),
        ("Opaque", "PushSecretInvalid", "must be of type kubernetes.io/dockerconfigjson"),
    ],
)
def test_push_secret_problems_fail_before_any_job(
    committing_operator: tuple[KubeCluster, Path],
    operator_namespace: str,
    namespace: str,
    secret: str | None,
    reason: str,
    fragment: str,
) -> None:
    kube, _ = committing_operator
    running_pod(kube, namespace)
    if secret is not None:
        data = base64.b64encode(b'{"auths": {}}').decode()
        kube.apply(
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\ntype: {secret}\n"
            f"data: {{.dockerconfigjson: {data}}}\n",
            namespace,
        )
    kube.apply(commit("bad-creds", ", pushSecret: creds"), namespace)
    wait_for(lambda: reason_of(kube, "bad-creds", namespace) == reason, what=reason)
    obj = kube.get("containercommit", "bad-creds", namespace)
    assert obj["status"]["phase"] == "Failed"  # type: ignore[index]
    assert fragment in condition(obj, "Stalled")["message"]  # type: ignore[index]
    labels = [j["metadata"]["labels"] for j in jobs_in(kube, operator_namespace)]
    assert all(label["lamina.dev/commit-name"] != "bad-creds" for label in labels)
