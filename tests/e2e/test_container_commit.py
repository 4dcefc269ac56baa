"""ContainerCommit end to end on the node tier: `docker commit` for a running pod.

A busybox pod is changed with `kubectl exec`; a ContainerCommit snapshots its writable layer
through a real commit Job on the node; a new pod from the pushed image sees exactly those
changes; the Image and Layer objects record the lineage; committing the committed image's pod
again stacks a second layer.  The pushed image is also read back with skopeo.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import NodeCluster, node_operator
from tests.e2e.conftest import lamina_image as built_lamina_image

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def lamina_image(node_cluster: NodeCluster) -> str:
    """The operator's image (built in the cluster from the Dockerfile): the committer."""
    return built_lamina_image(node_cluster.registry)


@pytest.fixture(scope="module")
def commit_operator(
    node_cluster: NodeCluster, lamina_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeCluster]:
    log = tmp_path_factory.mktemp("e2e-operator") / "operator.log"
    with node_operator(node_cluster, log, LAMINA_COMMITTER_IMAGE=lamina_image):
        yield node_cluster


def sleeper(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}],
        },
    }


def commit(name: str, pod: str, repository: str, tag: str) -> dict[str, Any]:
    return {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": "ContainerCommit",
        "metadata": {"name": name},
        "spec": {
            "pod": pod,
            "output": {"repository": repository, "tag": tag, "insecure": True},
            "message": f"e2e {name}",
            "excludePaths": ["/scratch"],
            "changes": {"env": [{"name": "COMMITTED", "value": name}]},
        },
    }


def finished(kube: NodeCluster, ns: str, name: str) -> dict[str, Any] | None:
    found = kube.get("containercommit", name, ns) or {}
    status = found.get("status") or {}
    if status.get("phase") == "Failed":
        raise AssertionError(f"commit {name} failed: {json.dumps(status, indent=1)}")
    return found if status.get("phase") == "Succeeded" else None


def exec_sh(kube: NodeCluster, ns: str, pod: str, script: str) -> str:
    return kube.ok("exec", "-n", ns, pod, "--", "sh", "-c", script)


