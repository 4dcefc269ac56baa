"""Layer usage and the Vulnerable condition, from a namespace snapshot."""

from __future__ import annotations

from datetime import UTC, datetime

from lamina.api.image import ImageLayer, ImageSpec, ImageStatus
from lamina.api.layer import USED_BY_SAMPLE
from lamina.domain.layers import Advisory, layer_digest, layer_name
from lamina.domain.snapshot import ImageRecord, LayerRecord, NamespaceSnapshot

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def image(name: str, parent: str | None, layers: list[tuple[str, bool]]) -> ImageRecord:
    status = ImageStatus(layers=[ImageLayer(digest=d, size=1, own=own) for d, own in layers])
    spec = ImageSpec.model_validate(
        {
            "parent": {"image": parent} if parent else {"ref": "busybox:1"},
            "build": {"steps": ["RUN true"]},
            "output": {"repository": f"r.example/{name}"},
        }
    )
    return ImageRecord("ns", name, uid=name, generation=1, spec=spec, status=status)


def layer(digest: str, advisory: Advisory | None = None) -> LayerRecord:
    return LayerRecord("ns", layer_name(digest), generation=1, advisory=advisory)


def snapshot(*layers: LayerRecord, images: list[ImageRecord] | None = None) -> NamespaceSnapshot:
    return NamespaceSnapshot(
        "ns",
        images
        or [
            image("base", None, [(A, True)]),
            image("app", "base", [(A, False), (B, True)]),
            image("tool", "base", [(A, False), (C, True)]),
        ],
        layers,
    )


def test_names_and_digests_round_trip() -> None:
    assert layer_name(A) == "sha256-" + "a" * 64
    assert layer_digest(layer_name(A)) == A


def test_usage_counts_users_samples_names_and_names_the_introducer() -> None:
    view = snapshot(layer(A), layer(B))
    assert view.layer_status(layer_name(A)).wire() == {
        "observedGeneration": 1,
        "digest": A,
        "usedBy": ["app", "base", "tool"],
        "usedByCount": 3,
        "introducedBy": "base",
    }
    assert view.layer_status(layer_name(B)).introduced_by == "app"


def test_a_layer_shared_by_thousands_stays_small() -> None:
    images = [image("base", None, [(A, True)])]
    images += [image(f"app-{i:04}", "base", [(A, False)]) for i in range(5000)]
    status = snapshot(layer(A), images=images).layer_status(layer_name(A))
    assert status.used_by_count == 5001
    assert status.used_by == [f"app-{i:04}" for i in range(USED_BY_SAMPLE)]
    assert len(status.model_dump_json()) < 1024


def test_vulnerable_says_introduced_or_inherited() -> None:
    view = snapshot(layer(A, Advisory("CVE-1", "High")))
    conditions = {}
    for name in ["base", "app", "tool"]:
        status = view.image_status(name, NOW)
        conditions[name] = next(c for c in status.conditions or [] if c.type == "Vulnerable")
    assert conditions["base"].message == f"layer {A} has CVE-1 (High), introduced by this image"
    assert conditions["app"].message == f"layer {A} has CVE-1 (High), inherited from base"
    assert all(c.status == "True" for c in conditions.values())


def test_unused_layers_are_the_ones_no_image_contains() -> None:
    view = snapshot(layer(A), layer(B), layer("sha256:" + "d" * 64))
    assert [record.name for record in view.unused_layers()] == [layer_name("sha256:" + "d" * 64)]
