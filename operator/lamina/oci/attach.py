"""Attaching an in-toto statement to a pushed image, as BuildKit attaches its attestations.

The statement and the attestation manifest go to the image's repository by digest; the index
that holds the image and the attestation manifest is returned, for the caller to put under
its tags (see :mod:`lamina.domain.attestation_index` for the layout and why this one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.domain.attestation_index import AttestedImage, attested_image
from lamina.oci.client import Manifest, RegistryClient
from lamina.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from lamina.oci.reference import Reference


async def push_attested(
    client: RegistryClient,
    target: Reference,
    image: Manifest,
    platform: Mapping[str, str],
    statement: Mapping[str, Any],
) -> Manifest:
    """Push ``statement`` about ``image`` (already in ``target``'s repository); the index."""
    attested = attested_image(
        manifest_digest=image.digest,
        manifest_size=len(image.data),
        manifest_media_type=image.media_type,
        platform=platform,
        statement=statement,
    )
    return await push_documents(client, target, attested)


async def push_documents(
    client: RegistryClient, target: Reference, attested: AttestedImage
) -> Manifest:
    """Push the new statement, the attestation config and manifest by digest; the index
    (not pushed: the caller puts it by digest or under tags)."""
    await client.push_blob(target, attested.statement.data)
    await client.push_blob(target, attested.attestation_config)
    attestation = Manifest(attested.attestation_manifest, OCI_MANIFEST, attested.attestation_digest)
    await client.put_manifest(target, attestation, attestation.digest)
    return Manifest(attested.index, OCI_INDEX, attested.index_digest)
