"""The reference syntax the CRDs enforce, checked on the models with the same patterns."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lamina.api.image import OutputSpec, ParentSpec

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "repository",
    [
        "busybox",
        "library/busybox",
        "docker.io/library/busybox",
        "localhost:5000/demo/app",
        "registry.example.com/team/sub-team/app_name",
        "10.0.0.1:5000/a",
        "ghcr.io/org/a__b",
    ],
)
def test_valid_repositories(repository: str) -> None:
    assert OutputSpec(repository=repository).repository == repository


@pytest.mark.parametrize(
    "repository",
    ["", "Upper/Case", "a//b", "a/b/", "/a", "a:5000", "a b", "registry.io/app:tag", "-a/b"],
)
def test_invalid_repositories(repository: str) -> None:
    with pytest.raises(ValidationError):
        OutputSpec(repository=repository)


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "busybox:1.36",
        f"busybox@{DIGEST}",
        f"docker.io/library/busybox:1.36@{DIGEST}",
        "localhost:5000/demo/app:v1",
    ],
)
def test_valid_refs(ref: str) -> None:
    assert ParentSpec(ref=ref).ref == ref


@pytest.mark.parametrize("ref", ["busybox@sha256:short", "busybox:", "busybox:-x", "UP:1"])
def test_invalid_refs(ref: str) -> None:
    with pytest.raises(ValidationError):
        ParentSpec(ref=ref)


@pytest.mark.parametrize("tag", ["-bad", ".bad", "a" * 129, "bad!"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(ValidationError):
        OutputSpec(repository="a/b", tags=[tag])
