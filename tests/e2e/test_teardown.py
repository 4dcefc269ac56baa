"""`down` leaves nothing behind, and `up` after it works.  Last module of the tier (it takes
the cluster down; it brings it back up before it ends)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import NodeCluster, cluster_cmd, node_tier_up

pytestmark = pytest.mark.e2e

OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-", "LAMINA-")


def iptables_chains() -> set[str]:
    chains = set()
    for cmd in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([cmd], capture_output=True, text=True, check=False).stdout
        chains |= {f"{cmd}:{ln[1:].split()[0]}" for ln in out.splitlines() if ln.startswith(":")}
    return chains


def mounts_under(*roots: str) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4]
        if any(mp == r or mp.startswith(r + "/") for r in roots):
            found.append(mp)
    return found


def links() -> dict[str, dict[str, Any]]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {link["ifname"]: link for link in json.loads(out.stdout)}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def processes_using(paths: list[str]) -> list[str]:
    """Processes whose executable or command line names one of `paths`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            exe = os.readlink(d / "exe")
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(p in exe or p in cmdline for p in paths):
            found.append(f"{d.name}: {cmdline[:200]}")
    return found


def test_down_leaves_nothing_behind_and_up_works_again(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    node_cluster.skip_on_kind()
    state = node_cluster.state
    # Something running on the node, with volumes (tmpfs mounts) and a sandbox.
    ns = "e2e-teardown"
    node_cluster.kubectl("create", "namespace", ns)
    node_cluster.ok(
        "run", "-n", ns, "sleeper", "--image=busybox", "--restart=Never", "--", "sleep", "3600"
    )
    node_cluster.wait(ns, "pod/sleeper", "condition=Ready")
    pod_pid = node_cluster.container_init_pid(ns, "sleeper")

    recorded = [json.loads(p.read_text()) for p in (state / "run").glob("*.proc.json")]
    pids = [int(r["pid"]) for r in recorded] + [pod_pid]
    registry_pid = int((state / "registry" / "registry.pid").read_text().split()[0])
    pids.append(registry_pid)
    assert all(alive(p) for p in pids)
    netdev = json.loads((state / "run" / "netdev.json").read_text())["name"]
    assert {"cni0", netdev} <= set(links())
    host = json.loads((state / "run" / "host.json").read_text())
    chains_before_up = {
        f"{cmd}-save:{chain}"
        for key, chains in host["chains"].items()
        for cmd in [key.split("/")[0]]
        for chain in chains
    }
    assert mounts_under(str(state)), "a running node has mounts under its state dir"

    t0 = time.monotonic()
    down = cluster_cmd("down")
    took = time.monotonic() - t0
    assert down.returncode == 0, down.stderr
    print(f"\ndown took {took:.1f}s")

    assert [p for p in pids if alive(p)] == []
    leftover = processes_using([str(state), "containerd-shim-runc-v2"])
    assert leftover == [], leftover
    assert mounts_under(str(state), "/run/containerd") == []
    left_links = links()
    assert "cni0" not in left_links and netdev not in left_links
    assert not [n for n, link in left_links.items() if link.get("master") == "cni0"]
    ours = {
        c
        for c in iptables_chains() - chains_before_up
        if c.split(":", 1)[1].startswith(OUR_CHAIN_PREFIXES)
    }
    assert ours == set(), ours
    assert not list(Path("/sys/fs/cgroup").glob("*/kubepods"))
    if "/run/containerd" in host.get("dirs_absent", []):  # else it was there before `up`
        assert not os.path.exists("/run/containerd")
    if host.get("root_was_private"):
        root = [
            ln
            for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if ln.split()[4] == "/"
        ][-1]
        assert "shared:" not in root.split(" - ")[0], root
    assert not node_tier_up()

    t0 = time.monotonic()
    up = cluster_cmd("up", timeout=900)
    print(f"up after down took {time.monotonic() - t0:.1f}s")
    assert up.returncode == 0, up.stderr[-4000:]
    assert node_tier_up()
    node_cluster.kubectl("create", "namespace", ns)
    node_cluster.ok(
        "run", "-n", ns, "again", "--image=busybox", "--restart=Never", "--", "echo", "back"
    )
    node_cluster.wait(ns, "pod/again", "jsonpath={.status.phase}=Succeeded")
    assert node_cluster.ok("logs", "-n", ns, "again") == "back\n"
    node_cluster.kubectl("delete", "namespace", ns, "--wait=false")
