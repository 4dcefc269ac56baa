"""Pushing and finding cosign signatures in a registry (the layout: lamina.domain.signatures).

Signing is idempotent: when the signature tag already holds a signature of this digest that
verifies with our key, nothing is pushed and that signature is recorded (a rebuild that
yields the same digest signs nothing again).  Otherwise our signature is appended to the
well-formed signatures already there (other signers' are kept, as cosign keeps them).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from lamina.domain.signatures import (
    IN_TOTO_PAYLOAD_TYPE,
    OCI_MANIFEST,
    PAYLOAD_MAX_BYTES,
    PREDICATE_TYPE_ANNOTATION,
    STATEMENT_MAX_BYTES,
    SignatureLayer,
    attestation_layer,
    attestation_layers,
    attestation_refs,
    attestation_tag,
    dsse_envelope,
    envelope_parts,
    new_layer,
    pae,
    signature_image,
    signature_layers,
    signature_tag,
    signed_digest,
    simple_signing_payload,
    statement_about,
    with_signature,
)
from lamina.oci.client import Manifest, RegistryClient, sha256_digest
from lamina.oci.cosign_keys import SigningKey, verifies
from lamina.oci.errors import RegistryError
from lamina.oci.mediatypes import INDEXES
from lamina.oci.reference import Reference

# Payloads are checked one by one; a tag with more candidate layers than this is not read on.
_MAX_CHECKED = 64
IN_TOTO_LAYER = "application/vnd.in-toto+json"
_PREDICATE = "in-toto.io/predicate-type"


@dataclass(frozen=True)
class PushedSignature:
    """Where a verified signature of ``signed_digest`` is: the ``.sig`` manifest's digest."""

    signed_digest: str
    tag: str
    manifest_digest: str
    reused: bool


@dataclass(frozen=True)
class FoundSignature:
    """What verifying found: the verified payload's claimed repository, or why none."""

    manifest_digest: str | None
    verified: int
    checked: int
    docker_reference: str | None = None


def _repository(ref: Reference) -> Reference:
    return Reference(ref.registry, ref.repository)


async def _signature_manifest(
    client: RegistryClient, repository: Reference, tag: str
) -> Manifest | None:
    try:
        manifest = await client.get_manifest(repository, tag)
    except RegistryError as error:
        if error.status == 404:
            return None
        raise
    return manifest if manifest.media_type == OCI_MANIFEST else None


async def _verified(
    client: RegistryClient,
    repository: Reference,
    layers: list[SignatureLayer],
    digest: str,
    key: ec.EllipticCurvePublicKey,
) -> tuple[list[tuple[SignatureLayer, bytes]], int]:
    """The layers whose payload claims ``digest`` and whose signature verifies with ``key``."""
    good: list[tuple[SignatureLayer, bytes]] = []
    checked = 0
    for layer in layers[:_MAX_CHECKED]:
        try:
            signature = base64.b64decode(layer.signature_b64, validate=True)
        except binascii.Error:
            continue
        checked += 1
        payload = await client.get_blob(repository, layer.digest, limit=PAYLOAD_MAX_BYTES)
        if signed_digest(payload) == digest and verifies(key, payload, signature):
            good.append((layer, payload))
    return good, checked


async def sign_image(
    client: RegistryClient, image: Reference, digest: str, key: SigningKey
) -> PushedSignature:
    """Sign ``image``'s repository at ``digest`` with ``key`` (push rights needed)."""
    repository = _repository(image)
    tag = signature_tag(digest)
    existing = await _signature_manifest(client, repository, tag)
    layers = signature_layers(existing.json()) if existing is not None else []
    if existing is not None:
        good, _ = await _verified(client, repository, layers, digest, key.private.public_key())
        if good:
            return PushedSignature(digest, tag, existing.digest, reused=True)
    payload = simple_signing_payload(repository.name, digest)
    ours = new_layer(payload, key.sign(payload))
    await client.push_blob(repository, payload)
    manifest_bytes, config = signature_image(with_signature(layers, ours))
    await client.push_blob(repository, config)
    manifest = Manifest(manifest_bytes, OCI_MANIFEST, sha256_digest(manifest_bytes))
    pushed = await client.put_manifest(repository, manifest, tag)
    return PushedSignature(digest, tag, pushed, reused=False)


