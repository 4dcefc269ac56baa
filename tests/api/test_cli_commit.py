"""``lamina commit`` (and ``kubectl lamina``) against a real API server and operator.

The API tier has no kubelet, so a commit cannot reach its image here (the node tier's e2e
test does that); what is checked is what a user sees while it cannot: the progress lines as
the ContainerCommit's status changes, the exit status and message on a failure and on a
timeout, and that neither a timeout nor Ctrl-C stops the commit in the cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.api.test_commit_flow import running_pod
from tests.conftest import CLUSTER, KubeCluster, wait_for

pytestmark = pytest.mark.api

TARGET = "10.213.0.1:5000/demo/web:v2"


def cli_env(kube: KubeCluster) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "KUBECONFIG": kube.kubeconfig, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def lamina(kube: KubeCluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lamina.cli.main", *args],
        env=cli_env(kube),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def commits_in(kube: KubeCluster, namespace: str) -> list[dict[str, object]]:
    listed = kube.kubectl("get", "containercommits", "-n", namespace, "-o", "json", check=True)
    return json.loads(listed.stdout)["items"]  # type: ignore[no-any-return]


def pending_pod(kube: KubeCluster, namespace: str) -> None:
    """A pod no scheduler places (the API tier has none): it stays unscheduled."""
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
        "spec: {containers: [{name: main, image: busybox}]}\n"
    )
    wait_for(lambda: kube.apply(pod, namespace).returncode == 0, what="pod created")


def test_a_commit_that_cannot_start_shows_why_and_times_out_leaving_it_running(
    operator: KubeCluster, namespace: str
) -> None:
    pending_pod(operator, namespace)
    started = time.monotonic()
    process = lamina(
        operator, "commit", "web", "--to", TARGET, "-n", namespace, "--insecure", "--timeout", "4"
    )
    out, _ = process.communicate(timeout=60)
    took = time.monotonic() - started
    assert process.returncode == 124, out
    lines = out.splitlines()
    assert lines[0].startswith(f"created ContainerCommit {namespace}/web-"), out
    assert f"(web -> {TARGET})" in lines[0]
    assert any(
        'Pending   PodNotScheduled: pod "web" is not scheduled to a node yet' in line
        for line in lines
    ), out
    assert "timed out after 4s, still Pending (PodNotScheduled)" in out
    name = lines[0].split()[2].split("/")[1]
    assert f"kubectl get containercommit {name} -n {namespace} -w" in out
    assert took < 30
    # The commit is the cluster's: still there, still waiting.
    (commit,) = commits_in(operator, namespace)
    assert commit["metadata"]["name"] == name  # type: ignore[index]
    assert commit["spec"]["output"] == {  # type: ignore[index]
        "repository": "10.213.0.1:5000/demo/web",
        "tag": "v2",
        "insecure": True,
    }


def test_progress_follows_the_status_and_a_failure_exits_1_with_the_reason(
    operator: KubeCluster, namespace: str
) -> None:
    process = lamina(
        operator,
        "commit",
        "web",
        "-c",
        "main",
        "--to",
        TARGET,
        "-n",
        namespace,
        "--push-secret",
        "creds",
        "-m",
        "tools",
        "-a",
        "Jane <jane@example.com>",
    )
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line.rstrip("\n"))
        if "PodNotFound" in line:
            break
    assert any('Pending   PodNotFound: pod "web" not found' in s for s in seen), seen
    running_pod(operator, namespace)  # the pod appears and runs: the push Secret is missing
    rest, _ = process.communicate(timeout=60)
    out = "\n".join(seen) + "\n" + rest
    assert process.returncode == 1, out
    assert "Failed    PushSecretNotFound:" in out
    assert 'commit failed: PushSecretNotFound: push Secret "creds" not found' in out
    (commit,) = commits_in(operator, namespace)
    assert commit["spec"]["author"] == "Jane <jane@example.com>"  # type: ignore[index]
    assert commit["spec"]["container"] == "main"  # type: ignore[index]


def test_ctrl_c_stops_following_and_says_the_commit_goes_on(
    operator: KubeCluster, namespace: str
) -> None:
    pending_pod(operator, namespace)
    process = lamina(operator, "commit", "web", "--to", TARGET, "-n", namespace)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("created ContainerCommit"), first
    wait_for(lambda: "PodNotScheduled" in process.stdout.readline(), what="progress")  # type: ignore[union-attr]
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 130, rest
    assert "stopped following; the commit goes on in the cluster" in rest
    assert "Traceback" not in rest
    assert len(commits_in(operator, namespace)) == 1


def test_every_command_works_as_a_kubectl_plugin(operator: KubeCluster, namespace: str) -> None:
    operator.apply(
        "apiVersion: lamina.dev/v1alpha1\nkind: Image\nmetadata: {name: base}\n"
        "spec:\n  parent: {ref: 'docker.io/library/busybox:1.36'}\n"
        "  build: {steps: ['RUN true']}\n  output: {repository: localhost:5000/demo/base}\n",
        namespace,
    )
    env = cli_env(operator)
    via_kubectl = subprocess.run(
        [str(CLUSTER), "kubectl", "lamina", "tree", "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    direct = subprocess.run(
        [sys.executable, "-m", "lamina.cli.main", "tree", "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    assert "base" in via_kubectl.stdout
    assert via_kubectl.stdout.splitlines()[0] == direct.stdout.splitlines()[0]
    usage = subprocess.run(
        [str(CLUSTER), "kubectl", "lamina", "commit", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert usage.stdout.startswith("usage: kubectl lamina commit"), usage.stdout
