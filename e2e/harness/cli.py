"""`e2e/cluster`'s command line: parse, pick the provider, run the command."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import harness
from harness.environment import load_settings
from harness.errors import Fail
from harness.providers.base import Provider, exec_kubectl
from harness.settings import TIERS, Tier


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="e2e/cluster",
        description=harness.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the cluster (idempotent)")
    up.add_argument(
        "--tier",
        choices=TIERS,
        default="node",
        help="node: a real single-node cluster with a local registry (default); "
        "api: etcd + kube-apiserver + kube-controller-manager",
    )
    sub.add_parser("down", help="stop the cluster and remove its state")
    sub.add_parser("status", help="show component health; exit 0 when healthy")
    sub.add_parser("kubeconfig", help="print the admin kubeconfig path")
    sub.add_parser("env", help="print shell exports")
    sub.add_parser("registry", help="print the registry's host:port (node tier)")
    kc = sub.add_parser("kubectl", help="run kubectl against the cluster", add_help=False)
    kc.add_argument("args", nargs=argparse.REMAINDER)
    return ap


def provider_for(command: str, tier: Tier | None) -> Provider:
    """`up --tier node` runs kind where Docker works (or LAMINA_USE_KIND=1); every other
    command goes to the provider that runs the cluster instance (kind leaves a record)."""
    # Imported here: `e2e/cluster kubectl`, which the tests run for every kubectl call, needs
    # none of the providers, and each import costs every one of those calls.
    from harness.providers.kind import KindProvider, kind_record, kind_wanted  # noqa: PLC0415
    from harness.providers.node import NodeProvider  # noqa: PLC0415

    if command == "up":
        wanted: Tier = tier or "node"
        if wanted == "node" and kind_wanted():
            return KindProvider(load_settings("node"))
        return NodeProvider(load_settings(wanted))
    s = load_settings()
    return KindProvider(s) if kind_record(s) is not None else NodeProvider(s)


def main(argv: list[str]) -> int:
    # `kubectl` passes everything through untouched (including --help and -o flags).
    if argv and argv[0] == "kubectl":
        return exec_kubectl(load_settings(), argv[1:])
    ap = parser()
    ns = ap.parse_args(argv)
    provider = provider_for(ns.cmd, getattr(ns, "tier", None))
    commands = {
        "up": provider.up,
        "down": provider.down,
        "status": provider.status,
        "kubeconfig": provider.kubeconfig,
        "env": provider.env,
        "registry": provider.registry,
    }
    if ns.cmd not in commands:
        ap.error(f"unknown command {ns.cmd}")
    return commands[ns.cmd]()


def run(argv: list[str]) -> NoReturn:
    """The launcher's whole job: a `Fail` is one line on stderr, never a traceback."""
    try:
        sys.exit(main(argv))
    except Fail as e:
        print(f"e2e/cluster: error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        print("e2e/cluster: interrupted (run `e2e/cluster down` to clean up)", file=sys.stderr)
        sys.exit(130)
