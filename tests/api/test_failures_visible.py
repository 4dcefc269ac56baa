"""Failures are visible where users look: conditions, Events, log lines and /metrics.

A real API server and a real ``lamina operator``.  The operator's namespace
(``LAMINA_NAMESPACE``) is deleted after the operator started (it checks the namespace at
start, see test_operator_preflight.py; an administrator can still delete it later): the API
refuses the commit Job, and the ContainerCommit must say so (with the
API's reason and message), an Event must say so (``kubectl describe``), the log must say so
(never a bare ``ApiException()``), and the commit must go on by itself once the namespace
exists.  Then the commit Job's pod is put into ImagePullBackOff (the API tier has no kubelet,
so the pod's status is written as a kubelet would write it) and the commit must show it.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_commit_flow import NODE, commit, jobs_in, reason_of, running_pod
from tests.api.test_tree_reconcile import condition
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for

pytestmark = pytest.mark.api


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Operator:
    def __init__(self, kube: KubeCluster, log: Path, metrics_port: int, home: str) -> None:
        self.kube, self.log, self.metrics_port, self.home = kube, log, metrics_port, home

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as answer:
            return answer.read().decode()  # type: ignore[no-any-return]

    def metric(self, name: str, **labels: str) -> float:
        """The sample's value (0 when absent); labels must match exactly those given."""
        for line in self.metrics().splitlines():
            match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(match.group(3))
        return 0.0


@pytest.fixture(scope="module")
def homeless_operator(
    crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """An operator whose LAMINA_NAMESPACE is gone after it started (re-created by a test)."""
    home = f"lamina-missing-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", home, check=True)
    log = tmp_path_factory.mktemp("homeless-operator") / "operator.log"
    port = free_port()
    env = {"LAMINA_NAMESPACE": home, "LAMINA_COMMITTER_IMAGE": "lamina:test"}
    process = start_operator(
        crds_installed.kubeconfig,
        log,
        f"--metrics-port={port}",
        "--health-port=0",
        "--log-format=json",
        env=env,
    )
    operator = Operator(crds_installed, log, port, home)
    try:
        wait_for(lambda: _up(operator), timeout=30, what="operator /metrics")
        crds_installed.kubectl("delete", "namespace", home, "--wait=true", check=True)
        wait_for(
            lambda: crds_installed.get("namespace", home, "") is None,
            timeout=60,
            what=f"namespace {home} gone",
        )
        yield operator
    finally:
        stop_operator(process, log)
        crds_installed.kubectl("delete", "namespace", home, "--wait=false")


def _up(operator: Operator) -> bool:
    try:
        return "lamina_events_total" in operator.metrics()
    except OSError:
        return False


def events_of(kube: KubeCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = kube.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
        check=True,
    )
    return json.loads(listed.stdout)["items"]  # type: ignore[no-any-return]


def event_with(kube: KubeCluster, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    for event in events_of(kube, namespace, name):
        if event["reason"] == reason:
            return event
    return None


def set_pod_waiting(kube: KubeCluster, namespace: str, pod: str, reason: str, message: str) -> None:
    """Write the pod's status as the kubelet would while its container waits."""
    found = kube.get("pod", pod, namespace)
    assert found is not None, f"pod {namespace}/{pod} is gone"
    container = found["spec"]["containers"][0]
    status = {
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "ready": False,
                    "restartCount": 0,
                    "image": container["image"],
                    "imageID": "",
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
            ],
        }
    }
    kube.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
        check=True,
    )


