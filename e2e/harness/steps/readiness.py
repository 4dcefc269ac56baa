"""The last steps: wait until the cluster accepts workloads."""

from __future__ import annotations

import time

from harness.host.health import check_default_sa, check_node_ready, wait_ready
from harness.host.procs import load_record
from harness.log import say
from harness.steps.base import UpContext


def service_accounts(ctx: UpContext) -> None:
    s = ctx.s
    t1 = time.monotonic()
    wait_ready(
        s,
        "kube-controller-manager",
        load_record(s, "kube-controller-manager"),
        check_default_sa,
        "the default ServiceAccount and kube-root-ca.crt",
    )
    took = time.monotonic() - t1
    say(f"default ServiceAccount and kube-root-ca.crt present after {took:.1f}s more")


def node_ready(ctx: UpContext) -> None:
    s = ctx.s
    t1 = time.monotonic()
    wait_ready(
        s, "kubelet", load_record(s, "kubelet"), check_node_ready, f"node {s.node_name} Ready"
    )
    say(f"node {s.node_name} Ready after {time.monotonic() - t1:.1f}s more")
