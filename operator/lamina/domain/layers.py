"""Who uses a layer, who introduced it, and which Images an advisory makes vulnerable.

Layers are named after their digest (``sha256-<hex>``); Images list theirs in
``status.layers`` with ``own`` marking the ones they introduced.  Everything else is derived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lamina.domain.conditions import Verdict

VULNERABLE = "Vulnerable"
VULNERABLE_LAYER = "VulnerableLayer"
NO_KNOWN_ADVISORY = "NoKnownAdvisory"


def layer_name(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>`` (a valid object name)."""
    return digest.replace(":", "-", 1)


def layer_digest(name: str) -> str:
    """``sha256-<hex>`` -> ``sha256:<hex>``."""
    return name.replace("-", ":", 1)


@dataclass(frozen=True)
class ImageLayers:
    """The layers of one Image, bottom first, with ``own`` per layer."""

    image: str
    layers: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class LayerUsage:
    """Who uses a layer: a bounded sample of the users (first by name), how many there are,
    and the introducer.  Bounded so a base layer shared by thousands of Images stays a small
    object whose status changes only when the count does (the full list is in Images)."""

    used_by: tuple[str, ...]
    used_by_count: int
    introduced_by: str | None


@dataclass(frozen=True)
class Advisory:
    id: str
    severity: str


def decide_vulnerable(
    image: ImageLayers,
    advisories: Mapping[str, Advisory],
    introducers: Mapping[str, str | None],
) -> Verdict | None:
    """The Vulnerable condition of an Image, or None while its layers are unknown.

    The message says, per flagged layer, whether this Image introduced it (fix it here) or
    inherited it (fix it in the named ancestor, and the rebuild cascade brings the fix down).
    """
    if not image.layers:
        return None
    findings: list[str] = []
    for digest, own in image.layers:
        advisory = advisories.get(digest)
        if advisory is None:
            continue
        origin = introducers.get(digest)
        if own:
            where = "introduced by this image"
        elif origin is not None:
            where = f"inherited from {origin}"
        else:
            where = "inherited from the external parent"
        findings.append(f"layer {digest} has {advisory.id} ({advisory.severity}), {where}")
    if not findings:
        return Verdict(VULNERABLE, "False", NO_KNOWN_ADVISORY, "no layer has an advisory")
    return Verdict(VULNERABLE, "True", VULNERABLE_LAYER, "; ".join(findings))
