"""The API server's answer to a refused request, in words fit for a condition or a log line."""

from __future__ import annotations

import json

from kubernetes_asyncio.client.exceptions import ApiException


def api_error(error: ApiException) -> str:
    """Status, reason and the API's message (never a whole response body)."""
    message = ""
    try:
        body = json.loads(error.body or "{}")
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
    except (TypeError, ValueError):
        message = ""
    return f"{error.status} {error.reason}: {message}"[:1024].rstrip(": ")
