"""What a running cluster was started with, and whether another tier can take it over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.components import COMPONENTS
from harness.config.argv import ARGV
from harness.config.node_files import node_config_files
from harness.config.pki import pki_spec
from harness.settings import Settings, Tier


def fingerprint(s: Settings, tier: Tier) -> dict[str, Any]:
    """A change means a restart (this includes every component's command line, so an edited
    harness never keeps stale processes)."""
    extra: dict[str, Any] = {}
    if tier == "node":
        extra = {
            "configs": {
                str(p.relative_to(s.state)): text for p, text in node_config_files(s).items()
            },
            "registry_port": s.registry_port,
            "node_name": s.node_name,
            "pod_cidr": str(s.pod_cidr),
        }
    return {
        **extra,
        "pki": pki_spec(s),
        "argv": {name: ARGV[name](s) for name in COMPONENTS[tier]},
        "tier": tier,
        "k8s_version": s.k8s_version,
        "etcd_version": s.etcd_version,
        "cache": str(s.cache),
        "etcd_port": s.etcd_port,
        "etcd_peer_port": s.etcd_peer_port,
        "apiserver_port": s.apiserver_port,
        "kcm_port": s.kcm_port,
        "service_cidr": str(s.service_cidr),
        "advertise": s.advertise,
        "netdev": s.netdev,
    }


def other_tier_same_control_plane(running: dict[str, Any], fp: dict[str, Any]) -> bool:
    """The running cluster is the other tier with the same etcd, PKI and settings: it can be
    switched in place, without a restart from scratch."""
    if {running.get("tier"), fp.get("tier")} != {"api", "node"}:
        return False
    common = (set(running) & set(fp)) - {"tier", "argv"}
    return all(running[k] == fp[k] for k in common) and running["argv"].get("etcd") == fp[
        "argv"
    ].get("etcd")


def first_to_restart(
    components: tuple[str, ...],
    healthy: Callable[[str], bool],
    running_argv: dict[str, Any] | None,
    wanted_argv: dict[str, Any],
) -> int | None:
    """Index of the first component to (re)start with everything after it: the first that is
    not healthy, or (a tier switch in place) the first whose command line changed.

    `healthy` is asked in start order and no further than the first unhealthy component (an
    alive but unanswering one costs seconds of patience)."""
    first_bad = next((i for i, c in enumerate(components) if not healthy(c)), None)
    if running_argv is None:
        return first_bad
    changed = next(
        (i for i, c in enumerate(components) if running_argv.get(c) != wanted_argv[c]), None
    )
    if changed is None:
        return first_bad
    return changed if first_bad is None else min(first_bad, changed)
