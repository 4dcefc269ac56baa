"""``lamina tree``, ``history``, ``plan`` and ``affected``: read the lineage from the cluster."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lamina.cli.views import node_of, render_history, render_plan, render_tree, table
from lamina.domain.graph import ImageGraph
from lamina.domain.layers import layer_digest, layer_name
from lamina.domain.plan import RebuildPolicy, plan_cascade

if TYPE_CHECKING:
    from lamina.kube import Kube


def register(commands: Any) -> None:
    def add(
        name: str, help_text: str, run: Callable[[Kube, argparse.Namespace], Awaitable[int]]
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=help_text
        )
        parser.add_argument(
            "-n", "--namespace", default="default", help="namespace (default: default)"
        )
        parser.set_defaults(run=lambda args: asyncio.run(_with_kube(run, args)))
        return parser

    add("tree", "print the lineage tree of the namespace's Images with digests and states", tree)
    add("history", "list an Image's layers with size, origin and created-by", history).add_argument(
        "image"
    )
    add("plan", "show what a new digest of IMAGE would rebuild below it", plan).add_argument(
        "image"
    )
    add(
        "affected", "show which Images contain a layer, and which one introduced it", affected
    ).add_argument("layer", help="sha256:<hex> or sha256-<hex>")


async def _with_kube(
    run: Callable[[Kube, argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    from lamina.kube import Kube  # noqa: PLC0415 - only the commands that talk to the API pay

    kube = await Kube.connect()
    try:
        return await run(kube, args)
    finally:
        await kube.close()


async def tree(kube: Kube, args: argparse.Namespace) -> int:
    images = await kube.list_objects("images", args.namespace)
    if not images:
        print(f"no Images in namespace {args.namespace}")
        return 0
    print("\n".join(render_tree(images)))
    return 0


async def history(kube: Kube, args: argparse.Namespace) -> int:
    image = await kube.get_object("images", args.namespace, args.image)
    if image is None:
        print(f'Image "{args.image}" not found in namespace {args.namespace}')
        return 1
    layers = {
        layer_digest(obj["metadata"]["name"]): obj
        for obj in await kube.list_objects("layers", args.namespace)
    }
    if not (image.get("status") or {}).get("layers"):
        print(f"{args.image} has no recorded layers yet (it has not been built)")
        return 0
    print("\n".join(render_history(image, layers)))
    return 0


async def plan(kube: Kube, args: argparse.Namespace) -> int:
    images = await kube.list_objects("images", args.namespace)
    graph = ImageGraph(node_of(image) for image in images)
    if args.image not in graph.nodes:
        print(f'Image "{args.image}" not found in namespace {args.namespace}')
        return 1
    policies = {
        image["metadata"]["name"]: RebuildPolicy(
            **{
                k: v
                for k, v in ((image.get("spec") or {}).get("rebuild") or {}).items()
                if k in ("policy", "strategy")
            }
        )
        for image in images
    }
    print("\n".join(render_plan(args.image, plan_cascade(args.image, graph, policies))))
    return 0


async def affected(kube: Kube, args: argparse.Namespace) -> int:
    digest = layer_digest(args.layer) if args.layer.startswith("sha256-") else args.layer
    images = await kube.list_objects("images", args.namespace)
    rows = [("IMAGE", "HOW")]
    for image in sorted(images, key=lambda i: str(i["metadata"]["name"])):
        for layer in (image.get("status") or {}).get("layers") or []:
            if layer["digest"] == digest:
                rows.append(
                    (image["metadata"]["name"], "introduced" if layer.get("own") else "inherited")
                )
    if len(rows) == 1:
        print(f"no Image in namespace {args.namespace} contains {layer_name(digest)}")
        return 1
    print("\n".join(table(rows)))
    return 0
