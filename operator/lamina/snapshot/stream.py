"""One pass over the upperdir: tar, diff_id, compression, digest, handed to an async consumer.

The threads, and why (2 cores, ISA-L gzip level 1 at ~290 MB/s per core):

- a *producer* thread walks the upperdir, reads files and builds the tar; it hashes the
  uncompressed bytes (the diff_id) as it goes (``hashlib`` releases the GIL on large buffers);
- compression runs in ISA-L's own worker threads (``isal.igzip_threaded``, pigz-style blocks
  with a 32 KiB dictionary carried over, one gzip member) or zstd's native worker threads;
  both release the GIL, so they use the second core while the producer reads the next files;
- the compressed bytes are hashed (the layer digest) and put on a bounded queue, from which
  the asyncio loop sends them to the registry.

Memory is bounded by the queues, not the layer: at most ``QUEUE_PIECES`` compressed pieces
wait for the uploader, and the compressor holds a few 1 MiB blocks.  When the consumer stops
(the upload failed), the queue is closed and the producer unwinds at its next write.

A refusal in the producer (a name forged to look like a whiteout, a file that changed while
it was read) ends the stream: the consumer raises that error, so the upload is abandoned before
a blob is committed and no manifest is pushed.

This module knows nothing about registries: the consumer is any ``async for`` loop, and the
digests are read from :attr:`LayerStream.result` once the stream is exhausted.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal, cast

import zstandard
from isal import igzip_threaded

from lamina.snapshot.tarstream import PIECE_SIZE, tar_pieces
from lamina.snapshot.upper import Member, UpperWalk

Compression = Literal["gzip", "zstd"]
QUEUE_PIECES = 4
GZIP_LEVEL = 1
ZSTD_LEVEL = 3
_DONE = object()


class StreamClosed(Exception):
    """The consumer went away; the producer stops."""


@dataclass(frozen=True)
class LayerDigests:
    """What the registry and the image config need to know about the layer."""

    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    entries: int
    compression: Compression
    seconds: float


class _CompressedSink(io.RawIOBase):
    """Receives compressed bytes (in a compressor thread), hashes them, queues them."""

    def __init__(self, pieces: queue.Queue[Any], closed: threading.Event) -> None:
        super().__init__()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._pieces = pieces
        self._closed_by_consumer = closed

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        piece = bytes(data)
        if not piece:
            return 0
        self.sha256.update(piece)
        self.size += len(piece)
        while True:
            if self._closed_by_consumer.is_set():
                raise StreamClosed("the layer's consumer stopped")
            try:
                self._pieces.put(piece, timeout=0.1)
                return len(piece)
            except queue.Full:
                continue


class LayerStream:
    """The compressed layer of one upperdir walk, as an async iterator of byte pieces."""

    def __init__(
        self,
        walk: UpperWalk,
        *,
        compression: Compression = "gzip",
        threads: int = 2,
        piece_size: int = PIECE_SIZE,
    ) -> None:
        self.walk = walk
        self.compression: Compression = compression
        self.threads = max(1, threads)
        self.piece_size = piece_size
        self._pieces: queue.Queue[Any] = queue.Queue(QUEUE_PIECES)
        self._closed = threading.Event()
        self._result: LayerDigests | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def result(self) -> LayerDigests:
        if self._result is None:
            raise RuntimeError("the layer stream has not been read to its end")
        return self._result

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._consume()

    async def _consume(self) -> AsyncIterator[bytes]:
        self._thread = threading.Thread(target=self._produce, name="lamina-layer", daemon=True)
        self._thread.start()
        loop = asyncio.get_running_loop()
        try:
            while True:
                piece = await loop.run_in_executor(None, self._pieces.get)
                if piece is _DONE:
                    break
                yield piece
        finally:
            self._closed.set()
            await loop.run_in_executor(None, self._thread.join)
        if self._error is not None:
            raise self._error

    def _produce(self) -> None:
        sink = _CompressedSink(self._pieces, self._closed)
        diff = hashlib.sha256()
        uncompressed = 0
        members = _Counted(self.walk.members())
        started = time.monotonic()
        try:
            with self._compressor(sink) as compressor:
                for piece in tar_pieces(members, self.piece_size):
                    diff.update(piece)
                    uncompressed += len(piece)
                    compressor.write(piece)
            self._result = LayerDigests(
                diff_id="sha256:" + diff.hexdigest(),
                digest="sha256:" + sink.sha256.hexdigest(),
                size=sink.size,
                uncompressed_size=uncompressed,
                entries=members.count,
                compression=self.compression,
                seconds=time.monotonic() - started,
            )
        except BaseException as error:
            self._error = error
        finally:
            self._put_final()

    def _put_final(self) -> None:
        while not self._closed.is_set():
            try:
                self._pieces.put(_DONE, timeout=0.1)
                return
            except queue.Full:
                continue

    def _compressor(self, sink: _CompressedSink) -> Any:
        if self.compression == "zstd":
            params = zstandard.ZstdCompressor(
                level=ZSTD_LEVEL, threads=self.threads if self.threads > 1 else 0
            )
            return params.stream_writer(
                cast(IO[bytes], sink), closefd=False, write_return_read=True
            )
        return igzip_threaded.open(  # type: ignore[no-untyped-call]
            sink, "wb", compresslevel=GZIP_LEVEL, threads=self.threads, block_size=PIECE_SIZE
        )


class _Counted(Iterator[Member]):
    """Counts the members that pass through (the ``entries`` of the result)."""

    def __init__(self, members: Iterator[Member]) -> None:
        self._members = members
        self.count = 0

    def __next__(self) -> Member:
        member = next(self._members)
        self.count += 1
        return member
