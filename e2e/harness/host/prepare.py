"""Host preparation for the node tier, recorded first so that `down` undoes exactly it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from harness.config.host_rules import (
    HOST_DIRS,
    LAMINA_INPUT_RULES,
    SYSCTLS,
    apiserver_guard,
    apiserver_guard_v6,
    forward_guard,
)
from harness.errors import Fail
from harness.files import Record, read_json, write_json
from harness.host.iptables import ipt, ipt_chains, snapshot_chains
from harness.host.netdev import link_exists
from harness.parse import mountinfo
from harness.parse import root_propagation as parse_root_propagation
from harness.settings import Settings


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def root_propagation() -> str:
    """ "shared", "slave" or "private": the propagation of the mount at /."""
    return parse_root_propagation(mountinfo(Path("/proc/self/mountinfo").read_text()))


def host_record(s: Settings) -> Record:
    """What the host looks like before the node, recorded once per `up` cycle."""
    path = s.run / "host.json"
    rec = read_json(path)
    if rec is None:
        sysctls = {}
        for name in SYSCTLS:
            with contextlib.suppress(OSError):
                sysctls[name] = sysctl_path(name).read_text().strip()
        rec = {
            "sysctls": sysctls,
            "dirs_absent": [d for d in HOST_DIRS if not os.path.lexists(d)],
            "chains": snapshot_chains(),
            "cni0_existed": link_exists("cni0"),
            "root_was_private": root_propagation() == "private",
        }
        write_json(path, rec, indent=1)
    return rec


def prepare_host(s: Settings) -> list[str]:
    """Record the host (see `host_record`), then set the sysctls, the propagation of / and the
    guard rules.  `down` undoes exactly this."""
    rec = host_record(s)
    done = []
    for name, value in SYSCTLS.items():
        if name in rec["sysctls"]:
            sysctl_path(name).write_text(value)
            done.append(f"{name}={value}")
    # Pods with mountPropagation HostToContainer on a hostPath (the commit Job mounts / that
    # way) need the host's mount to be shared or a slave, as systemd makes / on real nodes;
    # here / is private.  `down` makes it private again.
    if root_propagation() == "private":
        r = subprocess.run(
            ["mount", "--make-shared", "/"], capture_output=True, text=True, check=False
        )
        if r.returncode != 0:
            raise Fail(f"mount --make-shared /: {r.stderr.strip()}")
        done.append("/ made a shared mount")
    if "LAMINA-INPUT" not in ipt_chains("iptables", "filter"):
        ipt("iptables", "-N", "LAMINA-INPUT")
        for verdict in LAMINA_INPUT_RULES:
            ipt("iptables", "-A", "LAMINA-INPUT", *verdict)
    for cmd, rule in (("iptables", forward_guard(s)), ("iptables", apiserver_guard(s))):
        if ipt(cmd, "-C", *rule).returncode != 0:
            r = ipt(cmd, "-I", *rule)
            if r.returncode != 0:
                raise Fail(f"{cmd} -I {' '.join(rule)}: {r.stderr.strip()}")
    v6 = apiserver_guard_v6(s)
    if shutil.which("ip6tables") and ipt("ip6tables", "-C", *v6).returncode != 0:
        ipt("ip6tables", "-I", *v6)
    return done
