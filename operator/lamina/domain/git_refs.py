"""What a git server advertises, read as hostile input, and a revision resolved against it.

Pure: bytes in, refs or a refusal out.  The I/O (smart HTTP ``info/refs``, the ``git://``
protocol) lives in :mod:`lamina.git.remote`; it hands over at most
:data:`MAX_ADVERTISEMENT` bytes and this module decides what they mean.

The advertisement is a sequence of pkt-lines (git's ``gitprotocol-common``): four hex digits
giving the length including themselves, then the payload; ``0000`` is a flush.  Smart HTTP
prefixes ``# service=git-upload-pack`` and a flush; a protocol v1 server says ``version 1``
first; the first ref line carries the capabilities after a NUL (``symref=HEAD:refs/heads/x``
says what HEAD is); an annotated tag is followed by its peeled commit (``refs/tags/v1^{}``);
an empty repository advertises only ``capabilities^{}`` with the zero id.  Anything else (a
length that is not hex, shorter than 4 or longer than the 65520 git allows, a payload that
runs past the end, an object id that is not 40 or 64 lowercase hex digits, a ref name with
controls or spaces, more than :data:`MAX_REFS` refs, ``ERR`` from the server) is a
:class:`GitRefsError` whose message names what was wrong, never echoing more than a short,
sanitised excerpt.

A revision resolves like ``git clone --branch`` (plus what git's own resolution admits
remotely): a full commit id is taken as is (the fetch verifies it exists); ``HEAD`` and names
starting with ``refs/`` are looked up exactly; any other name is ``refs/heads/<name>``, then
``refs/tags/<name>`` (an annotated tag resolves to the commit it points at).  Abbreviations and
revision expressions (``main~1``) cannot be answered without the objects: refused by name.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lamina.domain.conditions import (
    GIT_CREDENTIALS_INVALID,
    GIT_CREDENTIALS_NOT_FOUND,
    GIT_PROTOCOL_ERROR,
    GIT_REVISION_NOT_FOUND,
)

# The largest advertisement read (a repository with ~40000 refs); more is refused, not cut.
MAX_ADVERTISEMENT = 4 * 1024 * 1024
MAX_REFS = 50_000
MAX_PKT_LENGTH = 65520  # git's LARGE_PACKET_MAX
MAX_REF_NAME = 1024
# Credentials as the Secret holds them: bounded, and nothing that could end a header line.
MAX_CREDENTIAL = 4096
SERVICE_LINE = b"# service=git-upload-pack\n"
# Matched with fullmatch only: Python's "$" also matches before a final newline.
ZERO_ID = re.compile(r"0+")
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF_NAME = re.compile(r"[\x21-\x7e]+")
_EXCERPT = 40

__all__ = [
    "MAX_ADVERTISEMENT",
    "Advertisement",
    "GitRefsError",
    "GitTarget",
    "authorization_from_secret",
    "basic_authorization",
    "git_target",
    "parse_advertisement",
    "parse_pkt_lines",
    "resolve_revision",
]


class GitRefsError(ValueError):
    """What the server sent cannot be used, or the revision is not there; ``reason`` is the
    catalogued condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _excerpt(data: bytes) -> str:
    """A short, printable rendering of hostile bytes for a message."""
    text = data[:_EXCERPT].decode("ascii", "replace")
    clean = "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text)
    return repr(clean + ("..." if len(data) > _EXCERPT else ""))


def _protocol(message: str) -> GitRefsError:
    return GitRefsError(GIT_PROTOCOL_ERROR, message)


def parse_pkt_lines(data: bytes, *, limit: int = MAX_REFS + 8) -> list[bytes | None]:
    """Every pkt-line of ``data``: its payload, or None for a flush (``0000``).

    Delimiter and response-end packets (``0001``, ``0002``, protocol v2 only) are refused: a
    v0/v1 advertisement has none.  At most ``limit`` lines.
    """
    if len(data) > MAX_ADVERTISEMENT:
        raise _protocol(f"the advertisement is larger than {MAX_ADVERTISEMENT} bytes")
    lines: list[bytes | None] = []
    offset = 0
    while offset < len(data):
        if len(lines) >= limit:
            raise _protocol(f"the advertisement has more than {limit} lines")
        head = data[offset : offset + 4]
        if len(head) < 4:
            raise _protocol(f"truncated pkt-line length {_excerpt(head)} at byte {offset}")
        if not re.fullmatch(rb"[0-9a-fA-F]{4}", head):
            raise _protocol(f"pkt-line length {_excerpt(head)} at byte {offset} is not hex")
        length = int(head, 16)
        if length == 0:
            lines.append(None)
            offset += 4
            continue
        if length < 4:
            raise _protocol(f"pkt-line length {length} at byte {offset} is reserved")
        if length > MAX_PKT_LENGTH:
            raise _protocol(f"pkt-line length {length} at byte {offset} exceeds {MAX_PKT_LENGTH}")
        end = offset + length
        if end > len(data):
            raise _protocol(
                f"pkt-line at byte {offset} says {length} bytes, {len(data) - offset} remain"
            )
        lines.append(data[offset + 4 : end])
        offset = end
    return lines