async def find_signature(
    client: RegistryClient, image: Reference, digest: str, key: ec.EllipticCurvePublicKey
) -> FoundSignature:
    """Look for signatures of ``digest`` that verify with ``key`` (read rights only)."""
    repository = _repository(image)
    existing = await _signature_manifest(client, repository, signature_tag(digest))
    if existing is None:
        return FoundSignature(None, 0, 0)
    good, checked = await _verified(
        client, repository, signature_layers(existing.json()), digest, key
    )
    reference = None
    if good:
        try:
            reference = json.loads(good[0][1])["critical"]["identity"]["docker-reference"]
        except (ValueError, KeyError, TypeError):
            reference = None
    return FoundSignature(existing.digest, len(good), checked, reference)


@dataclass(frozen=True)
class SignedAttestations:
    """The ``.att`` tag of one image manifest and the predicate types signed in it."""

    subject_digest: str
    tag: str
    manifest_digest: str
    predicate_types: tuple[str, ...]


async def _statements(
    client: RegistryClient, repository: Reference, manifest_digest: str, subject: str
) -> list[tuple[bytes, str]]:
    """The in-toto statements of one attestation manifest that are about ``subject``."""
    manifest = await client.get_manifest(repository, manifest_digest)
    found: list[tuple[bytes, str]] = []
    layers = manifest.json().get("layers")
    for layer in (layers if isinstance(layers, list) else [])[:_MAX_CHECKED]:
        if not isinstance(layer, dict) or layer.get("mediaType") != IN_TOTO_LAYER:
            continue
        annotations = layer.get("annotations")
        predicate = annotations.get(_PREDICATE) if isinstance(annotations, dict) else None
        digest = layer.get("digest")
        if not isinstance(predicate, str) or not predicate or not isinstance(digest, str):
            continue
        statement = await client.get_blob(repository, digest, limit=STATEMENT_MAX_BYTES)
        if statement_about(statement, subject):
            found.append((statement, predicate[:256]))
    return found


async def _signed_by(
    client: RegistryClient, repository: Reference, layers: list[SignatureLayer], key: SigningKey
) -> set[bytes]:
    """The statements already in ``.att`` envelopes that verify with ``key``."""
    public = key.private.public_key()
    signed: set[bytes] = set()
    for layer in layers[:_MAX_CHECKED]:
        envelope = await client.get_blob(repository, layer.digest, limit=STATEMENT_MAX_BYTES * 2)
        parts = envelope_parts(envelope)
        if parts is None:
            continue
        statement, signatures = parts
        encoded = pae(IN_TOTO_PAYLOAD_TYPE, statement)
        if any(verifies(public, encoded, signature) for signature in signatures):
            signed.add(statement)
    return signed


async def sign_attestations(
    client: RegistryClient, image: Reference, digest: str, key: SigningKey
) -> list[SignedAttestations]:
    """Sign the in-toto statements an image index at ``digest`` carries (BuildKit's layout),
    each as cosign's attestation of the image manifest it is about; idempotent."""
    repository = _repository(image)
    top = await client.get_manifest(repository, digest)
    if top.media_type not in INDEXES:
        return []
    by_subject: dict[str, list[tuple[bytes, str]]] = {}
    for ref in attestation_refs(top.json()):
        statements = await _statements(client, repository, ref.manifest_digest, ref.subject_digest)
        by_subject.setdefault(ref.subject_digest, []).extend(statements)
    results: list[SignedAttestations] = []
    for subject, statements in by_subject.items():
        if not statements:
            continue
        tag = attestation_tag(subject)
        existing = await _signature_manifest(client, repository, tag)
        layers = attestation_layers(existing.json()) if existing is not None else []
        already = await _signed_by(client, repository, layers, key)
        added = False
        for statement, predicate in statements:
            if statement in already:
                continue
            envelope = dsse_envelope(statement, key.sign(pae(IN_TOTO_PAYLOAD_TYPE, statement)))
            await client.push_blob(repository, envelope)
            layers = with_signature(layers, attestation_layer(envelope, predicate))
            already.add(statement)
            added = True
        pushed = existing.digest if existing is not None and not added else None
        if pushed is None:
            manifest_bytes, config = signature_image(layers)
            await client.push_blob(repository, config)
            manifest = Manifest(manifest_bytes, OCI_MANIFEST, sha256_digest(manifest_bytes))
            pushed = await client.put_manifest(repository, manifest, tag)
        predicates = tuple(
            sorted({layer.annotations.get(PREDICATE_TYPE_ANNOTATION, "") for layer in layers})
        )
        results.append(SignedAttestations(subject, tag, pushed, predicates))
    return results
