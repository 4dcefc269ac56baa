"""git build contexts on the node tier: resolved, built at the commit, rebuilt when it moves.

A real git server (git's smart-HTTP backend behind e2e/harness/git_server.py) listens on the
cluster's advertise address, where build pods reach it.  ``src`` builds from a sub-directory of
branch ``main`` of a public repository, ``kid`` builds on ``src``.  The pushed manifest names
the URL and commit; the image holds the file at that commit and nothing outside the path (no
``.git``).  A new commit on ``main`` is noticed by polling, ``src`` rebuilds with
``SourceChanged``, and ``kid`` follows on src's new digest.  A private repository builds with
a credentials Secret; a wrong password stalls its Image with ``GitAuthenticationFailed``, and
the password appears in no status, event, build log or operator log, and its copy next to the
build Job is gone once the build is collected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, wait_for
from tests.e2e.conftest import E2E_ENV, NodeCluster, node_operator, operator_log
from tests.e2e.test_build_lineage import skopeo
from tests.e2e.test_image_builds import image, ready, run_pod, status

pytestmark = pytest.mark.e2e

BUSYBOX = {"ref": "docker.io/library/busybox:latest", "pollInterval": "1h"}
PASSWORD = "pa55-w0rd-that-must-not-leak"
GIT = ["git", "-c", "user.name=lamina-e2e", "-c", "user.email=e2e@lamina.invalid"]


@dataclass
class GitServer:
    url: str
    work: Path
    private_work: Path

    def commit(self, work: Path, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        subprocess.run([*GIT, "-C", str(work), "add", "-A"], check=True)
        subprocess.run([*GIT, "-C", str(work), "commit", "-qm", message], check=True)
        subprocess.run([*GIT, "-C", str(work), "push", "-q", "origin", "main"], check=True)
        return subprocess.run(
            ["git", "-C", str(work), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()


def _repository(root: Path, name: str, scratch: Path) -> Path:
    bare = root / f"{name}.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    work = scratch / name
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "remote", "add", "origin", str(bare)], check=True)
    return work


@pytest.fixture(scope="module")
def git_server(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitServer]:
    """The server on the cluster's advertise address, stopped by its PID."""
    base = tmp_path_factory.mktemp("git")
    root = base / "repos"
    root.mkdir()
    work = _repository(root, "app", base)
    private_work = _repository(root, "private", base)
    address = E2E_ENV.get("LAMINA_ADVERTISE_ADDRESS", "10.213.0.2")
    ready_file = base / "port"
    log = (base / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "e2e" / "harness" / "git_server.py"),
            "--listen",
            address,
            "--root",
            str(root),
            "--private",
            f"private.git=robot:{PASSWORD}",
            "--ready-file",
            str(ready_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: ready_file.exists() and ready_file.read_text(), timeout=20)
        yield GitServer(f"http://{address}:{ready_file.read_text()}", work, private_work)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def git_operator(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NodeCluster, str]]:
    log = tmp_path_factory.mktemp("git-operator") / "operator.log"
    with node_operator(node_cluster, log, LAMINA_BUILD_POLL_SECONDS="2") as operator_ns:
        yield node_cluster, operator_ns


def git_image(
    name: str, steps: list[str], registry: str, ns: str, git: dict[str, Any]
) -> dict[str, Any]:
    body = image(name, BUSYBOX, steps, registry, ns)
    body["spec"]["build"]["context"] = {"git": {"pollInterval": "2s", **git}}
    return body


def conditions(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in found.get("conditions") or []}


def test_a_git_context_builds_at_its_commit_and_a_moved_branch_rebuilds_the_tree(
    git_operator: tuple[NodeCluster, str], git_server: GitServer, ns: str
) -> None:
    kube, _ = git_operator
    first = git_server.commit(
        git_server.work,
        {
            "docker/msg.txt": "one\n",
            "docker/.dockerignore": "skip.txt\n",
            "docker/skip.txt": "x\n",
            "outside.txt": "not in the context\n",
        },
        "one",
    )
    url = f"{git_server.url}/app.git"
    kube.apply_objects(
        ns,
        git_image(
            "src",
            ["COPY . /ctx/"],
            kube.registry,
            ns,
            {"url": url, "revision": "main", "path": "docker"},
        ),
        image("kid", {"image": "src"}, ["RUN cat /ctx/msg.txt > /kid.txt"], kube.registry, ns),
    )
    src = wait_for(lambda: ready(kube, ns, "src"), timeout=600, what="src built from git")
    kid = wait_for(lambda: ready(kube, ns, "kid"), timeout=600, what="kid built")
    assert src["source"]["url"] == url and src["source"]["revision"] == "main"
    assert src["source"]["commit"] == first and src["builtFrom"]["sourceCommit"] == first
    annotations = skopeo(src["imageRef"], "--raw")["annotations"]
    assert annotations["org.opencontainers.image.source"] == url
    assert annotations["org.opencontainers.image.revision"] == first
    # Exactly the sub-directory at that commit: no .git, nothing outside the path, and the
    # repository's .dockerignore honoured.
    listing = run_pod(kube, ns, "ls-src", src["imageRef"], "ls -A /ctx; cat /ctx/msg.txt").split()
    assert listing == [".dockerignore", "msg.txt", "one"], listing
    assert run_pod(kube, ns, "cat-kid", kid["imageRef"], "cat /kid.txt").strip() == "one"

    # The branch moves: polled (2 s), src rebuilds on the new commit, kid follows.
    second = git_server.commit(git_server.work, {"docker/msg.txt": "two\n"}, "two")

    def moved(name: str, old_digest: str) -> dict[str, Any] | None:
        found = ready(kube, ns, name)
        return found if found and found["digest"] != old_digest else None

    src2 = wait_for(lambda: moved("src", src["digest"]), timeout=300, what="src rebuilt")
    assert src2["source"]["commit"] == second and src2["builtFrom"]["sourceCommit"] == second
    assert src2["build"]["reasons"] == [f"SourceChanged {first} -> {second}"]
    assert (
        skopeo(src2["imageRef"], "--raw")["annotations"]["org.opencontainers.image.revision"]
        == second
    )
    kid2 = wait_for(lambda: moved("kid", kid["digest"]), timeout=300, what="kid rebuilt")
    assert kid2["builtFrom"]["parentDigest"] == src2["digest"]
    assert kid2["build"]["reasons"] == [f"ParentChanged {src['digest']} -> {src2['digest']}"]
    assert run_pod(kube, ns, "cat-kid2", kid2["imageRef"], "cat /kid.txt").strip() == "two"


