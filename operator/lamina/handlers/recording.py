"""Layer objects for an image that landed in the registry (a build or a commit).

One Layer per digest and namespace, owned by every Image that contains it, so Kubernetes'
garbage collector removes it with its last user.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lamina.api.meta import API_VERSION
from lamina.domain.manifest_facts import LayerFact
from lamina.kube import Kube


def image_owner(image_meta: Mapping[str, Any]) -> dict[str, str]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Image",
        "name": str(image_meta["name"]),
        "uid": str(image_meta["uid"]),
    }


async def ensure_layers(
    kube: Kube, namespace: str, image_meta: Mapping[str, Any], facts: Iterable[LayerFact]
) -> None:
    """Create each Layer, or add this Image to its owners; then write what it is."""
    owner = image_owner(image_meta)
    for fact in facts:
        created = await kube.create_object(
            "layers",
            namespace,
            {
                "apiVersion": API_VERSION,
                "kind": "Layer",
                "metadata": {"name": fact.name, "ownerReferences": [owner]},
            },
        )
        if not created:
            existing = await kube.get_object("layers", namespace, fact.name) or {}
            owners = existing.get("metadata", {}).get("ownerReferences") or []
            if all(o.get("uid") != owner["uid"] for o in owners):
                await kube.patch_object(
                    "layers",
                    namespace,
                    fact.name,
                    {"metadata": {"ownerReferences": [*owners, owner]}},
                )
        await kube.patch_status("layers", namespace, fact.name, fact.layer_status())
