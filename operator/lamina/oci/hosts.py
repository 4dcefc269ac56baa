"""Registry settings: mirrors and plain-HTTP registries, as containerd's ``hosts.toml`` has them.

Lamina reads one YAML file (``$LAMINA_REGISTRY_CONFIG``) so the operator and the Jobs it
starts resolve ``docker.io/...`` the same way the node does::

    registries:
      docker.io:
        mirrors: [http://10.213.0.1:5000]   # tried instead of docker.io, in order
      "10.213.0.1:5000":
        insecure: true                      # speak plain HTTP

A mirror given as ``http://`` is plain HTTP; ``https://`` or a bare host is TLS.  The file's
text also travels to Jobs inline (``$LAMINA_REGISTRY_CONFIG_INLINE``), so a Job needs no
ConfigMap of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lamina.oci.reference import Reference

CONFIG_PATH_VARIABLE = "LAMINA_REGISTRY_CONFIG"
CONFIG_INLINE_VARIABLE = "LAMINA_REGISTRY_CONFIG_INLINE"


class InvalidRegistryConfig(ValueError):
    """The registry settings file is not what this module documents."""


@dataclass(frozen=True)
class RegistryHosts:
    """Per-registry mirrors and the set of registries spoken to over plain HTTP."""

    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    insecure: frozenset[str] = frozenset()
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> RegistryHosts:
        try:
            data: Any = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise InvalidRegistryConfig(f"registry settings are not YAML: {error}") from error
        registries = data.get("registries") if isinstance(data, dict) else None
        if not isinstance(registries, dict):
            raise InvalidRegistryConfig("registry settings need a top-level 'registries' map")
        mirrors: dict[str, tuple[str, ...]] = {}
        insecure: set[str] = set()
        for host, given in registries.items():
            settings = given or {}
            if not isinstance(settings, dict):
                raise InvalidRegistryConfig(f"registries.{host}: expected a map")
            if settings.get("insecure"):
                insecure.add(str(host))
            hosts = []
            for url in settings.get("mirrors") or []:
                scheme, _, rest = str(url).rpartition("://")
                mirror = rest.rstrip("/")
                if scheme == "http":
                    insecure.add(mirror)
                hosts.append(mirror)
            if hosts:
                mirrors[str(host)] = tuple(hosts)
        return cls(mirrors, frozenset(insecure), text)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> RegistryHosts:
        """From the inline text, else the file named by the path variable, else none."""
        source = os.environ if env is None else env
        if inline := source.get(CONFIG_INLINE_VARIABLE):
            return cls.parse(inline)
        if path := source.get(CONFIG_PATH_VARIABLE):
            return cls.parse(Path(path).read_text())
        return cls()

    def pull_from(self, ref: Reference) -> Reference:
        """Where to read ``ref`` from: its first mirror, or itself.

        Only the first mirror is used: a mirror that lacks the image gives a clear error
        rather than a silent fall-back to a registry this network may not reach.
        """
        mirrors = self.mirrors.get(ref.registry)
        if not mirrors:
            return ref
        return Reference(mirrors[0], ref.repository, ref.tag, ref.digest)