@dataclass(frozen=True)
class Advertisement:
    """The refs a server advertised: name -> object id, peeled tags, what HEAD points to."""

    refs: dict[str, str] = field(default_factory=dict)
    # refs/tags/x -> the commit an annotated tag points at (from "refs/tags/x^{}").
    peeled: dict[str, str] = field(default_factory=dict)
    head_target: str | None = None


def _ref_line(payload: bytes, first: bool) -> tuple[str, str, bytes]:
    line = payload[:-1] if payload.endswith(b"\n") else payload
    capabilities = b""
    if b"\0" in line:
        if not first:
            raise _protocol(f"a ref line after the first carries capabilities: {_excerpt(line)}")
        line, capabilities = line.split(b"\0", 1)
    parts = line.split(b" ")
    if len(parts) != 2:
        raise _protocol(f"a ref line is not '<id> <name>': {_excerpt(line)}")
    raw_id, raw_name = parts
    try:
        object_id, name = raw_id.decode("ascii"), raw_name.decode("ascii")
    except UnicodeDecodeError:
        raise _protocol(f"a ref line is not ASCII: {_excerpt(line)}") from None
    if not _OBJECT_ID.fullmatch(object_id):
        raise _protocol(f"{_excerpt(raw_id)} is not an object id")
    if len(name) > MAX_REF_NAME or not _REF_NAME.fullmatch(name):
        raise _protocol(f"ref name {_excerpt(raw_name)} is malformed")
    return object_id, name, capabilities


def _head_symref(capabilities: bytes) -> str | None:
    for capability in capabilities.split(b" "):
        if capability.startswith(b"symref=HEAD:"):
            target = capability.removeprefix(b"symref=HEAD:").decode("ascii", "replace")
            if len(target) <= MAX_REF_NAME and _REF_NAME.fullmatch(target):
                return target
    return None


def parse_advertisement(data: bytes, *, smart_http: bool) -> Advertisement:
    """The refs of an upload-pack advertisement (``smart_http``: with the service header)."""
    lines = parse_pkt_lines(data)
    position = 0
    if smart_http:
        if not lines or lines[0] != SERVICE_LINE:
            got = lines[0] if lines and lines[0] is not None else b"<flush>"
            raise _protocol(f"no '# service=git-upload-pack' header; got {_excerpt(got)}")
        if len(lines) < 2 or lines[1] is not None:
            raise _protocol("the service header is not followed by a flush")
        position = 2
    refs: dict[str, str] = {}
    peeled: dict[str, str] = {}
    head_target: str | None = None
    first = True
    ended = False
    for payload in lines[position:]:
        if payload is None:
            ended = True
            break
        if payload.startswith(b"ERR "):
            said = payload[4:].rstrip(b"\n")
            raise _protocol(f"the server said {_excerpt(said)}")
        if first and payload.rstrip(b"\n") == b"version 1":
            continue
        object_id, name, capabilities = _ref_line(payload, first)
        if first:
            head_target = _head_symref(capabilities)
        first = False
        if name == "capabilities^{}":
            if not ZERO_ID.fullmatch(object_id):
                raise _protocol("capabilities^{} names an object")
            continue
        if name.endswith("^{}"):
            tag = name.removesuffix("^{}")
            if tag not in refs:
                raise _protocol(f"peeled {_excerpt(name.encode())} follows no tag")
            peeled[tag] = object_id
            continue
        if len(refs) >= MAX_REFS:
            raise _protocol(f"more than {MAX_REFS} refs")
        refs[name] = object_id
    if not ended:
        raise _protocol("the advertisement ends without a flush")
    return Advertisement(refs, peeled, head_target)


