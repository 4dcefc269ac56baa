"""Steps that decide what this `up` does with what is running: nothing (already up), a tier
switch in place, a restart from scratch, or a clean start; then record the new fingerprint."""

from __future__ import annotations

import json
import time

from harness.components import COMPONENTS
from harness.config.fingerprint import fingerprint, other_tier_same_control_plane
from harness.files import read_json, write_file
from harness.host.health import check_node_ready, component_healthy, registry_ok
from harness.host.netdev import netdev_ok
from harness.host.procs import load_records, record_alive
from harness.log import say
from harness.settings import Settings, Tier
from harness.steps.base import UpContext
from harness.teardown import rotate_logs, stop_node, teardown


def cluster_healthy(s: Settings, tier: Tier) -> bool:
    return (
        netdev_ok(s)[0]
        and all(component_healthy(s, c, patience=5) for c in COMPONENTS[tier])
        and (tier == "api" or (check_node_ready(s)[0] and registry_ok(s)))
    )


def plan(ctx: UpContext) -> None:
    s, tier = ctx.s, ctx.tier
    fp = fingerprint(s, tier)
    running = read_json(s.run / "cluster.json")
    if running is not None and running != fp:
        if other_tier_same_control_plane(running, fp):
            # api <-> node in place: etcd and its data stay; components whose command line
            # changed (the API server) restart; the node's components start or stop.
            if tier == "api":
                say("downgrading the running node tier to the api tier in place")
                for line in stop_node(s):
                    say(line)
            else:
                say("upgrading the running api tier to the node tier in place")
            ctx.switch_argv = running["argv"]
        else:
            say("cluster was started with other settings; restarting it from scratch")
            for line in teardown(s, keep_pki=False):
                say(line)
            running = None
    ctx.fingerprint, ctx.running = fp, running
    # Fast path: everything already up and healthy.
    if running == fp and cluster_healthy(s, tier):
        print(f"cluster already up ({tier} tier), checked in {time.monotonic() - ctx.t0:.1f}s")
        ctx.finished = True


def state(ctx: UpContext) -> None:
    s = ctx.s
    if not any(record_alive(r) for r in load_records(s)):
        # Nothing of ours runs (first start, or everything crashed): start clean, without a
        # previous run's etcd data, stale records or device.
        for line in teardown(s, keep_pki=True):
            say(line.replace("was not running", "had died: stale record removed"))
        rotate_logs(s)
    s.state.mkdir(parents=True, exist_ok=True)
    s.run.mkdir(parents=True, exist_ok=True)
    write_file(s.run / "cluster.json", json.dumps(ctx.fingerprint, indent=1) + "\n")
