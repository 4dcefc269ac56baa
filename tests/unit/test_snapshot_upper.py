"""The upperdir rules, on plain directories laid out the way overlayfs leaves them.

Overlay's markers (whiteout devices, ``trusted.overlay.*``) are created by hand here, so these
need root (mknod, trusted xattrs); the integration tier makes the same layouts through a real
overlay mount.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from lamina.snapshot.upper import Member, UnsupportedOverlay, UpperWalk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mknod and trusted.* xattrs need root")


def whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))


def touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def names(walk: UpperWalk) -> list[str]:
    return [os.fsdecode(member.header.name) for member in walk.members()]


def members(walk: UpperWalk) -> dict[str, Member]:
    return {os.fsdecode(m.header.name): m for m in walk.members()}


def test_whiteouts_only_for_what_exists_below(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    touch(lower / "etc" / "gone")
    whiteout(upper / "etc" / "gone")
    whiteout(upper / "etc" / "never-existed")
    assert names(UpperWalk.create(upper, [lower])) == ["etc/", "etc/.wh.gone"]


def test_whiteouts_sharing_one_inode_are_not_hardlinks(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    touch(lower / "a")
    touch(lower / "b")
    whiteout(upper / "a")
    os.link(upper / "a", upper / "b")
    found = members(UpperWalk.create(upper, [lower]))
    assert list(found) == [".wh.a", ".wh.b"]
    assert all(m.header.typeflag == b"0" and not m.header.linkname for m in found.values())


def test_opaque_marker_only_when_a_directory_exists_below(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    touch(lower / "was-dir" / "x")
    touch(lower / "was-file")
    for name in ("was-dir", "was-file", "new-dir"):
        (upper / name).mkdir(parents=True)
        os.setxattr(upper / name, "trusted.overlay.opaque", b"y")
    touch(upper / "was-dir" / "fresh")
    assert names(UpperWalk.create(upper, [lower])) == [
        "new-dir/",
        "was-dir/",
        "was-dir/.wh..wh..opq",
        "was-dir/fresh",
        "was-file/",
    ]


def test_user_overlay_markers_count_only_with_userxattr(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    touch(lower / "d" / "x")
    (upper / "d").mkdir(parents=True)
    os.setxattr(upper / "d", "user.overlay.opaque", b"y")
    assert names(UpperWalk.create(upper, [lower], userxattr=True)) == ["d/", "d/.wh..wh..opq"]
    plain = members(UpperWalk.create(upper, [lower]))
    assert list(plain) == ["d/"]
    assert plain["d/"].header.xattrs == {}  # user.overlay.* is never emitted


def test_lookup_stops_at_a_lower_whiteout_opaque_dir_or_file(tmp_path: Path) -> None:
    upper, top, bottom = tmp_path / "upper", tmp_path / "top", tmp_path / "bottom"
    touch(bottom / "hidden" / "f")
    whiteout(top / "hidden")  # deleted in the top lower: nothing below to hide
    touch(bottom / "opq" / "f")
    (top / "opq").mkdir()
    os.setxattr(top / "opq", "trusted.overlay.opaque", b"y")
    touch(bottom / "file-over-dir" / "f")
    touch(top / "file-over-dir")
    whiteout(upper / "hidden")
    whiteout(upper / "opq" / "f")
    whiteout(upper / "file-over-dir" / "f")
    assert names(UpperWalk.create(upper, [top, bottom])) == ["file-over-dir/", "opq/"]
    touch(top / "opq" / "f")  # now something is there to hide
    assert names(UpperWalk.create(upper, [top, bottom])) == ["file-over-dir/", "opq/", "opq/.wh.f"]


def test_symlinks_in_lower_dirs_are_never_followed(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    lower.mkdir()
    os.symlink("/", lower / "escape")  # lower's "escape" is a symlink to the host's root
    whiteout(upper / "escape" / "etc")  # would be "found" if the link were followed
    assert names(UpperWalk.create(upper, [lower])) == ["escape/"]


def test_links_fifos_devices_sockets_and_xattrs(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    touch(upper / "a", "data")
    os.link(upper / "a", upper / "b")
    os.symlink("/etc/shadow", upper / "link")
    os.mkfifo(upper / "fifo")
    os.mknod(upper / "null", 0o666 | 0o020000, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(upper / "sock"))
    os.setxattr(upper / "a", "user.keep", b"1")
    os.setxattr(upper / "a", "trusted.drop", b"1")
    os.setxattr(upper / "a", "user.overlay.drop", b"1")
    found = members(UpperWalk.create(upper))
    assert list(found) == ["a", "b", "fifo", "link", "null"]
    assert found["a"].header.xattrs == {"user.keep": b"1"}
    assert (found["b"].header.typeflag, found["b"].header.linkname) == (b"1", b"a")
    assert (found["link"].header.typeflag, found["link"].header.linkname) == (b"2", b"/etc/shadow")
    assert found["fifo"].header.typeflag == b"6"
    null = found["null"].header
    assert (null.typeflag, null.devmajor, null.devminor) == (b"3", 1, 3)


def test_excluded_paths_and_mount_target_stubs_are_left_out(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    touch(upper / "etc" / "hosts")
    touch(upper / "etc" / "keep")
    touch(upper / "secret" / "token")
    (upper / "data").mkdir()
    walk = UpperWalk.create(
        upper, exclude=["/secret/"], mount_targets=["/etc/hosts", "/data", "/proc"]
    )
    assert names(walk) == ["data/", "etc/", "etc/keep"]


def test_redirect_is_refused_with_the_path_and_the_reason(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(UnsupportedOverlay, match=r"/moved carries trusted\.overlay\.redirect"):
        list(UpperWalk.create(upper).members())


def test_entries_are_sorted_bytewise_depth_first(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    for name in ("b", "a-b", "a/z", "a/c", "B"):
        touch(upper / name)
    assert names(UpperWalk.create(upper)) == ["B", "a/", "a/c", "a/z", "a-b", "b"]
