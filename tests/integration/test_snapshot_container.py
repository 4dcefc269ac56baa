"""``lamina snapshot --container-id ... --pause`` against a hand-made "container".

The committer believes only the runtime (see tests/integration/test_snapshot_containerd.py
for a real containerd), so the stand-in lays containerd's layout out honestly: overlayfs
snapshots under ``<root>/io.containerd.snapshotter.v1.overlayfs/snapshots``, a task bundle
with ``init.pid`` and ``config.json``, the rootfs overlay mounted at ``<bundle>/rootfs`` in the
host's mount namespace, and a parent process whose command line is the shim's.  The init is a
process in its own mount namespace whose root is that overlay (``unshare`` + ``chroot``), with
a bind mount on ``/etc/hosts`` (whose stub the runtime leaves in the upperdir), in a cgroup v1
freezer cgroup whose path carries the container ID.  Runtime layouts that do not add up are
refused here too (an upperdir outside the snapshot root, a shim serving another task).
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


# A stand-in for containerd-shim-runc-v2: starts the container's init as its own child,
# records it in the task bundle's init.pid (as runc does for the shim), waits for it.
FAKE_SHIM = """
import subprocess, sys
bundle, script = sys.argv[1], sys.argv[2]
init = subprocess.Popen(["sh", "-c", script])
open(bundle + "/init.pid", "w").write(str(init.pid))
init.wait()
"""


class FakeRuntime:
    """containerd's layout, laid out honestly: snapshots, a task bundle, the rootfs overlay
    mounted at ``<bundle>/rootfs`` in the host's mount namespace, and a shim parent."""

    namespace = "lamina-it"

    def __init__(self, base: Path, container_id: str) -> None:
        self.root = base / "containerd-root"
        self.state = base / "containerd-state"
        self.container_id = container_id
        snapshots = self.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
        self.lower = snapshots / "1" / "fs"
        self.upper = snapshots / "2" / "fs"
        self.work = snapshots / "2" / "work"
        self.bundle = self.state / "io.containerd.runtime.v2.task" / self.namespace / container_id
        self.rootfs = self.bundle / "rootfs"
        for directory in (self.lower, self.upper, self.work, self.rootfs):
            directory.mkdir(parents=True)
        (self.bundle / "config.json").write_text(
            json.dumps({"mounts": [{"destination": "/proc"}, {"destination": "/etc/hosts"}]})
        )

    def mount(self, upper: Path | None = None) -> None:
        options = f"lowerdir={self.lower},upperdir={upper or self.upper},workdir={self.work}"
        run("mount", "-t", "overlay", "overlay", "-o", options, self.rootfs)

    def start_shim(self, script: str, task_id: str | None = None) -> subprocess.Popen[bytes]:
        argv = [
            "containerd-shim-runc-v2", "-c", FAKE_SHIM, str(self.bundle), script,
            "-namespace", self.namespace, "-id", task_id or self.container_id,
            "-address", "/nonexistent",
        ]  # fmt: skip
        return subprocess.Popen(argv, executable=sys.executable)

    def committer_args(self) -> list[str]:
        return [
            f"--container-id=containerd://{self.container_id}",
            f"--containerd-root={self.root}",
            f"--containerd-state={self.state}",
            f"--containerd-namespace={self.namespace}",
        ]


def init_script(cgroup_path: Path, hosts: Path, rootfs: Path) -> str:
    """The container's init: into its cgroup, its own mount namespace (the same process: no
    fork), a bind mount on /etc/hosts, then chroot into the rootfs."""
    return (
        f"echo $$ > {cgroup_path}/cgroup.procs && exec unshare --mount "
        f"sh -c 'mount --bind {hosts} {rootfs}/etc/hosts && exec chroot {rootfs} /bin/sleep 600'"
    )


def wait_for_sleep(cgroup_path: Path) -> None:
    deadline = time.monotonic() + 10
    while "sleep" not in {
        Path(f"/proc/{pid}/comm").read_text().strip()
        for pid in (cgroup_path / "cgroup.procs").read_text().split()
    }:
        assert time.monotonic() < deadline, "the test container did not start"
        time.sleep(0.05)


def stop(shim: subprocess.Popen[bytes], cgroup_path: Path, rootfs: Path) -> None:
    shim.kill()
    shim.wait()
    for pid in (cgroup_path / "cgroup.procs").read_text().split():
        os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.2)
    subprocess.run(["umount", "-l", str(rootfs)], check=False)


def test_container_commit_with_pause(
    tmp_path: Path, registry: Registry, repository: str, cgroup: tuple[str, Path]
) -> None:
    container_id, cgroup_path = cgroup
    runtime = FakeRuntime(tmp_path, container_id)
    make_rootfs(runtime.lower)
    parent = registry.ref(f"{repository}/parent", "1")
    push_parent(runtime.lower, parent, tmp_path)
    runtime.mount()
    merged = runtime.rootfs
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    (merged / "etc" / "hosts").write_text("")  # the runtime's stub for the bind mount
    shim = runtime.start_shim(init_script(cgroup_path, hosts, merged))
    try:
        wait_for_sleep(cgroup_path)
        (merged / "app").mkdir()
        (merged / "app" / "data.txt").write_text("written by the container\n")
        (merged / "var" / "old" / "file").unlink()

        target = registry.ref(f"{repository}/committed", "v1")
        result = lamina_snapshot(
            *runtime.committer_args(),
            "--pause",
            f"--parent={parent}",
            f"--to={target}",
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
        stop(shim, cgroup_path, merged)


def test_a_runtime_mount_outside_the_snapshot_root_is_refused(
    tmp_path: Path, registry: Registry, repository: str, cgroup: tuple[str, Path]
) -> None:
    """The rootfs mount at the bundle names an upperdir outside containerd's snapshots (a
    misconfigured root, or a mount nobody vouches for): nothing of it is read."""
    container_id, cgroup_path = cgroup
    runtime = FakeRuntime(tmp_path, container_id)
    make_rootfs(runtime.lower)
    outside = tmp_path / "outside-upper"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the registry")
    runtime.mount(upper=outside)
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    (runtime.rootfs / "etc" / "hosts").write_text("")
    shim = runtime.start_shim(init_script(cgroup_path, hosts, runtime.rootfs))
    try:
        wait_for_sleep(cgroup_path)
        target = registry.ref(f"{repository}/outside", "v1")
        result = lamina_snapshot(
            *runtime.committer_args(), "--parent=127.0.0.1:1/x/y:1", f"--to={target}", "--insecure"
        )
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"lamina snapshot: upperdir {outside} is outside the runtime's snapshot root "
            f"{runtime.root}/io.containerd.snapshotter.v1.overlayfs/snapshots: refusing to read it"
        )
        # A shim serving another task is not this container's shim.
        stop(shim, cgroup_path, runtime.rootfs)
        runtime.mount()
        (runtime.rootfs / "etc" / "hosts").write_text("")
        shim = runtime.start_shim(init_script(cgroup_path, hosts, runtime.rootfs), "f" * 64)
        wait_for_sleep(cgroup_path)
        result = lamina_snapshot(
            *runtime.committer_args(), "--parent=127.0.0.1:1/x/y:1", f"--to={target}", "--insecure"
        )
        assert result.returncode == 1
        assert "is not a child of the runtime shim for" in result.stderr
        assert "its parent" in result.stderr
        assert "is the shim of task ffffffffffff in namespace lamina-it" in result.stderr
    finally:
        stop(shim, cgroup_path, runtime.rootfs)


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
