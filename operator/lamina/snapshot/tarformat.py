"""PAX tar headers, written byte by byte.

Python's ``tarfile`` would do, but it wants ``str`` names and values: a non-UTF-8 file name or
a binary ``security.capability`` value has to survive an encode/decode round trip through
``surrogateescape``, and its PAX writer emits atime/ctime records we do not want (they make
two commits of the same files differ).  A layer needs only a handful of header shapes, so they
are encoded here directly from bytes, following POSIX.1-2001 ``pax``:

- names and link targets are raw bytes; when they do not fit the 100-byte ustar fields (or are
  not ASCII) a ``path``/``linkpath`` record carries them, with ``hdrcharset=BINARY`` when they
  are not valid UTF-8, as the standard prescribes;
- uid/gid and sizes that overflow their octal fields (files over 8 GiB) go into ``uid``/``gid``/
  ``size`` records; mtimes are whole seconds (``mtime`` record only when out of range);
- ``uname``/``gname`` stay empty: a layer must not carry the committing host's user names;
- extended attributes are ``SCHILY.xattr.<name>`` records, the form containerd, Docker, umoci
  and BuildKit read.  A record is ``<length> <key>=<value>\n`` and readers end the key at the
  first ``=``, so a key containing ``=`` (or NUL) is refused with :class:`UnsafePaxKey` rather
  than written as a different key (see :mod:`lamina.snapshot.xattrs`; the layer writer refuses
  such attributes earlier, naming the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCK = 512
REGULAR = b"0"
HARDLINK = b"1"
SYMLINK = b"2"
CHARDEV = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
PAX_HEADER = b"x"

_NAME_FIELD = 100
_OCTAL_7 = 0o7777777  # largest value of an 8-byte numeric field (7 digits + NUL)
_OCTAL_11 = 0o77777777777  # largest value of a 12-byte numeric field: 8 GiB - 1
_PAX_ENTRY_NAME = b"././@PaxHeader"
_END_OF_ARCHIVE = bytes(2 * BLOCK)


class UnsafePaxKey(ValueError):
    """A PAX record key that readers would split differently (it contains ``=`` or NUL)."""


@dataclass
class TarHeader:
    """One archive member's metadata; ``name`` and ``linkname`` are raw path bytes."""

    name: bytes
    typeflag: bytes
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


def padding(size: int) -> bytes:
    """Zero bytes that complete the last 512-byte block of a member of ``size`` bytes."""
    return bytes(-size % BLOCK)


def end_of_archive() -> bytes:
    return _END_OF_ARCHIVE


def encode_header(header: TarHeader) -> bytes:
    """The header block(s) of one member: a PAX extended header first when needed."""
    records: list[tuple[bytes, bytes]] = []
    binary = False
    name = header.name
    if len(name) > _NAME_FIELD or not name.isascii():
        records.append((b"path", name))
        binary |= not _is_utf8(name)
        name = _ascii_stand_in(name)
    linkname = header.linkname
    if len(linkname) > _NAME_FIELD or not linkname.isascii():
        records.append((b"linkpath", linkname))
        binary |= not _is_utf8(linkname)
        linkname = _ascii_stand_in(linkname)
    numbers = {"uid": header.uid, "gid": header.gid, "size": header.size, "mtime": header.mtime}
    limits = {"uid": _OCTAL_7, "gid": _OCTAL_7, "size": _OCTAL_11, "mtime": _OCTAL_11}
    for key, value in numbers.items():
        if not 0 <= value <= limits[key]:
            records.append((key.encode(), str(value).encode()))
            numbers[key] = 0
    for xattr_name in sorted(header.xattrs):
        records.append(
            (
                b"SCHILY.xattr." + xattr_name.encode("utf-8", "surrogateescape"),
                header.xattrs[xattr_name],
            )
        )
    if binary:
        records.insert(0, (b"hdrcharset", b"BINARY"))
    ustar = _ustar_block(
        name=name,
        mode=header.mode,
        uid=numbers["uid"],
        gid=numbers["gid"],
        size=numbers["size"],
        mtime=numbers["mtime"],
        typeflag=header.typeflag,
        linkname=linkname,
        devmajor=header.devmajor,
        devminor=header.devminor,
    )
    if not records:
        return ustar
    payload = b"".join(_pax_record(key, value) for key, value in records)
    pax = _ustar_block(
        name=_PAX_ENTRY_NAME,
        mode=0o644,
        uid=0,
        gid=0,
        size=len(payload),
        mtime=0,
        typeflag=PAX_HEADER,
        linkname=b"",
        devmajor=0,
        devminor=0,
    )
    return pax + payload + padding(len(payload)) + ustar


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``"<length> <key>=<value>\\n"``, where the length counts its own digits."""
    if not key or b"=" in key or b"\0" in key:
        raise UnsafePaxKey(f"a PAX record key cannot contain '=' or NUL: {key[:80]!r}")
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(len(body))):
        length += 1
    return str(length).encode() + body


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _ascii_stand_in(raw: bytes) -> bytes:
    """What the ustar field holds when a PAX record carries the real value.

    Readers that understand PAX ignore it; it is kept ASCII and short so those that do not
    still see something recognisable.
    """
    tail = raw.rstrip(b"/").rsplit(b"/", 1)[-1]
    stand_in = bytes(c if 0x20 <= c < 0x7F else 0x5F for c in tail)[: _NAME_FIELD - 1]
    return stand_in + (b"/" if raw.endswith(b"/") else b"")


def _numeric(value: int, width: int) -> bytes:
    """An octal field of ``width`` bytes; values too large for it use GNU base-256."""
    digits = width - 1
    if 0 <= value < 8**digits:
        return b"%0*o\0" % (digits, value)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _ustar_block(
    *,
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    devmajor: int,
    devminor: int,
) -> bytes:
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = _numeric(mode & 0o7777, 8)
    block[108:116] = _numeric(uid, 8)
    block[116:124] = _numeric(gid, 8)
    block[124:136] = _numeric(size, 12)
    block[136:148] = _numeric(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157 : 157 + len(linkname)] = linkname
    block[257:265] = b"ustar\x0000"
    # uname (265:297) and gname (297:329) stay empty on purpose.
    block[329:337] = _numeric(devmajor, 8)
    block[337:345] = _numeric(devminor, 8)
    checksum = sum(block)
    block[148:156] = b"%06o\0 " % checksum
    return bytes(block)
