"""The attestations an image carries, as Image and ContainerCommit status record them.

One entry per in-toto statement attached to the image: its predicate type (an SPDX SBOM,
SLSA v1 provenance), the digest of the statement blob, the attestation manifest that holds it
(the entry of the image index marked ``vnd.docker.reference.type: attestation-manifest``, as
BuildKit writes it) and the image manifest the statement is about.  Enough for
``crane``/``skopeo``/``oras`` to fetch each statement by digest.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lamina.api.meta import DIGEST_PATTERN, Model

ATTESTATIONS_MAX_ITEMS = 16
# in-toto predicate types are URIs; what a registry says is bounded before it reaches status.
PREDICATE_TYPE_PATTERN = r"^https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{1,240}$"


class AttestationStatus(Model):
    """One in-toto statement attached to the image."""

    predicate_type: str = Field(
        pattern=PREDICATE_TYPE_PATTERN,
        max_length=256,
        description="e.g. https://spdx.dev/Document or https://slsa.dev/provenance/v1",
    )
    digest: str = Field(pattern=DIGEST_PATTERN, description="The statement blob.")
    manifest_digest: str = Field(
        pattern=DIGEST_PATTERN, description="The attestation manifest that holds it."
    )
    subject: str = Field(
        pattern=DIGEST_PATTERN, description="The image manifest the statement is about."
    )


def attestations_field() -> Any:
    """``status.attestations``: the statements found on (or attached to) the current digest."""
    return Field(
        default=None,
        max_length=ATTESTATIONS_MAX_ITEMS,
        description="The SBOM and provenance statements attached to the image.",
    )
