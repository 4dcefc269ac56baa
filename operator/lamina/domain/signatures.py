"""What a cosign signature of an image is, byte for byte: pure, no keys and no I/O.

Cosign's tag scheme (what ``cosign sign`` writes and ``cosign verify`` reads): the signatures
of ``REPO@sha256:<hex>`` are an OCI image manifest tagged ``sha256-<hex>.sig`` in the same
repository, one layer per signature.  Each layer is a "simple signing" JSON payload (media
type ``application/vnd.dev.cosign.simplesigning.v1+json``) naming the signed manifest digest,
with the base64 signature over the payload's exact bytes in the layer annotation
``dev.cosignproject.cosign/signature``.  The config is the empty image's, with one diff_id
and one history entry per layer, as go-containerregistry's ``mutate.Append`` writes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# Signatures kept from other signers when ours is added (a bound: the tag is writable by
# anyone with push rights to the repository).
MAX_SIGNATURES = 32
# A simple-signing payload is a few hundred bytes; a larger layer is not one.
PAYLOAD_MAX_BYTES = 64 * 1024
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def signature_tag(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.sig``."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}-{hex_digest}.sig"


def _go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, HTML characters escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(raw, escaped)
    return text.encode()


def simple_signing_payload(repository: str, digest: str) -> bytes:
    """The exact bytes cosign signs for ``repository@digest`` (its ``payload.Cosign``)."""
    return _go_json(
        {
            "critical": {
                "identity": {"docker-reference": repository},
                "image": {"docker-manifest-digest": digest},
                "type": SIGNATURE_TYPE,
            },
            "optional": None,
        }
    )


def signed_digest(payload: bytes) -> str | None:
    """The manifest digest a simple-signing payload claims, or None if it is not one."""
    try:
        document = json.loads(payload)
        critical = document["critical"]
        if critical["type"] != SIGNATURE_TYPE:
            return None
        digest = critical["image"]["docker-manifest-digest"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SignatureLayer:
    """One signature: the payload's descriptor and its base64 signature."""

    digest: str
    size: int
    signature_b64: str
    annotations: Mapping[str, str]
    media_type: str = SIMPLE_SIGNING_MEDIA_TYPE

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": self.digest,
            "annotations": dict(self.annotations),
        }


def new_layer(payload: bytes, signature: bytes) -> SignatureLayer:
    b64 = base64.b64encode(signature).decode()
    return SignatureLayer(sha256_digest(payload), len(payload), b64, {SIGNATURE_ANNOTATION: b64})


def signature_layers(manifest: Mapping[str, Any]) -> list[SignatureLayer]:
    """The well-formed signature layers of a (hostile) signature manifest; others dropped."""
    found: list[SignatureLayer] = []
    layers = manifest.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        digest, size, annotations = (
            layer.get("digest"),
            layer.get("size"),
            layer.get("annotations"),
        )
        if not (
            isinstance(digest, str)
            and len(digest) == 71
            and digest.startswith("sha256:")
            and all(c in "0123456789abcdef" for c in digest[7:])
        ):
            continue
        if type(size) is not int or not 0 < size <= PAYLOAD_MAX_BYTES:
            continue
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            continue
        signature = annotations.get(SIGNATURE_ANNOTATION)
        if not isinstance(signature, str) or not signature:
            continue
        found.append(SignatureLayer(digest, size, signature, annotations))
    return found


def signature_image(layers: Sequence[SignatureLayer]) -> tuple[bytes, bytes]:
    """The manifest and config bytes of a signature image holding ``layers``, in order."""
    config = _go_json(
        {
            "architecture": "",
            "created": _GO_ZERO_TIME,
            "history": [{"created": _GO_ZERO_TIME} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            "config": {},
        }
    )
    manifest = _go_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "size": len(config),
                "digest": sha256_digest(config),
            },
            "layers": [layer.descriptor() for layer in layers],
        }
    )
    return manifest, config


def with_signature(
    existing: Sequence[SignatureLayer], ours: SignatureLayer
) -> list[SignatureLayer]:
    """Our signature appended to the others' (the newest kept when there are too many)."""
    others = [
        layer
        for layer in existing
        if layer.digest != ours.digest or layer.signature_b64 != ours.signature_b64
    ]
    return [*others[-(MAX_SIGNATURES - 1) :], ours]


OPERATOR_DEFAULT = "operator-default"


@dataclass(frozen=True)
class KeySource:
    """Which Secret holds the key: the object's own (by its name) or the operator's default."""

    namespace: str
    name: str
    label: str  # what status.signature.secret says

    def describe(self) -> str:
        if self.label == OPERATOR_DEFAULT:
            return f'the operator\'s default signing Secret "{self.namespace}/{self.name}"'
        return f'signing Secret "{self.name}" in namespace "{self.namespace}"'


def key_source(
    namespace: str,
    secret_ref: str | None,
    *,
    operator_namespace: str,
    default_secret: str | None,
) -> KeySource | None:
    """The object's own Secret when it names one (never another namespace's), else the
    operator's default if configured, else None: no signing."""
    if secret_ref:
        return KeySource(namespace, secret_ref, secret_ref)
    if default_secret:
        return KeySource(operator_namespace, default_secret, OPERATOR_DEFAULT)
    return None


