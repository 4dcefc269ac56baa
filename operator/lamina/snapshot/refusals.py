"""Why the layer writer stops, in words a ContainerCommit's status can carry.

Everything in an upperdir was written by the container, so the names in these messages are
hostile too: :func:`shown` escapes them (no control characters reach a terminal or a status)
and shortens them (a path may be hundreds of kilobytes long).  Messages name the path and the
rule, never a file's contents.

The refusals subclass ``ValueError`` (the upperdir's content is a value Lamina cannot accept)
so that ``lamina snapshot`` reports them as a one-line failure, like its other expected ones.
"""

from __future__ import annotations

SHOWN_PATH_LIMIT = 160


class LayerRefused(ValueError):
    """The upperdir holds something a layer cannot carry faithfully; nothing is pushed."""


class ChangedWhileReading(Exception):
    """A file or directory changed while the layer was read (the container was not frozen)."""


class EntryVanished(ChangedWhileReading):
    """An entry listed a moment ago is gone (deleted while the layer was read)."""


def shown(path: bytes, limit: int = SHOWN_PATH_LIMIT) -> str:
    """``etc/x`` -> ``"/etc/x"``: escaped, quoted and, when long, cut in the middle."""
    return '"/' + _display(path.lstrip(b"/"), limit) + '"'


def shown_name(text: str, limit: int = 80) -> str:
    """An attribute name (or other short text the container chose), escaped, quoted and cut."""
    return '"' + _display(text.encode("utf-8", "surrogateescape"), limit) + '"'


def _display(raw: bytes, limit: int) -> str:
    text = raw.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() and c != '"' else _escape(c) for c in text)
    if len(text) > limit:
        keep = (limit - 3) // 2
        text = f"{text[:keep]}...{text[-keep:]}"
    return text


def _escape(character: str) -> str:
    if character == '"':
        return '\\"'
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
