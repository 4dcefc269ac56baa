"""Image assembly: the committed image's config and manifest, from the parent's.

Pure: bytes and dicts in, bytes out; the same inputs always give the same manifest digest.

Media types: the new manifest is always an OCI image manifest (``config`` and layer media
types translated from Docker's where the parent used them).  Reasons:

- the base-image annotations the lineage relies on
  (``org.opencontainers.image.base.digest`` / ``.base.name``) are defined for OCI manifests
  only; Docker schema 2 has no ``annotations``;
- zstd layers exist only as OCI media types, and one format for both compressions keeps one
  code path;
- mixing Docker and OCI media types in one manifest is invalid, and translating is lossless:
  a Docker gzip layer and an OCI ``tar+gzip`` layer are the same bytes with the same digest.

Every runtime Kubernetes supports (containerd, CRI-O) and every maintained registry accept
OCI manifests.

Config changes follow ``docker commit --change``: ``env`` replaces variables by name and
appends new ones, ``labels`` and ``exposedPorts`` merge, ``cmd``/``entrypoint``/``workingDir``/
``user`` replace; setting ``entrypoint`` without ``cmd`` clears an inherited ``cmd``, as a
Dockerfile's ENTRYPOINT does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lamina.domain.attestation_index import is_attestation
from lamina.oci.mediatypes import MANIFESTS, OCI_CONFIG, OCI_MANIFEST, as_oci, layer_media_type

BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"


@dataclass(frozen=True)
class ConfigChanges:
    """``docker commit --change``-like edits (field names as in the ContainerCommit API)."""

    env: tuple[tuple[str, str], ...] | None = None
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str | None = None
    user: str | None = None
    labels: Mapping[str, str] | None = None
    exposed_ports: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfigChanges:
        """From the API's camelCase form (``workingDir``, ``exposedPorts``, env as a list of
        ``{name, value}``)."""
        known = {"env", "cmd", "entrypoint", "workingDir", "user", "labels", "exposedPorts"}
        if unknown := set(data) - known:
            raise ValueError(f"unknown change(s) {sorted(unknown)}; known: {sorted(known)}")
        env = data.get("env")
        return cls(
            env=None
            if env is None
            else tuple((str(item["name"]), str(item.get("value", ""))) for item in env),
            cmd=_strings(data.get("cmd")),
            entrypoint=_strings(data.get("entrypoint")),
            working_dir=data.get("workingDir"),
            user=data.get("user"),
            labels=None if data.get("labels") is None else dict(data["labels"]),
            exposed_ports=_strings(data.get("exposedPorts")),
        )


def _strings(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(item) for item in value)


@dataclass(frozen=True)
class NewLayer:
    """The committed layer as the config and manifest describe it."""

    digest: str
    diff_id: str
    size: int
    compression: str


@dataclass(frozen=True)
class CommitInfo:
    """Who and what: goes into the history entry and the config's ``author``."""

    created_by: str
    created: datetime
    comment: str | None = None
    author: str | None = None
    changes: ConfigChanges = field(default_factory=ConfigChanges)


@dataclass(frozen=True)
class Blob:
    """Exact bytes and their descriptor fields."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def canonical_json(value: Any) -> bytes:
    """Compact, key-sorted JSON: deterministic bytes for a deterministic digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def commit_config(parent_config: Mapping[str, Any], layer: NewLayer, info: CommitInfo) -> Blob:
    """The parent config plus the new diff_id, a history entry and the changes."""
    config: dict[str, Any] = copy.deepcopy(dict(parent_config))
    created = rfc3339(info.created)
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("type", "layers")
    rootfs.setdefault("diff_ids", []).append(layer.diff_id)
    entry: dict[str, Any] = {"created": created, "created_by": info.created_by}
    if info.comment:
        entry["comment"] = info.comment
    if info.author:
        entry["author"] = info.author
        config["author"] = info.author
    config.setdefault("history", []).append(entry)
    config["created"] = created
    runtime = config.setdefault("config", {}) or {}
    config["config"] = apply_changes(runtime, info.changes)
    # Fields of the builder's container, not of the image; stale once the config changes.
    config.pop("container", None)
    config.pop("container_config", None)
    return Blob(OCI_CONFIG, canonical_json(config))


