"""What the lower directories of an overlay show, looked up the way overlayfs does.

A whiteout or an opaque marker belongs in the layer only when it hides something, so the
writer asks, per directory of the upperdir, which lower directories are merged under it.
The answer follows overlayfs's own lookup, topmost lower first:

- the first lower where a name exists decides what it is; a whiteout there (a 0/0 character
  device) hides the name from every lower below it;
- a directory merges with the same-named directories below it until one of them is opaque, or
  until a lower has a non-directory (or a whiteout) under that name;
- a non-directory has no children, so nothing below it is looked at.

Every component is looked up with ``fstatat(..., AT_SYMLINK_NOFOLLOW)`` inside the descriptor of
a directory already known to be a real directory of that lower (a
:class:`~lamina.snapshot.dirs.DirHandle`), so a symlink in a lower layer is never followed (not
even one that points at the host's ``/``) and no lookup builds a path longer than one name,
however deep the tree.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from lamina.snapshot.dirs import DirHandle, OpenDirectories, fd_path
from lamina.snapshot.xattrs import OverlayXattrs


def is_whiteout(st: os.stat_result) -> bool:
    """Overlayfs whiteouts are character devices with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@dataclass(frozen=True)
class LowerDirectory:
    """The directories merged below one upper directory, topmost first (held by descriptor)."""

    dirs: tuple[DirHandle, ...]
    overlay: OverlayXattrs

    @classmethod
    def roots(
        cls,
        lowers: list[bytes],
        overlay: OverlayXattrs,
        open_dirs: OpenDirectories | None = None,
    ) -> LowerDirectory:
        """The lower roots (paths, topmost first); ``open_dirs`` is the walk's fd budget."""
        budget = open_dirs if open_dirs is not None else OpenDirectories()
        return cls(tuple(DirHandle.root(budget, lower) for lower in lowers), overlay)

    @property
    def empty(self) -> bool:
        return not self.dirs

    def lookup(self, name: bytes) -> tuple[bool, LowerDirectory]:
        """Whether ``name`` exists below, and (when it is a directory) what merges under it."""
        found = False
        merged: list[DirHandle] = []
        for parent in self.dirs:
            try:
                st = os.stat(name, dir_fd=parent.fd(), follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if is_whiteout(st):
                break
            found = True
            if not stat.S_ISDIR(st.st_mode):
                break
            merged.append(parent.child(name, st))
            if self.overlay.is_opaque(fd_path(parent.fd(), name)):
                break
        return found, LowerDirectory(tuple(merged), self.overlay)

    def exists(self, name: bytes) -> bool:
        return self.lookup(name)[0]
