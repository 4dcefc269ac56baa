"""CustomResourceDefinitions generated from the pydantic models.

The API server insists on *structural* schemas: every node typed, no ``$ref``, no ``anyOf``
for optional values (``nullable`` instead), no ``additionalProperties: false``.  pydantic's JSON
Schema is close but not that, so this module rewrites it.  The output is deterministic, so the
committed ``crds/`` can be compared byte for byte with what the models generate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, JsonValue

from lamina.api.commit import ContainerCommit, ContainerCommitSpec, ContainerCommitStatus
from lamina.api.image import Image, ImageSpec, ImageStatus
from lamina.api.layer import Layer, LayerSpec, LayerStatus
from lamina.api.meta import GROUP, VERSION, cel_string

JsonSchema = dict[str, Any]

# Keys of pydantic's output that say nothing to the API server, or that it refuses.
_DROPPED_KEYS = {"title", "$defs", "discriminator"}


@dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get``."""

    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""

    def wire(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.priority:
            column["priority"] = self.priority
        if self.description:
            column["description"] = self.description
        return column


@dataclass(frozen=True)
class ResourceKind:
    """Everything needed to publish one kind: its models and how kubectl shows it."""

    kind: str
    description: str
    plural: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    spec_required: bool
    columns: list[PrinterColumn]
    root_validations: list[dict[str, JsonValue]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
_READY = PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status')
_REASON = PrinterColumn("Reason", '.status.conditions[?(@.type=="Ready")].reason')

RESOURCE_KINDS: list[ResourceKind] = [
    ResourceKind(
        kind=Image.kind,
        description=(
            "An image built from a parent (another Image or an external reference) plus build "
            "steps; rebuilt automatically when its parent's digest changes."
        ),
        plural=Image.plural,
        short_names=Image.short_names,
        spec=ImageSpec,
        status=ImageStatus,
        spec_required=True,
        root_validations=Image.root_validations,
        columns=[
            _READY,
            _REASON,
            PrinterColumn("Digest", ".status.digest"),
            PrinterColumn("Parent", ".spec.parent.image"),
            PrinterColumn("Parent-Ref", ".spec.parent.ref", priority=1),
            PrinterColumn("Repository", ".spec.output.repository", priority=1),
            _AGE,
        ],
    ),
    ResourceKind(
        kind=Layer.kind,
        description=(
            "A content-addressed layer, named sha256-<hex> after its compressed digest, and the "
            "Images that contain it."
        ),
        plural=Layer.plural,
        short_names=Layer.short_names,
        spec=LayerSpec,
        status=LayerStatus,
        spec_required=False,
        columns=[
            PrinterColumn("Size", ".status.size", "integer"),
            PrinterColumn("Used-By", ".status.usedByCount", "integer"),
            PrinterColumn("Introduced-By", ".status.introducedBy"),
            PrinterColumn("Advisory", ".spec.advisory.id"),
            PrinterColumn("Severity", ".spec.advisory.severity"),
            PrinterColumn("Created-By", ".status.createdBy", priority=1),
            _AGE,
        ],
        root_validations=Layer.root_validations,
    ),
    ResourceKind(
        kind=ContainerCommit.kind,
        description=(
            "Snapshots the writable layer of a running pod's container into a new image "
            "(like docker commit)."
        ),
        plural=ContainerCommit.plural,
        short_names=ContainerCommit.short_names,
        spec=ContainerCommitSpec,
        status=ContainerCommitStatus,
        spec_required=True,
        root_validations=ContainerCommit.root_validations,
        columns=[
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Pod", ".spec.pod"),
            PrinterColumn("Image", ".status.image.ref"),
            PrinterColumn("Digest", ".status.image.digest", priority=1),
            _AGE,
        ],
    ),
]


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """The model's schema, rewritten into the structural form the API server accepts."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, JsonSchema] = raw.get("$defs", {})
    return _structural(raw, definitions)


def _structural(node: JsonSchema, definitions: dict[str, JsonSchema]) -> JsonSchema:
    node = copy.deepcopy(node)
    if "$ref" in node:
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        # Keywords beside a $ref (a field's description, default) override the target's.
        node = {**copy.deepcopy(target), **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
        return _structural(node, definitions)
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"no structural form for a union of {len(variants)} types")
        # Optional means "may be absent", not "may be null": without `nullable` the API server
        # prunes an explicit null, so `ref: null` reads as unset and CEL `has()` agrees.
        merged = {**variants[0], **node}
        if merged.get("default", 0) is None:
            del merged["default"]
        return _structural(merged, definitions)
    if "$ref" in node or "allOf" in node:
        return _structural(node, definitions)

    out: JsonSchema = {}
    key_rule = _key_rule(node)
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "patternProperties":
            # A map with constrained keys: the values' schema, the keys' rule as CEL below.
            (values,) = value.values()
            out["additionalProperties"] = _structural(values, definitions)
            continue
        if key == "propertyNames":
            continue
        if key == "additionalProperties":
            if value is False:
                continue
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
                continue
            out[key] = _structural(value, definitions)
        elif key == "properties":
            out[key] = {name: _structural(sub, definitions) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, definitions)
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if key_rule is not None:
        out["x-kubernetes-validations"] = [key_rule, *out.get("x-kubernetes-validations", [])]
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out:
        out.setdefault("type", "object")
    if out.get("type") == "integer":
        out.setdefault("format", "int64")
    return out


def _key_rule(node: JsonSchema) -> dict[str, JsonValue] | None:
    """CEL for a map's key constraints, which structural schemas cannot state otherwise.

    pydantic writes a constrained key type as ``patternProperties`` (its pattern) and
    ``propertyNames`` (its length); the API server knows neither, so they become one rule.
    """
    patterns = list(node.get("patternProperties") or {})
    max_length = (node.get("propertyNames") or {}).get("maxLength")
    if len(patterns) > 1:
        raise ValueError("no structural form for a map with several key patterns")
    if not patterns and max_length is None:
        return None
    checks, words = [], []
    if patterns:
        checks.append(f"k.matches({cel_string(patterns[0])})")
        words.append(f"match {patterns[0]}")
    if max_length is not None:
        checks.append(f"size(k) <= {max_length}")
        words.append(f"be at most {max_length} characters")
    return {
        "rule": f"self.all(k, {' && '.join(checks)})",
        "message": f"keys must {' and '.join(words)}",
    }


def crd_manifest(resource: ResourceKind) -> dict[str, Any]:
    """The full CustomResourceDefinition of one kind."""
    root: JsonSchema = {
        "type": "object",
        "description": resource.description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(resource.spec),
            "status": structural_schema(resource.status),
        },
    }
    if resource.spec_required:
        root["required"] = ["spec"]
    if resource.root_validations:
        root["x-kubernetes-validations"] = resource.root_validations
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.name,
            "labels": {"app.kubernetes.io/part-of": "lamina"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.kind.lower(),
                "shortNames": resource.short_names,
                "categories": ["lamina"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.wire() for c in resource.columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_yaml(resource: ResourceKind) -> str:
    """The CRD as the YAML committed under ``crds/``."""
    header = "# Generated by `lamina crds --write crds/` from the pydantic models. Do not edit.\n"
    body = yaml.safe_dump(crd_manifest(resource), sort_keys=False, width=100)
    return header + body


def file_name(resource: ResourceKind) -> str:
    return f"{resource.name}.yaml"
