"""The one-pass stream: the digests it reports are those of the bytes it produced."""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import hashlib
import io
import itertools
import os
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from lamina.snapshot.refusals import ChangedWhileReading
from lamina.snapshot.stream import LayerStream
from lamina.snapshot.tarstream import READ_ATTEMPTS, FileReader, tar_pieces
from lamina.snapshot.upper import ForgedWhiteout, UpperWalk


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("threads", [1, 2])
async def test_digests_sizes_and_content(tmp_path: Path, compression: str, threads: int) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "small").write_bytes(b"s" * 100)
    big = os.urandom(3 << 20)
    (tmp_path / "big").write_bytes(big)
    stream = LayerStream(UpperWalk.create(tmp_path), compression=compression, threads=threads)  # type: ignore[arg-type]
    compressed = bytearray()
    async for piece in stream:
        compressed += piece
    result = stream.result
    if compression == "gzip":
        raw = gzip.decompress(bytes(compressed))
    else:
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(bytes(compressed))
    assert result.digest == "sha256:" + hashlib.sha256(compressed).hexdigest()
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (result.size, result.uncompressed_size, result.entries) == (len(compressed), len(raw), 3)
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        assert archive.getnames() == ["big", "dir", "dir/small"]
        member = archive.extractfile("big")
        assert member is not None and member.read() == big


async def test_a_consumer_that_stops_early_stops_the_producer(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(16 << 20))
    stream = LayerStream(UpperWalk.create(tmp_path))
    async for _ in stream:
        break
    with pytest.raises(RuntimeError, match="not been read to its end"):
        _ = stream.result


def read_tar(raw: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        return {
            info.name: (archive.extractfile(info) or io.BytesIO()).read()
            for info in archive.getmembers()
            if info.isfile()
        }


class WriterDuringRead(FileReader):
    """A concurrent writer at the worst moment: right after the reader's ``n``-th read.

    ``change`` runs on the real file between two real reads; detection is the real code's.
    """

    def __init__(self, change: Callable[[], object], after_reads: int = 1, times: int = 1):
        self.change = change
        self.after_reads = after_reads
        self.times = times
        self.reads = 0

    def read(self, fd: int, size: int) -> bytes:
        data = super().read(fd, size)
        self.reads += 1
        if self.times and self.reads >= self.after_reads:
            self.times -= 1
            self.change()
        return data


def append(path: Path, data: bytes) -> Callable[[], None]:
    def change() -> None:
        with path.open("ab") as file:
            file.write(data)

    return change


def test_a_small_file_that_changes_during_its_read_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"first line\n")
    reader = WriterDuringRead(append(tmp_path / "log", b"second line\n"))
    raw = b"".join(tar_pieces(UpperWalk.create(tmp_path).members(), reader=reader))
    assert read_tar(raw) == {"log": b"first line\nsecond line\n"}  # never a mix
    assert reader.reads == 2


def test_a_small_file_that_keeps_changing_is_refused_after_bounded_attempts(
    tmp_path: Path,
) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "log").write_bytes(b"x")
    reader = WriterDuringRead(append(tmp_path / "var" / "log", b"more"), times=READ_ATTEMPTS)
    with pytest.raises(ChangedWhileReading) as refused:
        b"".join(tar_pieces(UpperWalk.create(tmp_path).members(), reader=reader))
    assert reader.reads == READ_ATTEMPTS
    assert str(refused.value).startswith(
        f'"/var/log" kept changing while it was read ({READ_ATTEMPTS} attempts, size 1 -> 13 bytes)'
    )
    assert "pause: true" in str(refused.value)


def truncate(path: Path, size: int) -> Callable[[], None]:
    return lambda: os.truncate(path, size)


