"""Text views of the lineage for the terminal: pure functions from objects to lines.

Kept apart from the commands so the layout is tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lamina.domain.graph import ImageGraph, ImageNode
from lamina.domain.plan import PlannedStep


def short(digest: str | None, width: int = 12) -> str:
    """``sha256:0123456789abcdef...`` -> ``0123456789ab``; ``-`` when unknown."""
    if not digest:
        return "-"
    return digest.split(":", 1)[-1][:width]


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}GB"


def ready_reason(image: Mapping[str, Any]) -> str:
    for condition in (image.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return "Ready" if condition.get("status") == "True" else str(condition.get("reason"))
    return "Unknown"


def node_of(image: Mapping[str, Any]) -> ImageNode:
    parent = (image.get("spec") or {}).get("parent") or {}
    return ImageNode(
        image["metadata"]["name"],
        parent_image=parent.get("image"),
        parent_ref=parent.get("ref"),
        digest=(image.get("status") or {}).get("digest"),
    )


def render_tree(images: Sequence[Mapping[str, Any]]) -> list[str]:
    """The forest of Images, like ``docker image ls --tree``: name, digest, state.

    Roots are Images with an external parent, or whose parent is missing (shown with it);
    Images caught in a parent cycle have no root and are listed last.
    """
    by_name = {image["metadata"]["name"]: image for image in images}
    graph = ImageGraph(node_of(image) for image in images)
    lines: list[str] = []
    placed: set[str] = set()

    def label(name: str) -> str:
        image = by_name[name]
        return f"{name}  {short((image.get('status') or {}).get('digest'))}  {ready_reason(image)}"

    def walk(name: str, prefix: str, last: bool, top: bool) -> None:
        placed.add(name)
        connector = "" if top else ("└── " if last else "├── ")
        lines.append(prefix + connector + label(name))
        children = [c for c in graph.children(name) if c not in placed]
        child_prefix = prefix if top else prefix + ("    " if last else "│   ")
        for index, child in enumerate(children):
            walk(child, child_prefix, index == len(children) - 1, False)

    roots = sorted(
        name
        for name, node in graph.nodes.items()
        if node.parent_image is None or node.parent_image not in graph.nodes
    )
    for root in roots:
        node = graph.nodes[root]
        origin = node.parent_ref or f"missing parent {node.parent_image}"
        lines.append(f"[{origin}]")
        walk(root, "", True, True)
    cyclic = sorted(set(graph.nodes) - placed)
    if cyclic:
        lines.append("[in a parent cycle]")
        lines.extend(label(name) for name in cyclic)
    return lines


def render_history(image: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Layers top first, like ``docker history``: digest, size, origin, created-by."""
    status = image.get("status") or {}
    lineage = [entry.get("name") for entry in status.get("lineage") or [] if entry.get("name")]
    rows = [("LAYER", "SIZE", "FROM", "CREATED BY")]
    for layer in reversed(status.get("layers") or []):
        info = (layers.get(layer["digest"]) or {}).get("status") or {}
        if layer.get("own"):
            origin = "this image"
        else:
            origin = info.get("introducedBy") or (lineage[-1] if lineage else "parent")
        rows.append(
            (
                short(layer["digest"]),
                human_size(layer.get("size")),
                str(origin),
                str(info.get("createdBy") or "-"),
            )
        )
    return table(rows)


def render_plan(root: str, steps: Iterable[PlannedStep]) -> list[str]:
    rows = [("IMAGE", "DEPTH", "PARENT", "POLICY", "STRATEGY", "ACTION")]
    rows += [(s.name, str(s.depth), s.parent, s.policy, s.strategy, s.action) for s in steps]
    if len(rows) == 1:
        return [f"nothing below {root}: a new digest of {root} rebuilds nothing else"]
    return table(rows)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


# -- lamina commit -----------------------------------------------------------------------


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition
    return {}


def commit_state(status: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(phase, reason, message, node): what the progress display shows a line for."""
    ready = _ready(status)
    return (
        str(status.get("phase") or "Pending"),
        str(ready.get("reason") or ""),
        str(ready.get("message") or ""),
        str(status.get("node") or ""),
    )


def commit_progress_line(elapsed: float, status: Mapping[str, Any]) -> str:
    phase, reason, message, node = commit_state(status)
    where = f" [node {node}]" if node and phase == "Running" else ""
    said = f"{reason}: {message}" if reason and message else reason or message or "waiting"
    return f"[{elapsed:6.1f}s] {phase:<9} {said}{where}"


def _pinned(ref: Mapping[str, Any]) -> str:
    """``repo@digest`` from ``{ref, digest}``, whether or not ``ref`` is pinned already."""
    name, digest = str(ref.get("ref") or "-"), ref.get("digest")
    return name if "@" in name or not digest else f"{name}@{digest}"


def commit_summary(status: Mapping[str, Any]) -> list[str]:
    """The result of a succeeded commit: the image, its layer, where the time went."""
    image = status.get("image") or {}
    layer = status.get("layer") or {}
    parent = status.get("parent") or {}
    lines = [
        f"image:   {_pinned(image)}",
        f"parent:  {_pinned(parent)}",
        f"layer:   {layer.get('digest') or '-'} ({human_size(layer.get('size'))}, "
        f"{layer.get('entries') if layer.get('entries') is not None else '-'} entries)",
        f"node:    {status.get('node') or '-'}",
    ]
    timings = [
        f"{label} {status[key]:.2f}s"
        for key, label in (
            ("frozenSeconds", "frozen"),
            ("diffSeconds", "diff"),
            ("pushSeconds", "push"),
        )
        if isinstance(status.get(key), int | float)
    ]
    if timings:
        lines.append("timings: " + ", ".join(timings))
    return lines
