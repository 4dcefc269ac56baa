"""Entry point of the ``lamina`` command, and of ``kubectl lamina`` (the ``kubectl-lamina``
plugin executable: kubectl runs any ``kubectl-NAME`` on the PATH as ``kubectl NAME``).

Sub-command modules import their heavy dependencies (kopf, the Kubernetes client) inside
their ``run``, so ``lamina snapshot`` in a commit Job starts without loading the operator.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lamina import __version__
from lamina.cli import commit, crds, inspect, operator, snapshot, thaw, verify
from lamina.logging_setup import LOG_FORMATS


def program_name(argv0: str | None = None) -> str:
    """``kubectl lamina`` when run as the kubectl plugin, else ``lamina``."""
    base = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    return "kubectl lamina" if base.startswith("kubectl-lamina") else "lamina"


def build_parser(prog: str = "lamina") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Container images managed inside Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"lamina {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    crds.register(commands)
    operator.register(commands)
    commands.choices["operator"].add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default) or json: one JSON object per line ($LAMINA_LOG_FORMAT)",
    )
    snapshot.register(commands)
    inspect.register(commands)
    commit.register(commands)
    thaw.register(commands)
    verify.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(program_name())
    args = parser.parse_args(argv)
    exit_code: int = args.run(args)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
