"""Real workloads on the node tier: pulls through the docker.io mirror, exec, overlay
upperdirs, in-cluster API access through the `kubernetes` Service, BuildKit builds pushed to the
local registry."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import NodeCluster, cluster_cmd

pytestmark = pytest.mark.e2e


def template(p: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {}, "spec": p["spec"]}


def pod(name: str, image: str, command: list[str], **spec: object) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": command}],
            **spec,
        },
    }


def test_node_is_ready_with_containerd_2(node_cluster: NodeCluster) -> None:
    node_cluster.skip_on_kind()
    nodes = json.loads(node_cluster.ok("get", "nodes", "-o", "json"))["items"]
    # Other tiers' tests may leave Node objects of their own (without a kubelet) behind.
    ready = [
        n
        for n in nodes
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
    ]
    assert len(ready) == 1, [n["metadata"]["name"] for n in nodes]
    info = ready[0]["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://2."), info
    assert info["kubeletVersion"].startswith("v1.34."), info


def test_env_and_registry_config(node_cluster: NodeCluster) -> None:
    node_cluster.skip_on_kind()
    env = cluster_cmd("env").stdout
    match = re.search(r"^export LAMINA_REGISTRY_CONFIG=(\S+)$", env, re.M)
    assert match, env
    config = Path(match.group(1)).read_text()
    for registry in ("docker.io", "registry.k8s.io", "ghcr.io", "quay.io"):
        assert f"  {registry}:\n    mirrors: [http://{node_cluster.registry}]" in config
    assert f'  "{node_cluster.registry}":\n    insecure: true' in config


def test_job_pulls_busybox_through_the_mirror_and_logs_are_read(
    node_cluster: NodeCluster, ns: str
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {
            "backoffLimit": 0,
            "template": template(pod("x", "busybox", ["sh", "-c", "echo hello from $(hostname)"])),
        },
    }
    node_cluster.apply_objects(ns, job)
    node_cluster.wait(ns, "job/hello", "condition=Complete")
    assert node_cluster.ok("logs", "-n", ns, "job/hello").startswith("hello from hello-")
    image = node_cluster.ok(
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        "job-name=hello",
        "-o",
        "jsonpath={.items[0].status.containerStatuses[0].image}",
    )
    assert image == "docker.io/library/busybox:latest", image


def test_exec_writes_land_in_the_container_upperdir(node_cluster: NodeCluster, ns: str) -> None:
    node_cluster.skip_on_kind()
    node_cluster.apply_objects(ns, pod("sleeper", "busybox", ["sleep", "3600"]))
    node_cluster.wait(ns, "pod/sleeper", "condition=Ready")
    token = uuid.uuid4().hex
    node_cluster.ok(
        "exec", "-n", ns, "sleeper", "--", "sh", "-c", f"mkdir -p /data && echo {token} > /data/x"
    )
    assert node_cluster.ok("exec", "-n", ns, "sleeper", "--", "cat", "/data/x").strip() == token

    pid = node_cluster.container_init_pid(ns, "sleeper")
    root = [
        line
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    ]
    assert root and " - overlay " in root[-1], root
    options = root[-1].split(" - ")[1].split()[2].split(",")
    upper = Path(next(o for o in options if o.startswith("upperdir=")).removeprefix("upperdir="))
    assert str(upper).startswith(str(node_cluster.state)), upper
    assert (upper / "data" / "x").read_text().strip() == token


def test_pod_reaches_the_api_server_through_the_kubernetes_service(
    node_cluster: NodeCluster, ns: str
) -> None:
    # Python, not busybox wget: busybox's TLS client sends no signature_algorithms, so a Go
    # 1.26 server (no SHA-1 handshake signatures) refuses it.  Python also verifies the CA.
    # The pod's service account may list pods in its namespace.
    node_cluster.ok("create", "role", "lister", "-n", ns, "--verb=list", "--resource=pods")
    node_cluster.ok(
        "create",
        "rolebinding",
        "lister",
        "-n",
        ns,
        "--role=lister",
        f"--serviceaccount={ns}:default",
    )
    script = (
        "import json, os, ssl, urllib.request\n"
        "d = '/var/run/secrets/kubernetes.io/serviceaccount/'\n"
        "host = os.environ['KUBERNETES_SERVICE_HOST']\n"
        "port = os.environ['KUBERNETES_SERVICE_PORT']\n"
        "ns = open(d + 'namespace').read()\n"
        "req = urllib.request.Request(f'https://{host}:{port}/api/v1/namespaces/{ns}/pods',\n"
        "    headers={'Authorization': 'Bearer ' + open(d + 'token').read()})\n"
        "ctx = ssl.create_default_context(cafile=d + 'ca.crt')\n"
        "items = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))['items']\n"
        "print(host, port, sorted(p['metadata']['name'] for p in items))\n"
    )
    node_cluster.apply_objects(ns, pod("api-client", "python:3.11-slim", ["python3", "-c", script]))
    node_cluster.wait(ns, "pod/api-client", "jsonpath={.status.phase}=Succeeded")
    out = node_cluster.ok("logs", "-n", ns, "api-client").split()
    # 10.96.0.1:443 is the `kubernetes` Service: kube-proxy's rules carry it to the API server.
    assert out[:2] == ["10.96.0.1", "443"], out
    assert "'api-client']" in out[-1], out


def test_buildkit_job_builds_and_pushes_then_a_pod_runs_the_image(
    node_cluster: NodeCluster, ns: str
) -> None:
    registry = node_cluster.registry
    tag = f"{registry}/e2e/hi:{ns}"
    buildkitd_toml = (
        f'[registry."docker.io"]\n  mirrors = ["{registry}"]\n'
        f'[registry."{registry}"]\n  http = true\n  insecure = true\n'
    )
    context = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "context"},
        "data": {"Dockerfile": "FROM busybox\nRUN echo hi > /hi\n"},
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "buildkitd"},
        "data": {"buildkitd.toml": buildkitd_toml},
    }
    builder = pod(
        "x",
        "moby/buildkit:latest",
        [
            "buildctl-daemonless.sh",
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            "context=/context",
            "--local",
            "dockerfile=/context",
            "--output",
            f"type=image,name={tag},push=true,registry.insecure=true",
        ],
        volumes=[
            {"name": "context", "configMap": {"name": "context"}},
            {"name": "config", "configMap": {"name": "buildkitd"}},
            {"name": "state", "emptyDir": {}},
        ],
    )
    main = builder["spec"]["containers"][0]
    main["env"] = [
        {
            "name": "BUILDKITD_FLAGS",
            "value": "--config /etc/buildkit/buildkitd.toml --oci-worker-net=host",
        }
    ]
    main["securityContext"] = {"privileged": True}
    main["volumeMounts"] = [
        {"name": "context", "mountPath": "/context"},
        {"name": "config", "mountPath": "/etc/buildkit"},
        {"name": "state", "mountPath": "/var/lib/buildkit"},
    ]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "build"},
        "spec": {"backoffLimit": 0, "template": template(builder)},
    }
    node_cluster.apply_objects(ns, context, config, job)
    node_cluster.wait(ns, "job/build", "condition=Complete", timeout=240)
    log = node_cluster.ok("logs", "-n", ns, "job/build")
    assert f"pushing manifest for {tag}@sha256:" in log, log[-2000:]

    node_cluster.apply_objects(ns, pod("runner", tag, ["cat", "/hi"]))
    node_cluster.wait(ns, "pod/runner", "jsonpath={.status.phase}=Succeeded")
    assert node_cluster.ok("logs", "-n", ns, "runner") == "hi\n"


def test_pods_cannot_leave_the_machine(node_cluster: NodeCluster, ns: str) -> None:
    """No default route in pods: an address off the machine is unreachable at once."""
    node_cluster.apply_objects(
        ns,
        pod(
            "offline",
            "busybox",
            ["sh", "-c", "ip route; wget -T 3 -q -O- http://203.0.113.1/ ; echo rc=$?"],
        ),
    )
    node_cluster.wait(ns, "pod/offline", "jsonpath={.status.phase}=Succeeded")
    out = node_cluster.ok("logs", "-n", ns, "offline")
    assert "default" not in out, out
    assert "rc=1" in out, out
