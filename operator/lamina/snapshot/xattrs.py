"""Extended attributes: overlayfs's own markers, and the ones a layer may carry.

Overlayfs keeps its bookkeeping in ``trusted.overlay.*`` (or ``user.overlay.*`` when mounted
with ``userxattr``, as rootless runtimes do).  Those never go into a layer: they describe this
host's overlay, not the image.  What a layer keeps is an allowlist: file capabilities
(``security.capability``, which ``setcap`` programs need) and ``user.*`` attributes that
applications set.  SELinux labels, ACLs and the rest are the host's policy, not the image's.

A kept attribute whose name contains ``=`` cannot be written into a layer: a PAX record is
``<length> <key>=<value>``, every reader splits it at the first ``=``, and Go's ``archive/tar``
(containerd, BuildKit, Docker, umoci) refuses such keys when writing and reads ``user.a=b`` with
value ``v`` as ``user.a`` with value ``b=v``.  GNU tar percent-encodes the name (``user.a%3Db``),
which those readers take literally, creating a different attribute.  So the layer writer refuses
the file with :func:`pax_unsafe_name` rather than write an attribute the runtime would get wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CAPABILITY = "security.capability"
USER_PREFIX = "user."


def keep_in_layer(name: str) -> bool:
    """The allowlist: ``security.capability`` and ``user.*`` except ``user.overlay.*``."""
    if name == CAPABILITY:
        return True
    return name.startswith(USER_PREFIX) and not name.startswith("user.overlay.")


# A path (a symlink at its end is never followed) or an open descriptor.
XattrTarget = bytes | str | int


def pax_unsafe_name(names: list[str]) -> str | None:
    """The first attribute name a PAX ``SCHILY.xattr.`` record cannot carry, if any."""
    for name in names:
        if "=" in name:
            return name
    return None


def list_xattrs(path: XattrTarget) -> list[str]:
    """The names of the attributes of ``path`` (never following a symlink)."""
    try:
        return os.listxattr(path, follow_symlinks=isinstance(path, int))
    except OSError:
        return []


def layer_xattrs(path: XattrTarget, names: list[str]) -> dict[str, bytes]:
    """The allowlisted attributes among ``names``, with their values."""
    kept: dict[str, bytes] = {}
    for name in names:
        if keep_in_layer(name):
            try:
                kept[name] = _getxattr(path, name)
            except OSError:
                continue
    return kept


def _getxattr(path: XattrTarget, name: str) -> bytes:
    # An fd is the file itself: "follow" is the only mode os.getxattr accepts for one.
    return os.getxattr(path, name, follow_symlinks=isinstance(path, int))


@dataclass(frozen=True)
class OverlayXattrs:
    """Overlayfs's markers in the namespace the mount uses (``trusted``, or ``user`` with
    ``userxattr``)."""

    namespace: str = "trusted"

    @property
    def prefix(self) -> str:
        return f"{self.namespace}.overlay."

    def _get(self, path: XattrTarget, key: str) -> bytes | None:
        try:
            return _getxattr(path, self.prefix + key)
        except OSError:
            return None

    def is_opaque(self, path: XattrTarget) -> bool:
        return self._get(path, "opaque") == b"y"

    def refusal(self, names: list[str]) -> str | None:
        """Which overlay feature the attribute ``names`` of one entry show, if unsupported.

        ``redirect`` (a directory renamed with ``redirect_dir=on``) and ``metacopy`` (a file
        whose data still lives below, ``metacopy=on``) make the upperdir alone an incomplete
        description of the change; the layer writer refuses them rather than guess.
        """
        for key in ("redirect", "metacopy"):
            if self.prefix + key in names:
                return key
        return None
