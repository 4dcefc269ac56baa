"""Attestations in an image index, laid out the way BuildKit lays them out.

BuildKit pushes an image with attestations as an OCI index holding the platform's image
manifest and, beside it, an *attestation manifest*: an index entry with platform
``unknown/unknown`` and the annotations ``vnd.docker.reference.type: attestation-manifest``
and ``vnd.docker.reference.digest: <image manifest digest>``, whose layers are in-toto
statements (``application/vnd.in-toto+json``, each annotated with its
``in-toto.io/predicate-type``).  Docker, ``buildx imagetools``, Syft, Trivy and Docker Scout
read that layout, and it needs no Referrers API from the registry (Debian's registry has
none), so Lamina writes its own provenance (rebase, commit, Buildah) and its own SBOMs the
same way.  An SBOM scanned after the image was pushed joins the statements already attached
(:func:`reattested_image`): one attestation manifest per image, as BuildKit writes it.

Here: telling an index's platform images from its attestation manifests (an attestation
manifest is never an image: no Layers are recorded for it, it never becomes a parent), the
facts status records, and the documents of a new attestation manifest and index.  Pure: every
document is registry input and is read defensively.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
IN_TOTO_LAYER = "application/vnd.in-toto+json"
PREDICATE_TYPE = "in-toto.io/predicate-type"
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_PREDICATE = re.compile(r"^https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{1,240}$")
# More statements than any builder writes for one image are a hostile answer, not data.
MAX_STATEMENTS = 16

__all__ = [
    "ATTESTATION_MANIFEST",
    "IN_TOTO_LAYER",
    "AttestationFact",
    "AttestedImage",
    "Statement",
    "attestation_descriptors",
    "attestation_facts",
    "attestation_manifest",
    "attested_image",
    "canonical",
    "is_attestation",
    "kept_statements",
    "platform_of",
    "reattested_image",
    "with_attestation",
]


def canonical(value: Any) -> bytes:
    """Compact, key-sorted JSON: the same document always has the same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _annotations(descriptor: Mapping[str, Any]) -> Mapping[str, Any]:
    found = descriptor.get("annotations")
    return found if isinstance(found, Mapping) else {}


def is_attestation(descriptor: Mapping[str, Any]) -> bool:
    """An index entry that is an attestation manifest, not a platform image."""
    return _annotations(descriptor).get(REFERENCE_TYPE) == ATTESTATION_MANIFEST


def _entries(index: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        return []
    return [entry for entry in manifests if isinstance(entry, Mapping)]


def attestation_descriptors(index: Mapping[str, Any], image_digest: str) -> list[str]:
    """Digests of the attestation manifests of ``index`` that are about ``image_digest``."""
    found = []
    for entry in _entries(index):
        digest = entry.get("digest")
        if (
            is_attestation(entry)
            and _annotations(entry).get(REFERENCE_DIGEST) == image_digest
            and isinstance(digest, str)
            and _DIGEST.match(digest)
            and digest not in found
        ):
            found.append(digest)
    return found[:MAX_STATEMENTS]


@dataclass(frozen=True)
class AttestationFact:
    """One statement of an attestation manifest, as ``status.attestations`` records it."""

    predicate_type: str
    digest: str
    manifest_digest: str
    subject: str

    def status(self) -> dict[str, str]:
        return {
            "predicateType": self.predicate_type,
            "digest": self.digest,
            "manifestDigest": self.manifest_digest,
            "subject": self.subject,
        }


def attestation_facts(
    manifest_digest: str, manifest: Mapping[str, Any], subject: str
) -> list[AttestationFact]:
    """The in-toto statements an attestation manifest lists (layers of another type, or with
    a predicate type or digest that is not well-formed, are not statements and are left out).
    """
    layers = manifest.get("layers")
    facts: list[AttestationFact] = []
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, Mapping) or layer.get("mediaType") != IN_TOTO_LAYER:
            continue
        predicate_type = _annotations(layer).get(PREDICATE_TYPE)
        digest = layer.get("digest")
        if (
            isinstance(predicate_type, str)
            and _PREDICATE.match(predicate_type)
            and isinstance(digest, str)
            and _DIGEST.match(digest)
        ):
            facts.append(AttestationFact(predicate_type, digest, manifest_digest, subject))
    return facts[:MAX_STATEMENTS]


@dataclass(frozen=True)
class Statement:
    """An in-toto statement's exact bytes, ready to be pushed as a layer."""

    predicate_type: str
    data: bytes

    @classmethod
    def of(cls, statement: Mapping[str, Any]) -> Statement:
        return cls(str(statement["predicateType"]), canonical(statement))

    @property
    def digest(self) -> str:
        return _sha256(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": IN_TOTO_LAYER,
            "digest": self.digest,
            "size": len(self.data),
            "annotations": {PREDICATE_TYPE: self.predicate_type},
        }


def attestation_manifest(statements: Sequence[Statement]) -> tuple[bytes, bytes]:
    """(config, manifest) bytes of an attestation manifest holding ``statements``.

    As BuildKit writes one: an OCI image manifest whose config says ``unknown/unknown`` (no
    runtime can mistake it for an image) and lists the statements' digests as diff_ids.
    """
    return _attestation_manifest([s.descriptor() for s in statements])


def _attestation_manifest(layers: Sequence[Mapping[str, Any]]) -> tuple[bytes, bytes]:
    config = canonical(
        {
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
    )
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [dict(layer) for layer in layers],
        }
    )
    return config, manifest


