"""git contexts against the real API server: a real operator process, a real registry for the
parent, and git's http-backend (e2e/harness/git_server.py) on 127.0.0.1.

The revision is resolved to the commit the server advertises and recorded in
``status.source``; the build Job fetches exactly that commit, with credentials only as a
reference to a Job-owned Secret holding the header; a moved branch is noticed by polling; a
wrong password or a missing Secret is the Image's Stalled condition with its reason, and the
password is in no status, event or log line.  (No kubelet runs here, so builds never finish:
the node tier's test_git_context.py shows the built image and the cascade.)
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.git_server import bare_repository, commit_files, git, serving
from tests.api.build_loop import build_loop_operator
from tests.api.test_build_planning import push
from tests.conftest import KubeCluster, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api

PASSWORD = "api-tier-pw-never-shown"


@dataclass
class GitRepo:
    url: str
    work: Path

    def commit(self, text: str) -> str:
        commit = commit_files(self.work, {"docker/msg.txt": text}, text)
        git("-C", self.work, "push", "-q", "origin", "main")
        return commit


@pytest.fixture
def private_repo(tmp_path: Path) -> Iterator[GitRepo]:
    root = tmp_path / "root"
    root.mkdir()
    work = bare_repository(root, "private", tmp_path / "work")
    with serving(root, private={"private.git": f"robot:{PASSWORD}"}) as url:
        yield GitRepo(f"{url}/private.git", work)


def image(name: str, parent_ref: str, registry: Registry, git: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "Image",
            "metadata": {"name": name},
            "spec": {
                "parent": {"ref": parent_ref, "pollInterval": "1h"},
                "build": {
                    "steps": ["COPY . /ctx/"],
                    "context": {"git": {"revision": "main", "pollInterval": "1s", **git}},
                },
                "output": {"repository": f"{registry.address}/out/{name}", "insecure": True},
            },
        }
    )


def credentials(name: str, password: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "robot", "password": password},
        }
    )


@dataclass
class Operator:
    kube: KubeCluster
    namespace: str
    operator_ns: str
    parent_ref: str
    log: Path


@pytest.fixture
def git_operator(
    crds_installed: KubeCluster, registry: Registry, tmp_path: Path
) -> Iterator[Operator]:
    """A real operator process with its own namespace, a tenant namespace, a pushed parent."""
    kube = crds_installed
    suffix = uuid.uuid4().hex[:6]
    ns, operator_ns = f"git-{suffix}", f"lamina-{suffix}"
    for namespace in (ns, operator_ns):
        kube.kubectl("create", "namespace", namespace, check=True)
    parent = f"parents/{suffix}"
    push(registry, parent, "1", "p", tmp_path)
    try:
        with build_loop_operator(kube, registry, tmp_path, operator_ns) as operator:
            yield Operator(kube, ns, operator_ns, registry.ref(parent, "1"), operator.log)
    finally:
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")
        kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_git_sources_resolve_poll_and_reach_the_build_only_as_a_header(
    git_operator: Operator, registry: Registry, private_repo: GitRepo
) -> None:
    kube, ns, operator_ns = git_operator.kube, git_operator.namespace, git_operator.operator_ns
    parent_ref = git_operator.parent_ref
    first = private_repo.commit("one\n")
    url = private_repo.url
    for manifest in (
        credentials("git-ok", PASSWORD),
        credentials("git-wrong", "not-" + PASSWORD),
        image("app", parent_ref, registry, {"url": url, "path": "docker", "secret": "git-ok"}),
        image("wrong", parent_ref, registry, {"url": url, "secret": "git-wrong"}),
        image("missing", parent_ref, registry, {"url": url, "secret": "nope"}),
    ):
        applied = kube.apply(manifest, ns)
        assert applied.returncode == 0, applied.stderr

    def status(name: str) -> dict[str, Any]:
        return (kube.get("image", name, ns) or {}).get("status") or {}

    def stalled(name: str) -> dict[str, Any] | None:
        found = {c["type"]: c for c in status(name).get("conditions") or []}
        stall = found.get("Stalled")
        return stall if stall and stall["status"] == "True" else None

    def running_job(commit: str) -> dict[str, Any] | None:
        build = status("app").get("build") or {}
        if build.get("phase") != "Running" or build.get("wanted", {}).get("sourceCommit") != commit:
            return None
        return kube.get("job", build["job"], operator_ns)

    job = wait_for(lambda: running_job(first), timeout=60, what="the build Job at commit one")
    source = status("app")["source"]
    assert (source["url"], source["revision"], source["commit"]) == (url, "main", first)
    pod = job["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"] == [url, first, "docker"]
    header_ref = init["env"][2]["valueFrom"]["secretKeyRef"]
    copy_name = f"{job['metadata']['name']}-git"
    assert header_ref == {"name": copy_name, "key": "authorization"}
    assert "git-ok" not in json.dumps(job)  # the tenant's Secret is not named in the Job
    copy = kube.get("secret", copy_name, operator_ns)
    assert copy is not None
    assert [o["kind"] for o in copy["metadata"]["ownerReferences"]] == ["Job"]
    assert copy["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    header = base64.b64decode(copy["data"]["authorization"]).decode()
    basic = base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
    assert header == f"Authorization: Basic {basic}"
    assert sorted(copy["data"]) == ["authorization"]  # not the username and password

    wrong = wait_for(lambda: stalled("wrong"), timeout=60, what="wrong credentials stall")
    assert wrong["reason"] == "GitAuthenticationFailed"
    assert wrong["message"] == (
        f"cannot resolve main of {url}: GitAuthenticationFailed: {url} refused the "
        "credentials: HTTP 401"
    )
    missing = wait_for(lambda: stalled("missing"), timeout=60, what="missing Secret stall")
    assert missing["reason"] == "GitCredentialsNotFound"
    assert missing["message"] == (
        f'cannot resolve main of {url}: GitCredentialsNotFound: git credentials Secret "nope" '
        f'not found in namespace "{ns}"'
    )

    # The branch moves: noticed by the 1 s poll while the build runs.
    second = private_repo.commit("two\n")
    wait_for(
        lambda: status("app").get("source", {}).get("commit") == second,
        timeout=30,
        what="the moved branch noticed",
    )
    # One build per Image at a time: the next one starts when this one ends (here: its Job
    # is deleted, as a finished one would be collected), at the new commit.
    kube.kubectl("delete", "job", job["metadata"]["name"], "-n", operator_ns, check=True)
    again = wait_for(lambda: running_job(second), timeout=60, what="a build at commit two")
    assert again["spec"]["template"]["spec"]["initContainers"][0]["args"][1] == second

    seen = [
        kube.kubectl("get", "images", "-n", ns, "-o", "yaml").stdout,
        kube.kubectl("get", "events", "-n", ns, "-o", "yaml").stdout,
        kube.kubectl("get", "jobs", "-n", operator_ns, "-o", "yaml").stdout,
    ]
    seen.append(git_operator.log.read_text())
    for text in seen:
        assert PASSWORD not in text and basic not in text
    assert "Traceback" not in git_operator.log.read_text()
