"""Signing of pushed images: which key (``spec.output.sign``) and what was signed (status).

The key is a Secret in the object's own namespace, read by the operator only when the object
names it (or, with no ``sign`` field, the operator's default Secret in its own namespace);
see :mod:`lamina.oci.cosign` for the Secret's keys and what a signature looks like.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from lamina.api.meta import DIGEST_PATTERN, OBJECT_NAME_PATTERN, Model

KEY_FINGERPRINT_PATTERN = r"^sha256:[a-f0-9]{64}$"


class SecretRef(Model):
    """A Secret in the object's own namespace, by name."""

    name: str = Field(pattern=OBJECT_NAME_PATTERN, max_length=253)


class SignSpec(Model):
    """Sign every image this object pushes, with cosign's key-pair format."""

    secret_ref: SecretRef = Field(
        description=(
            "A Secret in the same namespace holding cosign.key (the private key as "
            "`cosign generate-key-pair` writes it, or a PEM PKCS#8 / EC key) and, when the "
            "key is encrypted, cosign.password."
        ),
    )


class AttestationSignature(Model):
    """The signed attestations of one image manifest (cosign's ``sha256-<hex>.att`` tag)."""

    subject_digest: str = Field(pattern=DIGEST_PATTERN, description="The image manifest.")
    digest: str = Field(pattern=DIGEST_PATTERN, description="The .att manifest's digest.")
    tag: str = Field(max_length=128)
    predicate_types: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=32
    )


class SignatureStatus(Model):
    """The signature of the current digest, as pushed next to it (cosign's tag scheme)."""

    signed_digest: str = Field(
        pattern=DIGEST_PATTERN,
        description=(
            "The digest signed: what the tags point at (the index, when the image carries "
            "attestations; the image manifest inside it is signed too)."
        ),
    )
    digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="Digest of the signature manifest (tag sha256-<hex>.sig of the repository).",
    )
    tag: str = Field(max_length=128, description="The signature's tag, sha256-<hex>.sig.")
    key_fingerprint: str = Field(
        pattern=KEY_FINGERPRINT_PATTERN,
        description="sha256 of the public key's DER SubjectPublicKeyInfo.",
    )
    secret: str | None = Field(
        default=None,
        description="The Secret the key came from: NAME (the object's namespace) or "
        "operator-default.",
    )
    signed_at: datetime | None = None
    attestations: list[AttestationSignature] | None = Field(
        default=None,
        max_length=32,
        description="The in-toto attestations of the image (its index's attestation "
        "manifests), each signed as cosign attest would: cosign verify-attestation checks them.",
    )