def test_a_private_repository_builds_with_its_secret_and_a_wrong_one_stalls_without_leaking(
    git_operator: tuple[NodeCluster, str], git_server: GitServer, ns: str
) -> None:
    kube, operator_ns = git_operator
    commit = git_server.commit(git_server.private_work, {"secret-app.txt": "private\n"}, "p")
    url = f"{git_server.url}/private.git"

    def credentials(name: str, password: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "robot", "password": password},
        }

    kube.apply_objects(
        ns,
        credentials("git-ok", PASSWORD),
        credentials("git-wrong", "not-" + PASSWORD),
        git_image(
            "priv", ["COPY secret-app.txt /"], kube.registry, ns, {"url": url, "secret": "git-ok"}
        ),
        git_image("wrong", ["COPY . /"], kube.registry, ns, {"url": url, "secret": "git-wrong"}),
        git_image("none", ["COPY . /"], kube.registry, ns, {"url": url}),
    )
    priv = wait_for(lambda: ready(kube, ns, "priv"), timeout=600, what="priv built")
    assert priv["source"]["commit"] == commit
    assert (
        run_pod(kube, ns, "cat-priv", priv["imageRef"], "cat /secret-app.txt").strip() == "private"
    )

    def stalled(name: str) -> dict[str, Any] | None:
        found = conditions(status(kube, ns, name)).get("Stalled")
        return found if found and found["status"] == "True" else None

    wrong = wait_for(lambda: stalled("wrong"), timeout=120, what="wrong credentials stall")
    assert wrong["reason"] == "GitAuthenticationFailed"
    assert wrong["message"] == (
        f"cannot resolve HEAD of {url}: GitAuthenticationFailed: {url} refused the "
        "credentials: HTTP 401"
    )
    none = wait_for(lambda: stalled("none"), timeout=120, what="no credentials stall")
    assert none["reason"] == "GitAuthenticationFailed"
    assert (
        "needs credentials" in none["message"]
        and "spec.build.context.git.secret" in none["message"]
    )
    assert "digest" not in status(kube, ns, "wrong")

    # The copy of the credentials next to the build Job is gone once the build is collected.
    copies = json.loads(kube.ok("get", "secrets", "-n", operator_ns, "-o", "json"))["items"]
    assert [s["metadata"]["name"] for s in copies if s["metadata"]["name"].endswith("-git")] == []

    # The password is nowhere a tenant or an operator reads.
    job = priv["build"]["job"]
    pods = json.loads(
        kube.ok("get", "pods", "-n", operator_ns, "-l", f"job-name={job}", "-o", "json")
    )["items"]
    assert pods, f"no pod of {job}"
    pod = pods[0]["metadata"]["name"]
    seen = [
        kube.ok("get", "images", "-n", ns, "-o", "yaml"),
        kube.ok("get", "events", "-n", ns, "-o", "yaml"),
        kube.ok("get", "events", "-n", operator_ns, "-o", "yaml"),
        kube.ok("get", "pod", pod, "-n", operator_ns, "-o", "yaml"),
        kube.ok("logs", "-n", operator_ns, pod, "--all-containers"),
        operator_log(kube, operator_ns, operator_ns),
    ]
    # ... and not in the image: no file of it contains the password.
    found = run_pod(
        kube,
        ns,
        "grep-priv",
        priv["imageRef"],
        f"find / -xdev -type f -exec grep -l -F '{PASSWORD}' {{}} + ; echo end",
    )
    assert found.split() == ["end"], found
    encoded = subprocess.run(
        ["base64", "-w0"], input=f"robot:{PASSWORD}", capture_output=True, text=True, check=True
    ).stdout
    for text in seen:
        assert PASSWORD not in text and encoded not in text
