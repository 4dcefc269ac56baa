"""PAX headers, checked by reading them back with Python's tarfile (an independent reader)."""

from __future__ import annotations

import io
import tarfile

from lamina.snapshot.tarformat import (
    DIRECTORY,
    REGULAR,
    SYMLINK,
    TarHeader,
    encode_header,
    end_of_archive,
    padding,
)


def read_back(*members: tuple[TarHeader, bytes]) -> list[tarfile.TarInfo]:
    raw = b"".join(encode_header(h) + data + padding(len(data)) for h, data in members)
    with tarfile.open(
        fileobj=io.BytesIO(raw + end_of_archive()), encoding="utf-8", errors="surrogateescape"
    ) as archive:
        return archive.getmembers()


def test_plain_member_has_numeric_owner_and_no_user_names() -> None:
    [info] = read_back((TarHeader(b"etc/motd", REGULAR, 0o644, 1000, 1001, 3, 1700000000), b"hi\n"))
    assert (info.name, info.mode, info.uid, info.gid, info.size) == (
        "etc/motd",
        0o644,
        1000,
        1001,
        3,
    )
    assert (info.uname, info.gname) == ("", "")
    assert info.mtime == 1700000000
    assert info.pax_headers == {}


def test_long_and_non_utf8_names_and_link_targets_go_into_pax_records() -> None:
    long_name = b"d/" + b"x" * 300
    odd = b"caf\xe9"
    infos = read_back(
        (TarHeader(long_name, REGULAR), b""),
        (TarHeader(odd, SYMLINK, linkname=b"/" + b"t" * 150), b""),
        (TarHeader(b"dir/", DIRECTORY, 0o755), b""),
    )
    assert infos[0].name.encode() == long_name
    assert infos[1].name.encode("utf-8", "surrogateescape") == odd
    assert infos[1].pax_headers["hdrcharset"] == "BINARY"
    assert infos[1].linkname == "/" + "t" * 150
    assert infos[2].isdir()


def test_large_sizes_and_ids_use_pax_records() -> None:
    header = encode_header(TarHeader(b"huge", REGULAR, size=9 << 30, uid=3_000_000, gid=5))
    text = header[512:1024]
    assert b"size=9663676416\n" in text
    assert b"uid=3000000\n" in text
    assert b" gid=" not in text


def test_xattrs_are_schily_records_with_binary_values_kept() -> None:
    value = bytes(range(256))
    header = encode_header(TarHeader(b"f", REGULAR, xattrs={"user.bin": value, "user.a": b"1"}))
    payload = header[512 : 512 + int(header[124:135], 8)]
    assert b"SCHILY.xattr.user.bin=" + value + b"\n" in payload
    assert payload.index(b"user.a") < payload.index(b"user.bin")  # sorted: deterministic
    for record in (b"SCHILY.xattr.user.a=1\n",):
        line = payload[payload.index(record) - 3 : payload.index(record) + len(record)]
        assert int(line.split(b" ")[0]) == len(line)


def test_header_checksums_are_valid() -> None:
    block = encode_header(TarHeader(b"f", REGULAR, 0o600, size=1))
    stored = int(block[148:154], 8)
    assert stored == sum(block[:148]) + 8 * 32 + sum(block[156:512])