def apply_changes(runtime: Mapping[str, Any], changes: ConfigChanges) -> dict[str, Any]:
    result = dict(runtime)
    if changes.env is not None:
        env = list(result.get("Env") or [])
        for name, value in changes.env:
            env = [item for item in env if item.split("=", 1)[0] != name]
            env.append(f"{name}={value}")
        result["Env"] = env
    if changes.entrypoint is not None:
        result["Entrypoint"] = list(changes.entrypoint)
        if changes.cmd is None:
            result.pop("Cmd", None)
    if changes.cmd is not None:
        result["Cmd"] = list(changes.cmd)
    if changes.working_dir is not None:
        result["WorkingDir"] = changes.working_dir
    if changes.user is not None:
        result["User"] = changes.user
    if changes.labels is not None:
        result["Labels"] = {**(result.get("Labels") or {}), **changes.labels}
    if changes.exposed_ports is not None:
        ports = dict(result.get("ExposedPorts") or {})
        for port in changes.exposed_ports:
            ports[port if "/" in port else f"{port}/tcp"] = {}
        result["ExposedPorts"] = ports
    return result


def commit_manifest(
    parent_manifest: Mapping[str, Any],
    config: Blob,
    layer: NewLayer,
    *,
    base_name: str,
    base_digest: str,
) -> Blob:
    """Parent layers (media types made OCI) + the new layer, with base-image annotations."""
    layers = [
        {**descriptor, "mediaType": as_oci(descriptor["mediaType"])}
        for descriptor in parent_manifest.get("layers", [])
    ]
    layers.append(
        {
            "mediaType": layer_media_type(layer.compression),
            "digest": layer.digest,
            "size": layer.size,
        }
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers,
        "annotations": {BASE_DIGEST: base_digest, BASE_NAME: base_name},
    }
    return Blob(OCI_MANIFEST, canonical_json(manifest))


_PLATFORM_WORD = re.compile(r"^[a-z0-9._-]{1,32}$")
_PLATFORMS_SHOWN = 8


def _media_type(descriptor: Mapping[str, Any]) -> str:
    """A descriptor's media type as the client compares a response's (no parameters, any case)."""
    declared = descriptor.get("mediaType")
    return declared.split(";")[0].strip().lower() if isinstance(declared, str) else ""


def select_platform(
    index: Mapping[str, Any], os_name: str = "linux", architecture: str = "amd64"
) -> dict[str, Any]:
    """The manifest descriptor of an index for one platform (amd64's variant is ignored).

    Attestation manifests (BuildKit's SBOM and provenance, Lamina's own) are never a
    platform's image, whatever platform they claim; nor is an entry that does not say it is an
    image manifest (the OCI spec requires the descriptor's ``mediaType``): a nested index
    there would be pinned as the parent's image, which no build can use.

    The index is registry input: the error names at most a few of its platforms, and only
    names that look like platform names.
    """
    manifests = index.get("manifests")
    listed = (
        [d for d in manifests if isinstance(d, Mapping) and not is_attestation(d)]
        if isinstance(manifests, list)
        else []
    )
    entries = [d for d in listed if _media_type(d) in MANIFESTS]

    def platform(descriptor: Mapping[str, Any]) -> Mapping[str, Any]:
        found = descriptor.get("platform")
        return found if isinstance(found, Mapping) else {}

    candidates = [
        d
        for d in entries
        if platform(d).get("os") == os_name and platform(d).get("architecture") == architecture
    ]
    if not candidates:

        def word(value: Any) -> str:
            return value if isinstance(value, str) and _PLATFORM_WORD.match(value) else "?"

        seen = sorted(
            {
                f"{word(platform(d).get('os'))}/{word(platform(d).get('architecture'))}"
                for d in entries
            }
        )
        more = f" and {len(seen) - _PLATFORMS_SHOWN} more" if len(seen) > _PLATFORMS_SHOWN else ""
        passed_over = len(listed) - len(entries)
        other = f" ({passed_over} other entries are not image manifests)" if passed_over else ""
        raise LookupError(
            f"no {os_name}/{architecture} manifest in the index; it has "
            f"{seen[:_PLATFORMS_SHOWN]}{more}{other}"
        )
    return dict(candidates[0])
