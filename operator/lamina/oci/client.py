"""A small async client for the OCI distribution API: what a commit and a build need.

HTTP, auth, redirects, retries and bounded reads are :mod:`lamina.oci.transport`'s; this is
the API on top:

- Blobs: HEAD existence checks, cross-repository mount (falling back to a copy when the
  registry declines), chunked uploads (POST, PATCH per chunk, PUT ``?digest=``) from any async
  iterable of bytes, so a layer never has to be in memory or on disk; small blobs (configs)
  read up to 8 MiB; layers streamed, hashed, and cut off at the descriptor's size.  Upload
  ``Location`` headers are followed (relative or absolute) but never from https to http, and
  carry credentials only on the registry's own origin.
- Manifests: HEAD for the digest alone (``Docker-Content-Digest``); GET accepting indexes (the
  ``linux/amd64`` manifest is resolved from them), at most 4 MiB, valid JSON of a media type
  that was asked for; PUT of exact bytes, checked against the registry's
  ``Docker-Content-Digest``.  Digests from the registry go into URL paths only when they are
  ``sha256:<64 hex>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from lamina.domain.attestation_index import (
    AttestationFact,
    attestation_descriptors,
    attestation_facts,
)
from lamina.oci.errors import (
    DigestMismatch,
    ManifestTooLarge,
    RegistryError,
    RegistryResponseInvalid,
    ResponseTooLarge,
)
from lamina.oci.image import select_platform
from lamina.oci.limits import CONFIG_LIMIT, MANIFEST_LIMIT, mebibytes
from lamina.oci.mediatypes import ACCEPT_MANIFESTS, INDEXES, MANIFESTS, OCI_INDEX, OCI_MANIFEST
from lamina.oci.reference import Reference
from lamina.oci.transport import CHUNK_SIZE, RegistryTransport, redirect_target

__all__ = ["CHUNK_SIZE", "Manifest", "RegistryClient", "platform_descriptor", "sha256_digest"]

log = logging.getLogger(__name__)

_CHUNKS_AHEAD = 2
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry holds it: exact bytes, media type, digest."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.data)
        return document


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient(RegistryTransport):
    """The distribution API over :class:`RegistryTransport`."""

    def _url(self, ref: Reference, path: str) -> URL:
        return self._base(ref).join(URL(f"{ref.repository}/{path}"))

    @staticmethod
    def _pull(ref: Reference) -> tuple[str, ...]:
        return (f"repository:{ref.repository}:pull",)

    @staticmethod
    def _push(ref: Reference, *also_pull: Reference) -> tuple[str, ...]:
        extra = tuple(f"repository:{r.repository}:pull" for r in also_pull)
        return (f"repository:{ref.repository}:pull,push", *extra)

    # -- blobs ------------------------------------------------------------------------------

    async def blob_exists(self, ref: Reference, digest: str) -> bool:
        _check_digest(ref, digest)
        status, _, _ = await self._request(
            "HEAD",
            ref,
            self._url(ref, f"blobs/{digest}"),
            scopes=self._pull(ref),
            what=f"blob {digest} of {ref.repository}",
            expect=(200, 404),
        )
        return status == 200

    async def mount_blob(self, ref: Reference, digest: str, source: Reference) -> bool:
        """Mount ``digest`` from ``source`` (same registry) into ``ref``'s repository.

        True when mounted; False when the registry declined (it then opened an upload, which
        is cancelled, and the caller copies instead).
        """
        _check_digest(ref, digest)
        url = self._url(ref, "blobs/uploads/").with_query(
            {"mount": digest, "from": source.repository}
        )
        status, headers, _ = await self._request(
            "POST",
            ref,
            url,
            scopes=self._push(ref, source),
            what=f"mount of {digest} into {ref.repository}",
            expect=(201, 202),
        )
        if status == 201:
            return True
        if "Location" in headers:
            await self._cancel_upload(ref, self._location(ref, url, headers))
        return False

    async def _cancel_upload(self, ref: Reference, location: URL) -> None:
        try:
            await self._request(
                "DELETE",
                ref,
                location,
                scopes=self._push(ref),
                what=f"upload to {ref.repository}",
                expect=(202, 204, 404),
            )
        except RegistryError as error:  # best effort: the registry expires it anyway
            log.debug("could not cancel an upload to %s: %s", ref.name, error)

    def _location(self, ref: Reference, request: URL, headers: Mapping[str, str]) -> URL:
        """Where an upload goes on: relative to the request, never from https to http."""
        return redirect_target(ref, request, headers["Location"], f"upload to {ref.repository}")

    async def _start_upload(self, ref: Reference) -> URL:
        url = self._url(ref, "blobs/uploads/")
        _, headers, _ = await self._request(
            "POST",
            ref,
            url,
            scopes=self._push(ref),
            what=f"upload to {ref.repository}",
            expect=(202,),
        )
        if "Location" not in headers:
            raise RegistryResponseInvalid(
                f"{ref.registry} opened an upload without a Location", registry=ref.registry
            )
        return self._location(ref, url, headers)

    async def push_blob(self, ref: Reference, data: bytes, media_type: str | None = None) -> str:
        """Upload small exact bytes (a config) unless the registry has them already."""
        digest = sha256_digest(data)
        if await self.blob_exists(ref, digest):
            return digest

        async def once() -> AsyncIterator[bytes]:
            yield data

        await self.upload_blob(ref, once(), lambda: digest)
        return digest

    async def upload_blob(
        self, ref: Reference, pieces: AsyncIterable[bytes], digest: Callable[[], str]
    ) -> int:
        """Chunked upload of a stream whose digest is known only at its end.

        Chunks of ``chunk_size`` bytes are PATCHed while the next one is being filled (at most
        ``_CHUNKS_AHEAD`` wait), the last one goes with the closing PUT.  Returns the size.
        """
        location = await self._start_upload(ref)
        chunks: asyncio.Queue[bytearray | None] = asyncio.Queue(_CHUNKS_AHEAD)
        filler = asyncio.create_task(self._fill(pieces, chunks))
        offset = 0
        try:
            chunk = await self._next_chunk(chunks, filler)
            while chunk is not None:
                following = await self._next_chunk(chunks, filler)
                if following is None:
                    break
                location = await self._patch(ref, location, chunk, offset)
                offset += len(chunk)
                chunk = following
            await filler  # re-raises the stream's error, if any
            final = chunk if chunk is not None else bytearray()
            put_url = location.update_query({"digest": digest()})
            headers = {"Content-Type": "application/octet-stream"}
            if final:
                headers["Content-Range"] = f"{offset}-{offset + len(final) - 1}"
            await self._request(
                "PUT",
                ref,
                put_url,
                scopes=self._push(ref),
                what=f"upload to {ref.repository}",
                headers=headers,
                data=final,
                expect=(201, 204),
            )
            return offset + len(final)
        except BaseException:
            filler.cancel()
            await asyncio.gather(filler, return_exceptions=True)
            await self._cancel_upload(ref, location)
            raise

    async def _fill(
        self, pieces: AsyncIterable[bytes], chunks: asyncio.Queue[bytearray | None]
    ) -> None:
        """Gather pieces into chunks of ``chunk_size``; ``None`` marks the end."""
        buffer = bytearray()
        async for piece in pieces:
            buffer += piece
            if len(buffer) >= self.chunk_size:
                await chunks.put(buffer)
                buffer = bytearray()
        if buffer:
            await chunks.put(buffer)
        await chunks.put(None)

    @staticmethod
    async def _next_chunk(
        chunks: asyncio.Queue[bytearray | None], filler: asyncio.Task[None]
    ) -> bytearray | None:
        """The next chunk, or the stream's error as soon as the filler fails."""
        getter = asyncio.ensure_future(chunks.get())
        await asyncio.wait({getter, filler}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        filler.result()  # raises the stream's error; otherwise the end marker is queued
        return await chunks.get()

    async def _patch(self, ref: Reference, location: URL, chunk: bytearray, offset: int) -> URL:
        _, headers, _ = await self._request(
            "PATCH",
            ref,
            location,
            scopes=self._push(ref),
            what=f"upload to {ref.repository}",
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            },
            data=chunk,
            expect=(202,),
        )
        return self._location(ref, location, headers) if "Location" in headers else location

    async def get_blob(self, ref: Reference, digest: str, limit: int = CONFIG_LIMIT) -> bytes:
        """A small blob (a config), at most ``limit`` bytes, verified against its digest."""
        _check_digest(ref, digest)
        _, _, body = await self._request(
            "GET",
            ref,
            self._url(ref, f"blobs/{digest}"),
            scopes=self._pull(ref),
            what=f"blob {digest} of {ref.repository}",
            limit=limit,
            too_large=lambda: ResponseTooLarge(
                f"{ref.registry}: blob {digest} of {ref.repository} is larger than the "
                f"{mebibytes(limit)} limit for image configs",
                limit=limit,
                registry=ref.registry,
            ),
        )
        if sha256_digest(body) != digest:
            raise DigestMismatch(
                f"{ref.name}: blob {digest} has different bytes", registry=ref.registry
            )
        return body

    async def stream_blob(
        self, ref: Reference, digest: str, size: int | None = None
    ) -> AsyncIterator[bytes]:
        """A blob's bytes as they arrive (for copies between registries), verified at the end.

        With ``size`` (from the descriptor), a blob that runs longer is cut off at once.
        """
        _check_digest(ref, digest)
        sha256 = hashlib.sha256()
        seen = 0
        async with self._exchange(
            "GET",
            ref,
            self._url(ref, f"blobs/{digest}"),
            scopes=self._pull(ref),
            what=f"blob {digest} of {ref.repository}",
        ) as reply:
            async for piece in reply.content.iter_chunked(1 << 20):
                seen += len(piece)
                if size is not None and seen > size:
                    raise DigestMismatch(
                        f"{ref.name}: blob {digest} is longer than its {size} bytes",
                        registry=ref.registry,
                    )
                sha256.update(piece)
                yield piece
        if "sha256:" + sha256.hexdigest() != digest:
            raise DigestMismatch(
                f"{ref.name}: blob {digest} has different bytes", registry=ref.registry
            )

    async def ensure_blob(
        self,
        ref: Reference,
        digest: str,
        source: Reference | None = None,
        size: int | None = None,
    ) -> str:
        """Make ``digest`` present in ``ref``'s repository; says how: present|mounted|copied.

        ``size`` (the descriptor's) bounds a copy: a source that sends more is cut off.
        """
        if await self.blob_exists(ref, digest):
            return "present"
        if source is None or source.name == ref.name:
            raise RegistryError(
                f"{ref.name} lacks blob {digest} and there is no source for it",
                registry=ref.registry,
            )
        if source.registry == ref.registry and await self.mount_blob(ref, digest, source):
            return "mounted"
        await self.upload_blob(ref, self.stream_blob(source, digest, size), lambda: digest)
        return "copied"

    # -- manifests --------------------------------------------------------------------------

    async def head_manifest(self, ref: Reference, target: str | None = None) -> str | None:
        """The digest the registry says ``target`` has now (``Docker-Content-Digest``), or
        None when it does not say (or says something that is not a digest).

        A HEAD costs the registry no pull (Docker Hub counts only GETs against rate limits).
        """
        wanted = target or ref.target
        _, headers, _ = await self._request(
            "HEAD",
            ref,
            self._url(ref, f"manifests/{wanted}"),
            scopes=self._pull(ref),
            what=f"manifest {ref.repository}:{wanted}"
            if not wanted.startswith("sha256:")
            else f"manifest {ref.repository}@{wanted}",
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        answered = headers.get("Docker-Content-Digest", "").strip()
        return answered if _DIGEST.match(answered) else None

    async def get_manifest(self, ref: Reference, target: str | None = None) -> Manifest:
        """The manifest (or index) ``target`` (default: the reference's digest or tag).

        At most 4 MiB (the distribution spec's limit), valid JSON, and of a media type that
        was asked for; by digest, its bytes must hash to it.
        """
        wanted = target or ref.target
        if wanted.startswith("sha256:"):
            _check_digest(ref, wanted)
        shown = (
            f"{ref.repository}@{wanted}"
            if wanted.startswith("sha256:")
            else (f"{ref.repository}:{wanted}")
        )
        _, headers, body = await self._request(
            "GET",
            ref,
            self._url(ref, f"manifests/{wanted}"),
            scopes=self._pull(ref),
            what=f"manifest {shown}",
            headers={"Accept": ACCEPT_MANIFESTS},
            limit=MANIFEST_LIMIT,
            too_large=lambda: ManifestTooLarge(
                f"registry {ref.registry} served a manifest for {shown} larger than the "
                f"{mebibytes(MANIFEST_LIMIT)} limit of the distribution spec",
                limit=MANIFEST_LIMIT,
                registry=ref.registry,
            ),
        )
        digest = sha256_digest(body)
        if wanted.startswith("sha256:") and digest != wanted:
            raise DigestMismatch(
                f"{ref.name}: manifest {wanted} has different bytes", registry=ref.registry
            )
        return Manifest(body, _manifest_media_type(ref, shown, headers, body), digest)

    async def resolve_image(
        self, ref: Reference, os_name: str = "linux", architecture: str = "amd64"
    ) -> tuple[Manifest, Manifest | None]:
        """The image manifest for the platform, and the index it came from (if any)."""
        top = await self.get_manifest(ref)
        if top.media_type not in INDEXES:
            return top, None
        descriptor = platform_descriptor(ref, top, os_name, architecture)
        manifest = await self.get_manifest(ref, descriptor)
        if manifest.media_type not in MANIFESTS:
            raise RegistryResponseInvalid(
                f"{ref.registry}: the {os_name}/{architecture} entry of the index of "
                f"{ref.repository} is not an image manifest",
                registry=ref.registry,
            )
        return manifest, top

    async def attestations(
        self, ref: Reference, index: Manifest | None, image_digest: str
    ) -> list[AttestationFact]:
        """The statements the index's attestation manifests hold about ``image_digest``.

        Only the manifests are read (each by digest, so its bytes are checked), never the
        statements: status records what is attached, a verifier reads it.  No index, no
        attestations (a plain manifest has nowhere to keep them in this layout).
        """
        if index is None:
            return []
        facts: list[AttestationFact] = []
        for digest in attestation_descriptors(index.json(), image_digest):
            manifest = await self.get_manifest(ref, digest)
            if manifest.media_type not in MANIFESTS:
                raise RegistryResponseInvalid(
                    f"{ref.registry}: the attestation entry {digest} of the index of "
                    f"{ref.repository} is not a manifest",
                    registry=ref.registry,
                )
            facts += attestation_facts(digest, manifest.json(), image_digest)
        return facts

    async def put_manifest(self, ref: Reference, manifest: Manifest, tag: str) -> str:
        """PUT exact bytes under ``tag``; the registry must agree on the digest."""
        _, headers, _ = await self._request(
            "PUT",
            ref,
            self._url(ref, f"manifests/{tag}"),
            scopes=self._push(ref),
            what=f"manifest {ref.repository}:{tag}",
            headers={"Content-Type": manifest.media_type},
            data=manifest.data,
            expect=(201,),
        )
        answered = headers.get("Docker-Content-Digest")
        if answered and answered != manifest.digest:
            shown = answered if _DIGEST.match(answered) else "another digest"
            raise DigestMismatch(
                f"{ref.name}:{tag}: registry stored {shown}, expected {manifest.digest}",
                registry=ref.registry,
            )
        return manifest.digest


def platform_descriptor(
    ref: Reference, index: Manifest, os_name: str = "linux", architecture: str = "amd64"
) -> str:
    """The digest of the index's manifest for the platform; a typed error when it has none."""
    try:
        descriptor = select_platform(index.json(), os_name, architecture)
    except LookupError as error:
        raise RegistryResponseInvalid(
            f"{ref.registry}: {ref.repository}: {error}", registry=ref.registry
        ) from error
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise RegistryResponseInvalid(
            f"{ref.registry}: the {os_name}/{architecture} entry of the index of "
            f"{ref.repository} has no valid sha256 digest",
            registry=ref.registry,
        )
    return digest


def _manifest_media_type(
    ref: Reference, shown: str, headers: Mapping[str, str], body: bytes
) -> str:
    """The media type, which must be one we asked for; the body must be a JSON object."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict):
        raise RegistryResponseInvalid(
            f"registry {ref.registry} served a manifest for {shown} that is not a JSON object",
            registry=ref.registry,
        )
    media_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not media_type or media_type == "application/json":
        declared = document.get("mediaType")
        if isinstance(declared, str) and declared:
            media_type = declared
        elif isinstance(document.get("manifests"), list):
            media_type = OCI_INDEX
        elif isinstance(document.get("config"), dict):
            media_type = OCI_MANIFEST
    if media_type not in (*MANIFESTS, *INDEXES):
        shown_type = media_type if re.match(r"^[\w.+/-]{1,100}$", media_type) else "another"
        raise RegistryResponseInvalid(
            f"registry {ref.registry} served {shown} as {shown_type!r}, which is not one of "
            "the manifest media types asked for",
            registry=ref.registry,
        )
    return media_type


def _check_digest(ref: Reference, digest: str) -> None:
    """Digests go into URL paths: only ``sha256:<64 hex>`` ever does."""
    if not _DIGEST.match(digest):
        raise RegistryResponseInvalid(
            f"{ref.registry}: {digest[:80]!r} is not a sha256 digest", registry=ref.registry
        )
