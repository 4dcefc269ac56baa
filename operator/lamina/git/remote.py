"""Asking a git server what its refs are: smart HTTP ``info/refs`` or the git:// protocol.

Only the ref advertisement is read (no objects, no pack), so the operator needs no git
binary.  The server is treated as hostile: at most :data:`MAX_ADVERTISEMENT` bytes are read
(a longer answer is refused, not truncated), no redirect is followed (credentials would go
wherever it points), a reply that is not an upload-pack advertisement is refused by its
content type, and every refusal is a :class:`GitRefsError` whose reason is catalogued and
whose message names the URL and what was wrong, never the server's body.  The caller bounds
the time (:mod:`lamina.handlers.source_resolver`).  What the bytes mean is
:mod:`lamina.domain.git_refs`'s to decide.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from lamina.domain.conditions import (
    GIT_AUTHENTICATION_FAILED,
    GIT_PROTOCOL_ERROR,
    GIT_REPOSITORY_NOT_FOUND,
    GIT_SOURCE_UNAVAILABLE,
)
from lamina.domain.git_refs import (
    MAX_ADVERTISEMENT,
    MAX_PKT_LENGTH,
    MAX_REFS,
    Advertisement,
    GitRefsError,
    GitTarget,
    git_target,
    parse_advertisement,
)

ADVERTISEMENT_TYPE = "application/x-git-upload-pack-advertisement"
USER_AGENT = "git/lamina"

__all__ = ["GitUnavailable", "advertised_refs"]


class GitUnavailable(GitRefsError):
    """The server did not answer usefully now (5xx, 429, refused connection): try later.

    ``detail`` is what happened without the URL ("HTTP 503", "ClientConnectorError"): the
    host's pause may be shown to other tenants, whose messages must not carry this URL.
    """

    def __init__(self, url: str, detail: str, retry_after: str | None = None) -> None:
        super().__init__(GIT_SOURCE_UNAVAILABLE, f"{url}: {detail}")
        self.detail = detail
        self.retry_after = retry_after


async def advertised_refs(
    session: aiohttp.ClientSession, url: str, authorization: str | None = None
) -> Advertisement:
    """The refs ``url`` advertises (``authorization``: an HTTP ``Authorization`` value)."""
    target = git_target(url)
    if target.refs_url is None:
        if authorization is not None:
            raise GitRefsError(
                GIT_PROTOCOL_ERROR, "git:// has no authentication: use https:// with a Secret"
            )
        return parse_advertisement(await _git_protocol(target), smart_http=False)
    return parse_advertisement(
        await _smart_http(session, target.refs_url, url, authorization), smart_http=True
    )


async def _smart_http(
    session: aiohttp.ClientSession, refs_url: str, url: str, authorization: str | None
) -> bytes:
    headers = {"User-Agent": USER_AGENT, "Accept": ADVERTISEMENT_TYPE}
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        async with session.get(refs_url, headers=headers, allow_redirects=False) as response:
            status = response.status
            if status in (401, 403):
                said = "refused the credentials" if authorization else "needs credentials"
                hint = "" if authorization else " (set spec.build.context.git.secret)"
                raise GitRefsError(GIT_AUTHENTICATION_FAILED, f"{url} {said}: HTTP {status}{hint}")
            if status == 404:
                raise GitRefsError(GIT_REPOSITORY_NOT_FOUND, f"{url}: HTTP 404, no such repository")
            if status == 429 or status >= 500:
                raise GitUnavailable(url, f"HTTP {status}", response.headers.get("Retry-After"))
            if 300 <= status < 400:
                raise GitRefsError(
                    GIT_PROTOCOL_ERROR, f"{url}: HTTP {status}, redirects are not followed"
                )
            if status != 200:
                raise GitRefsError(GIT_PROTOCOL_ERROR, f"{url}: unexpected HTTP {status}")
            kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if kind != ADVERTISEMENT_TYPE:
                raise GitRefsError(
                    GIT_PROTOCOL_ERROR,
                    f"{url} is not a smart HTTP git server (Content-Type "
                    f"{kind[:60]!r}); dumb HTTP is not supported",
                )
            if (response.content_length or 0) > MAX_ADVERTISEMENT:
                raise _too_large(url)
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_ADVERTISEMENT:
                    raise _too_large(url)
            return bytes(body)
    except aiohttp.ClientError as error:
        raise GitUnavailable(url, type(error).__name__) from None
    except OSError as error:
        raise GitUnavailable(url, type(error).__name__) from None


def _too_large(url: str) -> GitRefsError:
    return GitRefsError(
        GIT_PROTOCOL_ERROR, f"{url}: the ref advertisement is larger than {MAX_ADVERTISEMENT} bytes"
    )


def _pkt(payload: bytes) -> bytes:
    return b"%04x" % (len(payload) + 4) + payload


async def _git_protocol(target: GitTarget) -> bytes:
    """The advertisement of a git:// server: pkt-lines up to the first flush, bounded."""
    url = f"git://{target.host}:{target.port}{target.path}"
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port)
    except OSError as error:
        raise GitUnavailable(url, type(error).__name__) from None
    try:
        request = b"git-upload-pack %s\0host=%s\0" % (
            target.path.encode(),
            target.host.encode("idna"),
        )
        writer.write(_pkt(request))
        await writer.drain()
        data = bytearray()
        for _ in range(MAX_REFS + 8):
            head = await reader.readexactly(4)
            data += head
            try:
                length = int(head, 16)
            except ValueError:
                break  # the parser names the malformed length
            if length == 0:
                if len(data) == 4:
                    raise GitUnavailable(url, "the server closed the request without refs")
                break
            if length < 4 or length > MAX_PKT_LENGTH:
                break
            if len(data) + length - 4 > MAX_ADVERTISEMENT:
                raise _too_large(url)
            data += await reader.readexactly(length - 4)
        writer.write(b"0000")  # nothing wanted: the server ends the session
        await writer.drain()
        return bytes(data)
    except asyncio.IncompleteReadError as error:
        if not error.partial and not data:
            raise GitUnavailable(url, "the server closed the connection") from None
        return bytes(data) + error.partial  # the parser names the truncation
    except OSError as error:
        raise GitUnavailable(url, type(error).__name__) from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
