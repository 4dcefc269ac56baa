"""A small async client for the OCI distribution API: what a commit needs, nothing more.

- Transport: HTTPS, or plain HTTP for the registries named ``insecure`` (never by default and
  never as a fallback).
- Auth: anonymous first; on 401 it answers the ``WWW-Authenticate`` challenge (a bearer token
  from the realm, with the dockerconfigjson credentials when it has some, or basic auth) and
  retries once.  Tokens are cached per registry and scope.
- Retries: connection errors and 5xx answers are retried with exponential backoff, a bounded
  number of times; 4xx answers are final and raised with the registry's own message.
- Blobs: HEAD existence checks, cross-repository mount (falling back to a copy when the
  registry declines), chunked uploads (POST, PATCH per chunk, PUT ``?digest=``) from any async
  iterable of bytes, so a layer never has to be in memory or on disk.
- Manifests: GET accepting indexes (the ``linux/amd64`` manifest is resolved from them); PUT of
  exact bytes, checked against the registry's ``Docker-Content-Digest``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from lamina.oci.auth import Credentials, credentials_for, parse_challenge
from lamina.oci.errors import (
    DigestMismatch,
    RegistryError,
    RegistryUnavailable,
    describe_error_body,
)
from lamina.oci.image import select_platform
from lamina.oci.mediatypes import ACCEPT_MANIFESTS, INDEXES
from lamina.oci.reference import Reference

log = logging.getLogger(__name__)

CHUNK_SIZE = 4 << 20
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
_CHUNKS_AHEAD = 2


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


class RegistryClient:
    """Talks to any number of registries through one aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        insecure: Iterable[str] = (),
        docker_config: Mapping[str, Any] | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.session = session
        self.insecure = frozenset(insecure)
        self.docker_config = docker_config
        self.retries = retries
        self.backoff = backoff
        self.chunk_size = chunk_size
        self._authorization: dict[tuple[str, str], str] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def _base(self, ref: Reference) -> URL:
        scheme = "http" if ref.registry in self.insecure else "https"
        return URL(f"{scheme}://{ref.api_host}/v2/")

    def _url(self, ref: Reference, path: str) -> URL:
        return self._base(ref).join(URL(f"{ref.repository}/{path}"))

    def _credentials(self, ref: Reference) -> Credentials | None:
        return credentials_for(self.docker_config, ref.registry)

    async def _request(
        self,
        method: str,
        ref: Reference,
        url: URL,
        *,
        scopes: tuple[str, ...],
        headers: Mapping[str, str] | None = None,
        data: bytes | bytearray | memoryview | None = None,
        expect: tuple[int, ...] = (200,),
        allow_redirects: bool = True,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request with auth, retries and error decoding; returns status, headers, body."""
        key = (ref.registry, " ".join(scopes))
        authenticated = False
        attempt = 0
        while True:
            request_headers = dict(headers or {})
            if key in self._authorization:
                request_headers["Authorization"] = self._authorization[key]
            try:
                async with self.session.request(
                    method,
                    url,
                    headers=request_headers,
                    data=data,
                    allow_redirects=allow_redirects,
                ) as response:
                    body = await response.read()
                    status = response.status
                    response_headers: Mapping[str, str] = response.headers
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                attempt += 1
                if attempt > self.retries:
                    raise RegistryUnavailable(
                        f"cannot reach registry {ref.registry} ({url.scheme}): "
                        f"{error or type(error).__name__} (after {attempt} attempts)"
                    ) from error
                await self._sleep(attempt, f"{method} {url}: {error}")
                continue
            if status == 401 and not authenticated and "WWW-Authenticate" in response_headers:
                self._authorization[key] = await self._authorize(
                    ref, response_headers["WWW-Authenticate"], scopes
                )
                authenticated = True
                continue
            if status in _RETRYABLE_STATUS:
                attempt += 1
                if attempt <= self.retries:
                    await self._sleep(attempt, f"{method} {url}: HTTP {status}")
                    continue
            if status in expect:
                return status, response_headers, body
            code, message = describe_error_body(body)
            error_type = RegistryUnavailable if status >= 500 else RegistryError
            raise error_type(
                f"{ref.registry} refused {method} {url.path}: HTTP {status}"
                + (f": {message}" if message else ""),
                status=status,
                code=code,
            )

    async def _sleep(self, attempt: int, what: str) -> None:
        delay = self.backoff * 2 ** (attempt - 1)
        log.warning("retrying in %.1fs: %s", delay, what)
        await asyncio.sleep(delay)

    async def _authorize(self, ref: Reference, header: str, scopes: tuple[str, ...]) -> str:
        challenge = parse_challenge(header)
        credentials = self._credentials(ref)
        if challenge.scheme == "basic":
            if credentials is None:
                raise RegistryError(f"{ref.registry} wants basic auth and no credentials given")
            return credentials.basic_header()
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise RegistryError(f"{ref.registry}: unsupported auth challenge {header!r}")
        query: list[tuple[str, str]] = []
        if "service" in challenge.params:
            query.append(("service", challenge.params["service"]))
        query.extend(("scope", scope) for scope in scopes)
        token_headers = {} if credentials is None else {"Authorization": credentials.basic_header()}
        realm = URL(challenge.params["realm"]).update_query(query)
        try:
            async with self.session.get(realm, headers=token_headers) as response:
                body = await response.read()
                if response.status != 200:
                    _, message = describe_error_body(body)
                    raise RegistryError(
                        f"{ref.registry}: token request to {realm.host} failed: "
                        f"HTTP {response.status}: {message}",
                        status=response.status,
                    )
        except aiohttp.ClientConnectionError as error:
            raise RegistryUnavailable(
                f"cannot reach token service {realm.host}: {error}"
            ) from error
        try:
            document = json.loads(body)
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"{ref.registry}: token service answered without a token")
        return f"Bearer {token}"

    @staticmethod
    def _pull(ref: Reference) -> tuple[str, ...]:
        return (f"repository:{ref.repository}:pull",)

    @staticmethod
    def _push(ref: Reference, *also_pull: Reference) -> tuple[str, ...]:
        extra = tuple(f"repository:{r.repository}:pull" for r in also_pull)
        return (f"repository:{ref.repository}:pull,push", *extra)

    # -- blobs ------------------------------------------------------------------------------

    async def blob_exists(self, ref: Reference, digest: str) -> bool:
        status, _, _ = await self._request(
            "HEAD",
            ref,
            self._url(ref, f"blobs/{digest}"),
            scopes=self._pull(ref),
            expect=(200, 404),
        )
        return status == 200

    async def mount_blob(self, ref: Reference, digest: str, source: Reference) -> bool:
        """Mount ``digest`` from ``source`` (same registry) into ``ref``'s repository.

        True when mounted; False when the registry declined (it then opened an upload, which
        is cancelled, and the caller copies instead).
        """
        url = self._url(ref, "blobs/uploads/").with_query(
            {"mount": digest, "from": source.repository}
        )
        status, headers, _ = await self._request(
            "POST", ref, url, scopes=self._push(ref, source), expect=(201, 202)
        )
        if status == 201:
            return True
        if "Location" in headers:
            await self._cancel_upload(ref, self._location(ref, headers))
        return False

    async def _cancel_upload(self, ref: Reference, location: URL) -> None:
        try:
            await self._request(
                "DELETE", ref, location, scopes=self._push(ref), expect=(202, 204, 404)
            )
        except RegistryError as error:  # best effort: the registry expires it anyway
            log.debug("could not cancel upload %s: %s", location, error)

    def _location(self, ref: Reference, headers: Mapping[str, str]) -> URL:
        location = URL(headers["Location"], encoded=True)
        if location.is_absolute():
            return location
        return self._base(ref).join(location)

    async def _start_upload(self, ref: Reference) -> URL:
        _, headers, _ = await self._request(
            "POST", ref, self._url(ref, "blobs/uploads/"), scopes=self._push(ref), expect=(202,)
        )
        if "Location" not in headers:
            raise RegistryError(f"{ref.registry} opened an upload without a Location")
        return self._location(ref, headers)

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
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            },
            data=chunk,
            expect=(202,),
        )
        return self._location(ref, headers) if "Location" in headers else location

    async def get_blob(self, ref: Reference, digest: str) -> bytes:
        """A small blob (a config), verified against its digest."""
        _, _, body = await self._request(
            "GET", ref, self._url(ref, f"blobs/{digest}"), scopes=self._pull(ref)
        )
        if sha256_digest(body) != digest:
            raise DigestMismatch(f"{ref.name}: blob {digest} has different bytes")
        return body

    async def stream_blob(self, ref: Reference, digest: str) -> AsyncIterator[bytes]:
        """A blob's bytes as they arrive (for copies between registries), verified at the end."""
        scopes = self._pull(ref)
        await self.blob_exists(ref, digest)  # authenticates for the scope, if needed
        headers = {}
        if (ref.registry, " ".join(scopes)) in self._authorization:
            headers["Authorization"] = self._authorization[(ref.registry, " ".join(scopes))]
        sha256 = hashlib.sha256()
        async with self.session.get(self._url(ref, f"blobs/{digest}"), headers=headers) as reply:
            if reply.status != 200:
                _, message = describe_error_body(await reply.read())
                raise RegistryError(
                    f"{ref.name}: GET blob {digest}: HTTP {reply.status}: {message}"
                )
            async for piece in reply.content.iter_chunked(1 << 20):
                sha256.update(piece)
                yield piece
        if "sha256:" + sha256.hexdigest() != digest:
            raise DigestMismatch(f"{ref.name}: blob {digest} has different bytes")

    async def ensure_blob(
        self, ref: Reference, digest: str, source: Reference | None = None
    ) -> str:
        """Make ``digest`` present in ``ref``'s repository; says how: present|mounted|copied."""
        if await self.blob_exists(ref, digest):
            return "present"
        if source is None or source.name == ref.name:
            raise RegistryError(f"{ref.name} lacks blob {digest} and there is no source for it")
        if source.registry == ref.registry and await self.mount_blob(ref, digest, source):
            return "mounted"
        await self.upload_blob(ref, self.stream_blob(source, digest), lambda: digest)
        return "copied"

    # -- manifests --------------------------------------------------------------------------

    async def get_manifest(self, ref: Reference, target: str | None = None) -> Manifest:
        """The manifest (or index) ``target`` (default: the reference's digest or tag)."""
        wanted = target or ref.target
        _, headers, body = await self._request(
            "GET",
            ref,
            self._url(ref, f"manifests/{wanted}"),
            scopes=self._pull(ref),
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        digest = sha256_digest(body)
        if wanted.startswith("sha256:") and digest != wanted:
            raise DigestMismatch(f"{ref.name}: manifest {wanted} has different bytes")
        media_type = headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type or media_type == "application/json":
            media_type = str(json.loads(body).get("mediaType", ""))
        return Manifest(body, media_type, digest)

    async def resolve_image(
        self, ref: Reference, os_name: str = "linux", architecture: str = "amd64"
    ) -> tuple[Manifest, Manifest | None]:
        """The image manifest for the platform, and the index it came from (if any)."""
        top = await self.get_manifest(ref)
        if top.media_type not in INDEXES:
            return top, None
        descriptor = select_platform(top.json(), os_name, architecture)
        return await self.get_manifest(ref, descriptor["digest"]), top

    async def put_manifest(self, ref: Reference, manifest: Manifest, tag: str) -> str:
        """PUT exact bytes under ``tag``; the registry must agree on the digest."""
        _, headers, _ = await self._request(
            "PUT",
            ref,
            self._url(ref, f"manifests/{tag}"),
            scopes=self._push(ref),
            headers={"Content-Type": manifest.media_type},
            data=manifest.data,
            expect=(201,),
        )
        answered = headers.get("Docker-Content-Digest")
        if answered and answered != manifest.digest:
            raise DigestMismatch(
                f"{ref.name}:{tag}: registry stored {answered}, expected {manifest.digest}"
            )
        return manifest.digest
