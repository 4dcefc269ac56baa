"""``lamina snapshot`` against real containers of a real containerd + runc, and their attacks.

The committer is given only the container ID and containerd's root, state and namespace, as
the commit Job gives them; it finds the writable layer through the task bundle, the shim and
the shim's mount table.  The attacks are the ones a tenant's container can make:

- it mounts, inside a user namespace it creates (no privilege needed), an overlay on its own
  ``/`` whose ``upperdir=`` names a host directory holding a secret: the committer used to
  read that directory and push it;
- a process that claims the container (in its cgroups, PID 1 of its own PID namespace) is
  named where the init should be: it is refused because it is not the shim's child.

Each pushed image is read back with skopeo (the layer's entries with GNU tar, the tree with
umoci): it holds exactly the container's own changes, and the secret nowhere.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.snapshot.mountinfo import overlay_layers, parse_mountinfo, topmost_at
from tests.integration.conftest import (
    Registry,
    inspect_config,
    lamina_snapshot,
    pull_and_unpack,
    push_parent,
    run,
)
from tests.integration.containerd import (
    Containerd,
    busybox_rootfs,
    new_container_id,
    standalone_containerd,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def containerd(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    with standalone_containerd(tmp_path_factory.mktemp("containerd")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def parent(
    containerd: Containerd, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> str:
    work = tmp_path_factory.mktemp("parent")
    busybox_rootfs(work / "rootfs")
    ref = registry.ref(f"it/{uuid.uuid4().hex[:10]}/busybox", "1")
    push_parent(work / "rootfs", ref, work)
    containerd.pull(ref)
    return ref


def snapshot(
    containerd: Containerd, container_id: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """The committer with the runtime's paths, as the commit Job runs it (``--name=VALUE``)."""
    return lamina_snapshot(
        f"--container-id=containerd://{container_id}",
        f"--containerd-root={containerd.root}",
        f"--containerd-state={containerd.state}",
        f"--containerd-namespace={containerd.namespace}",
        "--insecure",
        *args,
    )


