"""Walk an overlay upperdir and say, entry by entry, what the layer must contain.

The upperdir *is* the container's change set, so the work is proportional to what changed:
only the lower directories that sit under an upper directory are ever looked at, and only to
decide whether a whiteout or an opaque marker hides something.

Rules (each one is a test in tests/unit/test_snapshot_upper.py):

- a whiteout (0/0 character device) becomes ``.wh.<name>`` only when ``<name>`` exists below;
  whiteouts may share one inode, so they never take part in hardlink detection;
- an opaque directory gets ``.wh..wh..opq`` (right after the directory itself) only when a
  directory of that name exists below; a new directory is just a directory;
- ``redirect`` and ``metacopy`` are refused with :class:`UnsupportedOverlay` (see
  :mod:`lamina.snapshot.xattrs` for why);
- files with several names inside the upperdir become one file plus hardlink members;
- symlinks are recorded, never followed; FIFOs and device nodes are recorded; sockets are
  skipped (they are a live process's endpoint, meaningless in an image);
- excluded paths (and everything below them) and non-directory mount targets (the stubs a
  runtime creates for ``/etc/hosts`` and friends) are left out.

Safety: the walk holds a file descriptor per directory level and opens every child relative
to it with ``O_NOFOLLOW``, so a container that swaps a directory for a symlink while it is
being read cannot make the committer read outside the upperdir.  Names are raw bytes end to
end, so any file name the kernel accepts round-trips.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from lamina.snapshot.lowers import LowerDirectory, is_whiteout
from lamina.snapshot.tarformat import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    TarHeader,
)
from lamina.snapshot.xattrs import OverlayXattrs, layer_xattrs, list_xattrs

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsupportedOverlay(Exception):
    """The upperdir uses an overlay feature whose changes it does not fully describe."""


@dataclass(frozen=True)
class FileContent:
    """Where a regular file's bytes are: a name inside an open directory, with its identity."""

    dir_fd: int
    name: bytes
    inode: int
    size: int


@dataclass(frozen=True)
class Member:
    """One archive member and, for regular files, where to read its content."""

    header: TarHeader
    content: FileContent | None = None


def normalise_layer_path(path: str | bytes) -> bytes:
    """``/etc//hosts/`` -> ``etc/hosts``; ``..`` cannot climb above the root."""
    raw = os.fsencode(path)
    normal = posixpath.normpath(b"/" + raw.lstrip(b"/"))
    return normal.lstrip(b"/")


