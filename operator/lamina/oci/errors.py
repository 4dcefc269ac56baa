"""Registry errors that say what the registry said.

The distribution API answers errors with ``{"errors": [{"code", "message", "detail"}]}``; the
exception carries the code and message so a ContainerCommit's condition can quote them.
"""

from __future__ import annotations

import json
from typing import Any


class RegistryError(Exception):
    """The registry refused a request (or could not be reached: see the subclass)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class RegistryUnavailable(RegistryError):
    """No answer (connection refused, reset, timeout) or 5xx, after the retries ran out."""


class DigestMismatch(RegistryError):
    """The registry's bytes (or its Docker-Content-Digest) do not match the expected digest."""


def describe_error_body(body: bytes) -> tuple[str | None, str]:
    """``(code, message)`` from a registry error body; the raw text when it is not JSON."""
    try:
        document: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return None, text[:500]
    errors = document.get("errors") if isinstance(document, dict) else None
    if not errors or not isinstance(errors, list):
        return None, body.decode("utf-8", "replace").strip()[:500]
    first = errors[0] if isinstance(errors[0], dict) else {}
    parts = []
    for error in errors:
        if isinstance(error, dict):
            text = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
            if error.get("detail"):
                text += f" ({json.dumps(error['detail'])[:200]})"
            parts.append(text)
    return first.get("code"), "; ".join(parts)
