"""Registry settings: mirrors and plain HTTP, in the format e2e/cluster writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.oci.hosts import InvalidRegistryConfig, RegistryHosts
from lamina.oci.reference import parse_reference

TEXT = """\
registries:
  docker.io:
    mirrors: [http://10.213.0.1:5000]
  quay.io:
    mirrors: ["https://mirror.example:443/", "http://second:5000"]
  "10.213.0.1:5000":
    insecure: true
"""


def test_parse_and_pull_through_the_first_mirror() -> None:
    hosts = RegistryHosts.parse(TEXT)
    busybox = parse_reference("busybox:1.36")
    assert str(hosts.pull_from(busybox)) == "10.213.0.1:5000/library/busybox:1.36"
    assert hosts.pull_from(parse_reference("quay.io/a/b")).registry == "mirror.example:443"
    assert hosts.pull_from(parse_reference("ghcr.io/a/b")).registry == "ghcr.io"
    assert hosts.insecure == {"10.213.0.1:5000", "second:5000"}


def test_environment_inline_wins_over_path(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text("registries: {}\n")
    assert RegistryHosts.from_environment({"LAMINA_REGISTRY_CONFIG": str(path)}).mirrors == {}
    both = {"LAMINA_REGISTRY_CONFIG": str(path), "LAMINA_REGISTRY_CONFIG_INLINE": TEXT}
    assert "docker.io" in RegistryHosts.from_environment(both).mirrors
    assert RegistryHosts.from_environment({}) == RegistryHosts()


@pytest.mark.parametrize("text", ["- a list", "registries: [1]", "registries: {x: [1]}", "{:"])
def test_invalid_settings_are_refused(text: str) -> None:
    with pytest.raises(InvalidRegistryConfig):
        RegistryHosts.parse(text)
