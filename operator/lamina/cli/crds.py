"""``lamina crds``: print the CustomResourceDefinitions, or write them to a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lamina.api.crd import RESOURCE_KINDS, file_name, render_yaml


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "crds",
        help="print the CRDs generated from the API types",
        description="Print the CRDs (a multi-document YAML stream), or write one file per CRD.",
    )
    parser.add_argument(
        "--write", metavar="DIR", type=Path, help="write <plural>.lamina.dev.yaml files into DIR"
    )
    parser.add_argument(
        "--check",
        metavar="DIR",
        type=Path,
        help="exit 1 and name the files in DIR that differ from what the models generate",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rendered = {file_name(kind): render_yaml(kind) for kind in RESOURCE_KINDS}
    if args.check is not None:
        stale = [
            name
            for name, text in rendered.items()
            if not (args.check / name).is_file() or (args.check / name).read_text() != text
        ]
        for name in stale:
            print(
                f"{args.check / name} differs from the models; "
                f"run: lamina crds --write {args.check}"
            )
        return 1 if stale else 0
    if args.write is not None:
        args.write.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (args.write / name).write_text(text)
            print(f"wrote {args.write / name}")
        return 0
    sys.stdout.write("---\n".join(rendered.values()))
    return 0
