"""Layer usage and the Vulnerable condition, from a namespace snapshot."""

from __future__ import annotations

from datetime import UTC, datetime

from lamina.api.image import ImageLayer, ImageStatus
from lamina.api.layer import LayerStatus
from lamina.domain.graph import ImageNode
from lamina.domain.layers import Advisory, layer_digest, layer_name
from lamina.domain.snapshot import ImageRecord, LayerRecord, NamespaceSnapshot

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def image(name: str, parent: str | None, layers: list[tuple[str, bool]]) -> ImageRecord:
    status = ImageStatus(layers=[ImageLayer(digest=d, size=1, own=own) for d, own in layers])
    node = ImageNode(name, parent_image=parent, parent_ref=None if parent else "busybox:1")
    return ImageRecord(node, 1, status)


def layer(digest: str, advisory: Advisory | None = None) -> LayerRecord:
    return LayerRecord(layer_name(digest), 1, advisory, LayerStatus())


def snapshot(*layers: LayerRecord) -> NamespaceSnapshot:
    return NamespaceSnapshot(
        "ns",
        [
            image("base", None, [(A, True)]),
            image("app", "base", [(A, False), (B, True)]),
            image("tool", "base", [(A, False), (C, True)]),
        ],
        layers,
    )


def test_names_and_digests_round_trip() -> None:
    assert layer_name(A) == "sha256-" + "a" * 64
    assert layer_digest(layer_name(A)) == A


def test_usage_names_users_and_the_introducer() -> None:
    view = snapshot(layer(A), layer(B))
    assert view.layer_patch(layer_name(A)) == {
        "observedGeneration": 1,
        "digest": A,
        "usedBy": ["app", "base", "tool"],
        "usedByCount": 3,
        "introducedBy": "base",
    }
    assert view.layer_patch(layer_name(B))["introducedBy"] == "app"  # type: ignore[index]


def test_vulnerable_says_introduced_or_inherited() -> None:
    view = snapshot(layer(A, Advisory("CVE-1", "High")))
    conditions = {}
    for name in ["base", "app", "tool"]:
        patch = view.image_patch(name, now=datetime(2026, 1, 1, tzinfo=UTC))
        assert patch is not None
        conditions[name] = next(c for c in patch["conditions"] if c["type"] == "Vulnerable")
    assert conditions["base"]["message"] == f"layer {A} has CVE-1 (High), introduced by this image"
    assert conditions["app"]["message"] == f"layer {A} has CVE-1 (High), inherited from base"
    assert all(c["status"] == "True" for c in conditions.values())


def test_affected_sets() -> None:
    view = snapshot(layer(A, Advisory("CVE-1", "High")), layer(B))
    assert view.images_affected_by_layer(layer_name(A)) == ["app", "base", "tool"]
    assert view.layers_affected_by_image("app") == [layer_name(A), layer_name(B)]
    assert view.images_affected_by_image("base") == ["base", "app", "tool"]
    assert view.images_affected_by_image("deleted") == []
