"""Walk an overlay upperdir and say, entry by entry, what the layer must contain.

The upperdir *is* the container's change set, so the work is proportional to what changed:
only the lower directories that sit under an upper directory are ever looked at, and only to
decide whether a whiteout or an opaque marker hides something.

Rules (each one is a test in tests/unit/test_snapshot_upper.py):

- a whiteout (0/0 character device) becomes ``.wh.<name>`` only when ``<name>`` exists below;
  whiteouts may share one inode, so they never take part in hardlink detection;
- an opaque directory gets ``.wh..wh..opq`` (right after the directory itself) only when a
  directory of that name exists below; a new directory is just a directory;
- any other name starting with ``.wh.`` is refused with :class:`ForgedWhiteout`: the container
  made it, and a runtime unpacking the layer would take it for a whiteout and delete (or hide)
  what the container still has.  Only overlayfs's own markers, a 0/0 device or the opaque
  xattr, become whiteouts (a ``.wh.``-named device that hides nothing below emits nothing);
- ``redirect`` and ``metacopy`` are refused with :class:`UnsupportedOverlay` (see
  :mod:`lamina.snapshot.xattrs` for why), and so is a kept attribute whose name a PAX record
  cannot carry (:class:`UnrepresentableXattr`);
- files with several names inside the upperdir become one file plus hardlink members;
- symlinks are recorded, never followed; FIFOs and character/block device nodes are recorded
  (as ``docker commit`` does; a device node grants nothing without the device cgroup's
  permission); sockets are skipped (a live process's endpoint, meaningless in an image); any
  other file type is refused;
- excluded paths (and everything below them) and non-directory mount targets (the stubs a
  runtime creates for ``/etc/hosts`` and friends) are left out.

Bounds: the walk is iterative (an explicit stack of directories, each with its sorted, not yet
written children) and looks everything up relative to directory descriptors
(:mod:`lamina.snapshot.dirs`), so a tree thousands of levels deep, or with paths far beyond
PATH_MAX, neither overflows Python's stack, nor fails with ENAMETOOLONG, nor holds one
descriptor per level.  Memory grows with the depth and the width of the directories on the
current path, never with the whole tree.  Children are opened with ``O_NOFOLLOW`` (and
directories with ``O_DIRECTORY``) and checked against the inode they were listed with, so a
container that swaps a directory for a symlink while it is being read cannot make the committer
read outside the upperdir.  Names are raw bytes end to end, so any file name the kernel accepts
round-trips.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field

from lamina.snapshot.dirs import MAX_OPEN_DIRECTORIES, DirHandle, OpenDirectories, fd_path
from lamina.snapshot.lowers import LowerDirectory, is_whiteout
from lamina.snapshot.refusals import EntryVanished, LayerRefused, shown, shown_name
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
from lamina.snapshot.xattrs import (
    OverlayXattrs,
    XattrTarget,
    layer_xattrs,
    list_xattrs,
    pax_unsafe_name,
)

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
_META_PREFIX = b".wh..wh."


class UnsupportedOverlay(Exception):
    """The upperdir uses an overlay feature whose changes it does not fully describe."""


class ForgedWhiteout(LayerRefused):
    """A file the container created is named like a whiteout."""


class UnrepresentableXattr(LayerRefused):
    """A kept extended attribute has a name no PAX record can carry."""


@dataclass(frozen=True)
class FileContent:
    """Where a regular file's bytes are: a name inside a directory of the walk, as listed."""

    directory: DirHandle
    name: bytes
    listed: os.stat_result

    @property
    def inode(self) -> int:
        return self.listed.st_ino

    @property
    def size(self) -> int:
        return self.listed.st_size


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


# A listed child: (its member name, i.e. ``.wh.<name>`` for a whiteout; its name; its lstat).
_Child = tuple[bytes, bytes, os.stat_result]


@dataclass
class _Frame:
    """One directory on the walk's current path."""

    directory: DirHandle
    lower: LowerDirectory
    children: list[_Child]  # sorted in reverse: the next one to write is the last
    parent_path_length: int  # where the walk's path is cut when this directory is done