def kept_statements(manifest: Mapping[str, Any], replaced: str) -> list[dict[str, Any]]:
    """The statement layers of an attestation manifest that a new one keeps (by descriptor:
    their blobs stay in the repository, nothing is fetched): well-formed in-toto layers whose
    predicate type is not ``replaced`` (the type the new statement takes the place of).
    Only the descriptor fields a statement needs are kept, so nothing else a registry
    answered is copied into what the operator signs."""
    kept: list[dict[str, Any]] = []
    layers = manifest.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, Mapping) or layer.get("mediaType") != IN_TOTO_LAYER:
            continue
        predicate_type = _annotations(layer).get(PREDICATE_TYPE)
        digest, size = layer.get("digest"), layer.get("size")
        if (
            isinstance(predicate_type, str)
            and _PREDICATE.match(predicate_type)
            and predicate_type != replaced
            and isinstance(digest, str)
            and _DIGEST.match(digest)
            and type(size) is int
            and size > 0
            and digest not in {k["digest"] for k in kept}
        ):
            kept.append(
                {
                    "mediaType": IN_TOTO_LAYER,
                    "digest": digest,
                    "size": size,
                    "annotations": {PREDICATE_TYPE: predicate_type},
                }
            )
    return kept[: MAX_STATEMENTS - 1]


_ANNOTATION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def _kept_annotations(index: Mapping[str, Any]) -> dict[str, str]:
    """An index's own annotations (``org.opencontainers.image.*`` lineage), bounded."""
    found = index.get("annotations")
    if not isinstance(found, Mapping):
        return {}
    return {
        key: value
        for key, value in list(found.items())[:32]
        if isinstance(key, str)
        and _ANNOTATION_KEY.match(key)
        and isinstance(value, str)
        and len(value) <= 1024
    }


def with_attestation(
    image: Mapping[str, Any],
    attestation: Mapping[str, Any],
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """An index of one platform image (``image``: its descriptor, platform included) and the
    attestation manifest about it (``attestation``: its descriptor)."""
    entry = {
        **dict(attestation),
        "annotations": {REFERENCE_DIGEST: image["digest"], REFERENCE_TYPE: ATTESTATION_MANIFEST},
        "platform": {"architecture": "unknown", "os": "unknown"},
    }
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [dict(image), entry],
    }
    if annotations:
        index["annotations"] = dict(annotations)
    return canonical(index)


def platform_of(config: Mapping[str, Any]) -> dict[str, str]:
    """An index entry's ``platform`` from the image config (``linux/amd64`` when it says
    nothing usable: the only platform Lamina builds)."""
    platform = {"architecture": "amd64", "os": "linux"}
    for key in ("architecture", "os", "variant"):
        value = config.get(key)
        if isinstance(value, str) and re.match(r"^[a-z0-9._-]{1,32}$", value):
            platform[key] = value
    return platform


@dataclass(frozen=True)
class AttestedImage:
    """What to push, in this order, so an image carries a statement: the statement and the
    attestation config (blobs), the attestation manifest (by digest), then the index (under
    the tags).  The image manifest itself is pushed by digest before."""

    statement: Statement
    attestation_config: bytes
    attestation_manifest: bytes
    index: bytes

    @property
    def attestation_digest(self) -> str:
        return _sha256(self.attestation_manifest)

    @property
    def index_digest(self) -> str:
        return _sha256(self.index)


def attested_image(
    *,
    manifest_digest: str,
    manifest_size: int,
    manifest_media_type: str,
    platform: Mapping[str, str],
    statement: Mapping[str, Any],
) -> AttestedImage:
    """The documents that attach ``statement`` to an image manifest, BuildKit's way."""
    blob = Statement.of(statement)
    config, manifest = attestation_manifest([blob])
    index = with_attestation(
        {
            "mediaType": manifest_media_type,
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": dict(platform),
        },
        {"mediaType": OCI_MANIFEST, "digest": _sha256(manifest), "size": len(manifest)},
    )
    return AttestedImage(blob, config, manifest, index)


def reattested_image(
    *,
    index: Mapping[str, Any] | None,
    image: Mapping[str, Any],
    kept: Sequence[Mapping[str, Any]],
    statement: Mapping[str, Any],
) -> AttestedImage:
    """The documents that add ``statement`` to the statements an image already carries.

    ``image`` is the image manifest's descriptor (platform included); ``index`` the index the
    tags name now (None: they name the image manifest itself, as a Buildah build pushes it);
    ``kept`` the statement layers to keep (:func:`kept_statements` of the attestation
    manifests about the image).  The new index holds what the old one held, but its
    attestation manifests about this image are replaced by one holding ``kept`` and
    ``statement``: one attestation manifest per image, as BuildKit writes it.
    """
    blob = Statement.of(statement)
    layers = [dict(layer) for layer in kept if layer["digest"] != blob.digest]
    layers.append(blob.descriptor())
    config, manifest = _attestation_manifest(layers)
    attestation = {"mediaType": OCI_MANIFEST, "digest": _sha256(manifest), "size": len(manifest)}
    if index is None:
        return AttestedImage(blob, config, manifest, with_attestation(image, attestation))
    digest = image["digest"]
    entries: list[dict[str, Any]] = []
    for entry in _entries(index)[: MAX_STATEMENTS * 2]:
        if is_attestation(entry) and _annotations(entry).get(REFERENCE_DIGEST) == digest:
            continue  # replaced by the new attestation manifest
        entries.append(dict(entry))
    if not any(entry.get("digest") == digest for entry in entries):
        entries.insert(0, dict(image))
    entries.append(
        {
            **attestation,
            "annotations": {REFERENCE_DIGEST: digest, REFERENCE_TYPE: ATTESTATION_MANIFEST},
            "platform": {"architecture": "unknown", "os": "unknown"},
        }
    )
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    if annotations := _kept_annotations(index):
        document["annotations"] = annotations
    return AttestedImage(blob, config, manifest, canonical(document))
