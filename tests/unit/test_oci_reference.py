"""Reference normalisation, as Docker and containerd do it."""

from __future__ import annotations

import pytest

from lamina.oci.reference import InvalidReference, parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("myorg/app", "docker.io", "myorg/app", "latest", None),
        ("index.docker.io/library/alpine:3", "docker.io", "library/alpine", "3", None),
        ("ghcr.io/a/b/c:v1", "ghcr.io", "a/b/c", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("127.0.0.1:5000/x/y:t", "127.0.0.1:5000", "x/y", "t", None),
        (f"registry.local:5000/app@{D}", "registry.local:5000", "app", None, D),
        (f"busybox:1@{D}", "docker.io", "library/busybox", "1", D),
    ],
)
def test_parse_and_normalise(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


def test_docker_hub_api_host_and_string_form() -> None:
    ref = parse_reference("busybox")
    assert ref.api_host == "registry-1.docker.io"
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.target == "latest"
    assert parse_reference(f"busybox@{D}").target == D


@pytest.mark.parametrize("text", ["", "UPPER/case", "a:b:c/d", "x@sha256:short", "a/b:bad tag"])
def test_invalid_references_say_why(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(text)
