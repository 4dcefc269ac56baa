"""PAX headers, checked by reading them back with Python's tarfile (an independent reader)."""

from __future__ import annotations

import io
import tarfile

import pytest

from lamina.snapshot.tarformat import (
    DIRECTORY,
    REGULAR,
    SYMLINK,
    TarHeader,
    UnsafePaxKey,
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


def test_an_xattr_name_with_equals_is_refused_not_mangled() -> None:
    with pytest.raises(UnsafePaxKey, match="cannot contain '=' or NUL"):
        encode_header(TarHeader(b"f", REGULAR, xattrs={"user.a=b": b"v"}))


def test_why_equals_is_refused_a_reader_splits_the_record_at_the_first_equals() -> None:
    """What a writer that pasted the name in would produce, as an independent reader sees it:
    a different attribute (``user.a``) with a different value (``b=v``)."""
    record = b" SCHILY.xattr.user.a=b=v\n"
    record = str(len(record) + 2).encode() + record
    pax = TarHeader(b"././@PaxHeader", b"x", size=len(record))
    raw = encode_header(pax) + record + padding(len(record))
    raw += encode_header(TarHeader(b"f", REGULAR)) + end_of_archive()
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        [info] = archive.getmembers()
    assert info.pax_headers == {"SCHILY.xattr.user.a": "b=v"}


def test_names_that_a_pax_record_can_carry_round_trip_through_tarfile() -> None:
    odd = {"user.%3D": b"percent", "user.new\nline": b"\n=\n", "user.sp ace": b"=", "user.e": b""}
    [info] = read_back((TarHeader(b"f", REGULAR, xattrs=odd), b""))
    assert {k[len("SCHILY.xattr.") :]: v for k, v in info.pax_headers.items()} == {
        name: value.decode() for name, value in odd.items()
    }


@pytest.mark.parametrize("value_length", [0, 1, 80, 84, 85, 86, 980, 985, 986, 9980, 9986])
def test_pax_record_lengths_count_their_own_digits_at_every_boundary(value_length: int) -> None:
    [info] = read_back((TarHeader(b"f", REGULAR, xattrs={"user.v": b"v" * value_length}), b""))
    assert info.pax_headers["SCHILY.xattr.user.v"] == "v" * value_length


def test_a_path_far_beyond_path_max_is_one_pax_record() -> None:
    deep = b"d/" * 20_000 + b"leaf"
    [info] = read_back((TarHeader(deep, REGULAR, size=2), b"ok"))
    assert info.name.encode() == deep and info.size == 2
