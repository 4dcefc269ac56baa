"""Find a container's writable layer from its runtime (containerd), never from the container.

A container controls its own mount table: with a user namespace (which the Kubernetes default
seccomp profile allows) it can mount an overlay on its own ``/`` whose ``upperdir=`` names any
host directory.  So nothing here reads the container's ``/proc/<pid>/mountinfo`` or trusts a
process because its cgroup names the container.  Everything comes from what containerd and
its runc shim wrote, in places the container cannot write:

1. the task bundle ``<state>/io.containerd.runtime.v2.task/<namespace>/<id>/`` (a directory on
   the host): ``init.pid`` (written by runc for the shim), ``sandbox`` (the pod's sandbox ID
   when the pod's containers share one shim, as CRI does) and ``config.json`` (the OCI spec
   containerd generated: its ``mounts`` are the bind-mount targets runc made stubs for, its
   annotations the group by which the shim serves several tasks);
2. the init process is checked to be a child of the shim for that task: its parent's command
   line is ``containerd-shim-runc-v2 -namespace <namespace> -id <shim id>`` and it started
   after the shim (a recycled PID fails one of the two), and its cgroup names the container
   (that cgroup is what ``--pause`` freezes);
3. the rootfs mount is read from the *shim's* mount table (``/proc/<shim>/mountinfo``: the
   host's mount namespace, where the shim mounted it at ``<bundle>/rootfs``; nothing the
   container mounts propagates there);
4. its upper and lower directories must be snapshots of the runtime's own overlayfs
   snapshotter, ``<root>/io.containerd.snapshotter.v1.overlayfs/snapshots/<n>/fs`` exactly (a
   lower may be ``<n>/fs``, relative to that directory, when containerd shortened a long
   option list), and every component from the host root down to ``fs`` must be a real
   directory, not a symlink.

The mount table was chosen over containerd's API or its snapshotter database: it is the
kernel's own record of what the shim mounted, readable with the host's PID namespace alone,
while the API would hand the committer containerd's socket (full control of every container
on the node) and the bolt database has no stable format.  Anything that does not fit is
refused with :class:`RuntimeRefused`, whose message says which check failed.

``host_root`` is where the committer sees the host's filesystem (``/host`` in the commit Job,
which mounts only the task and snapshot directories there, read-only); ``proc_root`` is the
host's ``/proc`` (the Job has ``hostPID``).  Paths in the shim's mount table are host paths.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from lamina.snapshot.container import read_cgroups
from lamina.snapshot.mountinfo import OverlayLayers, overlay_layers, parse_mountinfo, topmost_at

CONTAINERD_PREFIX = "containerd://"
TASKS_DIRECTORY = b"io.containerd.runtime.v2.task"
OVERLAY_SNAPSHOTTER = b"io.containerd.snapshotter.v1.overlayfs"
SHIM_BINARY = "containerd-shim-runc-v2"
# containerd-shim-runc-v2's groupLabels, in its order.
SHIM_GROUP_LABELS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")
DEFAULT_ROOT = "/var/lib/containerd"
DEFAULT_STATE = "/run/containerd"
CRI_NAMESPACE = "k8s.io"

_CONTAINER_ID = re.compile(r"^[0-9a-f]{12,128}$")
# containerd's identifier rule (namespaces, sandbox IDs): letters, digits, '.', '_', '-'.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,75}$")
_SNAPSHOT = re.compile(rb"^([0-9]+)/fs$")
_SMALL_FILE = 64 * 1024
_CONFIG_LIMIT = 16 * 1024 * 1024


class RuntimeRefused(Exception):
    """The runtime does not vouch for this container; the message says which check failed."""


@dataclass(frozen=True)
class ContainerdLayout:
    """Where one containerd keeps its state and snapshots, and how the committer sees them."""

    root: bytes = os.fsencode(DEFAULT_ROOT)
    state: bytes = os.fsencode(DEFAULT_STATE)
    namespace: str = CRI_NAMESPACE
    host_root: bytes = b"/"
    proc_root: str = "/proc"

    @classmethod
    def create(
        cls,
        *,
        root: str | bytes = DEFAULT_ROOT,
        state: str | bytes = DEFAULT_STATE,
        namespace: str = CRI_NAMESPACE,
        host_root: str | bytes = b"/",
        proc_root: str = "/proc",
    ) -> ContainerdLayout:
        if not _IDENTIFIER.match(namespace):
            raise ValueError(f"{namespace!r} is not a containerd namespace")
        return cls(
            root=b"/" + b"/".join(absolute_components(os.fsencode(root), "--containerd-root")),
            state=b"/" + b"/".join(absolute_components(os.fsencode(state), "--containerd-state")),
            namespace=namespace,
            host_root=os.fsencode(host_root).rstrip(b"/") or b"/",
            proc_root=proc_root,
        )

    @property
    def snapshots(self) -> bytes:
        """The overlayfs snapshotter's snapshot directory, as containerd names it."""
        return self.root + b"/" + OVERLAY_SNAPSHOTTER + b"/snapshots"

    def bundle(self, container_id: str) -> bytes:
        """The task bundle of a container, as containerd names it (a host path)."""
        return b"/".join(
            (self.state, TASKS_DIRECTORY, self.namespace.encode(), container_id.encode())
        )

    def on_host(self, path: bytes) -> bytes:
        """A host path as the committer reaches it."""
        return path if self.host_root == b"/" else self.host_root + path


