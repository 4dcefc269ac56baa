"""Requests to registries, with every answer treated as hostile.

:class:`RegistryTransport` is the part of the client that talks HTTP; the distribution API on
top of it (blobs, uploads, manifests) is :mod:`lamina.oci.client`.

- Transport: HTTPS, or plain HTTP for the registries named ``insecure`` (never by default and
  never as a fallback).
- Bodies are read up to a limit for their kind (see :mod:`lamina.oci.limits`), checked against
  ``Content-Length`` before reading and counted while reading.  Error messages carry the
  registry's name, the operation, the status code with its standard phrase and the registry
  error codes, never a body (see :mod:`lamina.oci.errors`).
- Redirects are followed here, not by aiohttp (at most five, GET and HEAD only): a redirect
  from https to plain http is refused; credentials (basic or bearer) are attached only to
  requests for the registry's own origin, so a redirect or an upload ``Location`` on another
  origin gets none.
- Auth: anonymous first; on 401 from the registry's own origin the ``WWW-Authenticate``
  challenge is answered and the request retried once.  Bearer: a token from the realm, asked
  for with the dockerconfigjson credentials when there are some.  The realm may be on another
  origin (Docker Hub's is) but must be https unless the registry itself is configured
  insecure: a TLS registry naming a plain-HTTP realm is refused, credentials or not (asking
  anonymously instead would still take a token and an answer from plain HTTP for a registry
  that speaks TLS, and hide a misconfiguration or an attack).  A 401 from another origin
  (reached through a redirect) is never answered.  A realm that redirects to another origin
  gets no credentials there.  Tokens must be RFC 6750 tokens (no header injection) and are
  cached per registry and scope.
- Retries: connection errors, 5xx and 429 are retried with exponential backoff (429 after its
  ``Retry-After`` when that is at most 30 s), a bounded number of times; other 4xx are final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from lamina.domain.parent_polling import retry_after_seconds
from lamina.oci.auth import Credentials, credentials_for, parse_challenge
from lamina.oci.errors import (
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
from lamina.oci.limits import (
    ERROR_BODY_LIMIT,
    MAX_REDIRECTS,
    MAX_RETRY_AFTER_IN_CLIENT,
    TOKEN_LIMIT,
    mebibytes,
)
from lamina.oci.reference import Reference

log = logging.getLogger(__name__)

# Upload chunk size: large enough for few round trips, small enough to hold two in memory.
CHUNK_SIZE = 4 << 20
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_PIECE = 64 << 10
# RFC 6750's b64token: what may follow "Bearer " in a header (no spaces, no line breaks).
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")

Origin = tuple[str, str, int | None]


def origin_of(url: URL) -> Origin:
    """Scheme, host and port (default ports made explicit): what "the same origin" compares."""
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


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


class RegistryTransport:
    """Requests to any number of registries through one aiohttp session."""

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
            current = redirect_target(ref, current, location, what)
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
                        current = redirect_target(ref, current, location, what)
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


def redirect_target(ref: Reference, current: URL, location: str, what: str) -> URL:
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
