"""The built-in node's `up`, as ordered named steps (as kind's actions).

`PREPARE` runs before the state lock (installs and builds wait on their own locks); `LOCKED`
runs under it.  Steps of the other tier are skipped; a step may finish the `up` early (the
plan step, when the cluster is already up and healthy)."""

from __future__ import annotations

from harness.settings import Tier
from harness.steps import components, control_plane, node, plan, prepare, readiness
from harness.steps.base import Step, UpContext, run_steps, timings_line
from harness.steps.components import component_step

NODE: tuple[Tier, ...] = ("node",)

PREPARE: tuple[Step[UpContext], ...] = (
    Step("packages", prepare.packages, NODE),
    Step("binaries", prepare.binaries),
)

LOCKED: tuple[Step[UpContext], ...] = (
    Step("plan", plan.plan),
    Step("state", plan.state),
    Step("pki", control_plane.pki),
    Step("kubeconfigs", control_plane.kubeconfigs),
    Step("netdev", control_plane.netdev),
    Step("node-config", node.node_config, NODE),
    Step("host", node.host, NODE),
    Step("registry", node.registry, NODE),
    Step("images", node.images, NODE),
    Step("restarts", components.restarts),
    component_step("etcd"),
    component_step("kube-apiserver"),
    component_step("kube-controller-manager"),
    component_step("kube-scheduler", node_only=True),
    component_step("containerd", node_only=True),
    Step("rbac", components.rbac, NODE),
    component_step("kubelet", node_only=True),
    component_step("kube-proxy", node_only=True),
    Step("service-accounts", readiness.service_accounts),
    Step("node-ready", readiness.node_ready, NODE),
)

__all__ = ["LOCKED", "PREPARE", "Step", "UpContext", "run_steps", "timings_line"]