# -- attestations: cosign's ``.att`` tag (what ``cosign attest`` writes and
# ``cosign verify-attestation`` reads) --------------------------------------------------------
#
# Each in-toto statement of an image (BuildKit's attestation manifests, beside the image in its
# index, hold them unsigned) is wrapped in a DSSE envelope signed over DSSE's PAE encoding, and
# pushed as one layer of the image tagged ``sha256-<subject hex>.att``, where the subject is the
# platform image manifest the statement is about.  The layer's annotations say the predicate
# type; its signature annotation is empty (the signature is inside the envelope).

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE_ANNOTATION = "predicateType"
# Statements are bounded: an SBOM of a large image is a few MiB.
STATEMENT_MAX_BYTES = 16 * 1024 * 1024


def attestation_tag(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.att``."""
    return signature_tag(digest).removesuffix(".sig") + ".att"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def dsse_envelope(statement: bytes, signature: bytes) -> bytes:
    return _go_json(
        {
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(statement).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        }
    )


def envelope_parts(envelope: bytes) -> tuple[bytes, list[bytes]] | None:
    """(statement, signatures) of a (hostile) DSSE envelope of an in-toto statement."""
    try:
        document = json.loads(envelope)
        if document.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
            return None
        statement = base64.b64decode(document["payload"], validate=True)
        signatures = [
            base64.b64decode(entry["sig"], validate=True)
            for entry in document.get("signatures") or []
        ][:MAX_SIGNATURES]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return None
    return statement, signatures


def attestation_layer(envelope: bytes, predicate_type: str) -> SignatureLayer:
    return SignatureLayer(
        sha256_digest(envelope),
        len(envelope),
        "",
        {SIGNATURE_ANNOTATION: "", PREDICATE_TYPE_ANNOTATION: predicate_type},
        media_type=DSSE_MEDIA_TYPE,
    )


def attestation_layers(manifest: Mapping[str, Any]) -> list[SignatureLayer]:
    """The well-formed DSSE layers of a (hostile) ``.att`` manifest; others dropped."""
    found: list[SignatureLayer] = []
    layers = manifest.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") != DSSE_MEDIA_TYPE:
            continue
        digest, size, annotations = layer.get("digest"), layer.get("size"), layer.get("annotations")
        if not (isinstance(digest, str) and _is_sha256(digest)):
            continue
        if type(size) is not int or not 0 < size <= STATEMENT_MAX_BYTES * 2:
            continue
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            continue
        found.append(SignatureLayer(digest, size, "", annotations, media_type=DSSE_MEDIA_TYPE))
    return found[-MAX_SIGNATURES:]


def _is_sha256(digest: str) -> bool:
    return (
        len(digest) == 71
        and digest.startswith("sha256:")
        and all(c in "0123456789abcdef" for c in digest[7:])
    )


@dataclass(frozen=True)
class AttestationRef:
    """An attestation manifest of an index and the image manifest it is about."""

    manifest_digest: str
    subject_digest: str


def attestation_refs(index: Mapping[str, Any]) -> list[AttestationRef]:
    """BuildKit's attestation manifests in a (hostile) index: entries annotated
    ``vnd.docker.reference.type: attestation-manifest`` naming an image of the same index."""
    entries = index.get("manifests")
    entries = entries if isinstance(entries, list) else []
    digests = {entry.get("digest") for entry in entries if isinstance(entry, dict)}
    found: list[AttestationRef] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        annotations = entry.get("annotations")
        if not isinstance(annotations, dict):
            continue
        if annotations.get("vnd.docker.reference.type") != "attestation-manifest":
            continue
        digest, subject = entry.get("digest"), annotations.get("vnd.docker.reference.digest")
        if not (isinstance(digest, str) and _is_sha256(digest)):
            continue
        if not (isinstance(subject, str) and _is_sha256(subject)) or subject not in digests:
            continue
        found.append(AttestationRef(digest, subject))
    return found[:MAX_SIGNATURES]


class StatementRefused(Exception):
    """An in-toto statement about this image that the operator will not sign: it names
    other subjects too (signing it would vouch for them with the operator's key)."""


def statement_about(statement: bytes, digest: str) -> bool:
    """Whether an in-toto statement is about ``digest`` alone, to be signed as its
    attestation.

    False for a statement that does not name ``digest`` (another image of the index, or
    not a statement at all).  A statement that names ``digest`` is signed only when it is
    about that one image: every subject names exactly ``{"sha256": digest}`` (BuildKit
    writes one subject per image name, so an image pushed under two tags has two subjects
    with the same digest).  One whose subjects name any other digest, or other digest
    algorithms beside it, or are malformed, raises :class:`StatementRefused`: a signature
    over it would vouch, with the operator's key, for images this build did not make.
    """
    try:
        document = json.loads(statement)
    except (ValueError, UnicodeDecodeError):
        return False
    subjects = document.get("subject") if isinstance(document, dict) else None
    if not isinstance(subjects, list):
        return False
    wanted = digest.removeprefix("sha256:")
    digests = [s.get("digest") if isinstance(s, dict) else None for s in subjects]
    if not any(isinstance(d, dict) and d.get("sha256") == wanted for d in digests):
        return False
    others = [d for d in digests if d != {"sha256": wanted}]
    if others:
        raise StatementRefused(
            f"the statement names {len(subjects)} subjects, {len(others)} of them not "
            f"{digest} alone; only a statement about this image alone is signed"
        )
    return True
