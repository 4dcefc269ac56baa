"""The built-in node: processes on this machine (the api tier, or the whole node tier)."""

from __future__ import annotations

import shlex
import sys
import time

from harness.components import COMPONENTS
from harness.files import read_json
from harness.host.health import CHECKS, check_node_ready, registry_ok
from harness.host.lock import Lock
from harness.host.netdev import netdev_ok
from harness.host.procs import load_record, record_alive
from harness.log import say
from harness.providers.base import print_env, print_kubeconfig
from harness.settings import Settings, as_tier
from harness.steps import LOCKED, PREPARE, UpContext, run_steps, timings_line
from harness.teardown import teardown


class NodeProvider:
    name = "node"

    def __init__(self, s: Settings) -> None:
        self.s = s

    def up(self) -> int:
        s = self.s
        ctx = UpContext(s, s.tier)
        run_steps(ctx, PREPARE)
        with Lock(s):
            run_steps(ctx, LOCKED)
        if ctx.finished:
            return 0
        say(f"steps: {timings_line(ctx.timings)}")
        print(f"cluster up ({s.tier} tier) in {time.monotonic() - ctx.t0:.1f}s")
        print(f"  export KUBECONFIG={shlex.quote(str(s.admin_kubeconfig))}")
        return 0

    def down(self) -> int:
        s = self.s
        t0 = time.monotonic()
        if not s.state.is_dir():
            print(f"cluster down (nothing at {s.state}) in {time.monotonic() - t0:.1f}s")
            return 0
        with Lock(s):
            done = teardown(s, keep_pki=False)
        for line in done:
            say(line)
        print(f"cluster down in {time.monotonic() - t0:.1f}s (logs kept in {s.logs})")
        return 0

    def status(self) -> int:
        s = self.s
        cluster = read_json(s.run / "cluster.json")
        tier = as_tier(cluster["tier"]) if cluster else "api"
        healthy = cluster is not None
        print(f"state dir: {s.state}")
        if cluster is None:
            print("cluster: not up (no `e2e/cluster up` recorded)")
        for name in COMPONENTS[tier]:
            rec = load_record(s, name)
            if not record_alive(rec):
                stale = f" (stale record of pid {rec['pid']})" if rec else ""
                state = "not running" + stale
                healthy = False
            else:
                assert rec is not None
                ok, detail = CHECKS[name](s)
                healthy = healthy and ok
                state = f"running pid {rec['pid']}, " + (detail if ok else f"UNHEALTHY: {detail}")
            print(f"  {name:<24} {state}")
        if cluster is not None:
            ok, detail = netdev_ok(s)
            healthy = healthy and ok
            print(f"  {'advertise address':<24} {detail}")
        if cluster is not None and tier == "node":
            ok = registry_ok(s)
            healthy = healthy and ok
            print(f"  {'registry':<24} {s.registry} " + ("answering" if ok else "NOT answering"))
            ok, detail = check_node_ready(s) if healthy else (False, "not checked")
            healthy = healthy and ok
            print(f"  {'node':<24} {detail}")
        print(f"cluster ({tier} tier): {'up and healthy' if healthy else 'NOT healthy'}")
        return 0 if healthy else 1

    def kubeconfig(self) -> int:
        return print_kubeconfig(self.s)

    def env(self) -> int:
        return print_env(self.s)

    def registry(self) -> int:
        if self.s.tier != "node":
            print("e2e/cluster: no registry: the node tier is not up", file=sys.stderr)
            return 1
        print(self.s.registry)
        return 0