def test_commit_a_running_container_then_stack_a_second_commit(
    commit_operator: NodeCluster, ns: str
) -> None:
    kube = commit_operator
    repository = f"{kube.registry}/e2e/{ns}"
    kube.apply_objects(ns, sleeper("work", "busybox"))
    kube.wait(ns, "pod/work", "condition=Ready")
    exec_sh(
        kube,
        ns,
        "work",
        "mkdir -p /data && echo hello > /data/hello.txt && ln -s /data/hello.txt /link"
        " && rm /bin/sed && mkdir -p /scratch && echo secret > /scratch/token",
    )

    kube.apply_objects(ns, commit("snap", "work", repository, "v1"))
    done = wait_for(lambda: finished(kube, ns, "snap"), timeout=300, what="first commit")
    status = done["status"]
    image_ref = status["image"]["ref"]
    assert image_ref == f"{repository}@{status['image']['digest']}"
    assert status["layer"]["entries"] >= 4
    assert "library/busybox" in status["parent"]["ref"]
    assert status["parent"]["digest"].startswith("sha256:")
    assert status["frozenSeconds"] >= 0

    # An independent oracle: skopeo reads what was pushed.
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{image_ref}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert inspected["Digest"] == status["image"]["digest"]
    assert "COMMITTED=snap" in inspected["Env"]
    assert inspected["Layers"][-1] == status["layer"]["digest"]

    # A new pod from the committed image sees exactly the changes.
    kube.apply_objects(ns, sleeper("again", image_ref))
    kube.wait(ns, "pod/again", "condition=Ready")
    seen = exec_sh(
        kube,
        ns,
        "again",
        "cat /data/hello.txt; readlink /link; test -e /bin/sed || echo no-sed;"
        " test -e /scratch/token || echo no-token; echo $COMMITTED",
    ).split()
    assert seen == ["hello", "/data/hello.txt", "no-sed", "no-token", "snap"]

    # The lineage: an Image records the commit, its layers are Layer objects.
    image = kube.get("image", "snap", ns)
    assert image is not None
    assert image["spec"]["commit"] == {"name": "snap"}
    assert image["status"]["digest"] == status["image"]["digest"]
    layers = image["status"]["layers"]
    assert [layer["own"] for layer in layers] == [False] * (len(layers) - 1) + [True]
    ready = {c["type"]: c for c in image["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Committed")
    own_layer = kube.get("layer", layers[-1]["digest"].replace(":", "-"), ns)
    assert own_layer is not None
    wait_for(
        lambda: (
            (kube.get("layer", layers[-1]["digest"].replace(":", "-"), ns) or {})
            .get("status", {})
            .get("introducedBy")
            == "snap"
        ),
        what="layer introducedBy",
    )

    # Commit the committed image's pod: a second layer stacks on the first.
    exec_sh(kube, ns, "again", "echo two > /data/two.txt")
    kube.apply_objects(ns, commit("snap2", "again", repository, "v2"))
    wait_for(lambda: finished(kube, ns, "snap2"), timeout=300, what="second commit")
    second = kube.get("image", "snap2", ns)
    assert second is not None
    assert second["spec"]["parent"]["image"] == "snap"
    assert [layer["digest"] for layer in second["status"]["layers"][:-1]] == [
        layer["digest"] for layer in layers
    ]
    assert second["status"]["layers"][-1]["own"] is True
    wait_for(
        lambda: (
            (kube.get("image", "snap2", ns) or {}).get("status", {}).get("lineage", [{}])[0]
            == {"name": "snap", "digest": status["image"]["digest"]}
        ),
        what="snap2 lineage",
    )


def forging_pod(name: str, secret_upper: str) -> dict[str, Any]:
    """A pod whose container, from its first instruction, mounts in a user namespace of its
    own an overlay on its ``/`` whose upperdir names a host directory (no privilege needed:
    the pod's securityContext is the default), then becomes the workload."""
    script = (
        "echo real > /real.txt && exec unshare -Urm sh -c '"
        "mount -t tmpfs forged /tmp"
        f" && mkdir -p /tmp/lower /tmp/work {secret_upper}"
        f" && mount -t overlay overlay -o lowerdir=/tmp/lower,upperdir={secret_upper},"
        "workdir=/tmp/work,userxattr / && exec sleep 3600'"
    )
    pod = sleeper(name, "busybox")
    pod["spec"]["containers"][0]["command"] = ["sh", "-c", script]
    return pod


def test_a_pod_that_forges_its_root_overlay_cannot_commit_a_host_directory(
    commit_operator: NodeCluster, ns: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    kube = commit_operator
    kube.skip_on_kind()
    secret_upper = tmp_path_factory.mktemp("host-secret") / "upper"
    secret_upper.mkdir()
    token = f"host-secret-{uuid.uuid4().hex}"
    (secret_upper / "secret.txt").write_text(token)
    kube.apply_objects(ns, forging_pod("forger", str(secret_upper)))
    kube.wait(ns, "pod/forger", "condition=Ready")
    init = kube.container_init_pid(ns, "forger")
    # The attack is live: the container's own mount table says its root's upper is the host
    # directory (what the committer used to read).
    wait_for(
        lambda: f"upperdir={secret_upper}," in Path(f"/proc/{init}/mountinfo").read_text(),
        what="the forged root overlay",
    )
    repository = f"{kube.registry}/e2e/{ns}"
    kube.apply_objects(ns, commit("forged", "forger", repository, "v1"))
    done = wait_for(lambda: finished(kube, ns, "forged"), timeout=300, what="forged commit")
    image_ref = done["status"]["image"]["ref"]
    layout = tmp_path_factory.mktemp("pulled") / "oci"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{image_ref}", f"oci:{layout}:x"],
        capture_output=True,
        check=True,
    )
    pushed = b""
    for blob in sorted((layout / "blobs" / "sha256").iterdir()):
        raw = blob.read_bytes()
        pushed += gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    assert token.encode() not in pushed
    assert b"secret.txt" not in pushed
    assert b"real.txt" in pushed  # the container's own change, from its real upperdir
