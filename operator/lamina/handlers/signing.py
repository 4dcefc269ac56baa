"""Signing what the operator pushed, in the operator's own process.

Why here and not in a Job: the key must never reach a pod that runs a tenant's steps (the
build pod runs them as code) and never be copied anywhere else (a signing Job would need the
key next to it in the operator namespace).  The operator reads the Secret by name, only in
the namespace of the object that names it (or its own default in its own namespace), only
when it signs or checks before a build, decrypts it in memory (scrypt in a worker thread,
one at a time: its cost is bounded by lamina.oci.cosign_keys) and keeps the decrypted key
in a small cache keyed by the Secret's uid and resourceVersion, so an edited or replaced
Secret is read again.  A key that does not decrypt (a wrong password) is remembered the
same way, by uid, resourceVersion and a hash of the key's and password's bytes (never the
bytes): an unchanged bad Secret costs no scrypt derivation on each retry, a changed one is
tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp

from lamina.api.signing import AttestationSignature, SignatureStatus, SignSpec
from lamina.domain.conditions import (
    ATTESTATION_REFUSED,
    SIGNING_FAILED,
    SIGNING_SECRET_NOT_FOUND,
)
from lamina.domain.signatures import KeySource, StatementRefused, key_source
from lamina.kube import Kube
from lamina.oci.client import RegistryClient
from lamina.oci.cosign_keys import (
    KEY_MAX_BYTES,
    PASSWORD,
    PASSWORD_MAX_BYTES,
    PRIVATE_KEY,
    SigningKey,
    SigningKeyError,
    secret_bytes,
    signing_key,
)
from lamina.oci.errors import RegistryError
from lamina.oci.reference import InvalidReference, parse_reference
from lamina.oci.signatures import sign_attestations, sign_image

_CACHE_SIZE = 64


class SigningError(Exception):
    """The image was to be signed and is not; ``reason`` is a catalogued condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SigningKeys:
    """Finds, decrypts and caches signing keys; signs pushed digests."""

    def __init__(self, kube: Kube, operator_namespace: str, default_secret: str | None) -> None:
        self.kube = kube
        self.operator_namespace = operator_namespace
        self.default_secret = default_secret
        self._cache: OrderedDict[tuple[str, str, str, str], SigningKey] = OrderedDict()
        # Keys that did not decrypt: (namespace, name, uid, resourceVersion, data hash) ->
        # (reason, message).
        self._failed: OrderedDict[tuple[str, str, str, str, str], tuple[str, str]] = OrderedDict()
        self._lock = asyncio.Lock()

    def source(self, namespace: str, sign: SignSpec | None) -> KeySource | None:
        return key_source(
            namespace,
            sign.secret_ref.name if sign is not None else None,
            operator_namespace=self.operator_namespace,
            default_secret=self.default_secret,
        )

    async def key(self, source: KeySource) -> SigningKey:
        """The usable key; raises SigningError saying what is wrong with the Secret."""
        secret = await self.kube.get_secret(source.namespace, source.name)
        if secret is None:
            raise SigningError(SIGNING_SECRET_NOT_FOUND, f"{source.describe()} not found")
        meta: Mapping[str, Any] = secret.get("metadata") or {}
        cached = (
            source.namespace,
            source.name,
            str(meta.get("uid")),
            str(meta.get("resourceVersion")),
        )
        if (found := self._cache.get(cached)) is not None:
            self._cache.move_to_end(cached)
            return found
        try:
            pem = secret_bytes(secret, PRIVATE_KEY, KEY_MAX_BYTES)
            if pem is None:
                raise SigningKeyError("SigningKeyInvalid", f"has no {PRIVATE_KEY} key in its data")
            password = secret_bytes(secret, PASSWORD, PASSWORD_MAX_BYTES) or b""
        except SigningKeyError as error:
            raise SigningError(error.reason, f"{source.describe()}: {error}") from error
        failed = (*cached, _data_hash(pem, password))
        if (known := self._failed.get(failed)) is not None:
            self._failed.move_to_end(failed)
            raise SigningError(*known)
        try:
            async with self._lock:  # one key derivation (up to 128 MiB of scrypt) at a time
                key = await asyncio.to_thread(signing_key, pem, password)
        except SigningKeyError as error:
            refusal = (error.reason, f"{source.describe()}: {error}")
            self._failed[failed] = refusal
            while len(self._failed) > _CACHE_SIZE:
                self._failed.popitem(last=False)
            raise SigningError(*refusal) from error
        self._cache[cached] = key
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return key

    async def sign(
        self,
        client: RegistryClient,
        source: KeySource,
        repository: str,
        digest: str,
        now: datetime,
        *,
        image_digest: str | None = None,
    ) -> SignatureStatus:
        """Sign ``repository@digest`` (idempotent); raises SigningError.

        ``digest`` is what the tags point at; ``image_digest``, the image manifest inside it
        when ``digest`` is an index (an image with attestations), is signed too: a pod or a
        policy that names the image by its own digest finds a signature for it as well.
        """
        key = await self.key(source)
        try:
            image = parse_reference(repository)
            # The attestations first: one that may not be signed leaves nothing signed.
            attested = await sign_attestations(client, image, digest, key)
            pushed = await sign_image(client, image, digest, key)
            if image_digest is not None and image_digest != digest:
                await sign_image(client, image, image_digest, key)
        except StatementRefused as error:
            raise SigningError(
                ATTESTATION_REFUSED,
                f"{repository}@{digest} is not signed: an attestation it carries was "
                f"refused: {error}",
            ) from error
        except (
            RegistryError,
            InvalidReference,
            OSError,
            TimeoutError,
            ValueError,
            aiohttp.ClientError,
        ) as error:
            raise SigningError(
                SIGNING_FAILED, f"could not push the signature of {repository}@{digest}: {error}"
            ) from error
        return SignatureStatus(
            signed_digest=digest,
            digest=pushed.manifest_digest,
            tag=pushed.tag,
            key_fingerprint=key.fingerprint,
            secret=source.label,
            signed_at=now,
            attestations=[
                AttestationSignature(
                    subject_digest=found.subject_digest,
                    digest=found.manifest_digest,
                    tag=found.tag,
                    predicate_types=list(found.predicate_types),
                )
                for found in attested
            ]
            or None,
        )


def _data_hash(pem: bytes, password: bytes) -> str:
    """What identifies a Secret's key material in the failure cache, without keeping it."""
    digest = hashlib.sha256()
    for part in (pem, password):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