def rewrite(path: Path) -> Callable[[], None]:
    def change() -> None:
        time.sleep(0.01)  # a later timer tick, for kernels without fine-grained ctime
        with path.open("r+b") as file:
            file.write(b"NEW")

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: truncate(p, 5000), "shrank while it was read (40000 bytes when opened, 5000"),
        (lambda p: append(p, b"!" * 10), "changed while it was read (size 40000 -> 40010 bytes)"),
        (rewrite, "changed while it was read (size 40000 -> 40000 bytes)"),
    ],
)
def test_a_streamed_file_that_changes_during_its_read_is_refused(
    tmp_path: Path, change: Callable[[Path], Callable[[], None]], message: str
) -> None:
    """Its first bytes are already in the layer, so it cannot be read again."""
    (tmp_path / "big").write_bytes(b"a" * 40_000)
    reader = WriterDuringRead(change(tmp_path / "big"))
    pieces = tar_pieces(UpperWalk.create(tmp_path).members(), piece_size=4096, reader=reader)
    with pytest.raises(ChangedWhileReading) as refused:
        b"".join(pieces)
    assert str(refused.value).startswith(f'"/big" {message}')


def test_a_file_changed_between_listing_and_reading_is_stored_as_read(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"listed")
    (tmp_path / "b").write_bytes(b"x" * 10_000)
    members = UpperWalk.create(tmp_path).members()
    first = next(members)
    assert first.content is not None and first.content.size == 6
    (tmp_path / "a").write_bytes(b"rewritten after the listing")
    os.truncate(tmp_path / "b", 3)
    raw = b"".join(tar_pieces(itertools.chain([first], members), piece_size=4096))
    assert read_tar(raw) == {"a": b"rewritten after the listing", "b": b"xxx"}


def test_a_file_replaced_or_deleted_after_listing_is_refused_with_its_path(
    tmp_path: Path,
) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "a").write_bytes(b"1")
    [member] = UpperWalk.create(upper).members()
    (upper / "a").rename(tmp_path / "held")  # kept alive: its inode number is not reused
    with pytest.raises(ChangedWhileReading, match=r'^"/a" was deleted or replaced'):
        b"".join(tar_pieces([member]))
    (upper / "a").write_bytes(b"another inode")
    with pytest.raises(ChangedWhileReading, match=r'^"/a" was replaced'):
        b"".join(tar_pieces([member]))
    (upper / "a").unlink()
    (upper / "a").symlink_to("/etc/shadow")
    with pytest.raises(ChangedWhileReading, match=r'^"/a" was replaced'):
        b"".join(tar_pieces([member]))  # O_NOFOLLOW: the link is never followed


IN_OPEN = 0x20


def opens_seen(watched: Path) -> Callable[[], int]:
    """How many times ``watched`` was opened from now on (inotify ``IN_OPEN``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    events = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert events >= 0 and libc.inotify_add_watch(events, bytes(watched), IN_OPEN) >= 0

    def count() -> int:
        seen = 0
        with contextlib.suppress(BlockingIOError):
            while data := os.read(events, 4096):
                seen += len(data) // 16  # struct inotify_event with no name
        return seen

    return count


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
@pytest.mark.parametrize("node", ["fifo", "char-device"])
def test_a_special_file_swapped_in_after_listing_is_refused_without_being_opened(
    tmp_path: Path, node: str
) -> None:
    (tmp_path / "data").write_bytes(b"listed as a regular file")
    [member] = UpperWalk.create(tmp_path).members()
    (tmp_path / "data").unlink()
    if node == "fifo":
        os.mkfifo(tmp_path / "data")
    else:
        os.mknod(tmp_path / "data", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    opened = opens_seen(tmp_path / "data")
    with pytest.raises(ChangedWhileReading, match=r'^"/data" was replaced'):
        b"".join(tar_pieces([member]))
    assert opened() == 0  # a device's driver never ran: not even open(2) reached it
    os.close(os.open(tmp_path / "data", os.O_RDONLY | os.O_NONBLOCK))
    assert opened() == 1  # (the watch does see an open)


async def test_a_refusal_reaches_the_streams_consumer(tmp_path: Path) -> None:
    (tmp_path / ".wh.etc").write_bytes(b"")
    stream = LayerStream(UpperWalk.create(tmp_path))
    with pytest.raises(ForgedWhiteout, match=r'^"/\.wh\.etc" is a file named like a whiteout'):
        async for _ in stream:
            pass
