"""The layer tar as a stream of byte pieces, read file by file, never whole in memory.

Small members (headers, small files) are gathered into one buffer of ``piece_size`` bytes so
the consumers downstream (hashing, compression) see large pieces; a large file is read in
pieces of the same size straight from the kernel.

A commit that does not freeze the container reads files the container may be writing.  A tar
member announces its size before its data, so a file that grows, shrinks or is rewritten during
its read would be stored as a mix of old data, new data and zeros.  Each file is therefore read
between two ``fstat`` calls on the open descriptor, and its member is written only if size,
mtime and ctime did not move and every byte announced was read:

- the header describes the file as it was when it was *opened* (not when its directory was
  listed), so a change made before that is simply captured;
- a file of at most ``piece_size`` bytes is read whole before its header is written, so when
  it changed it is read again, up to :data:`READ_ATTEMPTS` times, then refused;
- a larger file streams (memory stays bounded), so once its first bytes are in the layer it
  cannot be read again: a change is refused at once.

A refusal is :class:`ChangedWhileReading`, naming the path; nothing is pushed.  Kernels with
fine-grained timestamps (Linux 6.13+ on ext4, xfs, btrfs, tmpfs) change ctime on every write
after an ``fstat``; on older ones a same-size rewrite within one timer tick can go unseen, as
it does for GNU tar's "file changed as we read it".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator

from lamina.snapshot.dirs import open_at
from lamina.snapshot.refusals import ChangedWhileReading, shown
from lamina.snapshot.tarformat import TarHeader, encode_header, end_of_archive, padding
from lamina.snapshot.upper import FileContent, Member

PIECE_SIZE = 1 << 20
READ_ATTEMPTS = 3
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_HINT = "freeze the container (pause: true, the default) or exclude the path"

__all__ = ["PIECE_SIZE", "READ_ATTEMPTS", "ChangedWhileReading", "FileReader", "tar_pieces"]


def tar_pieces(
    members: Iterable[Member], piece_size: int = PIECE_SIZE, reader: FileReader | None = None
) -> Iterator[bytes]:
    """The archive's bytes, in pieces of about ``piece_size`` bytes."""
    files = reader or FileReader()
    pending = bytearray()
    for member in members:
        if member.content is None:
            pending += encode_header(member.header)
        else:
            for piece in files.member_pieces(member.header, member.content, piece_size):
                if len(piece) >= piece_size:
                    if pending:
                        yield bytes(pending)
                        pending.clear()
                    yield piece
                else:
                    pending += piece
        if len(pending) >= piece_size:
            yield bytes(pending)
            pending.clear()
    pending += end_of_archive()
    yield bytes(pending)


class FileReader:
    """Reads regular files into consistent members (see the module's docstring)."""

    attempts = READ_ATTEMPTS

    def read(self, fd: int, size: int) -> bytes:
        """One ``read(2)``.  The only seam: tests override it to change the file mid-read."""
        return os.read(fd, size)

    def member_pieces(
        self, header: TarHeader, content: FileContent, piece_size: int
    ) -> Iterator[bytes]:
        """Header, data and padding of one regular file."""
        path = header.name
        sizes: list[int] = []
        for _ in range(self.attempts):
            fd, before = self._open(content, path)
            try:
                _as_opened(header, before)
                if before.st_size > piece_size:
                    yield encode_header(header)
                    yield from self._streamed(fd, before, path, piece_size)
                    yield padding(before.st_size)
                    return
                data = self._exactly(fd, before.st_size)
                after = os.fstat(fd)
            finally:
                os.close(fd)
            if len(data) == before.st_size and _unchanged(before, after):
                yield b"".join((encode_header(header), data, padding(before.st_size)))
                return
            sizes += [before.st_size, after.st_size]
        raise ChangedWhileReading(
            f"{shown(path)} kept changing while it was read ({self.attempts} attempts, size "
            f"{sizes[0]} -> {sizes[-1]} bytes): an unpaused commit cannot store it "
            f"consistently; {_HINT}"
        )

    def _open(self, content: FileContent, path: bytes) -> tuple[int, os.stat_result]:
        """The listed regular file, open for reading, and its ``fstat``.

        The name is first opened with ``O_PATH | O_NOFOLLOW``, which opens nothing: a symlink,
        FIFO or device node the container swapped in since the listing is seen by ``fstat``
        and refused without ever being opened (opening a device runs its driver: a watchdog
        node would arm the host's watchdog).  Only the verified inode is then opened for
        reading, through ``/proc/self/fd``.
        """
        try:
            handle = os.open(content.name, _PATH_FLAGS, dir_fd=content.directory.fd())
        except FileNotFoundError as error:
            raise ChangedWhileReading(
                f"{shown(path)} was deleted or replaced while the layer was read; {_HINT}"
            ) from error
        try:
            st = os.fstat(handle)
            if not stat.S_ISREG(st.st_mode) or st.st_ino != content.inode:
                raise ChangedWhileReading(
                    f"{shown(path)} was replaced while the layer was read; {_HINT}"
                )
            fd = open_at(None, b"/proc/self/fd/%d" % handle, _READ_FLAGS)
        finally:
            os.close(handle)
        return fd, st

    def _streamed(
        self, fd: int, before: os.stat_result, path: bytes, piece_size: int
    ) -> Iterator[bytes]:
        remaining = before.st_size
        while remaining:
            wanted = min(piece_size, remaining)
            piece = self._exactly(fd, wanted)
            if len(piece) < wanted:
                got = before.st_size - remaining + len(piece)
                raise ChangedWhileReading(
                    f"{shown(path)} shrank while it was read ({before.st_size} bytes when "
                    f"opened, {got} readable): an unpaused commit cannot store it "
                    f"consistently; {_HINT}"
                )
            remaining -= wanted
            yield piece
        after = os.fstat(fd)
        if not _unchanged(before, after):
            raise ChangedWhileReading(
                f"{shown(path)} changed while it was read (size {before.st_size} -> "
                f"{after.st_size} bytes): an unpaused commit cannot store it consistently; "
                f"{_HINT}"
            )

    def _exactly(self, fd: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``fd``: fewer only when the file ends sooner."""
        data = self.read(fd, size)
        if len(data) == size or not data:
            return data
        chunks = [data]
        got = len(data)
        while got < size:
            more = self.read(fd, size - got)
            if not more:
                break
            chunks.append(more)
            got += len(more)
        return b"".join(chunks)


def _as_opened(header: TarHeader, st: os.stat_result) -> None:
    """The listed header takes the size, time, mode and owner of the file as opened.

    (In place: the header is this member's own, made by the walk for it alone.)
    """
    header.size = st.st_size
    header.mtime = st.st_mtime_ns // 1_000_000_000
    header.mode = stat.S_IMODE(st.st_mode)
    header.uid = st.st_uid
    header.gid = st.st_gid


def _unchanged(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )
