"""A Job pod that cannot pull its image, on a real node: the status says so within seconds,
and the object recovers by itself once the image is there.

The commit Job's image (``LAMINA_COMMITTER_IMAGE``) names a repository the local registry does
not have yet: the kubelet reports ErrImagePull, then ImagePullBackOff, and the ContainerCommit
must show that reason (``lamina commit`` shows it as it follows the commit).  Then the real
Lamina image is copied to that name, as a registry that comes back would serve it; the
kubelet's next retry pulls it and the commit succeeds without anyone touching it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_tree_reconcile import condition
from tests.conftest import wait_for
from tests.e2e.conftest import E2E_ENV, NodeCluster, node_operator
from tests.e2e.test_container_commit import lamina_image, sleeper
from tests.e2e.test_image_builds import image

__all__ = ["lamina_image"]

pytestmark = pytest.mark.e2e

PULL_REASONS = ("ErrImagePull", "ImagePullBackOff")


def copy_image(source: str, target: str) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{source}",
            f"docker://{target}",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture
def missing_committer(
    node_cluster: NodeCluster, tmp_path: Path
) -> Iterator[tuple[NodeCluster, str]]:
    # Not module-scoped: the next test installs an operator of its own, and two at once
    # would both reconcile its Image (the other one, with a builder that pulls, built it).
    missing = f"{node_cluster.registry}/e2e/missing-{uuid.uuid4().hex[:6]}/lamina:v1"
    with node_operator(node_cluster, tmp_path / "operator.log", LAMINA_COMMITTER_IMAGE=missing):
        yield node_cluster, missing


def reason_of(kube: NodeCluster, kind: str, name: str, ns: str) -> str | None:
    ready = condition(kube.get(kind, name, ns), "Ready")
    return ready["reason"] if ready else None


def test_a_commit_job_that_cannot_pull_shows_it_and_recovers_by_itself(
    missing_committer: tuple[NodeCluster, str], lamina_image: str, ns: str
) -> None:
    kube, missing = missing_committer
    kube.apply_objects(ns, sleeper("work", "busybox"))
    kube.wait(ns, "pod/work", "condition=Ready")
    target = f"{kube.registry}/e2e/{ns}/snap:v1"
    env = {
        **E2E_ENV,
        "KUBECONFIG": kube.kubeconfig,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lamina.cli.main",
            "commit",
            "work",
            "--to",
            target,
            "-n",
            ns,
            "--insecure",
            "--timeout",
            "400",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def commit_name() -> str | None:
            listed = kube.ok("get", "containercommits", "-n", ns, "-o", "name").split()
            return listed[0].split("/", 1)[1] if listed else None

        name = wait_for(commit_name, timeout=30, what="the ContainerCommit")
        # Committing can last less than one look: the Job's pod may fail its pull at once.
        wait_for(
            lambda: reason_of(kube, "containercommit", name, ns) in {"Committing", *PULL_REASONS},
            timeout=60,
            what="the commit Job started",
        )
        started = time.monotonic()
        wait_for(
            lambda: reason_of(kube, "containercommit", name, ns) in PULL_REASONS,
            timeout=60,
            interval=0.5,
            what="the pull failure on the commit",
        )
        print(f"\npull failure shown {time.monotonic() - started:.1f}s after the Job started")
        obj = kube.get("containercommit", name, ns)
        assert obj is not None and obj["status"]["phase"] == "Running"
        reconciling = condition(obj, "Reconciling")
        assert reconciling is not None and reconciling["status"] == "True"
        assert missing in reconciling["message"]
        described = kube.ok("describe", "containercommit", name, "-n", ns)
        assert "Warning" in described and any(r in described for r in PULL_REASONS)

        # The image appears (the registry is back): the next pull works, the commit succeeds.
        copy_image(lamina_image, missing)
        out, _ = follower.communicate(timeout=420)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, out
    assert any(f"Running   {r}" in out for r in PULL_REASONS), out
    assert "Succeeded Committed" in out, out
    assert f"image:   {kube.registry}/e2e/{ns}/snap@sha256:" in out
    described = kube.ok("describe", "containercommit", name, "-n", ns)
    assert "Committed" in described


def test_a_build_job_that_cannot_pull_its_builder_shows_it_within_seconds(
    node_cluster: NodeCluster, ns: str, tmp_path: Path
) -> None:
    missing = f"{node_cluster.registry}/e2e/missing-{uuid.uuid4().hex[:6]}/buildkit:v1"
    with node_operator(
        node_cluster,
        tmp_path / "operator.log",
        LAMINA_BUILDER_IMAGE=missing,
        LAMINA_BUILD_POLL_SECONDS="2",
    ):
        kube = node_cluster
        kube.apply_objects(
            ns,
            image(
                "base", {"ref": "docker.io/library/busybox:latest"}, ["RUN true"], kube.registry, ns
            ),
        )
        wait_for(
            lambda: reason_of(kube, "image", "base", ns) in ("Building", *PULL_REASONS),
            timeout=120,
            what="the build started",
        )

        def pulling_fails() -> dict[str, Any] | None:
            found = kube.get("image", "base", ns)
            ready = condition(found, "Ready")
            return found if ready and ready["reason"] in PULL_REASONS else None

        # One read: the reason and its message as the operator wrote them together.
        shown = wait_for(pulling_fails, timeout=60, interval=0.5, what="the pull failure")
        build = shown["status"]["build"]
        began = datetime.fromisoformat(build["startedAt"].replace("Z", "+00:00"))
        print(
            f"\npull failure shown {(datetime.now(UTC) - began).total_seconds():.1f}s "
            "after the build started"
        )
        reconciling = condition(shown, "Reconciling")
        assert reconciling is not None and missing in reconciling["message"]
        assert reconciling["reason"] in PULL_REASONS
        described = kube.ok("describe", "image", "base", "-n", ns)
        assert any(r in described for r in PULL_REASONS), described

        # The builder image appears: the kubelet's next pull works, and the build completes.
        copy_image(f"{kube.registry}/moby/buildkit:v0.34.2", missing)
        wait_for(
            lambda: reason_of(kube, "image", "base", ns) == "UpToDate",
            timeout=280,
            what="built once the builder image is there",
        )
