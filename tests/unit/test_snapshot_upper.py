"""The upperdir rules, on plain directories laid out the way overlayfs leaves them.

Overlay's markers (whiteout devices, ``trusted.overlay.*``) are created by hand here, so these
need root (mknod, trusted xattrs); the integration tier makes the same layouts through a real
overlay mount.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.snapshot.refusals import ChangedWhileReading
from lamina.snapshot.upper import (
    ForgedWhiteout,
    Member,
    UnrepresentableXattr,
    UnsupportedOverlay,
    UpperWalk,
)

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


@pytest.mark.parametrize(
    ("forged", "effect"),
    [
        ("etc/.wh.passwd", 'deleting "/etc/passwd"'),
        (".wh.etc", 'deleting "/etc"'),
        ("etc/.wh..wh..opq", 'hiding everything the image has in "/etc"'),
        ("etc/.wh..wh.plnk", "overlay metadata"),
    ],
)
def test_files_named_like_whiteouts_are_refused_with_the_path(
    tmp_path: Path, forged: str, effect: str
) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    touch(lower / "etc" / "passwd", "root:x:0:0")
    touch(upper / "etc" / "keep")
    touch(upper / forged, "created by the container")
    with pytest.raises(ForgedWhiteout) as refused:
        list(UpperWalk.create(upper, [lower]).members())
    message = str(refused.value)
    assert message.startswith(f'"/{forged}" is a file named like a whiteout (prefix .wh.)')
    assert effect in message
    assert "created by the container" not in message  # never the contents
    assert "Lamina refuses to write it" in message


@pytest.mark.parametrize(
    ("kind", "shown_as"), [("dir", "directory"), ("link", "symlink"), ("fifo", "file")]
)
def test_any_kind_of_entry_named_like_a_whiteout_is_refused(
    tmp_path: Path, kind: str, shown_as: str
) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    forged = upper / ".wh.data"
    if kind == "dir":
        forged.mkdir()
    elif kind == "link":
        forged.symlink_to("/")
    else:
        os.mkfifo(forged)
    with pytest.raises(
        ForgedWhiteout, match=rf'^"/\.wh\.data" is a {shown_as} named like a whiteout'
    ):
        list(UpperWalk.create(upper).members())


def test_a_real_whiteout_of_a_wh_name_emits_nothing_unless_it_hides_something(
    tmp_path: Path,
) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    lower.mkdir()
    whiteout(upper / ".wh.odd")
    assert names(UpperWalk.create(upper, [lower])) == []
    touch(lower / ".wh.odd")  # a lower that itself holds a ".wh." name: no layer can say that
    with pytest.raises(ForgedWhiteout, match=r'"/\.wh\.odd" is a whiteout device named like'):
        list(UpperWalk.create(upper, [lower]).members())


def test_an_excluded_wh_name_is_just_left_out(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    touch(upper / "cache" / ".wh.x")
    touch(upper / "keep")
    assert names(UpperWalk.create(upper, exclude=["/cache"])) == ["keep"]


def test_a_hostile_name_is_shown_escaped_and_short(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / os.fsdecode(b".wh.\x1b[2J\n" + b"x" * 240)).write_text("")
    with pytest.raises(ForgedWhiteout) as refused:
        list(UpperWalk.create(upper).members())
    message = str(refused.value)
    assert message.startswith('"/.wh.\\x1b[2J\\x0axxx')
    assert "\n" not in message and "\x1b" not in message
    assert "..." in message and len(message) < 400


def make_chain(root: Path, depth: int, name: bytes) -> None:
    """``root/name/name/...`` ``depth`` levels deep, made relative to descriptors (the path
    is far too long for any call that takes a path)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open(b"leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"at the bottom")
        os.close(leaf)
        os.mknod(b"gone", 0o600 | 0o020000, os.makedev(0, 0), dir_fd=fd)
    finally:
        os.close(fd)


@pytest.fixture
def deep_tmp(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, emptied with ``rm -rf`` afterwards: pytest's own cleanup (shutil.rmtree)
    recurses once per level and cannot remove the trees these tests make."""
    yield tmp_path
    subprocess.run(["rm", "-rf", "--", str(tmp_path)], check=True)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_tree_deeper_than_the_stack_and_longer_than_path_max_walks_in_few_descriptors(
    deep_tmp: Path,
) -> None:
    upper, lower = deep_tmp / "upper", deep_tmp / "lower"
    name, depth = b"n" * 40, 1200
    make_chain(upper, depth, name)  # 1200 levels, a 49 KB path: RecursionError, ENAMETOOLONG
    make_chain(lower, depth, name)  # the same path exists below: "gone" there is a real file
    fd = os.open(lower, os.O_RDONLY)
    for _ in range(depth):
        child = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.unlink(b"gone", dir_fd=fd)
    os.close(os.open(b"gone", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    baseline = open_fds()
    most = 0
    found: list[Member] = []
    for member in UpperWalk.create(upper, [lower], max_open_dirs=4).members():
        most = max(most, open_fds() - baseline)
        found.append(member)
    assert most <= 4
    # At most the baseline: another test's garbage may close a descriptor meanwhile.
    assert open_fds() <= baseline  # nothing leaked
    deepest = (name + b"/") * depth
    assert len(found) == depth + 2
    assert [m.header.name for m in found[-2:]] == [deepest + b".wh.gone", deepest + b"leaf"]
    assert found[-1].content is not None and found[-1].content.size == len(b"at the bottom")


def test_a_directory_swapped_for_a_symlink_while_walked_is_never_followed(
    tmp_path: Path,
) -> None:
    upper = tmp_path / "upper"
    touch(upper / "a" / "x")
    touch(upper / "b" / "y")
    walk = UpperWalk.create(upper).members()
    assert next(walk).header.name == b"a/"  # "b" is listed, not yet opened
    os.rename(upper / "b", tmp_path / "b-elsewhere")
    os.symlink("/etc", upper / "b")
    assert next(walk).header.name == b"a/x"
    with pytest.raises(ChangedWhileReading, match=r'directory "/b" was moved or replaced'):
        next(walk)


def test_a_directory_replaced_after_its_descriptor_was_recycled_is_detected(
    tmp_path: Path,
) -> None:
    upper = tmp_path / "upper"
    for path in ("d/e/f/g/h", "d/z"):
        touch(upper / path)
    walk = UpperWalk.create(upper, max_open_dirs=2).members()
    assert [next(walk).header.name for _ in range(5)] == [
        b"d/",
        b"d/e/",
        b"d/e/f/",
        b"d/e/f/g/",
        b"d/e/f/g/h",
    ]  # "d" was closed to stay within two descriptors; it must be reopened to go on
    os.rename(upper / "d", tmp_path / "old-d")
    (upper / "d").mkdir()
    with pytest.raises(ChangedWhileReading, match=r'directory "/d" was moved or replaced'):
        list(walk)


def test_an_xattr_name_with_equals_is_refused_with_the_path_and_name(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    touch(upper / "data" / "f")
    os.setxattr(upper / "data" / "f", "user.a=b", b"secret value")
    with pytest.raises(UnrepresentableXattr) as refused:
        list(UpperWalk.create(upper).members())
    message = str(refused.value)
    assert message.startswith('"/data/f" has the extended attribute "user.a=b", whose name')
    assert "secret value" not in message


def test_an_equals_sign_in_an_attribute_the_layer_drops_is_harmless(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    touch(upper / "f")
    os.setxattr(upper / "f", "trusted.a=b", b"host policy")
    os.setxattr(upper / "f", "user.kept", b"1")
    assert members(UpperWalk.create(upper))["f"].header.xattrs == {"user.kept": b"1"}
