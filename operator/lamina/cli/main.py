"""Entry point of the ``lamina`` command.

Sub-command modules import their heavy dependencies (kopf, the Kubernetes client) inside
their ``run``, so ``lamina snapshot`` in a commit Job starts without loading the operator.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lamina import __version__
from lamina.cli import crds, inspect, operator, snapshot, thaw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lamina",
        description="Container images managed inside Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"lamina {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    crds.register(commands)
    operator.register(commands)
    snapshot.register(commands)
    inspect.register(commands)
    thaw.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    exit_code: int = args.run(args)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
