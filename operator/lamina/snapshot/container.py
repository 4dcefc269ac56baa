"""Find a running container's processes from its cgroup, for ``lamina thaw`` only.

The committer never uses this to decide what to read: a cgroup path is a claim, and the
snapshot comes from the runtime (:mod:`lamina.snapshot.runtime`).  Thawing is the one use,
because it is harmless whoever the process is (thawing a cgroup that is not frozen changes
nothing) and must work after the committer died, whatever state the runtime is in.

``containerd://<id>`` and ``cri-o://<id>`` both put the id in the container's cgroup path
(``.../<id>``, ``cri-containerd-<id>.scope``, ``crio-<id>.scope``), whatever the cgroup driver
and version, so the committer scans ``/proc/*/cgroup`` (of the host: the commit Job runs with
``hostPID``) instead of talking to a runtime-specific API or state directory.  Among the
processes in that cgroup:

1. the one that is PID 1 in its own PID namespace (last field of ``NSpid`` is 1) is the init;
2. otherwise (a pod sharing one PID namespace, where the pause process is PID 1), the oldest
   process whose parent is outside the cgroup (the runtime's shim started it); processes from
   ``kubectl exec`` also have the shim as parent but started later.

The cgroup path read from ``/proc`` is relative to the *reader's* cgroup namespace, so the
committer must run in the host's (true for privileged pods on cgroup v1; on v2 give the Job
``hostCgroupns``-like access or run it with the host's cgroup namespace).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_PREFIXES = ("containerd://", "cri-o://", "docker://")
_ID = re.compile(r"^[0-9a-f]{12,128}$")


class ContainerNotFound(Exception):
    """No process on this node belongs to the container."""


@dataclass(frozen=True)
class ContainerProcess:
    pid: int
    cgroups: dict[str, str]  # controller list (e.g. "freezer", "" for v2) -> cgroup path


def bare_id(container_id: str) -> str:
    """``containerd://abc...`` -> ``abc...``; refuses anything that is not a hex id."""
    raw = container_id
    for prefix in _PREFIXES:
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
            break
    if not _ID.match(raw):
        raise ValueError(f"{container_id!r} is not a container ID (containerd:// or cri-o://)")
    return raw


def read_cgroups(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` -> {controllers: path}; v2's unified line has key ``""``."""
    cgroups = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            cgroups[parts[1]] = parts[2]
    return cgroups


def _status_field(proc: Path, pid: int, name: str) -> list[str]:
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].split()
    return []


def _start_time(proc: Path, pid: int) -> int:
    stat = (proc / str(pid) / "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def find_init_process(container_id: str, proc_root: str = "/proc") -> ContainerProcess:
    """The container's init process (see the module docstring for how)."""
    wanted = bare_id(container_id)
    proc = Path(proc_root)
    members: dict[int, dict[str, str]] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            cgroups = read_cgroups((proc / entry.name / "cgroup").read_text())
        except OSError:
            continue  # exited meanwhile
        if any(wanted in path for path in cgroups.values()):
            members[int(entry.name)] = cgroups
    if not members:
        raise ContainerNotFound(f"no process of container {wanted[:12]} runs on this node")
    candidates = []
    for pid, cgroups in members.items():
        try:
            nspid = _status_field(proc, pid, "NSpid")
            if nspid and nspid[-1] == "1":
                return ContainerProcess(pid, cgroups)
            parent = int(_status_field(proc, pid, "PPid")[0])
            if parent not in members:
                candidates.append((_start_time(proc, pid), pid))
        except (OSError, IndexError, ValueError):
            continue
    if not candidates:
        raise ContainerNotFound(f"container {wanted[:12]} has no init process (it is exiting)")
    pid = min(candidates)[1]
    return ContainerProcess(pid, members[pid])
