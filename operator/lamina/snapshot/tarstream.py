"""The layer tar as a stream of byte pieces, read file by file, never whole in memory.

Small members (headers, small files) are gathered into one buffer of ``piece_size`` bytes so
the consumers downstream (hashing, compression) see large pieces; a large file is read in
pieces of the same size straight from the kernel.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator

from lamina.snapshot.tarformat import encode_header, end_of_archive, padding
from lamina.snapshot.upper import FileContent, Member

PIECE_SIZE = 1 << 20
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ChangedWhileReading(Exception):
    """A file was replaced by something else between listing and reading it."""


def tar_pieces(members: Iterable[Member], piece_size: int = PIECE_SIZE) -> Iterator[bytes]:
    """The archive's bytes, in pieces of about ``piece_size`` bytes."""
    pending = bytearray()
    for member in members:
        pending += encode_header(member.header)
        if member.content is not None and member.content.size:
            if len(pending) + member.content.size <= piece_size:
                pending += _read_small(member.content)
            else:
                if pending:
                    yield bytes(pending)
                    pending.clear()
                yield from _read_large(member.content, piece_size)
            pending += padding(member.content.size)
        if len(pending) >= piece_size:
            yield bytes(pending)
            pending.clear()
    pending += end_of_archive()
    yield bytes(pending)


def _open(content: FileContent) -> int:
    fd = os.open(content.name, _FILE_FLAGS, dir_fd=content.dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_ino != content.inode:
        os.close(fd)
        raise ChangedWhileReading(
            f"{os.fsdecode(content.name)!r} was replaced while the layer was read; "
            "commit with --pause to freeze the container"
        )
    return fd


def _read_small(content: FileContent) -> bytes:
    fd = _open(content)
    try:
        return _exactly(fd, content.size)
    finally:
        os.close(fd)


def _read_large(content: FileContent, piece_size: int) -> Iterator[bytes]:
    fd = _open(content)
    try:
        remaining = content.size
        while remaining:
            piece = _exactly(fd, min(piece_size, remaining))
            remaining -= len(piece)
            yield piece
    finally:
        os.close(fd)


def _exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``; a file that shrank meanwhile reads as zeros past its end.

    The header already announced the size seen when the directory was listed, so the member
    must have exactly that many bytes for the archive to stay well-formed.
    """
    data = os.read(fd, size)
    if len(data) == size:
        return data
    chunks = [data]
    got = len(data)
    while got < size:
        more = os.read(fd, size - got)
        if not more:
            chunks.append(bytes(size - got))
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)
