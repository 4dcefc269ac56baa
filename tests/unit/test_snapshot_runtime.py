"""The runtime checks of the committer: pure parts, and each refusal on a synthetic layout.

The real thing (a containerd, its shim, runc and an attacking container) is in
tests/integration/test_snapshot_containerd.py; here a directory tree stands in for the host's
``/`` and ``/proc`` so that every refusal message is pinned down.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lamina.snapshot.runtime import (
    ContainerdLayout,
    RuntimeRefused,
    TaskSpec,
    absolute_components,
    containerd_id,
    locate_container,
    parse_shim_command,
    parse_task_spec,
    shim_task_id,
    snapshot_id,
)

SNAPSHOTS = b"/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
ID = "c" * 64
SANDBOX = "5" * 64


def test_container_ids() -> None:
    assert containerd_id(f"containerd://{ID}") == ID
    assert containerd_id(ID) == ID
    with pytest.raises(RuntimeRefused, match="'cri-o' is not supported"):
        containerd_id(f"cri-o://{ID}")
    with pytest.raises(RuntimeRefused, match="not a containerd container ID"):
        containerd_id("containerd://../../etc")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (SNAPSHOTS + b"/13/fs", b"13"),
        (b"7/fs", b"7"),  # containerd's shortened lowerdir, relative to the snapshot directory
    ],
)
def test_snapshot_paths(path: bytes, expected: bytes) -> None:
    assert snapshot_id(path, SNAPSHOTS) == expected


@pytest.mark.parametrize(
    "path",
    [
        b"/tmp/secret",
        SNAPSHOTS,
        SNAPSHOTS + b"/",
        SNAPSHOTS + b"/13",
        SNAPSHOTS + b"/13/work",
        SNAPSHOTS + b"/13/fs/etc",
        SNAPSHOTS + b"/../../../../tmp/fs",
        SNAPSHOTS + b"/13/../14/fs",
        SNAPSHOTS + b"//13/fs",
        SNAPSHOTS + b"/13/fs/",
        SNAPSHOTS + b"x/13/fs",  # a sibling directory whose name starts the same
        b"../13/fs",
        b"fs",
    ],
)
def test_paths_outside_the_snapshot_root(path: bytes) -> None:
    with pytest.raises(ValueError):
        snapshot_id(path, SNAPSHOTS)


def test_absolute_components() -> None:
    assert absolute_components(b"/run//containerd/", "x") == [b"run", b"containerd"]
    for bad in (b"run/containerd", b"/run/../etc", b"/run/./x"):
        with pytest.raises(ValueError):
            absolute_components(bad, "x")


def test_shim_command_lines() -> None:
    argv = b"/usr/bin/containerd-shim-runc-v2\0-namespace\0k8s.io\0-id\0abc\0-address\0/s\0"
    shim = parse_shim_command(argv)
    assert (shim.binary, shim.namespace, shim.task_id) == (
        "containerd-shim-runc-v2",
        "k8s.io",
        "abc",
    )
    shim = parse_shim_command(b"containerd-shim-runc-v2\0--namespace=n\0-id=x\0")
    assert (shim.namespace, shim.task_id) == ("n", "x")
    shim = parse_shim_command(b"containerd-shim-runc-v2\0-debug\0-id\0x\0-id\0y\0-namespace\0")
    assert (shim.namespace, shim.task_id) == (None, "x")
    assert parse_shim_command(b"").binary == ""


def test_the_task_spec() -> None:
    spec = {
        "mounts": [
            {"destination": "/proc", "type": "proc"},
            {"destination": "/etc/hosts", "type": "bind"},
            {"destination": "relative"},
            {"destination": 5},
            "junk",
        ],
        "annotations": {"io.kubernetes.cri.sandbox-id": SANDBOX},
    }
    parsed = parse_task_spec(json.dumps(spec).encode())
    assert parsed.mount_targets == (b"/etc/hosts", b"/proc")
    assert parsed.shim_group == SANDBOX
    assert parse_task_spec(b"{}") == TaskSpec((), None)
    with pytest.raises(RuntimeRefused, match="not JSON"):
        parse_task_spec(b"{")
    with pytest.raises(RuntimeRefused, match="not an OCI runtime spec"):
        parse_task_spec(b"[]")


def test_which_shim_serves_a_task() -> None:
    alone, grouped = TaskSpec((), None), TaskSpec((), "group-1")
    assert shim_task_id(ID, None, alone) == ID
    assert shim_task_id(ID, None, grouped) == "group-1"
    assert shim_task_id(ID, SANDBOX.encode() + b"\n", grouped) == SANDBOX
    with pytest.raises(RuntimeRefused, match="no valid sandbox or shim group"):
        shim_task_id(ID, b"../x", alone)


# -- refusals on a synthetic host ---------------------------------------------------------


class FakeHost:
    """A host root and a /proc with a shim (pid 100) and a container init (pid 200)."""

    def __init__(self, root: Path) -> None:
        self.root = root / "host"
        self.proc = root / "proc"
        self.layout = ContainerdLayout.create(host_root=str(self.root), proc_root=str(self.proc))
        self.bundle = Path(os.fsdecode(self.layout.on_host(self.layout.bundle(ID))))
        self.bundle.mkdir(parents=True)
        (self.bundle / "init.pid").write_text("200")
        (self.bundle / "config.json").write_text(json.dumps({"mounts": [{"destination": "/a"}]}))
        for number in (b"1", b"2"):
            Path(os.fsdecode(self.layout.on_host(SNAPSHOTS + b"/" + number + b"/fs"))).mkdir(
                parents=True
            )
        self.process(100, ppid=1, start=10, cmdline=self.shim_argv(ID), cgroup="0::/system")
        self.process(200, ppid=100, start=20, cmdline=b"sleep\0", cgroup=f"0::/default/{ID}")
        self.mounts(
            f"upperdir={os.fsdecode(SNAPSHOTS)}/2/fs,lowerdir={os.fsdecode(SNAPSHOTS)}/1/fs"
        )

    @staticmethod
    def shim_argv(task: str) -> bytes:
        return f"/bin/containerd-shim-runc-v2\0-namespace\0k8s.io\0-id\0{task}\0".encode()

    def process(self, pid: int, *, ppid: int, start: int, cmdline: bytes, cgroup: str) -> None:
        directory = self.proc / str(pid)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "status").write_text(f"Name:\tx\nPPid:\t{ppid}\n")
        fields = ["S"] + ["0"] * 18 + [str(start)]
        (directory / "stat").write_text(f"{pid} (x) {' '.join(fields)}\n")
        (directory / "cmdline").write_bytes(cmdline)
        (directory / "cgroup").write_text(cgroup + "\n")

    def mounts(self, options: str, fstype: str = "overlay") -> None:
        rootfs = os.fsdecode(self.layout.bundle(ID)) + "/rootfs"
        (self.proc / "100" / "mountinfo").write_text(
            f"1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / {rootfs} rw - {fstype} o rw,{options}\n"
        )


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def test_an_honest_layout_is_located(host: FakeHost) -> None:
    found = locate_container(f"containerd://{ID}", host.layout)
    assert (found.init_pid, found.shim_pid) == (200, 100)
    assert found.upper == host.layout.on_host(SNAPSHOTS + b"/2/fs")
    assert found.lowers == (host.layout.on_host(SNAPSHOTS + b"/1/fs"),)
    assert found.mount_targets == (b"/a",)


@pytest.mark.parametrize("how", ["sandbox file", "group label"])
def test_a_pod_shares_the_sandbox_shim(host: FakeHost, how: str) -> None:
    if how == "sandbox file":
        (host.bundle / "sandbox").write_text(SANDBOX)
    else:
        annotations = {"io.kubernetes.cri.sandbox-id": SANDBOX}
        (host.bundle / "config.json").write_text(json.dumps({"annotations": annotations}))
    with pytest.raises(RuntimeRefused, match="not a child of the runtime shim for 555555555555"):
        locate_container(ID, host.layout)
    host.process(100, ppid=1, start=10, cmdline=host.shim_argv(SANDBOX), cgroup="0::/")
    assert locate_container(ID, host.layout).shim_pid == 100


def refusal(host: FakeHost) -> str:
    with pytest.raises(RuntimeRefused) as refused:
        locate_container(ID, host.layout)
    return str(refused.value)


def test_container_not_found(host: FakeHost) -> None:
    with pytest.raises(RuntimeRefused, match=r"container dddddddddddd not found under the runtime"):
        locate_container("d" * 64, host.layout)


def test_not_started(host: FakeHost) -> None:
    (host.bundle / "init.pid").unlink()
    assert "has no init.pid" in refusal(host)


def test_no_spec(host: FakeHost) -> None:
    (host.bundle / "config.json").unlink()
    assert "has no config.json in its task bundle" in refusal(host)


def test_init_not_a_child_of_the_shim(host: FakeHost) -> None:
    host.process(200, ppid=1, start=20, cmdline=b"sleep\0", cgroup=f"0::/default/{ID}")
    host.process(1, ppid=0, start=1, cmdline=b"/sbin/init\0splash\0", cgroup="0::/")
    assert refusal(host) == (
        f"process 200 named by the container's init.pid is not a child of the runtime shim "
        f"for {ID[:12]} (namespace k8s.io): its parent 1 is not a shim: it runs '/sbin/init splash'"
    )
    # A parent that only calls itself a shim, for another task.
    host.process(100, ppid=1, start=10, cmdline=host.shim_argv("e" * 64), cgroup="0::/")
    host.process(200, ppid=100, start=20, cmdline=b"sleep\0", cgroup=f"0::/default/{ID}")
    assert "its parent 100 is the shim of task eeeeeeeeeeee in namespace k8s.io" in refusal(host)


def test_recycled_init_pid(host: FakeHost) -> None:
    host.process(200, ppid=100, start=5, cmdline=b"sleep\0", cgroup=f"0::/default/{ID}")
    assert "started before its shim" in refusal(host)


def test_init_gone(host: FakeHost) -> None:
    for name in ("status", "stat", "cmdline", "cgroup"):
        (host.proc / "200" / name).unlink()
    assert "is gone: the container has exited" in refusal(host)


def test_init_in_a_foreign_cgroup(host: FakeHost) -> None:
    host.process(200, ppid=100, start=20, cmdline=b"sleep\0", cgroup="0::/elsewhere")
    assert "cgroups that do not name the container" in refusal(host)


def test_no_rootfs_mount(host: FakeHost) -> None:
    (host.proc / "100" / "mountinfo").write_text("1 0 0:1 / / rw - ext4 /dev/vda rw\n")
    assert "no rootfs mount at" in refusal(host)


def test_upper_and_lowers_outside_the_snapshot_root(host: FakeHost) -> None:
    snapshots = os.fsdecode(SNAPSHOTS)
    host.mounts(f"upperdir=/tmp/secret,lowerdir={snapshots}/1/fs")
    assert refusal(host).startswith("upperdir /tmp/secret is outside the runtime's snapshot root")
    host.mounts(f"upperdir={snapshots}/2/fs,lowerdir=/etc")
    assert refusal(host).startswith("lowerdir /etc is outside the runtime's snapshot root")
    host.mounts(f"upperdir={snapshots}/9/fs,lowerdir={snapshots}/1/fs")
    assert "does not exist under the runtime's snapshot root" in refusal(host)


def test_symlinks_in_the_runtime_paths_are_not_followed(host: FakeHost, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    snapshot = Path(os.fsdecode(host.layout.on_host(SNAPSHOTS + b"/2")))
    (snapshot / "fs").rmdir()
    (snapshot / "fs").symlink_to(elsewhere)
    assert "is not a directory (a symlink?)" in refusal(host)


def test_a_symlinked_bundle_is_refused(host: FakeHost, tmp_path: Path) -> None:
    real = tmp_path / "real-bundle"
    host.bundle.rename(real)
    host.bundle.symlink_to(real)
    assert "task bundle" in refusal(host) and "a symlink?" in refusal(host)