def test_a_refused_commit_job_is_a_condition_an_event_and_a_log_line_and_recovers(
    homeless_operator: Operator, namespace: str
) -> None:
    operator, kube = homeless_operator, homeless_operator.kube
    running_pod(kube, namespace)
    kube.apply(commit("snap"), namespace)

    # The condition: the step, the API's reason and message, and what to do.
    wait_for(
        lambda: reason_of(kube, "snap", namespace) == "NamespaceNotFound",
        timeout=30,
        what="NamespaceNotFound",
    )
    obj = kube.get("containercommit", "snap", namespace)
    assert obj is not None
    assert obj["status"]["phase"] == "Pending"
    stalled = condition(obj, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert f"could not create the commit Job {operator.home}/" in stalled["message"]
    assert f'namespace "{operator.home}" does not exist' in stalled["message"]
    assert f'404 NotFound: namespaces "{operator.home}" not found' in stalled["message"]

    # The Event, as kubectl describe shows it.
    event = wait_for(
        lambda: event_with(kube, namespace, "snap", "NamespaceNotFound"),
        what="NamespaceNotFound Event",
    )
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "ContainerCommit"
    assert event["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert event["source"]["component"] == "lamina-operator"
    described = kube.kubectl("describe", "containercommit", "snap", "-n", namespace, check=True)
    assert re.search(r"Warning\s+NamespaceNotFound", described.stdout), described.stdout

    # The log line (JSON, one object per line): the API's words, never a bare exception.
    records = [json.loads(line) for line in operator.log.read_text().splitlines()]
    refused = [
        r
        for r in records
        if f'404 NotFound: namespaces "{operator.home}" not found' in r["message"]
        and f"{namespace}/snap: create the commit Job" in r["message"]
    ]
    assert refused, records[-20:]
    assert refused[0]["severity"] == "warn"
    # Through kopf's per-object logger: the record names the object it is about.
    assert refused[0]["object"]["kind"] == "ContainerCommit"
    assert refused[0]["object"]["name"] == "snap"
    assert not any("ApiException()" in r["message"] for r in records)
    assert (
        operator.metric("lamina_reconcile_errors_total", handler="commits", reason="NotFound") >= 1
    )

    # No Job leaked anywhere, and the retries did not flood Events.
    time.sleep(6)  # at least one retry (5 s back-off)
    (only,) = events_of(kube, namespace, "snap")
    assert only["reason"] == "NamespaceNotFound"

    # The namespace appears: the commit goes on by itself (the next retry, within ~10 s).
    kube.kubectl("create", "namespace", operator.home, check=True)
    wait_for(
        lambda: reason_of(kube, "snap", namespace) == "Committing",
        timeout=40,
        what="Committing after the namespace exists",
    )
    (job,) = [
        j
        for j in jobs_in(kube, operator.home)
        if j["metadata"]["labels"]["lamina.dev/commit-name"] == "snap"
        and j["metadata"]["labels"]["lamina.dev/commit-namespace"] == namespace
    ]
    assert job["spec"]["template"]["spec"]["nodeName"] == NODE
    wait_for(lambda: event_with(kube, namespace, "snap", "Committing"), what="Committing Event")


def test_a_commit_pod_that_cannot_pull_shows_it_within_seconds_and_recovers(
    homeless_operator: Operator, namespace: str
) -> None:
    operator, kube = homeless_operator, homeless_operator.kube
    kube.kubectl("create", "namespace", operator.home)  # idempotent: may exist already
    running_pod(kube, namespace)
    kube.apply(commit("pull"), namespace)
    wait_for(
        lambda: reason_of(kube, "pull", namespace) == "Committing", timeout=30, what="Committing"
    )

    def job_pod() -> str | None:
        listed = kube.kubectl(
            "get",
            "pods",
            "-n",
            operator.home,
            "-l",
            f"lamina.dev/commit-name=pull,lamina.dev/commit-namespace={namespace}",
            "-o",
            "json",
            check=True,
        )
        items = json.loads(listed.stdout)["items"]
        return items[0]["metadata"]["name"] if items else None

    pod = wait_for(job_pod, what="the Job controller's pod")
    message = 'Back-off pulling image "lamina:test": not found'
    started = time.monotonic()
    set_pod_waiting(kube, operator.home, pod, "ImagePullBackOff", message)
    wait_for(
        lambda: reason_of(kube, "pull", namespace) == "ImagePullBackOff",
        timeout=10,
        interval=0.2,
        what="ImagePullBackOff on the commit",
    )
    shown_after = time.monotonic() - started
    obj = kube.get("containercommit", "pull", namespace)
    assert obj is not None and obj["status"]["phase"] == "Running"
    reconciling = condition(obj, "Reconciling")
    assert reconciling is not None and reconciling["status"] == "True"
    assert message in reconciling["message"]
    assert f"pod {pod}" in reconciling["message"]
    assert shown_after < 5, f"took {shown_after:.1f}s"
    event = wait_for(
        lambda: event_with(kube, namespace, "pull", "ImagePullBackOff"),
        what="ImagePullBackOff Event",
    )
    assert event["type"] == "Warning"

    # The registry is back: the pod pulls, and the commit says Committing again by itself.
    set_pod_waiting(kube, operator.home, pod, "ContainerCreating", "")
    wait_for(
        lambda: reason_of(kube, "pull", namespace) == "Committing",
        timeout=10,
        what="Committing again",
    )
    # The same problem again is the same Event object with a count, not a second object.
    set_pod_waiting(kube, operator.home, pod, "ImagePullBackOff", message)
    wait_for(
        lambda: (event_with(kube, namespace, "pull", "ImagePullBackOff") or {}).get("count") == 2,
        what="the ImagePullBackOff Event counted twice",
    )
    reasons = [e["reason"] for e in events_of(kube, namespace, "pull")]
    assert reasons.count("ImagePullBackOff") == 1, reasons


def test_metrics_report_the_flow(homeless_operator: Operator, namespace: str) -> None:
    kube = homeless_operator.kube
    failed = homeless_operator.metric("lamina_commits_total", result="failed")
    running_pod(kube, namespace)
    kube.apply(commit("nocreds", ", pushSecret: creds"), namespace)
    wait_for(
        lambda: reason_of(kube, "nocreds", namespace) == "PushSecretNotFound",
        what="PushSecretNotFound",
    )
    wait_for(
        lambda: homeless_operator.metric("lamina_commits_total", result="failed") == failed + 1,
        what="lamina_commits_total{result=failed}",
    )
    assert (
        homeless_operator.metric("lamina_commit_failures_total", reason="PushSecretNotFound") >= 1
    )
    warning = wait_for(
        lambda: event_with(kube, namespace, "nocreds", "PushSecretNotFound"),
        what="PushSecretNotFound Event",
    )
    assert warning["type"] == "Warning"
    text = homeless_operator.metrics()
    assert (
        homeless_operator.metric(
            "lamina_kube_events_written_total", type="Warning", kind="ContainerCommit"
        )
        >= 2
    )
    assert (
        homeless_operator.metric(
            "lamina_kube_events_written_total", type="Normal", kind="ContainerCommit"
        )
        >= 1
    )
    assert homeless_operator.metric("lamina_events_total", kind="containercommits") >= 1
    assert "# TYPE lamina_commit_duration_seconds histogram" in text
    assert "# TYPE lamina_build_queue_length gauge" in text
