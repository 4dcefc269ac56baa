"""``lamina operator``: run the operator (in a cluster, or outside one with a kubeconfig)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "operator",
        help="run the Lamina operator",
        description=(
            "Run the operator against the cluster of $KUBECONFIG (or in-cluster config). "
            "Watches all namespaces unless --namespace is given."
        ),
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import kopf  # noqa: PLC0415 - kopf is heavy; `lamina crds` should not pay for it.

    from lamina.handlers import registry  # noqa: PLC0415, F401 - registers the handlers.

    kopf.configure(verbose=args.verbose, log_prefix=True)
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    namespaces: list[str] = args.namespace
    asyncio.run(kopf.operator(clusterwide=not namespaces, namespaces=namespaces, standalone=True))
    return 0
