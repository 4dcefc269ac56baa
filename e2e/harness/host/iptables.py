"""iptables: reading tables, adding the guard rules, removing what the cluster added."""

from __future__ import annotations

import shutil
import subprocess

from harness.config.host_rules import IPT, IPT_TABLES, chains_of, iptables_cleanup


def ipt_save(cmd: str, table: str) -> list[str]:
    r = subprocess.run([f"{cmd}-save", "-t", table], capture_output=True, text=True, check=False)
    return r.stdout.splitlines() if r.returncode == 0 else []


def ipt_chains(cmd: str, table: str) -> list[str]:
    return chains_of(ipt_save(cmd, table))


def ipt(cmd: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cmd, "-w", "5", *args], capture_output=True, text=True, check=False)


def snapshot_chains() -> dict[str, list[str]]:
    """Chains of every table, keyed "<cmd>/<table>" (what the host had before `up`)."""
    return {f"{cmd}/{table}": ipt_chains(cmd, table) for cmd in IPT for table in IPT_TABLES}


def cleanup_iptables(chains_before: dict[str, list[str]]) -> list[str]:
    """Remove the chains the cluster added (KUBE-*, CNI-*, LAMINA-* absent before `up`) and
    every rule of other chains that jumps to them, plus our guard rules."""
    removed = []
    for cmd in IPT:
        if not shutil.which(cmd):
            continue
        for table in IPT_TABLES:
            before = set(chains_before.get(f"{cmd}/{table}", []))
            deletions, ours = iptables_cleanup(ipt_save(cmd, table), before)
            for d in deletions:
                if ipt(cmd, "-t", table, "-D", d.chain, *d.rule).returncode == 0:
                    removed.append(f"{cmd} -t {table} rule in {d.chain} -> {d.target}")
            for c in ours:
                ipt(cmd, "-t", table, "-F", c)
            for c in ours:
                if ipt(cmd, "-t", table, "-X", c).returncode == 0:
                    removed.append(f"{cmd} -t {table} chain {c}")
    return removed
