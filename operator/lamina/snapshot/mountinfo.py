"""A container's root overlay, read from ``/proc/<pid>/mountinfo``.

Paths in a process's mountinfo are relative to that process's root, so the container's root
filesystem is the (topmost) mount at ``/``.  Its super options name the ``upperdir`` and the
``lowerdir`` list (topmost first) as the runtime passed them, which are paths in the host's
mount namespace.  Every other mount point of the container is a *mount target*: when it is a
file (``/etc/hosts``, ``/etc/resolv.conf``, ``/etc/hostname``, ``/dev/termination-log``) the
runtime created an empty stub for it in the upperdir, and that stub is left out of the layer.

Escapes: mountinfo writes space, tab, newline and backslash as ``\\ooo`` octal; overlay writes a
``:`` or ``,`` inside a layer path as ``\\:``/``\\,``.  Data-only lower layers (after ``::``)
hold file data for ``metacopy`` and are not part of the namespace, so they are ignored.
Kernels that got the layers through the new mount API show them as ``lowerdir+=`` options,
one per layer, also topmost first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OCTAL = re.compile(rb"\\([0-7]{3})")


class NotOverlay(Exception):
    """The container's root filesystem is not an overlay mount."""


@dataclass(frozen=True)
class MountEntry:
    mount_point: bytes
    fstype: str
    source: bytes
    super_options: bytes


@dataclass(frozen=True)
class RootOverlay:
    """What the layer writer needs to know about a container's root overlay."""

    upper: bytes
    lowers: tuple[bytes, ...]
    userxattr: bool
    mount_targets: tuple[bytes, ...]


def _unescape(raw: bytes) -> bytes:
    return _OCTAL.sub(lambda match: bytes([int(match.group(1), 8)]), raw)


def parse_mountinfo(text: bytes) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(b" ")
        if b"-" not in fields:
            continue
        separator = fields.index(b"-")
        if separator < 6 or len(fields) < separator + 4:
            continue
        entries.append(
            MountEntry(
                mount_point=_unescape(fields[4]),
                fstype=fields[separator + 1].decode(),
                source=_unescape(fields[separator + 2]),
                super_options=_unescape(b" ".join(fields[separator + 3 :])),
            )
        )
    return entries


def _split_unescaped(raw: bytes, separator: bytes) -> list[bytes]:
    """Split on ``separator`` not preceded by a backslash; drop the escaping backslashes."""
    parts: list[bytes] = []
    current = bytearray()
    index = 0
    while index < len(raw):
        char = raw[index : index + 1]
        if char == b"\\" and index + 1 < len(raw):
            current += raw[index + 1 : index + 2]
            index += 2
            continue
        if char == separator:
            parts.append(bytes(current))
            current = bytearray()
        else:
            current += char
        index += 1
    parts.append(bytes(current))
    return parts


def _layer_paths(value: bytes) -> list[bytes]:
    """``a:b::data`` -> ``[a, b]`` (escapes kept until this split)."""
    namespace = value.split(b"::", 1)[0]
    return [path for path in _split_unescaped(namespace, b":") if path]


def root_overlay(text: bytes) -> RootOverlay:
    """The root overlay of the mountinfo ``text`` of one process."""
    entries = parse_mountinfo(text)
    roots = [entry for entry in entries if entry.mount_point == b"/"]
    if not roots:
        raise NotOverlay("no mount at / in the process's mountinfo")
    root = roots[-1]
    if root.fstype != "overlay":
        raise NotOverlay(
            f"the container's root filesystem is {root.fstype}, not overlay: "
            "only overlay snapshotters are supported"
        )
    upper = None
    lowers: list[bytes] = []
    userxattr = False
    for option in _split_options(root.super_options):
        key, _, value = option.partition(b"=")
        if key == b"upperdir":
            upper = _split_unescaped(value, b"\0")[0]
        elif key == b"lowerdir":
            lowers.extend(_layer_paths(value))
        elif key == b"lowerdir+":
            lowers.append(_split_unescaped(value, b"\0")[0])
        elif key == b"userxattr":
            userxattr = True
    if upper is None:
        raise NotOverlay("the root overlay has no upperdir: it is read-only, nothing to commit")
    targets = tuple(sorted({entry.mount_point for entry in entries if entry.mount_point != b"/"}))
    return RootOverlay(upper, tuple(lowers), userxattr, targets)


def _split_options(raw: bytes) -> list[bytes]:
    """Split super options on commas that are not escaped (``\\,`` inside a path)."""
    options: list[bytes] = []
    current = bytearray()
    index = 0
    while index < len(raw):
        char = raw[index : index + 1]
        if char == b"\\" and index + 1 < len(raw):
            current += raw[index : index + 2]  # keep the escape for the path split
            index += 2
            continue
        if char == b",":
            options.append(bytes(current))
            current = bytearray()
        else:
            current += char
        index += 1
    options.append(bytes(current))
    return options
