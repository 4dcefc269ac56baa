"""The CRDs are generated from the models, are structural, and crds/ never drifts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lamina.api.crd import RESOURCE_KINDS, crd_manifest, file_name, render_yaml
from lamina.cli.main import main

REPO = Path(__file__).resolve().parents[2]
# Both copies are generated: crds/ for kubectl and GitOps, the chart's for helm install.
CRD_FOLDERS = [REPO / "crds", REPO / "charts" / "lamina" / "crds"]


@pytest.mark.parametrize("folder", CRD_FOLDERS, ids=lambda f: str(f.relative_to(REPO)))
@pytest.mark.parametrize("kind", RESOURCE_KINDS, ids=lambda k: k.kind)
def test_committed_crd_matches_the_models(kind: Any, folder: Path) -> None:
    committed = folder / file_name(kind)
    assert committed.read_text() == render_yaml(kind), (
        f"{committed} drifted from the pydantic models; run `make crds`"
    )


def test_check_flag_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--write", str(tmp_path)]) == 0
    assert main(["crds", "--check", str(tmp_path)]) == 0
    stale = tmp_path / "images.lamina.dev.yaml"
    stale.write_text(stale.read_text().replace("historyLimit", "historyLimits"))
    capsys.readouterr()
    assert main(["crds", "--check", str(tmp_path)]) == 1
    assert "images.lamina.dev.yaml differs from the models" in capsys.readouterr().out


def test_crds_print_as_one_yaml_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in documents] == [k.name for k in RESOURCE_KINDS]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


@pytest.mark.parametrize("kind", RESOURCE_KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: Any) -> None:
    schema = crd_manifest(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "title" not in node, path
        if path.endswith(".properties") or path.endswith("x-kubernetes-validations"):
            continue
        if "properties" in node or "items" in node:
            assert "type" in node, f"untyped node at {path}"


def test_image_crd_carries_the_contract() -> None:
    image = crd_manifest(RESOURCE_KINDS[0])
    version = image["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec["properties"]["parent"]["x-kubernetes-validations"]]
    assert rules == ["has(self.image) != has(self.ref)"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Ready", "Reason", "Digest", "Parent"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "conditions"
    ]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_commit_spec_is_immutable_by_rule() -> None:
    commit = crd_manifest(RESOURCE_KINDS[2])
    spec = commit["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"


def _spec_schema(kind: Any) -> dict[str, Any]:
    root = crd_manifest(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root["properties"]["spec"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", RESOURCE_KINDS, ids=lambda k: k.kind)
def test_every_spec_field_is_bounded(kind: Any) -> None:
    """No spec value a tenant writes is unbounded: strings, lists, maps and integers.

    Bounds keep every value inside what derived objects (labels, Job fields, argv) admit and
    keep CEL's cost estimates finite, so the API server accepts the rules at all.
    """
    unbounded = []
    for path, node in _walk(_spec_schema(kind)):
        if path.endswith(".properties") or "x-kubernetes-validations" in path:
            continue
        kind_of = node.get("type")
        if kind_of == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(f"{path}: string without maxLength")
        elif kind_of == "array" and "maxItems" not in node:
            unbounded.append(f"{path}: array without maxItems")
        elif kind_of == "integer" and "maximum" not in node:
            unbounded.append(f"{path}: integer without maximum")
        elif kind_of == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(f"{path}: map without maxProperties")
    assert unbounded == []


def test_map_key_constraints_become_a_cel_rule() -> None:
    """pydantic states key constraints as patternProperties/propertyNames; CRDs cannot."""
    image = _spec_schema(RESOURCE_KINDS[0])
    args = image["properties"]["build"]["properties"]["args"]
    assert "patternProperties" not in args and "propertyNames" not in args
    assert args["additionalProperties"]["maxLength"] == 4096
    assert args["maxProperties"] == 64
    rules = [rule["rule"] for rule in args["x-kubernetes-validations"]]
    assert rules == [
        "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$') && size(k) <= 128)",
        "self.all(k, !k.startsWith('BUILDKIT_'))",
    ]


@pytest.mark.parametrize("kind", [RESOURCE_KINDS[0], RESOURCE_KINDS[2]], ids=lambda k: k.kind)
def test_names_are_bounded_at_the_root(kind: Any) -> None:
    root = crd_manifest(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "size(self.metadata.name) <= 128" in [
        r["rule"] for r in root["x-kubernetes-validations"]
    ]
