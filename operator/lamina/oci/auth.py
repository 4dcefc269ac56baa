"""Registry credentials and the token dance.

Credentials come from a ``kubernetes.io/dockerconfigjson`` Secret's ``.dockerconfigjson``
(``{"auths": {"host": {"auth": base64(user:pass)} | {"username", "password"}}}``), looked up by
registry host the way Docker does (Docker Hub also answers to its legacy index URL).

A registry that wants a token answers 401 with ``WWW-Authenticate: Bearer realm=...,
service=..., scope=...``; the client then asks the realm for a token (with basic credentials
when it has some) and retries.  ``Basic`` challenges get the credentials directly.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lamina.oci.reference import DOCKER_HUB

_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


class InvalidCredentials(ValueError):
    """A dockerconfigjson document that cannot be read."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    params: dict[str, str]


def credentials_for(docker_config: Mapping[str, Any] | None, registry: str) -> Credentials | None:
    """The credentials a dockerconfigjson document holds for ``registry``, if any."""
    if not docker_config:
        return None
    auths = docker_config.get("auths")
    if not isinstance(auths, Mapping):
        raise InvalidCredentials("dockerconfigjson has no 'auths' object")
    keys = _DOCKER_HUB_KEYS if registry == DOCKER_HUB else (registry,)
    for key, entry in auths.items():
        host = re.sub(r"^https?://", "", str(key)).split("/", 1)[0]
        if key in keys or host in keys:
            return _entry_credentials(str(key), entry)
    return None


def _entry_credentials(key: str, entry: Any) -> Credentials:
    if not isinstance(entry, Mapping):
        raise InvalidCredentials(f"dockerconfigjson entry {key!r} is not an object")
    if entry.get("username") is not None:
        return Credentials(str(entry["username"]), str(entry.get("password", "")))
    if "auth" in entry:
        try:
            user, sep, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise InvalidCredentials(f"dockerconfigjson entry {key!r}: bad 'auth'") from error
        if not sep:
            raise InvalidCredentials(f"dockerconfigjson entry {key!r}: 'auth' is not user:pass")
        return Credentials(user, password)
    raise InvalidCredentials(f"dockerconfigjson entry {key!r} has neither auth nor username")


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="https://auth",service="reg",scope="repository:x:pull"``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        match.group(1).lower(): (
            match.group(2).replace('\\"', '"') if match.group(2) is not None else match.group(3)
        )
        for match in _PARAM.finditer(rest)
    }
    return Challenge(scheme.lower(), params)
