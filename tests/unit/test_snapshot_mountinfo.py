"""Reading the shim's (the host's) mount table: the container's rootfs mount and its layers."""

from __future__ import annotations

import pytest

from lamina.snapshot.mountinfo import NotOverlay, overlay_layers, parse_mountinfo, topmost_at

SNAP = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
TASK = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
ID = "a" * 64
ROOT_OPTIONS = f"rw,lowerdir={SNAP}/12/fs:{SNAP}/11/fs,upperdir={SNAP}/13/fs,workdir={SNAP}/13/work"
# The host's table as the shim sees it: its root, /run, other containers' rootfs mounts, and
# this container's at <bundle>/rootfs (with propagation fields between the sixth field and -).
HOST = f"""\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:21 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
1700 25 0:160 / {TASK}/{"b" * 64}/rootfs rw,relatime shared:600 - overlay overlay rw,\
lowerdir={SNAP}/2/fs,upperdir={SNAP}/3/fs,workdir={SNAP}/3/work
1801 25 0:170 / {TASK}/{ID}/rootfs rw,relatime shared:640 - overlay overlay {ROOT_OPTIONS}
1802 22 0:172 / /srv/my\\040data rw master:7 propagate_from:1 - ext4 /dev/vdb rw
"""


def test_the_rootfs_mount_of_one_container_in_the_host_table() -> None:
    entries = parse_mountinfo(HOST.encode())
    entry = topmost_at(entries, f"{TASK}/{ID}/rootfs".encode())
    assert entry is not None
    layers = overlay_layers(entry)
    assert layers.upper == f"{SNAP}/13/fs".encode()
    assert layers.lowers == (f"{SNAP}/12/fs".encode(), f"{SNAP}/11/fs".encode())
    assert not layers.userxattr
    # Octal escapes in mount points; optional fields of any number.
    assert entries[-1].mount_point == b"/srv/my data"
    assert topmost_at(entries, f"{TASK}/{'c' * 64}/rootfs".encode()) is None


def test_escaped_separators_data_only_layers_and_userxattr() -> None:
    line = (
        "1 0 0:1 / / rw - overlay overlay "
        "rw,lowerdir=/l/a\\:b:/l/c\\,d::/data/only,upperdir=/u/x\\040y,workdir=/w,userxattr\n"
    )
    layers = overlay_layers(parse_mountinfo(line.encode())[0])
    assert layers.lowers == (b"/l/a:b", b"/l/c,d")
    assert layers.upper == b"/u/x y"
    assert layers.userxattr


def test_new_mount_api_layers_and_relative_lowers() -> None:
    line = (
        "1 0 0:1 / /r rw - overlay overlay rw,lowerdir+=/l/1,lowerdir+=/l/2,upperdir=/u,workdir=/w"
    )
    assert overlay_layers(parse_mountinfo(line.encode())[0]).lowers == (b"/l/1", b"/l/2")
    # containerd shortens long lowerdir lists to paths relative to the snapshot directory.
    short = "1 0 0:1 / /r rw - overlay overlay rw,upperdir=/u,workdir=/w,lowerdir=12/fs:11/fs"
    assert overlay_layers(parse_mountinfo(short.encode())[0]).lowers == (b"12/fs", b"11/fs")


def test_the_topmost_mount_wins_and_non_overlay_is_refused() -> None:
    text = "1 0 0:1 / /r rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
    text += "2 1 0:2 / /r rw - ext4 /dev/sda rw\n"
    entry = topmost_at(parse_mountinfo(text.encode()), b"/r")
    assert entry is not None
    with pytest.raises(NotOverlay, match="ext4, not overlay"):
        overlay_layers(entry)


def test_a_read_only_overlay_has_nothing_to_commit() -> None:
    entry = parse_mountinfo(b"1 0 0:1 / /r ro - overlay overlay ro,lowerdir=/a:/b\n")[0]
    with pytest.raises(NotOverlay, match="no upperdir"):
        overlay_layers(entry)


def test_malformed_lines_are_skipped() -> None:
    text = b"garbage\n1 0 0:1 / /r rw -\n2 0 0:1 - /x rw - tmpfs tmpfs rw\n"
    assert [e.mount_point for e in parse_mountinfo(text)] == [b"/x"]
