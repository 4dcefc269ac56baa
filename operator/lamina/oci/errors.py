"""Registry errors that say what went wrong without repeating what the registry sent.

Every registry answer is untrusted: a hostile registry (or a token realm pointed at an internal
service) could put anything in a body, and error messages end up in status, where the tenant
reads them.  So a message is built only from what the client itself knows: the registry's name,
the operation, the HTTP status code with its *standard* reason phrase (never the server's own
status line), the limit that was exceeded, and the registry error ``code`` values of a
well-formed JSON error envelope (``{"errors": [{"code": "MANIFEST_UNKNOWN", ...}]}``) when they
look like codes.  The envelope's ``message`` and ``detail`` are never used.

Each error has a ``reason``: a CamelCase word from :mod:`lamina.domain.conditions` that the
operator puts in front of the message of the object the failure belongs to.
"""

from __future__ import annotations

import http
import json
import re
from typing import Any

from lamina.domain.conditions import (
    DIGEST_MISMATCH,
    MANIFEST_TOO_LARGE,
    REGISTRY_RATE_LIMITED,
    REGISTRY_REDIRECT_REFUSED,
    REGISTRY_REFUSED,
    REGISTRY_RESPONSE_INVALID,
    REGISTRY_RESPONSE_TOO_LARGE,
    REGISTRY_UNAVAILABLE,
    TOKEN_REALM_REFUSED,
)

# Registry error codes are upper-case words (MANIFEST_UNKNOWN, DENIED, TOOMANYREQUESTS).
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
_MAX_CODES = 3


class RegistryError(Exception):
    """The registry refused a request, or its answer could not be used."""

    reason = REGISTRY_REFUSED

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        registry: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.registry = registry


class RegistryUnavailable(RegistryError):
    """No answer (connection refused, reset, timeout) or 5xx, after the retries ran out."""

    reason = REGISTRY_UNAVAILABLE


class RegistryRateLimited(RegistryUnavailable):
    """HTTP 429: the registry asks to come back later (``retry_after`` seconds, if it said)."""

    reason = REGISTRY_RATE_LIMITED

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        registry: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, registry=registry)
        self.retry_after = retry_after


class DigestMismatch(RegistryError):
    """The registry's bytes (or its Docker-Content-Digest) do not match the expected digest."""

    reason = DIGEST_MISMATCH


class RegistryResponseInvalid(RegistryError):
    """An answer that is not what the distribution API allows: malformed JSON, a media type
    that was not asked for, a missing field, a token response without a token."""

    reason = REGISTRY_RESPONSE_INVALID


class ResponseTooLarge(RegistryResponseInvalid):
    """A body over the client's limit for its kind (announced or counted while reading)."""

    reason = REGISTRY_RESPONSE_TOO_LARGE

    def __init__(self, message: str, *, limit: int, registry: str | None = None) -> None:
        super().__init__(message, registry=registry)
        self.limit = limit


class ManifestTooLarge(ResponseTooLarge):
    """A manifest or index over the distribution spec's 4 MiB."""

    reason = MANIFEST_TOO_LARGE


class RedirectRefused(RegistryError):
    """A redirect that would downgrade to plain HTTP, or too many redirects."""

    reason = REGISTRY_REDIRECT_REFUSED


class TokenRealmRefused(RegistryError):
    """A challenge the client will not answer: a plain-HTTP realm for a TLS registry, or a
    401 that came from another origin than the registry's own (after a redirect)."""

    reason = TOKEN_REALM_REFUSED


def status_text(status: int) -> str:
    """``HTTP 429 Too Many Requests``: the standard phrase, never the server's own."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP {status} {phrase}".rstrip()


def error_codes(body: bytes) -> list[str]:
    """The ``code`` values of a well-formed error envelope; nothing else is taken from it."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return []
    codes = []
    for entry in errors[:_MAX_CODES]:
        code = entry.get("code") if isinstance(entry, dict) else None
        if isinstance(code, str) and _CODE.match(code):
            codes.append(code)
    return codes


def describe_failure(status: int, codes: list[str]) -> str:
    """``HTTP 404 Not Found (MANIFEST_UNKNOWN)``."""
    text = status_text(status)
    return f"{text} ({', '.join(codes)})" if codes else text


def condition_message(error: BaseException) -> str:
    """``Reason: message`` for an object's status (no body was ever put in the message)."""
    reason = getattr(error, "reason", None) if isinstance(error, RegistryError) else None
    text = str(error) or type(error).__name__
    return f"{reason}: {text}" if reason else text