@dataclass(frozen=True)
class RuntimeContainer:
    """A container as its runtime describes it, every path checked and host-root prefixed."""

    container_id: str
    init_pid: int
    shim_pid: int
    cgroups: dict[str, str]
    upper: bytes
    lowers: tuple[bytes, ...]
    userxattr: bool
    mount_targets: tuple[bytes, ...]


@dataclass(frozen=True)
class ShimCommand:
    """What a runc shim's command line says it serves."""

    binary: str
    namespace: str | None
    task_id: str | None


def containerd_id(container_id: str) -> str:
    """``containerd://<hex>`` (or a bare hex ID) -> the hex ID; anything else is refused."""
    raw = container_id
    if raw.startswith(CONTAINERD_PREFIX):
        raw = raw[len(CONTAINERD_PREFIX) :]
    elif "://" in raw:
        runtime = raw.split("://", 1)[0]
        raise RuntimeRefused(
            f"container runtime {runtime!r} is not supported: the committer verifies "
            "containers through containerd's task bundles and shims only (containerd://)"
        )
    if not _CONTAINER_ID.match(raw):
        raise RuntimeRefused(f"{container_id!r} is not a containerd container ID")
    return raw


def absolute_components(path: bytes, what: str) -> list[bytes]:
    """The components of a normal absolute path; ``.``, ``..`` and empty ones are refused."""
    if not path.startswith(b"/"):
        raise ValueError(f"{what} {os.fsdecode(path)!r} is not an absolute path")
    parts = [part for part in path.split(b"/") if part]
    if any(part in (b".", b"..") for part in parts) or b"\0" in path:
        raise ValueError(f"{what} {os.fsdecode(path)!r} is not a normal path")
    return parts


def snapshot_id(path: bytes, snapshots: bytes) -> bytes:
    """The snapshot number of ``<snapshots>/<n>/fs`` (or of the relative ``<n>/fs``).

    Raises ``ValueError`` for any other path: one outside the snapshot root, one with ``..``
    or doubled slashes, a snapshot's ``work`` directory, the root itself.
    """
    if path.startswith(b"/"):
        prefix = snapshots + b"/"
        if not path.startswith(prefix):
            raise ValueError("outside")
        path = path[len(prefix) :]
    match = _SNAPSHOT.match(path)
    if match is None:
        raise ValueError("not a snapshot")
    return match.group(1)


def parse_shim_command(cmdline: bytes) -> ShimCommand:
    """``/proc/<pid>/cmdline`` of a shim -> its binary name, ``-namespace`` and ``-id``.

    Go's flag package accepts ``-flag value``, ``-flag=value`` and the same with ``--``; the
    first of each wins.  Other arguments are skipped: which process this is was settled by
    the init's parent link, the command line only says which task the shim serves.
    """
    argv = [os.fsdecode(arg) for arg in cmdline.split(b"\0")]
    if argv and argv[-1] == "":
        argv.pop()
    if not argv:
        return ShimCommand("", None, None)
    flags: dict[str, str] = {}
    index = 1
    while index < len(argv):
        arg = argv[index]
        index += 1
        if not arg.startswith("-"):
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name not in ("namespace", "id"):
            continue
        if not has_value:
            if index >= len(argv):
                break
            value = argv[index]
            index += 1
        flags.setdefault(name, value)
    return ShimCommand(os.path.basename(argv[0]), flags.get("namespace"), flags.get("id"))


@dataclass(frozen=True)
class TaskSpec:
    """What the task's OCI spec (``config.json``, written by containerd) tells the committer."""

    mount_targets: tuple[bytes, ...]
    shim_group: str | None