def pulled_layout(ref: str, work: Path) -> Path:
    layout = work / f"layout-{uuid.uuid4().hex[:6]}"
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:pulled")
    return layout


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def top_layer_entries(layout: Path) -> set[str]:
    """What the committed layer holds, listed by GNU tar (no Lamina code)."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
    listing = run("tar", "-tzf", _blob(layout, manifest["layers"][-1]["digest"])).stdout
    return {line.removeprefix("./").rstrip("/") for line in listing.splitlines()} - {"", "."}


def every_byte_pushed(layout: Path) -> bytes:
    """Every blob of the pulled image (manifests, config, layers decompressed), concatenated."""
    data = b""
    for blob in sorted((layout / "blobs" / "sha256").iterdir()):
        raw = blob.read_bytes()
        data += gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return data


def test_a_real_container_commits_exactly_its_changes(
    containerd: Containerd, parent: str, registry: Registry, tmp_path: Path
) -> None:
    container_id = new_container_id()
    containerd.start(container_id, parent, "/bin/sleep", "600")
    try:
        containerd.exec(
            container_id,
            "mkdir -p /app/skip && echo 'written by the container' > /app/data.txt"
            " && echo left-out > /app/skip/file"
            " && rm /var/old/file && echo ID=changed > /etc/os-release",
        )
        target = registry.ref(f"it/{uuid.uuid4().hex[:10]}/committed", "v1")
        # Free text as the commit Job passes it: values that look like options stay values.
        values = {"author": "--help", "message": "--to=evil", "exclude": ["/app/skip", "--"]}
        result = snapshot(
            containerd,
            container_id,
            "--pause",
            f"--parent={parent}",
            f"--to={target}",
            f"--commit-json={json.dumps(values)}",
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["timings"]["frozenSeconds"] > 0
        freezer = Path(f"/sys/fs/cgroup/freezer/{containerd.namespace}/{container_id}")
        assert (freezer / "freezer.state").read_text().strip() == "THAWED"

        layout = pulled_layout(target, tmp_path)
        assert top_layer_entries(layout) == {
            "app",
            "app/data.txt",
            "etc",
            "etc/os-release",
            "var",
            "var/old",
            "var/old/.wh.file",
        }
        config = inspect_config(target)
        assert config["author"] == "--help"
        assert config["history"][-1]["comment"] == "--to=evil"  # type: ignore[index]
        rootfs = pull_and_unpack(target, tmp_path)
        assert (rootfs / "app" / "data.txt").read_text() == "written by the container\n"
        assert (rootfs / "etc" / "os-release").read_text() == "ID=changed\n"
        assert not (rootfs / "var" / "old" / "file").exists()
        assert (rootfs / "bin" / "busybox").is_file()
    finally:
        containerd.remove(container_id)


def forge_root_overlay(secret_upper: Path) -> str:
    """The container's command: mount, in a user namespace of its own, an overlay on ``/``
    whose upperdir is the host path of ``secret_upper`` (a tmpfs path inside the container),
    then become the workload; the init stays in that namespace."""
    return (
        "echo 'the real change' > /real.txt"
        " && mount -t tmpfs forged /tmp"
        f" && mkdir -p /tmp/lower /tmp/work {secret_upper}"
        f" && mount -t overlay overlay -o lowerdir=/tmp/lower,upperdir={secret_upper},"
        "workdir=/tmp/work,userxattr /"
        " && exec sleep 600"
    )


def test_a_forged_root_overlay_is_not_what_is_committed(
    containerd: Containerd, parent: str, registry: Registry, tmp_path: Path
) -> None:
    secret_upper = tmp_path / "host-secret" / "upper"
    secret_upper.mkdir(parents=True)
    token = f"host-secret-{uuid.uuid4().hex}"
    (secret_upper / "secret.txt").write_text(token)
    container_id = new_container_id()
    init = containerd.start(
        container_id,
        parent,
        "/bin/unshare",
        "-Urm",
        "/bin/sh",
        "-c",
        forge_root_overlay(secret_upper),
    )
    try:
        # The attack is live: the container's own table now says its root's upper is the
        # host's secret directory; the old lookup (topmost mount at / there) would read it.
        deadline = time.monotonic() + 10
        while True:
            table = parse_mountinfo(Path(f"/proc/{init}/mountinfo").read_bytes())
            forged = topmost_at(table, b"/")
            if forged is not None and overlay_layers(forged).upper == os.fsencode(secret_upper):
                break
            assert time.monotonic() < deadline, "the container did not forge its root overlay"
            time.sleep(0.05)
        assert Path(f"/proc/{init}/comm").read_text().strip() == "sleep"

        target = registry.ref(f"it/{uuid.uuid4().hex[:10]}/forged", "v1")
        result = snapshot(
            containerd, container_id, "--pause", f"--parent={parent}", f"--to={target}"
        )
        assert result.returncode == 0, result.stderr
        layout = pulled_layout(target, tmp_path)
        # The real upper: what the container wrote before it forged anything.
        assert top_layer_entries(layout) == {"real.txt"}
        pushed = every_byte_pushed(layout)
        assert token.encode() not in pushed
        assert b"secret.txt" not in pushed
        rootfs = pull_and_unpack(target, tmp_path)
        assert (rootfs / "real.txt").read_text() == "the real change\n"
    finally:
        containerd.remove(container_id)


def start_decoy(cgroups: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """A host process that claims the container: PID 1 of its own PID namespace, moved into
    the container's cgroup in every v1 hierarchy (what the old cgroup scan looked for)."""
    decoy = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sleep", "600"]
    )
    deadline = time.monotonic() + 5
    children: list[str] = []
    while not children:
        assert time.monotonic() < deadline, "the decoy did not start"
        time.sleep(0.02)
        children = Path(f"/proc/{decoy.pid}/task/{decoy.pid}/children").read_text().split()
    pid = int(children[0])
    for controllers, path in cgroups.items():
        if not controllers:
            continue
        hierarchy = Path("/sys/fs/cgroup") / controllers.removeprefix("name=")
        procs = hierarchy / path.lstrip("/") / "cgroup.procs"
        if procs.exists():
            procs.write_text(str(pid))
    return decoy, pid


