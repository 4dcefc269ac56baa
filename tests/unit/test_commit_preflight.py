"""ContainerCommit pre-checks: each problem with the target Pod gets its own reason."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.domain.commit_preflight import preflight

DIGEST = "sha256:" + "d" * 64


def pod(
    *, node: str | None = "node-1", state: dict[str, Any] | None = None, containers: int = 1
) -> dict[str, Any]:
    names = ["main", "sidecar"][:containers]
    return {
        "spec": {"nodeName": node, "containers": [{"name": n} for n in names]},
        "status": {
            "containerStatuses": [
                {
                    "name": n,
                    "state": state if state is not None else {"running": {}},
                    "containerID": f"containerd://{n}-id",
                    "image": "docker.io/library/busybox:1.36",
                    "imageID": f"docker.io/library/busybox@{DIGEST}",
                }
                for n in names
            ]
        },
    }


@pytest.mark.parametrize(
    ("observed", "container", "reason", "fragment"),
    [
        (None, None, "PodNotFound", 'pod "web" not found in namespace "ns"'),
        (pod(), "other", "ContainerNotFound", 'no container "other"; it has: main'),
        (pod(node=None), None, "PodNotScheduled", "not scheduled"),
        (
            pod(state={"waiting": {"reason": "ImagePullBackOff"}}),
            None,
            "ContainerNotRunning",
            "not running (ImagePullBackOff)",
        ),
        (
            pod(state={"terminated": {"reason": "Completed"}}),
            None,
            "ContainerNotRunning",
            "not running (Completed)",
        ),
        (pod(), None, "TargetReady", 'container "main" of pod "web" runs on node node-1'),
    ],
)
def test_reasons(
    observed: dict[str, Any] | None, container: str | None, reason: str, fragment: str
) -> None:
    result = preflight("web", container, "ns", observed)
    ready = next(v for v in result.conditions if v.type == "Ready")
    assert ready.reason == reason
    assert fragment in ready.message


def test_a_running_target_records_node_container_and_parent_digest() -> None:
    result = preflight("web", "sidecar", "ns", pod(containers=2))
    assert result.ready_to_commit
    assert result.fields == {
        "node": "node-1",
        "containerID": "containerd://sidecar-id",
        "parent": {"ref": "docker.io/library/busybox:1.36", "digest": DIGEST},
    }


def test_an_image_pulled_by_digest_is_named_from_its_image_id() -> None:
    observed = pod()
    status = observed["status"]["containerStatuses"][0]
    status["image"] = DIGEST
    status["imageID"] = f"10.0.0.1:5000/demo/snap@{DIGEST}"
    result = preflight("web", None, "ns", observed)
    assert result.fields["parent"] == {"ref": "10.0.0.1:5000/demo/snap", "digest": DIGEST}
