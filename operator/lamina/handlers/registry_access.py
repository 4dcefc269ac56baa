"""The operator's reads from registries: verify what a Job says it pushed, read its layers.

Credentials come only from the Secret named by the object, in the object's own namespace.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lamina.domain.attestation_index import AttestationFact
from lamina.domain.snapshot import ImageRecord
from lamina.oci.client import RegistryClient, platform_descriptor
from lamina.oci.errors import RegistryResponseInvalid
from lamina.oci.hosts import RegistryHosts
from lamina.oci.reference import parse_reference


class PushSecretError(Exception):
    """The push Secret is missing or is not a usable dockerconfigjson."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def output_registry(
    record: ImageRecord,
    hosts: RegistryHosts,
    docker_config: str | None,
    session: aiohttp.ClientSession,
) -> RegistryClient:
    """A client for the Image's output repository: plain HTTP where the registry settings or
    the Image's ``output.insecure`` say so, with the Image's own push credentials only."""
    assert record.spec is not None
    target = parse_reference(record.spec.output.repository)
    return RegistryClient(
        session,
        insecure=hosts.insecure | ({target.registry} if record.spec.output.insecure else set()),
        docker_config=json.loads(docker_config) if docker_config else None,
        retries=2,
    )


def docker_config_of(secret: Mapping[str, Any] | None, namespace: str, name: str) -> str:
    """The Secret's ``.dockerconfigjson`` text, checked to be a JSON object with ``auths``."""
    if secret is None:
        raise PushSecretError(
            "PushSecretNotFound", f'push Secret "{name}" not found in namespace "{namespace}"'
        )
    encoded = (secret.get("data") or {}).get(".dockerconfigjson")
    if secret.get("type") != "kubernetes.io/dockerconfigjson" or not encoded:
        raise PushSecretError(
            "PushSecretInvalid",
            f'push Secret "{name}" must be of type kubernetes.io/dockerconfigjson '
            "with a .dockerconfigjson key",
        )
    try:
        text = base64.b64decode(encoded).decode()
        parsed = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise PushSecretError(
            "PushSecretInvalid", f'push Secret "{name}" holds no valid JSON: {error}'
        ) from error
    if not isinstance(parsed, dict) or not isinstance(parsed.get("auths"), dict):
        raise PushSecretError(
            "PushSecretInvalid", f'push Secret "{name}": .dockerconfigjson has no "auths" map'
        )
    return text


@dataclass(frozen=True)
class PushedImage:
    manifest: dict[str, Any]
    config: dict[str, Any]
    media_type: str
    attestations: list[AttestationFact] = field(default_factory=list)


async def read_pushed_image(
    image: str, *, insecure: bool, docker_config: str | None, index: str | None = None
) -> PushedImage:
    """Fetch ``repository@digest``; the client checks the bytes hash to that digest.

    With ``index`` (the digest of the index said to hold it), the index must list the image
    as a platform image, and the attestations it holds about the image are read.
    """
    ref = parse_reference(image)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = RegistryClient(
            session,
            insecure=[ref.registry] if insecure else [],
            docker_config=json.loads(docker_config) if docker_config else None,
            retries=2,
        )
        manifest = await client.get_manifest(ref)
        body = manifest.json()
        config = json.loads(await client.get_blob(ref, body["config"]["digest"]))
        attestations: list[AttestationFact] = []
        if index is not None:
            listed = await client.get_manifest(ref, index)
            if manifest.digest != platform_descriptor(ref, listed):
                raise RegistryResponseInvalid(
                    f"{ref.registry}: the index {index} of {ref.repository} does not hold "
                    f"{manifest.digest} as its image",
                    registry=ref.registry,
                )
            attestations = await client.attestations(ref, listed, manifest.digest)
        return PushedImage(body, config, manifest.media_type, attestations)
