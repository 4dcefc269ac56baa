"""Reading a container's root overlay and its mount targets from mountinfo text."""

from __future__ import annotations

import pytest

from lamina.snapshot.mountinfo import NotOverlay, root_overlay

SNAP = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
ROOT_OPTIONS = f"rw,lowerdir={SNAP}/12/fs:{SNAP}/11/fs,upperdir={SNAP}/13/fs,workdir={SNAP}/13/work"
CONTAINERD = f"""\
1801 1623 0:170 / / rw,relatime master:640 - overlay overlay {ROOT_OPTIONS}
1802 1801 0:172 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1810 1801 254:1 /var/lib/kubelet/pods/u/etc-hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
1811 1801 254:1 /var/lib/sandboxes/x/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw
1812 1801 254:1 /var/lib/kubelet/pods/u/containers/c/abc /dev/termination-log rw - ext4 /dev/vda rw
1813 1801 254:1 /data /srv/my\\040data rw - ext4 /dev/vda rw
"""


def test_containerd_root_overlay_and_mount_targets() -> None:
    overlay = root_overlay(CONTAINERD.encode())
    assert overlay.upper == f"{SNAP}/13/fs".encode()
    assert overlay.lowers == (f"{SNAP}/12/fs".encode(), f"{SNAP}/11/fs".encode())
    assert not overlay.userxattr
    assert overlay.mount_targets == (
        b"/dev/termination-log",
        b"/etc/hosts",
        b"/etc/resolv.conf",
        b"/proc",
        b"/srv/my data",
    )


def test_escaped_separators_data_only_layers_and_userxattr() -> None:
    line = (
        "1 0 0:1 / / rw - overlay overlay "
        "rw,lowerdir=/l/a\\:b:/l/c\\,d::/data/only,upperdir=/u/x\\040y,workdir=/w,userxattr\n"
    )
    overlay = root_overlay(line.encode())
    assert overlay.lowers == (b"/l/a:b", b"/l/c,d")
    assert overlay.upper == b"/u/x y"
    assert overlay.userxattr


def test_new_mount_api_layers() -> None:
    line = (
        "1 0 0:1 / / rw - overlay overlay rw,lowerdir+=/l/1,lowerdir+=/l/2,upperdir=/u,workdir=/w"
    )
    assert root_overlay(line.encode()).lowers == (b"/l/1", b"/l/2")


def test_the_topmost_root_mount_wins_and_non_overlay_is_refused() -> None:
    text = "1 0 0:1 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
    text += "2 1 0:2 / / rw - ext4 /dev/sda rw\n"
    with pytest.raises(NotOverlay, match="ext4, not overlay"):
        root_overlay(text.encode())


def test_a_read_only_overlay_has_nothing_to_commit() -> None:
    with pytest.raises(NotOverlay, match="no upperdir"):
        root_overlay(b"1 0 0:1 / / ro - overlay overlay ro,lowerdir=/a:/b\n")