def read_cgroups(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}


def test_an_init_that_is_not_the_shims_child_is_refused(
    containerd: Containerd, parent: str, registry: Registry, tmp_path: Path
) -> None:
    container_id = new_container_id()
    init = containerd.start(container_id, parent, "/bin/sleep", "600")
    decoy, decoy_pid = start_decoy(read_cgroups(init))
    init_pid_file = containerd.bundle(container_id) / "init.pid"
    try:
        status = Path(f"/proc/{decoy_pid}/status").read_text().splitlines()
        nspid = next(line for line in status if line.startswith("NSpid:")).split()
        assert nspid[-1] == "1"
        assert container_id in Path(f"/proc/{decoy_pid}/cgroup").read_text()
        containerd.exec(container_id, "echo real > /real.txt")

        # With the runtime's own init.pid the decoy changes nothing.
        target = registry.ref(f"it/{uuid.uuid4().hex[:10]}/decoy", "v1")
        result = snapshot(containerd, container_id, f"--parent={parent}", f"--to={target}")
        assert result.returncode == 0, result.stderr
        assert top_layer_entries(pulled_layout(target, tmp_path)) == {"real.txt"}

        # The task's init.pid naming the decoy (a PID recycled by a process that claims the
        # container) is refused: the decoy is no child of the container's shim.
        init_pid_file.write_text(str(decoy_pid))
        refused_target = registry.ref(f"it/{uuid.uuid4().hex[:10]}/refused", "v1")
        result = snapshot(containerd, container_id, f"--parent={parent}", f"--to={refused_target}")
        assert result.returncode == 1
        assert (
            f"lamina snapshot: process {decoy_pid} named by the container's init.pid is not a "
            f"child of the runtime shim for {container_id[:12]}"
        ) in result.stderr
        assert result.stdout == ""
        pushed = run(
            "skopeo", "inspect", "--tls-verify=false", f"docker://{refused_target}", check=False
        )
        assert pushed.returncode != 0  # nothing was pushed
    finally:
        init_pid_file.write_text(str(init))
        os.kill(decoy_pid, signal.SIGKILL)
        decoy.send_signal(signal.SIGKILL)
        decoy.wait()
        containerd.remove(container_id)


def test_a_container_the_runtime_does_not_run_is_refused(
    containerd: Containerd, parent: str
) -> None:
    unknown = new_container_id()
    result = snapshot(containerd, unknown, f"--parent={parent}", "--to=127.0.0.1:1/x/y:z")
    assert result.returncode == 1
    assert f"lamina snapshot: container {unknown[:12]} not found under the runtime" in result.stderr
    # A real container, but looked for in another namespace: not found either.
    container_id = new_container_id()
    containerd.start(container_id, parent, "/bin/sleep", "600")
    try:
        result = lamina_snapshot(
            f"--container-id=containerd://{container_id}",
            f"--containerd-root={containerd.root}",
            f"--containerd-state={containerd.state}",
            "--containerd-namespace=k8s.io",
            f"--parent={parent}",
            "--to=127.0.0.1:1/x/y:z",
        )
        assert result.returncode == 1
        assert "not found under the runtime" in result.stderr
        # cri-o:// IDs are refused by name.
        result = lamina_snapshot(
            f"--container-id=cri-o://{container_id}", f"--parent={parent}", "--to=127.0.0.1:1/x/y:z"
        )
        assert result.returncode == 1
        assert "container runtime 'cri-o' is not supported" in result.stderr
    finally:
        containerd.remove(container_id)