@dataclass(frozen=True)
class UpperWalk:
    """The members of the layer made from ``upper`` over ``lowers`` (topmost first)."""

    upper: bytes
    lowers: tuple[bytes, ...] = ()
    overlay: OverlayXattrs = field(default_factory=OverlayXattrs)
    exclude: frozenset[bytes] = frozenset()
    mount_targets: frozenset[bytes] = frozenset()
    max_open_dirs: int = MAX_OPEN_DIRECTORIES

    @classmethod
    def create(
        cls,
        upper: str | bytes,
        lowers: Iterable[str | bytes] = (),
        *,
        userxattr: bool = False,
        exclude: Iterable[str | bytes] = (),
        mount_targets: Iterable[str | bytes] = (),
        max_open_dirs: int = MAX_OPEN_DIRECTORIES,
    ) -> UpperWalk:
        return cls(
            upper=os.fsencode(upper),
            lowers=tuple(os.fsencode(lower) for lower in lowers),
            overlay=OverlayXattrs("user" if userxattr else "trusted"),
            exclude=frozenset(normalise_layer_path(p) for p in exclude) - {b""},
            mount_targets=frozenset(normalise_layer_path(p) for p in mount_targets) - {b""},
            max_open_dirs=max_open_dirs,
        )

    def members(self) -> Iterator[Member]:
        budget = OpenDirectories(self.max_open_dirs)
        try:
            root = DirHandle.root(budget, self.upper)
            lower = LowerDirectory.roots(list(self.lowers), self.overlay, budget)
            root_fd = root.fd()
            st = os.fstat(root_fd)
            if self._opaque(root_fd, list_xattrs(root_fd)):
                if not lower.empty:
                    yield Member(_marker(OPAQUE_MARKER, st))
                lower = LowerDirectory((), self.overlay)
            yield from self._walk(root, lower)
        finally:
            budget.close_all()

    def _walk(self, root: DirHandle, lower: LowerDirectory) -> Iterator[Member]:
        path = bytearray()  # the layer path of the directory on top of the stack, with "/"
        stack = [_Frame(root, lower, self._children(root, b"", lower), 0)]
        links: dict[tuple[int, int], bytes] = {}
        while stack:
            frame = stack[-1]
            if not frame.children:
                stack.pop()
                del path[frame.parent_path_length :]
                continue
            member_name, name, st = frame.children.pop()
            member_path = bytes(path) + member_name
            if is_whiteout(st):
                yield Member(_marker(member_path, st))
            elif stat.S_ISDIR(st.st_mode):
                child = yield from self._directory(frame, member_path, name, st)
                if child is not None:
                    child.parent_path_length = len(path)
                    stack.append(child)
                    path += name + b"/"
            else:
                yield from self._non_directory(frame.directory, member_path, name, st, links)

    def _children(self, directory: DirHandle, prefix: bytes, lower: LowerDirectory) -> list[_Child]:
        """The entries of ``directory`` that belong in the layer, in reverse member order."""
        with os.scandir(directory.fd()) as scan:
            names = [os.fsencode(entry.name) for entry in scan]
        planned: list[_Child] = []
        filtered = bool(self.exclude or self.mount_targets)
        for name in names:
            path = prefix + name if filtered else b""
            if filtered and path in self.exclude:
                continue
            try:
                st = os.stat(name, dir_fd=directory.fd(), follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we read; the container was not paused
            if filtered and path in self.mount_targets and not stat.S_ISDIR(st.st_mode):
                continue
            if name.startswith(WHITEOUT_PREFIX):
                if is_whiteout(st) and not lower.exists(name):
                    continue  # overlay's own whiteout of a ".wh." name: it hides nothing
                raise ForgedWhiteout(_forged_whiteout_message(prefix, name, st))
            if is_whiteout(st):
                if lower.exists(name):
                    planned.append((WHITEOUT_PREFIX + name, name, st))
                continue
            if stat.S_ISSOCK(st.st_mode):
                continue
            planned.append((name, name, st))
        planned.sort(key=lambda child: child[0], reverse=True)
        return planned

    def _directory(
        self, frame: _Frame, path: bytes, name: bytes, listed: os.stat_result
    ) -> Generator[Member, None, _Frame | None]:
        """The directory's own members; returns its frame (None when it vanished meanwhile)."""
        handle = frame.directory.child(name, listed)
        try:
            fd = handle.fd()
        except EntryVanished:
            return None  # removed while we read; the container was not paused
        st = os.fstat(fd)
        names = list_xattrs(fd)
        header = self._header(path + b"/", DIRECTORY, st, fd, names)
        opaque = self._opaque(fd, names)
        yield Member(header)
        below = (
            LowerDirectory((), self.overlay) if frame.lower.empty else frame.lower.lookup(name)[1]
        )
        if opaque:
            if not below.empty:
                yield Member(_marker(path + b"/" + OPAQUE_MARKER, st))
            below = LowerDirectory((), self.overlay)
        return _Frame(handle, below, self._children(handle, path + b"/", below), 0)

    def _non_directory(
        self,
        directory: DirHandle,
        path: bytes,
        name: bytes,
        st: os.stat_result,
        links: dict[tuple[int, int], bytes],
    ) -> Iterator[Member]:
        target = fd_path(directory.fd(), name)
        header = self._header(path, REGULAR, st, target, list_xattrs(target))
        identity = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and identity in links:
            header.typeflag = HARDLINK
            header.linkname = links[identity]
            header.xattrs = {}
            yield Member(header)
            return
        if st.st_nlink > 1:
            links[identity] = path
        mode = st.st_mode
        if stat.S_ISREG(mode):
            header.size = st.st_size
            yield Member(header, FileContent(directory, name, st))
        elif stat.S_ISLNK(mode):
            header.typeflag = SYMLINK
            header.linkname = os.fsencode(os.readlink(name, dir_fd=directory.fd()))
            yield Member(header)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            header.typeflag = CHARDEV if stat.S_ISCHR(mode) else BLOCKDEV
            header.devmajor = os.major(st.st_rdev)
            header.devminor = os.minor(st.st_rdev)
            yield Member(header)
        elif stat.S_ISFIFO(mode):
            header.typeflag = FIFO
            yield Member(header)
        else:
            raise LayerRefused(f"{shown(path)} has a file type a layer cannot carry ({mode:o})")

    def _header(
        self,
        name: bytes,
        typeflag: bytes,
        st: os.stat_result,
        target: XattrTarget,
        names: list[str],
    ) -> TarHeader:
        """The header fields every type shares, after the refusals its attributes call for."""
        if names and (feature := self.overlay.refusal(names)):
            raise UnsupportedOverlay(
                f"/{os.fsdecode(name.rstrip(b'/'))} carries {self.overlay.prefix}{feature}: the "
                f"overlay was mounted with {feature}{'_dir' if feature == 'redirect' else ''}=on, "
                "so the upperdir alone does not describe the change; Lamina refuses to write a "
                "layer that could be wrong (remount without that option, the runtimes' default)"
            )
        xattrs = layer_xattrs(target, names) if names else {}
        if unsafe := pax_unsafe_name(list(xattrs)):
            raise UnrepresentableXattr(
                f"{shown(name)} has the extended attribute {shown_name(unsafe)}, whose name "
                'contains "=": a layer cannot carry it (a PAX record\'s key ends at the first '
                '"=", so containerd would set a different attribute); remove or rename the '
                "attribute, or exclude the path"
            )
        return TarHeader(
            name=name,
            typeflag=typeflag,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime=st.st_mtime_ns // 1_000_000_000,
            xattrs=xattrs,
        )

    def _opaque(self, fd: int, names: list[str]) -> bool:
        return self.overlay.prefix + "opaque" in names and self.overlay.is_opaque(fd)


def _forged_whiteout_message(prefix: bytes, name: bytes, st: os.stat_result) -> str:
    path = prefix + name
    kind = (
        "whiteout device"
        if is_whiteout(st)
        else "directory"
        if stat.S_ISDIR(st.st_mode)
        else "symlink"
        if stat.S_ISLNK(st.st_mode)
        else "file"
    )
    if name == OPAQUE_MARKER:
        effect = f"hiding everything the image has in {shown(prefix.rstrip(b'/') or b'/', 80)}"
    elif name.startswith(_META_PREFIX):
        effect = "overlay metadata"
    else:
        effect = f"deleting {shown(prefix + name[len(WHITEOUT_PREFIX) :], 80)}"
    return (
        f"{shown(path)} is a {kind} named like a whiteout (prefix .wh.): a runtime would read "
        f"it as {effect}; Lamina refuses to write it (rename it, or exclude the path)"
    )


def _marker(name: bytes, st: os.stat_result) -> TarHeader:
    """An empty regular file that tells the runtime to delete (or hide) something below."""
    return TarHeader(name=name, typeflag=REGULAR, mtime=st.st_mtime_ns // 1_000_000_000)
