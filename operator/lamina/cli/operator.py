"""``lamina operator``: run the operator (in a cluster, or outside one with a kubeconfig)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from typing import Any, cast

from lamina.config import OperatorConfig


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "operator",
        help="run the Lamina operator",
        description=(
            "Run the operator against the cluster of $KUBECONFIG (or the in-cluster config). "
            "Settings come from LAMINA_* environment variables; flags override them."
        ),
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="watch only this namespace (repeatable; default: all, or $LAMINA_NAMESPACES)",
    )
    parser.add_argument("--metrics-port", type=int, help="Prometheus port ($LAMINA_METRICS_PORT)")
    parser.add_argument("--health-port", type=int, help="/healthz port ($LAMINA_HEALTH_PORT)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every handler run")
    parser.set_defaults(run=run)


def resolve_config(args: argparse.Namespace) -> OperatorConfig:
    config = OperatorConfig.from_env()
    overrides: dict[str, Any] = {}
    if args.namespace:
        overrides["namespaces"] = args.namespace
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.health_port is not None:
        overrides["health_port"] = args.health_port
    return config.model_copy(update=overrides)


def run(args: argparse.Namespace) -> int:
    # kopf and the handlers are heavy imports; `lamina crds` should not pay for them.
    import kopf  # noqa: PLC0415
    from prometheus_client import start_http_server  # noqa: PLC0415

    from lamina.handlers import registry  # noqa: PLC0415, F401 - registers the handlers.
    from lamina.handlers.heap import tune_collector  # noqa: PLC0415
    from lamina.handlers.setup import check_before_start  # noqa: PLC0415
    from lamina.logging_setup import configure_logging  # noqa: PLC0415

    config = resolve_config(args)
    # Out of the cluster (development) nothing creates the operator's namespace or its Role:
    # say what is missing and how to fix it, rather than fail every build pass later.
    if problems := asyncio.run(check_before_start(config.namespace)):
        for problem in problems:
            print(f"lamina operator: {problem}", file=sys.stderr)
        return 1
    configure_logging(verbose=args.verbose, log_format=getattr(args, "log_format", None))
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    if not args.verbose:
        # One INFO line per handled event drowns what matters; warnings and errors remain.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if config.metrics_port:
        start_http_server(config.metrics_port)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    tune_collector()
    asyncio.run(
        kopf.operator(
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            standalone=True,
            # kopf would name itself after the user, which a pod's numeric uid may lack.
            identity=cast(Any, f"lamina@{socket.gethostname()}"),  # kopf.Identity (private)
            liveness_endpoint=liveness,
            memo=kopf.Memo(config=config),
        )
    )
    return 0
