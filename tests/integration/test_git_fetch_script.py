"""The build Job's git init container, run as the Job runs it: the builder image's own git
(the OCI layout e2e/lib/build-images.sh made, unpacked by umoci) in a chroot, against git's
http-backend (e2e/harness/git_server.py) on 127.0.0.1.

It checks what the node tier cannot cheaply: the commit fetched is exactly the resolved one
even after the branch moved on, a sub-directory is the context's root, ``.git`` never reaches
the context, credentials arrive only from the environment, and every failure (no such commit,
no such path, no credentials) fails the container instead of building an empty context.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.git_server import bare_repository, commit_files, git, serving
from lamina.domain.build_job import CONTEXT_DIR, GIT_DIR, GIT_SCRIPT
from lamina.domain.git_refs import basic_authorization
from tests.integration.conftest import run

pytestmark = pytest.mark.integration

PASSWORD = "integration-pw"


def builder_layout() -> Path:
    cache = Path(os.environ.get("LAMINA_CACHE", Path.home() / ".cache" / "lamina"))
    found = sorted((cache / "images").glob("buildkit-*-git*"), key=lambda p: p.stat().st_mtime)
    if not found or not (found[-1] / ".done").exists():
        pytest.fail("no builder image with git: run e2e/setup (e2e/lib/build-images.sh)")
    return found[-1]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("chroot and bind mounts need root (as the rest of this tier)")
    bundle = tmp_path_factory.mktemp("builder") / "bundle"
    run("umoci", "unpack", "--rootless", "--image", f"{builder_layout()}:image", bundle)
    root = bundle / "rootfs"
    (root / "dev").mkdir(exist_ok=True)
    run("mount", "--bind", "/dev", root / "dev")
    try:
        yield root
    finally:
        run("umount", root / "dev", check=False)


@dataclass
class Server:
    url: str
    commits: list[str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("repos")
    root = base / "root"
    root.mkdir()
    work = bare_repository(root, "app", base / "work")
    commits = [
        commit_files(work, {"docker/msg.txt": f"{text}\n", "top.txt": "outside\n"}, text)
        for text in ("one", "two")
    ]
    git("-C", work, "push", "-q", "origin", "main")
    git("clone", "-q", "--bare", root / "app.git", root / "private.git")
    with serving(root, private={"private.git": f"robot:{PASSWORD}"}) as url:
        yield Server(url, commits)


def fetch(
    rootfs: Path, url: str, commit: str, path: str = "", header: str | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The init container's command in the builder's root; the context's files after it."""
    for directory in (GIT_DIR, CONTEXT_DIR):
        target = rootfs / directory.lstrip("/")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin"}
    if header is not None:
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": header,
        }
    done = subprocess.run(
        [
            shutil.which("chroot") or "/usr/sbin/chroot",
            str(rootfs),
            "/bin/sh",
            "-c",
            GIT_SCRIPT,
            "lamina-git",
            url,
            commit,
            path,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    context = rootfs / CONTEXT_DIR.lstrip("/")
    files = sorted(str(p.relative_to(context)) for p in context.rglob("*"))
    return done, files


def test_the_resolved_commit_is_fetched_even_after_the_branch_moved(
    rootfs: Path, server: Server
) -> None:
    old, _new = server.commits  # main is at the second commit now
    done, files = fetch(rootfs, f"{server.url}/app.git", old, "docker")
    assert done.returncode == 0, done.stderr
    assert files == ["msg.txt"]  # the sub-directory is the root; nothing else, no .git
    assert (rootfs / CONTEXT_DIR.lstrip("/") / "msg.txt").read_text() == "one\n"


def test_the_whole_tree_without_a_path_and_never_git_metadata(rootfs: Path, server: Server) -> None:
    done, files = fetch(rootfs, f"{server.url}/app.git", server.commits[1])
    assert done.returncode == 0, done.stderr
    assert files == ["docker", "docker/msg.txt", "top.txt"]


def test_credentials_come_from_the_environment_only(rootfs: Path, server: Server) -> None:
    url = f"{server.url}/private.git"
    header = "Authorization: " + basic_authorization("robot", PASSWORD)
    done, files = fetch(rootfs, url, server.commits[1], "docker", header)
    assert done.returncode == 0, done.stderr
    assert files == ["msg.txt"]
    leftovers = run("grep", "-r", "-l", "-F", PASSWORD, rootfs / GIT_DIR.lstrip("/"), check=False)
    assert leftovers.stdout == ""  # git wrote the credentials nowhere
    denied, files = fetch(rootfs, url, server.commits[1])
    assert denied.returncode != 0 and files == []
    assert "terminal prompts disabled" in denied.stderr


@pytest.mark.parametrize(
    ("commit", "path", "said"),
    [
        ("f" * 40, "", "not our ref"),
        (None, "missing/dir", "not a valid object name"),
    ],
)
def test_failures_fail_the_container_not_an_empty_build(
    rootfs: Path, server: Server, commit: str | None, path: str, said: str
) -> None:
    done, files = fetch(rootfs, f"{server.url}/app.git", commit or server.commits[1], path)
    assert done.returncode != 0
    assert files == []
    assert said in done.stderr
