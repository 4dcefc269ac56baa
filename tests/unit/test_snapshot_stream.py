"""The one-pass stream: the digests it reports are those of the bytes it produced."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from lamina.snapshot.stream import LayerStream
from lamina.snapshot.upper import UpperWalk


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