@dataclass(frozen=True)
class UpperWalk:
    """The members of the layer made from ``upper`` over ``lowers`` (topmost first)."""

    upper: bytes
    lowers: tuple[bytes, ...] = ()
    overlay: OverlayXattrs = field(default_factory=OverlayXattrs)
    exclude: frozenset[bytes] = frozenset()
    mount_targets: frozenset[bytes] = frozenset()

    @classmethod
    def create(
        cls,
        upper: str | bytes,
        lowers: Iterable[str | bytes] = (),
        *,
        userxattr: bool = False,
        exclude: Iterable[str | bytes] = (),
        mount_targets: Iterable[str | bytes] = (),
    ) -> UpperWalk:
        return cls(
            upper=os.fsencode(upper),
            lowers=tuple(os.fsencode(lower) for lower in lowers),
            overlay=OverlayXattrs("user" if userxattr else "trusted"),
            exclude=frozenset(normalise_layer_path(p) for p in exclude) - {b""},
            mount_targets=frozenset(normalise_layer_path(p) for p in mount_targets) - {b""},
        )

    def members(self) -> Iterator[Member]:
        root_fd = os.open(self.upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            lower = LowerDirectory.roots(list(self.lowers), self.overlay)
            names = list_xattrs(_fd_path(root_fd, None))
            if self.overlay.prefix + "opaque" in names and self.overlay.is_opaque(
                _fd_path(root_fd, None)
            ):
                if not lower.empty:
                    st = os.fstat(root_fd)
                    yield Member(_marker(OPAQUE_MARKER, st))
                lower = LowerDirectory((), self.overlay)
            yield from self._directory(root_fd, b"", lower, {})
        finally:
            os.close(root_fd)

    def _directory(
        self,
        dir_fd: int,
        prefix: bytes,
        lower: LowerDirectory,
        links: dict[tuple[int, int], bytes],
    ) -> Iterator[Member]:
        with os.scandir(dir_fd) as scan:
            children = sorted(os.fsencode(entry.name) for entry in scan)
        planned: list[tuple[bytes, bytes, os.stat_result]] = []
        for name in children:
            path = prefix + name
            if path in self.exclude:
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we read; the container was not paused
            if is_whiteout(st):
                if lower.exists(name):
                    planned.append((prefix + WHITEOUT_PREFIX + name, name, st))
                continue
            if stat.S_ISSOCK(st.st_mode):
                continue
            if path in self.mount_targets and not stat.S_ISDIR(st.st_mode):
                continue
            planned.append((path, name, st))
        planned.sort(key=lambda item: item[0])
        for member_path, name, st in planned:
            if is_whiteout(st):
                yield Member(_marker(member_path, st))
                continue
            yield from self._entry(
                dir_fd=dir_fd, path=member_path, name=name, st=st, lower=lower, links=links
            )

    def _entry(
        self,
        *,
        dir_fd: int,
        path: bytes,
        name: bytes,
        st: os.stat_result,
        lower: LowerDirectory,
        links: dict[tuple[int, int], bytes],
    ) -> Iterator[Member]:
        xattr_path = _fd_path(dir_fd, name)
        names = list_xattrs(xattr_path)
        if names and (feature := self.overlay.refusal(names)):
            raise UnsupportedOverlay(
                f"/{os.fsdecode(path)} carries {self.overlay.prefix}{feature}: the overlay was "
                f"mounted with {feature}{'_dir' if feature == 'redirect' else ''}=on, so the "
                "upperdir alone does not describe the change; Lamina refuses to write a layer "
                "that could be wrong (remount without that option, the runtimes' default)"
            )
        header = TarHeader(
            name=path,
            typeflag=REGULAR,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime=st.st_mtime_ns // 1_000_000_000,
            xattrs=layer_xattrs(xattr_path, names) if names else {},
        )
        if stat.S_ISDIR(st.st_mode):
            header.name = path + b"/"
            header.typeflag = DIRECTORY
            yield Member(header)
            yield from self._subdirectory(
                dir_fd=dir_fd, path=path, name=name, st=st, names=names, lower=lower, links=links
            )
            return
        identity = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and identity in links:
            header.typeflag = HARDLINK
            header.linkname = links[identity]
            header.xattrs = {}
            yield Member(header)
            return
        if st.st_nlink > 1:
            links[identity] = path
        if stat.S_ISREG(st.st_mode):
            header.size = st.st_size
            yield Member(header, FileContent(dir_fd, name, st.st_ino, st.st_size))
        elif stat.S_ISLNK(st.st_mode):
            header.typeflag = SYMLINK
            header.linkname = os.fsencode(os.readlink(name, dir_fd=dir_fd))
            yield Member(header)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            header.typeflag = CHARDEV if stat.S_ISCHR(st.st_mode) else BLOCKDEV
            header.devmajor = os.major(st.st_rdev)
            header.devminor = os.minor(st.st_rdev)
            yield Member(header)
        elif stat.S_ISFIFO(st.st_mode):
            header.typeflag = FIFO
            yield Member(header)

    def _subdirectory(
        self,
        *,
        dir_fd: int,
        path: bytes,
        name: bytes,
        st: os.stat_result,
        names: list[str],
        lower: LowerDirectory,
        links: dict[tuple[int, int], bytes],
    ) -> Iterator[Member]:
        below = LowerDirectory((), self.overlay) if lower.empty else lower.lookup(name)[1]
        opaque = self.overlay.prefix + "opaque" in names and self.overlay.is_opaque(
            _fd_path(dir_fd, name)
        )
        if opaque:
            if not below.empty:
                yield Member(_marker(path + b"/" + OPAQUE_MARKER, st))
            below = LowerDirectory((), self.overlay)
        try:
            child_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return  # replaced while we read; the container was not paused
        try:
            if os.fstat(child_fd).st_ino != st.st_ino:
                return
            yield from self._directory(child_fd, path + b"/", below, links)
        finally:
            os.close(child_fd)


def _marker(name: bytes, st: os.stat_result) -> TarHeader:
    """An empty regular file that tells the runtime to delete (or hide) something below."""
    return TarHeader(name=name, typeflag=REGULAR, mtime=st.st_mtime_ns // 1_000_000_000)


def _fd_path(dir_fd: int, name: bytes | None) -> bytes:
    """A path to ``name`` inside an open directory, for calls that take no ``dir_fd``.

    ``/proc/self/fd/N`` resolves to the directory we hold open, so the lookup of ``name``
    happens inside it even if the directory was moved meanwhile.
    """
    base = b"/proc/self/fd/%d" % dir_fd
    return base if name is None else base + b"/" + name
