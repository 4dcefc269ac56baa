"""The Layer resource: one content-addressed layer, shared between the images that contain it.

A Layer is named ``sha256-<hex>`` after its compressed digest.  People or scanners may attach an
advisory to it; the operator fills in how many images use it (with a bounded sample of their
names) and which one introduced it.  The operator creates Layers without owner references
(one per user would make a shared layer a large object) and collects them itself once no
Image of the namespace contains them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, JsonValue

from lamina.api.meta import DIGEST_PATTERN, Condition, Model, cel, conditions_field

Severity = Literal["Critical", "High", "Medium", "Low", "Unknown"]

LAYER_NAME_PATTERN = r"^sha256-[a-f0-9]{64}$"
# How many users status.usedBy names.  A Layer shared by every Image of a namespace must stay a
# small object (etcd refuses objects over 1.5 MiB, and rewriting a large one on every change is
# quadratic); which Images contain a layer is answered from Images (`lamina affected`).
USED_BY_SAMPLE = 10


class Advisory(Model):
    """A known problem in the layer's files."""

    id: str = Field(min_length=1, max_length=128, description="e.g. CVE-2024-3094.")
    severity: Severity = Field(default="Unknown")
    note: str | None = Field(default=None, max_length=4096)


class LayerSpec(Model):
    """The only user-settable part of a Layer: an optional advisory."""

    advisory: Advisory | None = None


class LayerStatus(Model):
    """Where the layer comes from and who uses it."""

    observed_generation: int | None = None
    conditions: list[Condition] | None = conditions_field()
    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN)
    diff_id: str | None = Field(default=None, alias="diffID", pattern=DIGEST_PATTERN)
    size: int | None = Field(default=None, ge=0)
    media_type: str | None = None
    created_by: str | None = Field(
        default=None, description="The build step that made it, from the image config history."
    )
    introduced_by: str | None = Field(
        default=None, description="The Image that introduced the layer (the others inherit it)."
    )
    used_by: list[str] | None = Field(
        default=None,
        max_length=USED_BY_SAMPLE,
        description=(
            f"The first {USED_BY_SAMPLE} Images containing the layer, by name (a sample: "
            "usedByCount says how many there are; `lamina affected` lists them all)."
        ),
    )
    used_by_count: int | None = Field(
        default=None, ge=0, description="How many Images of the namespace contain the layer."
    )


class Layer(Model):
    """A Layer custom resource as read from the API server."""

    kind: ClassVar[str] = "Layer"
    plural: ClassVar[str] = "layers"
    short_names: ClassVar[list[str]] = ["lyr"]
    root_validations: ClassVar[list[dict[str, JsonValue]]] = [
        cel(
            f"self.metadata.name.matches('{LAYER_NAME_PATTERN}')",
            "metadata.name must be sha256-<64 hex digits>: a Layer is named after its "
            "compressed digest",
        )
    ]

    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: LayerSpec = Field(default_factory=LayerSpec)
    status: LayerStatus = Field(default_factory=LayerStatus)
