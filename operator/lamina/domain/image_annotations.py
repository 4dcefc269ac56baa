"""The OCI annotations that say where an image came from, as a pure function of its inputs.

Every image Lamina pushes names its base (``org.opencontainers.image.base.name``: the parent
reference as the user wrote it, or the parent Image's repository) and pins it
(``org.opencontainers.image.base.digest``), so any registry client can walk the lineage
without the cluster.  ``org.opencontainers.image.created`` is derived from the build's
``SOURCE_DATE_EPOCH``, never from the clock, so the same inputs give the same manifest and
digest (a rebuild that changes nothing then moves no child; see :mod:`lamina.domain.rebuild`).

The epoch is 0 unless the spec sets the build arg ``SOURCE_DATE_EPOCH`` itself (it is a
build input like any other: changing it is a spec change).  Zero, as ko and apko use,
because the contexts built here have no source date: a ConfigMap's timestamps change when it
is re-created with the same content, and a parent's creation time would have to be read from
the registry on every build.  The wall-clock time of each build stays in
``status.history[].builtAt``.

``org.opencontainers.image.source`` and ``.revision`` are written for git contexts: the clone
URL (which the CRD keeps free of credentials) and the commit the build's context was checked
out at.  ConfigMaps and inline steps have neither, so they are not written rather than
written empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from lamina.api.image import ImageSpec
from lamina.api.meta import DIGEST_PATTERN, REFERENCE_PATTERN, REPOSITORY_PATTERN
from lamina.api.text import pattern_matches

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"
REVISION = "org.opencontainers.image.revision"
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # fullmatch: no trailing newline
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
DEFAULT_EPOCH = 0
# The largest epoch whose date RFC 3339 can write (9999-12-31T23:59:59Z).
MAX_EPOCH = 253402300799
_EPOCH = re.compile(r"^(0|[1-9][0-9]{0,11})$")

__all__ = [
    "BASE_DIGEST",
    "BASE_NAME",
    "CREATED",
    "DEFAULT_EPOCH",
    "REVISION",
    "SOURCE",
    "SOURCE_DATE_EPOCH",
    "InvalidLineage",
    "base_name",
    "build_annotations",
    "created_at",
    "rebased_annotations",
    "source_date_epoch",
    "split_pinned",
]


class InvalidLineage(ValueError):
    """A lineage value that cannot be written as an annotation (or the epoch is malformed)."""


def split_pinned(pinned_parent: str) -> tuple[str, str]:
    """``repository@sha256:...`` -> (repository, digest), both checked."""
    repository, _, digest = pinned_parent.rpartition("@")
    if not pattern_matches(REPOSITORY_PATTERN, repository) or len(repository) > 255:
        raise InvalidLineage(f"the pinned parent {pinned_parent[:300]!r} has no valid repository")
    if not pattern_matches(DIGEST_PATTERN, digest):
        raise InvalidLineage(f"the pinned parent {pinned_parent[:300]!r} has no sha256 digest")
    return repository, digest


def base_name(spec: ImageSpec, pinned_parent: str) -> str:
    """The base as the user named it: ``spec.parent.ref``, or the parent Image's repository."""
    repository, _ = split_pinned(pinned_parent)
    ref = spec.parent.ref
    if ref is None:
        return repository
    if not pattern_matches(REFERENCE_PATTERN, ref) or len(ref) > 512:
        raise InvalidLineage(f"spec.parent.ref {ref[:300]!r} is not an image reference")
    return ref


def source_date_epoch(spec: ImageSpec) -> int:
    """The build's epoch: the spec's ``SOURCE_DATE_EPOCH`` build arg, else 0."""
    asked = ((spec.build.args if spec.build else None) or {}).get(SOURCE_DATE_EPOCH)
    if asked is None:
        return DEFAULT_EPOCH
    if not _EPOCH.match(asked) or int(asked) > MAX_EPOCH:
        raise InvalidLineage(
            f"spec.build.args: {SOURCE_DATE_EPOCH} must be whole seconds since 1970 "
            f"(0 to {MAX_EPOCH}), not {asked[:40]!r}"
        )
    return int(asked)


def created_at(epoch: int) -> str:
    """RFC 3339 in UTC, seconds precision: what BuildKit writes as the config's ``created``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_annotations(
    spec: ImageSpec, pinned_parent: str, source_commit: str | None = None
) -> dict[str, str]:
    """The manifest annotations of a build on ``pinned_parent`` (``repository@digest``), from
    a git context at ``source_commit`` when the spec has one."""
    _, digest = split_pinned(pinned_parent)
    annotations = {
        BASE_NAME: base_name(spec, pinned_parent),
        BASE_DIGEST: digest,
        CREATED: created_at(source_date_epoch(spec)),
    }
    git = spec.build.context.git if spec.build and spec.build.context else None
    if git is not None:
        if source_commit is None or not _COMMIT.fullmatch(source_commit):
            raise InvalidLineage(f"the git context has no resolved commit ({source_commit!r})")
        annotations[SOURCE] = git.url
        annotations[REVISION] = source_commit
    return annotations


def rebased_annotations(
    annotations: Mapping[str, str], *, new_base_name: str, new_base_digest: str
) -> dict[str, str]:
    """A rebased image's annotations: the new base, everything else as it was built.

    Set even when the image predates these annotations: after a rebase its parent is known.
    """
    if not pattern_matches(DIGEST_PATTERN, new_base_digest):
        raise InvalidLineage(f"the new parent digest {new_base_digest[:80]!r} is not sha256")
    if not pattern_matches(REFERENCE_PATTERN, new_base_name):
        raise InvalidLineage(f"the new parent name {new_base_name[:300]!r} is not a reference")
    return {**annotations, BASE_NAME: new_base_name, BASE_DIGEST: new_base_digest}
