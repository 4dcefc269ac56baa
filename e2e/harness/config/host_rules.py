"""What host preparation sets and what teardown removes: sysctls, the guard rules, and which
iptables chains and rules belong to the cluster (from `iptables-save` output)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from harness.settings import Settings

SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    # br_netfilter is built into this kernel (no modprobe needed); where it is a module that
    # is not loaded, these files do not exist and are skipped.
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}
IPT = ("iptables", "ip6tables")
IPT_TABLES = ("filter", "nat", "mangle", "raw")
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-", "LAMINA-")
GUARD_COMMENT = "lamina: pods stay on this machine"
# Directories outside the state dir that the node's components create whatever their
# configuration (the shims' sockets, kubelet's container log links, libcni's result cache,
# the kubelet's device-plugin socket): `down` removes them when `up` found them absent.
HOST_DIRS = ("/run/containerd", "/var/log/containers", "/var/lib/cni", "/var/lib/kubelet")


def forward_guard(s: Settings) -> list[str]:
    """Defence in depth on top of the pods' routes: nothing from the pod range is forwarded
    out of any device but the pods' bridge."""
    return [
        "FORWARD",
        "-s",
        str(s.pod_cidr),
        "!",
        "-o",
        "cni0",
        "-m",
        "comment",
        "--comment",
        GUARD_COMMENT,
        "-j",
        "DROP",
    ]


def apiserver_guard(s: Settings) -> list[str]:
    """The API server listens on 0.0.0.0 in the node tier: its port goes through
    LAMINA-INPUT, which answers only on lo and cni0."""
    return [
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        str(s.apiserver_port),
        "-m",
        "comment",
        "--comment",
        GUARD_COMMENT,
        "-j",
        "LAMINA-INPUT",
    ]


LAMINA_INPUT_RULES = (
    ("-i", "lo", "-j", "RETURN"),
    ("-i", "cni0", "-j", "RETURN"),
    ("-j", "DROP"),
)


def apiserver_guard_v6(s: Settings) -> list[str]:
    """IPv6: the API server's port is not reachable over IPv6 from outside either."""
    return [
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        str(s.apiserver_port),
        "!",
        "-i",
        "lo",
        "-m",
        "comment",
        "--comment",
        GUARD_COMMENT,
        "-j",
        "DROP",
    ]


def chains_of(save_lines: list[str]) -> list[str]:
    """Chain names declared in `iptables-save -t TABLE` output."""
    return [ln[1:].split()[0] for ln in save_lines if ln.startswith(":")]


@dataclass(frozen=True)
class RuleDeletion:
    chain: str
    rule: tuple[str, ...]  # the rule's words after `-A CHAIN`, for `-D CHAIN ...`
    target: str | None


def iptables_cleanup(
    save_lines: list[str], chains_before: set[str]
) -> tuple[list[RuleDeletion], list[str]]:
    """What to remove from one table: the rules of other chains that jump to the cluster's
    chains (KUBE-*, CNI-*, LAMINA-* absent before `up`) or carry our guard comment, and those
    chains themselves (sorted; flushed before any is deleted)."""
    ours = {
        c
        for c in chains_of(save_lines)
        if c.startswith(OUR_CHAIN_PREFIXES) and c not in chains_before
    }
    deletions = []
    for ln in save_lines:
        if not ln.startswith("-A "):
            continue
        words = shlex.split(ln)
        chain = words[1]
        if chain in ours:
            continue  # goes with its chain
        target = None
        for flag in ("-j", "-g"):
            if flag in words:
                target = words[words.index(flag) + 1]
        if target in ours or GUARD_COMMENT in words:
            deletions.append(RuleDeletion(chain, tuple(words[2:]), target))
    return deletions, sorted(ours)
