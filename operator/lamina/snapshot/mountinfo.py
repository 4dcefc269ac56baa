"""Mount tables as ``/proc/<pid>/mountinfo`` writes them, and the layers of an overlay mount.

The committer reads the mount table of the runtime's shim (the host's mount namespace), never
the container's: a container that can create a user namespace may mount whatever it likes on
its own ``/``, including an overlay whose ``upperdir=`` names a host directory.  In the shim's
table, the container's root filesystem is the mount the shim made at
``<state>/io.containerd.runtime.v2.task/<namespace>/<id>/rootfs``; its super options name the
``upperdir`` and the ``lowerdir`` list (topmost first) as containerd passed them.  Mount points
are relative to the root of the process whose table it is (the shim's: the host's ``/``).

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
class OverlayLayers:
    """The directories of one overlay mount, paths as the mounting process named them."""

    upper: bytes
    lowers: tuple[bytes, ...]
    userxattr: bool


def _unescape(raw: bytes) -> bytes:
    return _OCTAL.sub(lambda match: bytes([int(match.group(1), 8)]), raw)


def parse_mountinfo(text: bytes) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(b" ")
        # Optional fields (shared:N, master:N, ...) sit between the sixth field and "-".
        if b"-" not in fields[6:]:
            continue
        separator = fields.index(b"-", 6)
        if len(fields) < separator + 4:
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


def topmost_at(entries: list[MountEntry], mount_point: bytes) -> MountEntry | None:
    """The mount on top at ``mount_point`` (later entries are mounted over earlier ones)."""
    matches = [entry for entry in entries if entry.mount_point == mount_point]
    return matches[-1] if matches else None


def overlay_layers(entry: MountEntry) -> OverlayLayers:
    """The layers of one overlay mount, as its super options name them."""
    if entry.fstype != "overlay":
        raise NotOverlay(
            f"the container's root filesystem is {entry.fstype}, not overlay: "
            "only overlay snapshotters are supported"
        )
    upper = None
    lowers: list[bytes] = []
    userxattr = False
    for option in _split_options(entry.super_options):
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
    return OverlayLayers(upper, tuple(lowers), userxattr)


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
