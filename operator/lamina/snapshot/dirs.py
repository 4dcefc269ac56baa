"""Directories held by descriptor: no walk builds a long path, follows a link or runs out of fds.

A container decides how deep its tree is and how long its names are.  Building
``upper + "/" + path`` for a lookup fails with ENAMETOOLONG once the path passes PATH_MAX (4 KiB),
and holding one descriptor per level fails with EMFILE at the descriptor limit.  So every
directory the layer writer looks into is a :class:`DirHandle`: a name inside its parent handle,
with the identity (device, inode) it had when it was listed.  Children are opened relative to
their parent's descriptor (``openat`` with ``O_DIRECTORY | O_NOFOLLOW``: a symlink swapped in
is refused by the kernel, never followed), and at most ``limit`` descriptors are open at once;
the least recently used is closed and reopened, from its nearest open ancestor, when it is
needed again.  A reopened directory must have the identity it was listed with, or the walk
stops with :class:`ChangedWhileReading`: the tree was rearranged under it.  (A directory
deleted and recreated under an inode number the filesystem recycled passes as itself; what is
read is then the new directory, still inside the same tree.)

Only the roots are opened by path (the runtime's snapshot directories, not the container's).
Handles keep only their own name, so memory grows with the depth, not with the path length
times the depth.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict

from lamina.snapshot.refusals import ChangedWhileReading, shown

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN_DIRECTORIES = 128


def open_at(dir_fd: int | None, name: bytes, flags: int) -> int:
    """``openat`` with ``O_NOATIME`` when permitted (owner or CAP_FOWNER), without otherwise.

    Reading a container's files must not change them, access times included.
    """
    try:
        return os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:
        return os.open(name, flags, dir_fd=dir_fd)


def fd_path(dir_fd: int, name: bytes) -> bytes:
    """A short path to ``name`` inside an open directory, for calls that take no ``dir_fd``
    (``lgetxattr``, ``llistxattr``).

    ``/proc/self/fd/N`` resolves to the directory held open, so only ``name`` is looked up,
    inside it, whatever the depth.
    """
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


class OpenDirectories:
    """The descriptors of one walk: at most ``limit`` open, least recently used closed first.

    A handle the walk is done with stays open until it is the least recently used one; the
    walk never holds more than ``limit``, and :meth:`close_all` closes them when it ends.
    """

    def __init__(self, limit: int = MAX_OPEN_DIRECTORIES) -> None:
        if limit < 2:
            raise ValueError("a walk needs at least two open directories (a parent and a child)")
        self.limit = limit
        self._open: OrderedDict[DirHandle, int] = OrderedDict()

    @property
    def count(self) -> int:
        return len(self._open)

    def _used(self, handle: DirHandle, fd: int) -> None:
        self._open[handle] = fd
        self._open.move_to_end(handle)
        while len(self._open) > self.limit:
            oldest, oldest_fd = self._open.popitem(last=False)
            oldest._fd = None
            os.close(oldest_fd)

    def close_all(self) -> None:
        while self._open:
            handle, fd = self._open.popitem()
            handle._fd = None
            os.close(fd)


class DirHandle:
    """One directory of a walk, opened (and reopened) only relative to its parent."""

    __slots__ = ("_budget", "_fd", "identity", "name", "parent", "root_path")

    def __init__(
        self,
        budget: OpenDirectories,
        *,
        parent: DirHandle | None,
        name: bytes,
        identity: tuple[int, int] | None,
        root_path: bytes | None = None,
    ) -> None:
        self._budget = budget
        self._fd: int | None = None
        self.parent = parent
        self.name = name
        self.identity = identity
        self.root_path = root_path

    @classmethod
    def root(cls, budget: OpenDirectories, path: bytes) -> DirHandle:
        """A walk's root, by path; its identity is fixed when it is first opened."""
        return cls(budget, parent=None, name=b"", identity=None, root_path=path)

    def child(self, name: bytes, st: os.stat_result) -> DirHandle:
        """The directory ``name`` inside this one as it was listed (opened when first used)."""
        return DirHandle(self._budget, parent=self, name=name, identity=(st.st_dev, st.st_ino))

    def relative_path(self) -> bytes:
        """The names from the root down to this directory (for messages only)."""
        names: list[bytes] = []
        node: DirHandle | None = self
        while node is not None and node.parent is not None:
            names.append(node.name)
            node = node.parent
        return b"/".join(reversed(names))

    def fd(self) -> int:
        """This directory's descriptor, valid until the next handle of the walk is opened."""
        if self._fd is not None:
            self._budget._used(self, self._fd)
            return self._fd
        closed: list[DirHandle] = []
        node = self
        while node._fd is None and node.parent is not None:
            closed.append(node)
            node = node.parent
        if node._fd is None:
            node._open_root()
        for handle in reversed(closed):
            # The parent was opened (or used) just before: the most recently used handle.
            parent_fd = handle.parent._fd if handle.parent is not None else None
            if parent_fd is None:
                raise RuntimeError("a directory's parent was closed while it was being opened")
            handle._open_in(parent_fd)
        if self._fd is None:
            raise RuntimeError("a directory was closed as soon as it was opened")
        return self._fd

    def _open_root(self) -> None:
        assert self.root_path is not None
        fd = open_at(None, self.root_path, DIRECTORY_FLAGS & ~os.O_NOFOLLOW)
        self._adopt(fd)

    def _open_in(self, parent_fd: int) -> None:
        try:
            fd = open_at(parent_fd, self.name, DIRECTORY_FLAGS)
        except OSError as error:
            # Gone, or something else (ELOOP: a symlink) stands where the directory was.
            if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise self._changed() from error
            raise
        self._adopt(fd)

    def _adopt(self, fd: int) -> None:
        st = os.fstat(fd)
        identity = (st.st_dev, st.st_ino)
        if self.identity is None:
            self.identity = identity
        elif identity != self.identity:
            os.close(fd)
            raise self._changed()
        self._fd = fd
        self._budget._used(self, fd)

    def _changed(self) -> ChangedWhileReading:
        return ChangedWhileReading(
            f"directory {shown(self.relative_path())} was moved or replaced while the layer "
            "was read; freeze the container (pause: true, the default) to commit it"
        )
