"""``lamina snapshot --container-id ... --pause`` against a real "container".

No container runtime is needed to exercise what the committer relies on: a process in its own
mount and PID namespaces whose root is a real overlay (``unshare`` + ``chroot``), with a bind
mount on ``/etc/hosts`` (whose stub the runtime leaves in the upperdir), in a cgroup v1
freezer cgroup whose path carries the container ID, as containerd and CRI-O lay them out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Registry,
    lamina_snapshot,
    pull_and_unpack,
    push_parent,
    run,
)

pytestmark = pytest.mark.integration

FREEZER = Path("/sys/fs/cgroup/freezer")


@pytest.fixture
def cgroup() -> Iterator[tuple[str, Path]]:
    if not (FREEZER / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer")
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    path = FREEZER / "lamina-it" / f"cri-containerd-{container_id}.scope"
    path.mkdir(parents=True)
    try:
        yield container_id, path
    finally:
        (path / "freezer.state").write_text("THAWED")
        for pid in (path / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while (path / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        path.rmdir()


def make_rootfs(lower: Path) -> None:
    """A lower layer that can run /bin/sleep (the binary and its libraries)."""
    for binary in ("/bin/sleep",):
        libraries = [binary] + [
            part for part in run("ldd", binary).stdout.split() if part.startswith("/")
        ]
        for library in libraries:
            target = lower / library.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(library, target)
    (lower / "etc").mkdir(exist_ok=True)
    (lower / "etc" / "os-release").write_text("ID=lamina-it\n")
    (lower / "var" / "old").mkdir(parents=True)
    (lower / "var" / "old" / "file").write_text("old")


def test_container_commit_with_pause(
    tmp_path: Path, registry: Registry, repository: str, cgroup: tuple[str, Path]
) -> None:
    container_id, cgroup_path = cgroup
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for directory in (lower, upper, work, merged):
        directory.mkdir()
    make_rootfs(lower)
    parent = registry.ref(f"{repository}/parent", "1")
    push_parent(lower, parent, tmp_path)
    run(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={lower},upperdir={upper},workdir={work}",
        merged,
    )
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    (merged / "etc" / "hosts").write_text("")  # the runtime's stub for the bind mount
    script = (
        f"echo $$ > {cgroup_path}/cgroup.procs && exec unshare --mount --pid --fork "
        f"sh -c 'mount --bind {hosts} {merged}/etc/hosts && exec chroot {merged} /bin/sleep 600'"
    )
    process = subprocess.Popen(["sh", "-c", script])
    try:
        deadline = time.monotonic() + 10
        while "sleep" not in {
            Path(f"/proc/{pid}/comm").read_text().strip()
            for pid in (cgroup_path / "cgroup.procs").read_text().split()
        }:
            assert time.monotonic() < deadline, "the test container did not start"
            time.sleep(0.05)
        (merged / "app").mkdir()
        (merged / "app" / "data.txt").write_text("written by the container\n")
        (merged / "var" / "old" / "file").unlink()

        target = registry.ref(f"{repository}/committed", "v1")
        result = lamina_snapshot(
            "--container-id",
            f"containerd://{container_id}",
            "--pause",
            "--parent",
            parent,
            "--to",
            target,
            "--insecure",
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["timings"]["frozenSeconds"] > 0
        assert (cgroup_path / "freezer.state").read_text().strip() == "THAWED"

        rootfs = pull_and_unpack(target, tmp_path)
        assert (rootfs / "app" / "data.txt").read_text() == "written by the container\n"
        assert not (rootfs / "var" / "old" / "file").exists()
        assert not (rootfs / "etc" / "hosts").exists()  # bind-mount stub left out
        assert (rootfs / "etc" / "os-release").read_text() == "ID=lamina-it\n"
    finally:
        process.kill()
        process.wait()
        for pid in (cgroup_path / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)
        subprocess.run(["umount", "-l", str(merged)], check=False)


FREEZE_AND_WAIT = """
import sys, time
from lamina.snapshot.freezer import CgroupFreezer
freezer = CgroupFreezer.for_cgroups({"freezer": sys.argv[1]})
with freezer.frozen():
    print("frozen", flush=True)
    time.sleep(60)
"""


def test_sigterm_while_frozen_thaws_the_container(cgroup: tuple[str, Path]) -> None:
    _, cgroup_path = cgroup
    sleeper = subprocess.Popen(
        ["sh", "-c", f"echo $$ > {cgroup_path}/cgroup.procs && exec sleep 600"]
    )
    try:
        time.sleep(0.2)
        relative = "/" + str(cgroup_path.relative_to(FREEZER))
        committer = subprocess.Popen(
            [sys.executable, "-c", FREEZE_AND_WAIT, relative], stdout=subprocess.PIPE, text=True
        )
        assert committer.stdout is not None
        assert committer.stdout.readline().strip() == "frozen"
        assert (cgroup_path / "freezer.state").read_text().strip() == "FROZEN"
        committer.send_signal(signal.SIGTERM)
        assert committer.wait(timeout=10) == 128 + signal.SIGTERM
        assert (cgroup_path / "freezer.state").read_text().strip() == "THAWED"
    finally:
        sleeper.kill()
        sleeper.wait()