def parse_task_spec(config: bytes) -> TaskSpec:
    """Mount targets (runc made stubs for them) and the shim group of an OCI runtime spec.

    The group is what containerd-shim-runc-v2 itself groups tasks by (its ``groupLabels``):
    a task whose spec carries one of them is served by the shim of that group's first task
    (CRI: the pod's sandbox), started with ``-id <group>``.
    """
    try:
        spec = json.loads(config)
    except ValueError as error:
        raise RuntimeRefused(f"the task bundle's config.json is not JSON: {error}") from error
    if not isinstance(spec, dict):
        raise RuntimeRefused("the task bundle's config.json is not an OCI runtime spec")
    mounts = spec.get("mounts")
    targets = set()
    for mount in mounts if isinstance(mounts, list) else []:
        destination = mount.get("destination") if isinstance(mount, dict) else None
        if isinstance(destination, str) and destination.startswith("/"):
            targets.add(os.fsencode(destination))
    annotations = spec.get("annotations")
    group = None
    for label in SHIM_GROUP_LABELS:
        value = annotations.get(label) if isinstance(annotations, dict) else None
        if isinstance(value, str):
            group = value
            break
    return TaskSpec(tuple(sorted(targets)), group)


def shim_task_id(task_id: str, sandbox_file: bytes | None, spec: TaskSpec) -> str:
    """The task ID on the command line of the shim that serves ``task_id``.

    containerd writes ``sandbox`` into the bundle when it hands the task to the sandbox's
    shim; otherwise the shim groups by its spec labels; otherwise each task has its own shim.
    """
    if sandbox_file is not None:
        shim_id = sandbox_file.strip().decode("ascii", "replace")
    elif spec.shim_group is not None:
        shim_id = spec.shim_group
    else:
        return task_id
    if not _IDENTIFIER.match(shim_id):
        raise RuntimeRefused(f"the task bundle names no valid sandbox or shim group: {shim_id!r}")
    return shim_id


def describe_command(cmdline: bytes, limit: int = 120) -> str:
    text = " ".join(os.fsdecode(arg) for arg in cmdline.split(b"\0") if arg) or "nothing"
    return text if len(text) <= limit else text[:limit] + "..."


# -- reading the runtime's files -----------------------------------------------------------


