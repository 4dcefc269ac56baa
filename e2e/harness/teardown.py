"""Taking a built-in cluster down: all of it (`down`), or only its node (node -> api tier)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time

from harness.components import API_COMPONENTS, NODE_COMPONENTS, NODE_STATE
from harness.errors import Fail
from harness.host.cleanup import kill_pods, teardown_node
from harness.host.netdev import remove_netdev
from harness.host.procs import load_record, load_records, stop_process
from harness.host.tools import kubectl_run
from harness.settings import Settings

# Kept by `down`: the logs, the lock, and the registry's storage (a cache of pushed images:
# a warm `up` pushes nothing).
KEPT_STATE = frozenset({"logs", "lock", "registry"})


def teardown(s: Settings, keep_pki: bool) -> list[str]:
    """Stop every recorded process (reverse start order), remove the device and runtime data."""
    done = []
    node = (s.run / "host.json").exists() or s.ctrd.exists()
    for rec in reversed(load_records(s)):
        if rec["name"] == "containerd":
            # The kubelet is stopped: kill the pods' processes while containerd still runs.
            msg = kill_pods()
            if msg:
                done.append(msg)
        t0 = time.monotonic()
        outcome = stop_process(s, rec)
        took = f" in {time.monotonic() - t0:.1f}s" if outcome != "was not running" else ""
        done.append(f"{rec['name']} (pid {rec['pid']}) {outcome}{took}")
    if node:
        done += teardown_node(s)
    dev = remove_netdev(s)
    if dev:
        done.append(f"network device {dev} removed")
    keep = KEPT_STATE | ({"pki"} if keep_pki else set())
    if s.state.is_dir():
        for entry in s.state.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return done


def stop_node(s: Settings) -> list[str]:
    """node tier -> api tier: stop the node's components, clean up after them (as `down`
    does), remove their state; the control plane keeps running."""
    done = []
    for name in reversed(NODE_COMPONENTS[len(API_COMPONENTS) :]):
        rec = load_record(s, name)
        if rec is None:
            continue
        if name == "containerd":
            msg = kill_pods()
            if msg:
                done.append(msg)
        done.append(f"{name} (pid {rec['pid']}) {stop_process(s, rec)}")
    # The node is gone for good: its Node object goes too (the pod GC removes its pods).
    with contextlib.suppress(Fail):
        kubectl_run(s, "delete", "node", s.node_name, "--ignore-not-found", "--wait=false")
        done.append(f"node {s.node_name} deleted")
    done += teardown_node(s)
    for entry in NODE_STATE:
        path = s.state / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return done


def rotate_logs(s: Settings) -> None:
    """A fresh `up` moves the previous run's logs to <component>.log.1."""
    if s.logs.is_dir():
        for log in s.logs.glob("*.log"):
            os.replace(log, log.with_suffix(".log.1"))
