"""A directory tree as comparable data: what a runtime must reproduce from a layer."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

KEPT_XATTRS = ("security.capability",)


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in sorted(names)
        if name in KEPT_XATTRS
        or (name.startswith("user.") and not name.startswith("user.overlay."))
    }


def describe(
    root: Path, *, skip: frozenset[bytes] = frozenset()
) -> dict[bytes, tuple[object, ...]]:
    """path -> (kind, mode, uid, gid, content digest | link target | device, mtime, xattrs).

    Sockets are left out (a layer never carries them); ``skip`` names paths (relative, bytes)
    left out with everything below them.  Directory mtimes are not compared: unpacking a
    directory's children changes them.
    """
    tree: dict[bytes, tuple[object, ...]] = {}
    base = os.fsencode(root)
    for directory, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(directory, base)
        for name in sorted(dirnames + filenames):
            path = os.path.join(directory, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip or any(rel.startswith(s + b"/") for s in skip):
                continue
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            common = (mode, st.st_uid, st.st_gid)
            if stat.S_ISSOCK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode):
                tree[rel] = ("dir", *common, None, None, _xattrs(path))
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()
                tree[rel] = ("file", *common, digest, int(st.st_mtime), _xattrs(path))
            elif stat.S_ISLNK(st.st_mode):
                tree[rel] = ("symlink", mode, st.st_uid, st.st_gid, os.readlink(path), None, {})
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
                device = (os.major(st.st_rdev), os.minor(st.st_rdev))
                tree[rel] = (kind, *common, device, None, {})
            elif stat.S_ISFIFO(st.st_mode):
                tree[rel] = ("fifo", *common, None, None, {})
        dirnames[:] = [
            d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip
        ]
    return tree


def hardlink_groups(root: Path) -> set[frozenset[bytes]]:
    """Sets of paths that share one inode (regular files with several names)."""
    groups: dict[tuple[int, int], set[bytes]] = {}
    base = os.fsencode(root)
    for directory, _, filenames in os.walk(base):
        for name in filenames:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                groups.setdefault((st.st_dev, st.st_ino), set()).add(os.path.relpath(path, base))
    return {frozenset(group) for group in groups.values() if len(group) > 1}