def _open_directory(layout: ContainerdLayout, path: bytes, what: str) -> int:
    """Open a host directory, refusing a symlink (or anything else) at any component."""
    fd = os.open(layout.host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = b""
    try:
        for part in absolute_components(path, what):
            walked += b"/" + part
            try:
                child = os.open(
                    part,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=fd,
                )
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise RuntimeRefused(
                        f"{what} {os.fsdecode(path)}: {os.fsdecode(walked)} is not a directory "
                        "(a symlink?): runtime paths are never followed through links"
                    ) from error
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _read_file(directory_fd: int, name: str, limit: int) -> bytes | None:
    """A regular file of a runtime directory (``None`` when absent), at most ``limit`` bytes."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise RuntimeRefused(f"the task bundle's {name} is not a regular file")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise RuntimeRefused(f"the task bundle's {name} is larger than {limit} bytes")
    return data


def _proc_status_field(proc: Path, pid: int, name: str) -> str | None:
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def _start_time(proc: Path, pid: int) -> int:
    stat_line = (proc / str(pid) / "stat").read_text()
    return int(stat_line.rsplit(")", 1)[1].split()[19])


def _verified_snapshot(layout: ContainerdLayout, number: bytes) -> bytes:
    path = layout.snapshots + b"/" + number + b"/fs"
    try:
        os.close(_open_directory(layout, path, "snapshot"))
    except FileNotFoundError as error:
        raise RuntimeRefused(
            f"snapshot directory {os.fsdecode(path)} does not exist under the runtime's "
            "snapshot root"
        ) from error
    return layout.on_host(path)


def _checked_layers(layout: ContainerdLayout, layers: OverlayLayers) -> tuple[bytes, list[bytes]]:
    root = os.fsdecode(layout.snapshots)
    try:
        upper = snapshot_id(layers.upper, layout.snapshots)
    except ValueError as error:
        raise RuntimeRefused(
            f"upperdir {os.fsdecode(layers.upper)} is outside the runtime's snapshot root "
            f"{root}: refusing to read it"
        ) from error
    lowers = []
    for lower in layers.lowers:
        try:
            lowers.append(snapshot_id(lower, layout.snapshots))
        except ValueError as error:
            raise RuntimeRefused(
                f"lowerdir {os.fsdecode(lower)} is outside the runtime's snapshot root "
                f"{root}: refusing to read it"
            ) from error
    return (
        _verified_snapshot(layout, upper),
        [_verified_snapshot(layout, lower) for lower in lowers],
    )


def _shim_of(proc: Path, init_pid: int, layout: ContainerdLayout, shim_id: str) -> int:
    """The PID of the shim that is the init's parent, or a refusal saying why not."""
    try:
        ppid_field = _proc_status_field(proc, init_pid, "PPid")
        init_started = _start_time(proc, init_pid)
    except FileNotFoundError as error:
        raise RuntimeRefused(
            f"the container's init process {init_pid} (from its init.pid) is gone: "
            "the container has exited"
        ) from error
    ppid = int(ppid_field or "0")
    try:
        cmdline = (proc / str(ppid) / "cmdline").read_bytes() if ppid > 0 else b""
        shim_started = _start_time(proc, ppid) if ppid > 0 else 0
    except FileNotFoundError:
        cmdline, shim_started = b"", 0
    shim = parse_shim_command(cmdline)
    if (shim.binary, shim.namespace, shim.task_id) != (SHIM_BINARY, layout.namespace, shim_id):
        if shim.binary == SHIM_BINARY:
            parent = f"the shim of task {(shim.task_id or '?')[:12]} in namespace {shim.namespace}"
        else:
            parent = f"not a shim: it runs {describe_command(cmdline)!r}"
        raise RuntimeRefused(
            f"process {init_pid} named by the container's init.pid is not a child of the "
            f"runtime shim for {shim_id[:12]} (namespace {layout.namespace}): its parent "
            f"{ppid} is {parent}"
        )
    if init_started < shim_started:
        raise RuntimeRefused(
            f"process {init_pid} named by the container's init.pid started before its shim "
            f"{ppid}: a recycled PID, not the container's init"
        )
    return ppid


def locate_container(container_id: str, layout: ContainerdLayout) -> RuntimeContainer:
    """The container's init, shim and verified overlay layers (see the module docstring)."""
    task_id = containerd_id(container_id)
    short = task_id[:12]
    bundle = layout.bundle(task_id)
    try:
        bundle_fd = _open_directory(layout, bundle, "task bundle")
    except FileNotFoundError as error:
        raise RuntimeRefused(
            f"container {short} not found under the runtime: no task bundle "
            f"{os.fsdecode(bundle)} (it is not running on this node, or the committer's "
            "--containerd-state/--containerd-namespace do not match containerd's)"
        ) from error
    try:
        init_file = _read_file(bundle_fd, "init.pid", _SMALL_FILE)
        sandbox_file = _read_file(bundle_fd, "sandbox", _SMALL_FILE)
        config = _read_file(bundle_fd, "config.json", _CONFIG_LIMIT)
    finally:
        os.close(bundle_fd)
    if init_file is None or not init_file.strip().isdigit():
        raise RuntimeRefused(
            f"container {short} has no init.pid in its task bundle: it is not running "
            "(created but not started, or exited)"
        )
    init_pid = int(init_file.strip())
    if config is None:
        raise RuntimeRefused(f"container {short} has no config.json in its task bundle")
    spec = parse_task_spec(config)
    shim_id = shim_task_id(task_id, sandbox_file, spec)
    proc = Path(layout.proc_root)
    shim_pid = _shim_of(proc, init_pid, layout, shim_id)
    try:
        cgroups = read_cgroups((proc / str(init_pid) / "cgroup").read_text())
    except FileNotFoundError as error:
        raise RuntimeRefused(f"the container's init process {init_pid} is gone") from error
    if not any(task_id in path for path in cgroups.values()):
        raise RuntimeRefused(
            f"the container's init process {init_pid} is in cgroups that do not name the "
            f"container {short}: {sorted(set(cgroups.values()))}"
        )
    mount_point = bundle + b"/rootfs"
    try:
        table = (proc / str(shim_pid) / "mountinfo").read_bytes()
    except FileNotFoundError as error:
        raise RuntimeRefused(f"the runtime shim {shim_pid} is gone") from error
    entry = topmost_at(parse_mountinfo(table), mount_point)
    if entry is None:
        raise RuntimeRefused(
            f"no rootfs mount at {os.fsdecode(mount_point)} in the runtime shim's mount "
            "namespace: the container has no root filesystem from containerd"
        )
    layers = overlay_layers(entry)
    upper, lowers = _checked_layers(layout, layers)
    return RuntimeContainer(
        container_id=task_id,
        init_pid=init_pid,
        shim_pid=shim_pid,
        cgroups=cgroups,
        upper=upper,
        lowers=tuple(lowers),
        userxattr=layers.userxattr,
        mount_targets=spec.mount_targets,
    )
