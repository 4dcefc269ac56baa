"""What the node's processes leave behind, removed after they are stopped: the pods'
processes and cgroups, containerd's shims, mounts under the state directory, the pods'
bridge, the cluster's iptables chains, and what host preparation changed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness.errors import Fail
from harness.files import Record, read_json
from harness.host.iptables import cleanup_iptables
from harness.host.netdev import ip, link_exists
from harness.host.prepare import root_propagation, sysctl_path
from harness.host.procs import pid_running
from harness.host.tools import registry_down
from harness.parse import (
    bridge_ports,
    cgroup_mount_points,
    flag_value,
    mountinfo,
    mounts_under,
    unix_socket_paths,
)
from harness.settings import Settings


def kubepods_dirs() -> list[Path]:
    tops = cgroup_mount_points(mountinfo(Path("/proc/self/mountinfo").read_text()))
    return [Path(mp) / "kubepods" for mp in tops if (Path(mp) / "kubepods").is_dir()]


def pod_pids() -> set[int]:
    pids: set[int] = set()
    for top in kubepods_dirs():
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids.update(int(x) for x in Path(dirpath, "cgroup.procs").read_text().split())
    return pids


def kill_pods() -> str | None:
    """SIGKILL every process in the kubelet's `kubepods` cgroups (our pods' containers and
    pause processes: this machine runs no other kubelet)."""
    pids = pod_pids()
    if not pids:
        return None
    n = len(pids)
    deadline = time.monotonic() + 20
    while pids and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        pids = pod_pids()
    if pids:
        raise Fail(f"pod processes {sorted(pids)} survived SIGKILL")
    return f"{n} pod processes killed"


def is_our_shim(s: Settings, exe: str, argv: list[str]) -> bool:
    """A shim of our binary, and (when its command line says) of our containerd: another
    containerd on the machine (the integration tier's) may run shims of the same binary."""
    shim = os.path.realpath(s.containerd_bin / "containerd-shim-runc-v2")
    if not (exe == shim or exe.startswith(shim + " ")):
        return False
    address = flag_value(argv, "-address")
    return address is None or address == str(s.containerd_sock)


def kill_shims(s: Settings) -> str | None:
    """The containerd shims are started by our containerd from our binary: find them by exe
    and by the containerd address they were given."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            exe = os.readlink(d / "exe")
            argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if is_our_shim(s, exe, argv):
            found.append(int(d.name))
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_running(p) for p in found):
        time.sleep(0.05)
    return f"{len(found)} containerd shims killed" if found else None


def unmount_all(s: Settings, extra: list[str]) -> str | None:
    """Unmount everything under the state dir (and `extra` roots), newest first."""
    roots = [str(s.state), *extra]
    total = 0
    for _ in range(10):
        mps = mounts_under(mountinfo(Path("/proc/self/mountinfo").read_text()), roots)
        if not mps:
            break
        for mp in reversed(mps):
            r = subprocess.run(["umount", mp], capture_output=True, check=False)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
            total += 1
    left = mounts_under(mountinfo(Path("/proc/self/mountinfo").read_text()), roots)
    if left:
        raise Fail(f"could not unmount: {left[:5]}")
    return f"{total} mounts unmounted" if total else None


def remove_cgroups() -> str | None:
    n = 0
    for _ in range(50):
        tops = kubepods_dirs()
        if not tops:
            break
        for top in tops:
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
                    n += 1
        time.sleep(0.1)
    if kubepods_dirs():
        raise Fail(f"could not remove cgroups {kubepods_dirs()}")
    return f"{n} cgroups removed" if n else None


def remove_pod_network(rec: Record) -> list[str]:
    done: list[str] = []
    if rec.get("cni0_existed", True) or not link_exists("cni0"):
        return done
    for dev in bridge_ports(ip("-o", "link", "show", "master", "cni0", check=False).stdout):
        if ip("link", "del", "dev", dev, check=False).returncode == 0:
            done.append(f"veth {dev} removed")
    ip("link", "del", "dev", "cni0", check=False)
    done.append("bridge cni0 removed")
    return done


def sockets_in_use_under(root: str) -> list[str]:
    """Unix sockets under `root` that a live process still has bound (ours are gone by now:
    the pods, the shims and the node's components are stopped before this is asked)."""
    try:
        bound = unix_socket_paths(Path("/proc/net/unix").read_text())
    except OSError:
        return []
    return sorted(p for p in bound if p.startswith(root.rstrip("/") + "/"))


def remove_host_dir(d: str) -> str:
    """Remove a fixed host directory `up` found absent, unless another program (e.g. another
    containerd's shims in /run/containerd/s) has come to use it since."""
    busy = sockets_in_use_under(d)
    if busy:
        return f"{d} kept: {len(busy)} sockets under it are bound by processes not ours"
    shutil.rmtree(d, ignore_errors=True)
    return f"{d} removed"


def teardown_node(s: Settings) -> list[str]:
    """After the node's processes are stopped: what they leave behind."""
    done = [m for m in (kill_pods(), kill_shims(s)) if m]
    rec = read_json(s.run / "host.json")
    msg = registry_down(s)
    if msg is not None:
        done.append(msg)
    absent: list[str] = list(rec.get("dirs_absent", [])) if rec else []
    m = unmount_all(s, [d for d in absent if d == "/run/containerd"])
    if m:
        done.append(m)
    m = remove_cgroups()
    if m:
        done.append(m)
    if rec is None:
        return done
    done += remove_pod_network(rec)
    removed = cleanup_iptables(rec.get("chains", {}))
    if removed:
        done.append(f"{len(removed)} iptables chains/rules removed")
    if rec.get("root_was_private") and root_propagation() != "private":
        subprocess.run(["mount", "--make-private", "/"], capture_output=True, check=False)
        done.append("/ made private again")
    for name, value in rec.get("sysctls", {}).items():
        with contextlib.suppress(OSError):
            if sysctl_path(name).read_text().strip() != value:
                sysctl_path(name).write_text(value)
                done.append(f"{name} restored to {value}")
    for d in absent:
        if os.path.lexists(d):
            done.append(remove_host_dir(d))
    (s.run / "host.json").unlink()
    return done