def resolve_revision(advertisement: Advertisement, revision: str) -> str:
    """The commit id ``revision`` names in ``advertisement`` (see the module docstring)."""
    if _OBJECT_ID.fullmatch(revision.lower()):
        return revision.lower()
    if revision == "HEAD" or revision.startswith("refs/"):
        candidates = [revision]
    else:
        candidates = [f"refs/heads/{revision}", f"refs/tags/{revision}"]
    for name in candidates:
        if name in advertisement.refs:
            return advertisement.peeled.get(name, advertisement.refs[name])
    if revision == "HEAD" and advertisement.head_target in advertisement.refs:
        return advertisement.refs[advertisement.head_target or ""]
    if not advertisement.refs:
        raise GitRefsError(GIT_REVISION_NOT_FOUND, "the repository is empty")
    if re.fullmatch(r"[0-9a-fA-F]{4,63}", revision):
        hint = "; an abbreviated commit id cannot be resolved remotely, give all of it"
    elif re.search(r"[~^@{}]", revision):
        hint = "; revision expressions cannot be resolved remotely, name a branch, tag or commit"
    else:
        hint = ""
    tried = " or ".join(candidates)
    raise GitRefsError(GIT_REVISION_NOT_FOUND, f"the server advertises no {tried}{hint}")


@dataclass(frozen=True)
class GitTarget:
    """Where a clone URL is asked: smart HTTP (``refs_url``) or git:// (host, port, path)."""

    scheme: str
    host: str
    port: int
    path: str
    refs_url: str | None

    @property
    def endpoint(self) -> tuple[str, str, int]:
        """What a failing server is paused by: a host's other ports and schemes are other
        servers (and another tenant's, as likely as not)."""
        return (self.scheme, self.host, self.port)

    @property
    def origin(self) -> str:
        """``scheme://host:port``, the port always written: how a paused host is named in
        every tenant's message (never a path: that is one tenant's repository)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def git_target(url: str) -> GitTarget:
    """The endpoint of ``url`` (checked by the CRD's pattern; checked again here)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "git") or not parts.hostname:
        raise GitRefsError(GIT_PROTOCOL_ERROR, f"{url[:200]!r} is not an http(s):// or git:// URL")
    if parts.username is not None or parts.query or parts.fragment:
        raise GitRefsError(
            GIT_PROTOCOL_ERROR, "the URL may carry no credentials, query or fragment"
        )
    try:
        port = parts.port
    except ValueError:
        raise GitRefsError(GIT_PROTOCOL_ERROR, f"{url[:200]!r} has an invalid port") from None
    default = {"http": 80, "https": 443, "git": 9418}[parts.scheme]
    path = parts.path or "/"
    refs_url = None
    if parts.scheme != "git":
        refs_url = url.rstrip("/") + "/info/refs?service=git-upload-pack"
    return GitTarget(parts.scheme, parts.hostname, port or default, path, refs_url)


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic, refusing what could break the
    header (a line break, NUL) or the scheme (a colon in the user name)."""
    for label, value in (("username", username), ("password", password)):
        if not value:
            raise GitRefsError(GIT_CREDENTIALS_INVALID, f"the Secret's {label} is empty")
        if len(value) > MAX_CREDENTIAL:
            raise GitRefsError(
                GIT_CREDENTIALS_INVALID, f"the Secret's {label} is longer than {MAX_CREDENTIAL}"
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise GitRefsError(
                GIT_CREDENTIALS_INVALID, f"the Secret's {label} contains control characters"
            )
    if ":" in username:
        raise GitRefsError(GIT_CREDENTIALS_INVALID, "the Secret's username contains ':'")
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


# A token alone is sent as the password of this user name (GitHub's and Gitea's convention;
# GitLab takes any name).
TOKEN_USERNAME = "x-access-token"


def authorization_from_secret(secret: Mapping[str, Any] | None, namespace: str, name: str) -> str:
    """The ``Authorization`` value from a credentials Secret as the API returns it (``data``
    base64): ``username`` and ``password``, or ``token`` (with ``username`` if set).  The
    message names the Secret and the keys, never a value."""
    if secret is None:
        raise GitRefsError(
            GIT_CREDENTIALS_NOT_FOUND,
            f'git credentials Secret "{name}" not found in namespace "{namespace}"',
        )
    data = secret.get("data") or {}

    def value(key: str) -> str | None:
        encoded = data.get(key)
        if encoded is None:
            return None
        if not isinstance(encoded, str) or len(encoded) > 2 * MAX_CREDENTIAL:
            raise GitRefsError(
                GIT_CREDENTIALS_INVALID, f'git credentials Secret "{name}": {key} is too long'
            )
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise GitRefsError(
                GIT_CREDENTIALS_INVALID, f'git credentials Secret "{name}": {key} is not UTF-8'
            ) from None

    username, password, token = value("username"), value("password"), value("token")
    try:
        if token is not None:
            return basic_authorization(username or TOKEN_USERNAME, token)
        if username is not None and password is not None:
            return basic_authorization(username, password)
    except GitRefsError as error:
        raise GitRefsError(error.reason, f'git credentials Secret "{name}": {error}') from None
    raise GitRefsError(
        GIT_CREDENTIALS_INVALID,
        f'git credentials Secret "{name}" has neither username and password nor token',
    )
