"""A small async client for the OCI distribution API: what a commit needs, nothing more.

- Transport: HTTPS, or plain HTTP for the registries named ``insecure`` (never by default and
  never as a fallback).
- Every answer is untrusted (see :mod:`lamina.oci.limits`): bodies are read up to a limit for
  their kind (manifests and indexes 4 MiB, configs 8 MiB, token answers 1 MiB, error bodies
  64 KiB), checked against ``Content-Length`` before reading and counted while reading; blobs
  are streamed.  Manifests must have a media type that was asked for.  Error messages carry
  the registry's name, the status code and its standard phrase, and the registry error codes,
  never a body (see :mod:`lamina.oci.errors`).
- Redirects are followed by the client itself (at most five, GET and HEAD only): a redirect
  from https to plain http is refused; credentials (basic or bearer) are attached only to
  requests for the registry's own origin, so a redirect or an upload ``Location`` on another
  origin gets none.
- Auth: anonymous first; on 401 from the registry's own origin it answers the
  ``WWW-Authenticate`` challenge and retries once.  Bearer: a token from the realm, asked for
  with the dockerconfigjson credentials when there are some.  The realm may be on another
  origin (Docker Hub's is), but must be https unless the registry itself is configured
  insecure: a TLS registry naming a plain-HTTP realm is refused, credentials or not, since
  nothing said over plain HTTP can be trusted for a registry that speaks TLS.  A 401 from
  another origin (reached through a redirect) is never answered.  Tokens are cached per
  registry and scope.
- Retries: connection errors, 5xx and 429 are retried with exponential backoff (429 after its
  ``Retry-After`` when that is short), a bounded number of times; other 4xx are final.
- Blobs: HEAD existence checks, cross-repository mount (falling back to a copy when the
  registry declines), chunked uploads (POST, PATCH per chunk, PUT ``?digest=``) from any async
  iterable of bytes, so a layer never has to be in memory or on disk.
- Manifests: HEAD for the digest alone; GET accepting indexes (the ``linux/amd64`` manifest is
  resolved from them); PUT of exact bytes, checked against the registry's
  ``Docker-Content-Digest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from lamina.domain.parent_polling import retry_after_seconds
from lamina.oci.auth import Credentials, credentials_for, parse_challenge
from lamina.oci.errors import (
    DigestMismatch,
    ManifestTooLarge,
    RedirectRefused,
    RegistryError,
    RegistryRateLimited,
    RegistryResponseInvalid,
    RegistryUnavailable,
    ResponseTooLarge,
    TokenRealmRefused,
    describe_failure,
    error_codes,
)
from lamina.oci.image import select_platform
from lamina.oci.limits import (
    CONFIG_LIMIT,
    ERROR_BODY_LIMIT,
    MANIFEST_LIMIT,
    MAX_REDIRECTS,
    MAX_RETRY_AFTER_IN_CLIENT,
    TOKEN_LIMIT,
    mebibytes,
)
from lamina.oci.mediatypes import ACCEPT_MANIFESTS, INDEXES, MANIFESTS, OCI_INDEX, OCI_MANIFEST
from lamina.oci.reference import Reference

log = logging.getLogger(__name__)

CHUNK_SIZE = 4 << 20
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNKS_AHEAD = 2
_READ_PIECE = 64 << 10
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
# RFC 6750's b64token: what may follow "Bearer " in a header (no spaces, no line breaks).
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")

Origin = tuple[str, str, int | None]


def origin_of(url: URL) -> Origin:
    """Scheme, host and port (default ports made explicit): what "the same origin" compares."""
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


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


async def read_bounded(
    response: aiohttp.ClientResponse, limit: int, too_large: Callable[[], Exception]
) -> bytes:
    """The body, or ``too_large()`` as soon as it is known to exceed ``limit`` bytes.

    ``Content-Length`` is checked first (an honest large answer costs nothing to refuse), and
    the bytes are counted as they arrive, so an absent or lying length gets no further: at most
    ``limit`` plus one read piece is ever held.
    """
    announced = response.content_length
    if announced is not None and announced > limit:
        raise too_large()
    buffer = bytearray()
    async for piece in response.content.iter_chunked(_READ_PIECE):
        buffer += piece
        if len(buffer) > limit:
            raise too_large()
    return bytes(buffer)


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

    @contextlib.asynccontextmanager
    async def _exchange(
        self,
        method: str,
        ref: Reference,
        url: URL,
        *,
        scopes: tuple[str, ...],
        what: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | bytearray | memoryview | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request with auth, redirects, retries and error decoding.

        Yields the response (body unread) once its status is one of ``expect``; raises a
        :class:`RegistryError` otherwise.  ``what`` names the operation in messages, so no URL
        the registry chose (an upload location) is ever quoted.
        """
        key = (ref.registry, " ".join(scopes))
        own = origin_of(self._base(ref))
        authenticated = False
        attempt = 0
        while True:
            try:
                response = await self._follow(
                    method,
                    ref=ref,
                    url=url,
                    own=own,
                    key=key,
                    headers=headers,
                    data=data,
                    what=what,
                )
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                attempt += 1
                if attempt > self.retries:
                    raise RegistryUnavailable(
                        f"cannot reach registry {ref.registry} ({url.scheme}): "
                        f"{type(error).__name__}{_os_detail(error)} (after {attempt} attempts)",
                        registry=ref.registry,
                    ) from error
                await self._sleep(attempt, f"{method} {what} on {ref.registry}: {error!r}")
                continue
            except aiohttp.ClientResponseError as error:
                raise _not_http(ref, what) from error
            try:
                status = response.status
                challenge = response.headers.get("WWW-Authenticate")
                if status == 401 and challenge and not authenticated:
                    if origin_of(response.url) != own:
                        raise TokenRealmRefused(
                            f"{ref.registry}: {method} {what} was redirected to another origin "
                            f"({response.url.host}) that asks for credentials; credentials "
                            f"are only sent to {ref.registry} and its token realm",
                            status=status,
                            registry=ref.registry,
                        )
                    response.release()
                    self._authorization[key] = await self._authorize(ref, challenge, scopes)
                    authenticated = True
                    continue
                if status in _RETRYABLE_STATUS:
                    attempt += 1
                    delay = self._retry_delay(attempt, status, response.headers)
                    if attempt <= self.retries and delay is not None:
                        response.release()
                        log.warning(
                            "retrying in %.1fs: %s %s on %s: HTTP %s",
                            delay,
                            method,
                            what,
                            ref.registry,
                            status,
                        )
                        await asyncio.sleep(delay)
                        continue
                if status in expect:
                    yield response
                    return
                raise await self._failure(ref, method, what, response)
            except aiohttp.ClientPayloadError as error:
                raise RegistryResponseInvalid(
                    f"{ref.registry}: the answer to {method} {what} was cut short or malformed",
                    registry=ref.registry,
                ) from error
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                raise RegistryUnavailable(
                    f"registry {ref.registry} went away while answering {method} {what}: "
                    f"{type(error).__name__}",
                    registry=ref.registry,
                ) from error
            finally:
                response.release()

    async def _follow(
        self,
        method: str,
        *,
        ref: Reference,
        url: URL,
        own: Origin,
        key: tuple[str, str],
        headers: Mapping[str, str] | None,
        data: bytes | bytearray | memoryview | None,
        what: str,
    ) -> aiohttp.ClientResponse:
        """Send, following redirects ourselves: credentials only for the registry's origin."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            request_headers = dict(headers or {})
            if origin_of(current) == own and key in self._authorization:
                request_headers["Authorization"] = self._authorization[key]
            response = await self.session.request(
                method, current, headers=request_headers, data=data, allow_redirects=False
            )
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or method not in ("GET", "HEAD") or not location:
                return response
            response.release()
            current = _redirect_target(ref, current, location, what)
        raise RedirectRefused(
            f"{ref.registry}: {method} {what} was redirected more than {MAX_REDIRECTS} times",
            registry=ref.registry,
        )

    def _retry_delay(self, attempt: int, status: int, headers: Mapping[str, str]) -> float | None:
        """Exponential backoff; for 429 the registry's ``Retry-After`` when it is short enough
        (None: longer than this client waits, so give up and let the caller back off)."""
        delay = float(self.backoff * 2 ** (attempt - 1))
        if status != 429:
            return delay
        asked = retry_after_seconds(headers.get("Retry-After"), datetime.now(UTC))
        if asked is None:
            return delay
        return asked if asked <= MAX_RETRY_AFTER_IN_CLIENT else None

    async def _failure(
        self, ref: Reference, method: str, what: str, response: aiohttp.ClientResponse
    ) -> RegistryError:
        """The typed error for an unexpected status: codes from the envelope, never text."""
        status = response.status
        codes: list[str] = []
        if method != "HEAD":
            with contextlib.suppress(ResponseTooLarge, aiohttp.ClientError, TimeoutError):
                codes = error_codes(
                    await read_bounded(
                        response, ERROR_BODY_LIMIT, lambda: ResponseTooLarge("", limit=0)
                    )
                )
        message = f"{ref.registry} refused {method} {what}: {describe_failure(status, codes)}"
        code = codes[0] if codes else None
        if status == 429:
            return RegistryRateLimited(
                message,
                status=status,
                code=code,
                registry=ref.registry,
                retry_after=response.headers.get("Retry-After"),
            )
        error_type = RegistryUnavailable if status >= 500 else RegistryError
        return error_type(message, status=status, code=code, registry=ref.registry)

    async def _request(
        self,
        method: str,
        ref: Reference,
        url: URL,
        *,
        scopes: tuple[str, ...],
        what: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | bytearray | memoryview | None = None,
        expect: tuple[int, ...] = (200,),
        limit: int | None = None,
        too_large: Callable[[], Exception] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Status, headers and body (read only when ``limit`` is given, up to it)."""
        async with self._exchange(
            method,
            ref,
            url,
            scopes=scopes,
            what=what,
            headers=headers,
            data=data,
            expect=expect,
        ) as response:
            body = b""
            if limit is not None:

                def default_too_large() -> Exception:
                    return ResponseTooLarge(
                        f"{ref.registry}: the answer to {method} {what} is larger than the "
                        f"{mebibytes(limit)} limit",
                        limit=limit,
                        registry=ref.registry,
                    )

                body = await read_bounded(response, limit, too_large or default_too_large)
            return response.status, response.headers, body

    async def _sleep(self, attempt: int, what: str) -> None:
        delay = self.backoff * 2 ** (attempt - 1)
        log.warning("retrying in %.1fs: %s", delay, what)
        await asyncio.sleep(delay)

    async def _authorize(self, ref: Reference, header: str, scopes: tuple[str, ...]) -> str:
        challenge = parse_challenge(header)
        credentials = self._credentials(ref)
        if challenge.scheme == "basic":
            if credentials is None:
                raise RegistryError(
                    f"{ref.registry} wants basic auth and no credentials given",
                    status=401,
                    registry=ref.registry,
                )
            return credentials.basic_header()
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise RegistryResponseInvalid(
                f"{ref.registry}: unsupported auth challenge (scheme {challenge.scheme[:20]!r})",
                registry=ref.registry,
            )
        try:
            realm = URL(challenge.params["realm"])
        except ValueError as error:
            raise RegistryResponseInvalid(
                f"{ref.registry}: the token realm is not a URL", registry=ref.registry
            ) from error
        if realm.scheme not in ("http", "https") or not realm.host:
            raise TokenRealmRefused(
                f"{ref.registry}: the token realm is not an http(s) URL", registry=ref.registry
            )
        if realm.scheme == "http" and ref.registry not in self.insecure:
            raise TokenRealmRefused(
                f"{ref.registry} names a plain-HTTP token realm ({realm.host}); refused: only "
                "a registry configured insecure may use one, and no credentials are sent "
                "over plain HTTP for a TLS registry",
                registry=ref.registry,
            )
        query: list[tuple[str, str]] = []
        if "service" in challenge.params:
            query.append(("service", challenge.params["service"]))
        query.extend(("scope", scope) for scope in scopes)
        realm = realm.update_query(query)
        body = await self._token_request(ref, realm, credentials)
        try:
            document = json.loads(body)
            token = document.get("token") or document.get("access_token")
        except (ValueError, UnicodeDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise RegistryResponseInvalid(
                f"{ref.registry}: the token service ({realm.host}) answered without a usable token",
                registry=ref.registry,
            )
        return f"Bearer {token}"

    async def _token_request(
        self, ref: Reference, realm: URL, credentials: Credentials | None
    ) -> bytes:
        """GET the realm; basic credentials only for the realm's own origin, redirects checked."""
        realm_origin = origin_of(realm)
        current = realm
        what = f"token request to {realm.host}"
        try:
            for _ in range(MAX_REDIRECTS + 1):
                headers = {}
                if credentials is not None and origin_of(current) == realm_origin:
                    headers["Authorization"] = credentials.basic_header()
                async with self.session.get(
                    current, headers=headers, allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in _REDIRECTS and location:
                        current = _redirect_target(ref, current, location, what)
                        continue
                    if response.status != 200:
                        codes: list[str] = []
                        with contextlib.suppress(ResponseTooLarge, aiohttp.ClientError):
                            codes = error_codes(
                                await read_bounded(
                                    response,
                                    ERROR_BODY_LIMIT,
                                    lambda: ResponseTooLarge("", limit=0),
                                )
                            )
                        raise RegistryError(
                            f"{ref.registry}: {what} failed: "
                            f"{describe_failure(response.status, codes)}",
                            status=response.status,
                            code=codes[0] if codes else None,
                            registry=ref.registry,
                        )
                    return await read_bounded(
                        response,
                        TOKEN_LIMIT,
                        lambda: ResponseTooLarge(
                            f"{ref.registry}: the answer to the {what} is larger than the "
                            f"{mebibytes(TOKEN_LIMIT)} limit for token answers",
                            limit=TOKEN_LIMIT,
                            registry=ref.registry,
                        ),
                    )
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise RegistryUnavailable(
                f"cannot reach the token service {realm.host} of {ref.registry}: "
                f"{type(error).__name__}{_os_detail(error)}",
                registry=ref.registry,
            ) from error
        except aiohttp.ClientPayloadError as error:
            raise RegistryResponseInvalid(
                f"{ref.registry}: the answer to the {what} was cut short or malformed",
                registry=ref.registry,
            ) from error
        except aiohttp.ClientResponseError as error:
            raise _not_http(ref, what) from error
        raise RedirectRefused(
            f"{ref.registry}: the {what} was redirected more than {MAX_REDIRECTS} times",
            registry=ref.registry,
        )

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
        return _redirect_target(ref, request, headers["Location"], f"upload to {ref.repository}")

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
        self, ref: Reference, digest: str, source: Reference | None = None
    ) -> str:
        """Make ``digest`` present in ``ref``'s repository; says how: present|mounted|copied."""
        if await self.blob_exists(ref, digest):
            return "present"
        if source is None or source.name == ref.name:
            raise RegistryError(
                f"{ref.name} lacks blob {digest} and there is no source for it",
                registry=ref.registry,
            )
        if source.registry == ref.registry and await self.mount_blob(ref, digest, source):
            return "mounted"
        await self.upload_blob(ref, self.stream_blob(source, digest), lambda: digest)
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


def _redirect_target(ref: Reference, current: URL, location: str, what: str) -> URL:
    """The absolute URL a Location names; never from https down to http, never elsewhere."""
    try:
        target = current.join(URL(location, encoded=True))
    except ValueError as error:
        raise RegistryResponseInvalid(
            f"{ref.registry}: the Location of the {what} is not a URL", registry=ref.registry
        ) from error
    if target.scheme not in ("http", "https") or not target.host:
        raise RedirectRefused(
            f"{ref.registry}: the {what} was sent to a location that is not http(s)",
            registry=ref.registry,
        )
    if current.scheme == "https" and target.scheme != "https":
        raise RedirectRefused(
            f"{ref.registry}: the {what} was redirected from https to plain http "
            f"({target.host}); refused",
            registry=ref.registry,
        )
    return target


def _check_digest(ref: Reference, digest: str) -> None:
    """Digests go into URL paths: only ``sha256:<64 hex>`` ever does."""
    if not _DIGEST.match(digest):
        raise RegistryResponseInvalid(
            f"{ref.registry}: {digest[:80]!r} is not a sha256 digest", registry=ref.registry
        )


def _not_http(ref: Reference, what: str) -> RegistryResponseInvalid:
    return RegistryResponseInvalid(
        f"{ref.registry}: the answer to the {what} is not valid HTTP", registry=ref.registry
    )


def _os_detail(error: BaseException) -> str:
    """``: Connection refused`` from the OS error under aiohttp's, if any (our text, not theirs)."""
    cause = error.__cause__ or error.__context__
    for candidate in (error, cause):
        if isinstance(candidate, OSError) and candidate.strerror:
            return f": {candidate.strerror}"
    return ""
