"""Steps that start the components: which to restart, then one step per component in start
order (and the RBAC the kubelet needs before it starts)."""

from __future__ import annotations

import errno
import json
import os
import socket
import time

from harness.components import READY_WHAT
from harness.config.argv import ARGV, component_env, component_ports
from harness.config.fingerprint import first_to_restart
from harness.config.rbac import KUBELET_API_RBAC
from harness.errors import Fail
from harness.host.health import CHECKS, component_healthy, wait_ready
from harness.host.procs import load_record, start_process, stop_process
from harness.host.tools import kubectl_run
from harness.log import say
from harness.settings import Settings
from harness.steps.base import Step, UpContext


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go listeners do
        sock.bind((host, port))
        return True
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return False
        raise
    finally:
        sock.close()


def restarts(ctx: UpContext) -> None:
    """The first component that is not healthy is (re)started with everything after it:
    stop those (newest first) before the component steps start them again."""
    s = ctx.s
    ctx.start_from = first_to_restart(
        ctx.components,
        lambda c: component_healthy(s, c, patience=3),
        ctx.switch_argv,
        ctx.fingerprint["argv"],
    )
    if ctx.start_from is None:
        return
    for name in reversed(ctx.components[ctx.start_from :]):
        rec = load_record(s, name)
        if rec:
            outcome = stop_process(s, rec)
            if outcome != "was not running":
                say(f"{name} (pid {rec['pid']}) {outcome}")
            else:
                say(f"{name}: stale record of pid {rec['pid']} removed")


def start_component(s: Settings, name: str, seq: int) -> None:
    for var, port in component_ports(s, name):
        if not port_free(port):
            raise Fail(
                f"{name}: 127.0.0.1:{port} is already in use by a process this harness "
                f"did not start; stop it or choose another port with {var}=..."
            )
    t0 = time.monotonic()
    rec = start_process(s, name, ARGV[name](s), seq, env=component_env(s, name, dict(os.environ)))
    try:
        wait_ready(s, name, rec, CHECKS[name], READY_WHAT[name])
    except Fail as e:
        stop_process(s, rec, grace=5)
        raise Fail(
            f"{e}\n(components started before {name} are still running: "
            "`e2e/cluster down` stops them, `e2e/cluster up` retries)"
        ) from None
    say(f"{name} ready in {time.monotonic() - t0:.1f}s (pid {rec['pid']}, log {rec['log']})")


def component_step(name: str, *, node_only: bool = False) -> Step[UpContext]:
    def run(ctx: UpContext) -> None:
        if ctx.starts(name):
            start_component(ctx.s, name, seq=ctx.components.index(name))

    return Step(name, run, ("node",) if node_only else ("api", "node"))


def rbac(ctx: UpContext) -> None:
    """Before the kubelet starts: the API server's calls to the kubelet API (logs, exec) are
    authorised by the kubelet through a SubjectAccessReview, so its client user needs
    system:kubelet-api-admin."""
    if ctx.starts("kubelet"):
        kubectl_run(ctx.s, "apply", "-f", "-", input=json.dumps(KUBELET_API_RBAC))
