"""Why an Image needs a build: each reason is a small value with the old and new input.

A build is needed when what the current digest was built from differs from what the spec and
the tree say now.  Comparing digests (never tags) is what keeps a moved tag or a re-pushed
parent from rebuilding in a loop: the same inputs always give "no reason".
"""

from __future__ import annotations

from dataclasses import dataclass

# The annotation a user (or `lamina` CLI) sets to ask for a rebuild; any new value triggers one.
REBUILD_ANNOTATION = "lamina.dev/rebuild"


@dataclass(frozen=True)
class BuiltFrom:
    """The inputs of a build: what the spec and the parent were when it ran."""

    generation: int | None = None
    parent_digest: str | None = None
    trigger: str | None = None
    # The commit of a git context (None for other contexts).
    source_commit: str | None = None


@dataclass(frozen=True)
class RebuildReason:
    """One reason for a build, e.g. ``ParentChanged sha256:aa... -> sha256:bb...``."""

    kind: str
    old: str | None
    new: str | None
    # True when a person caused it (spec edit, trigger); False for the automatic cascade.
    # User-initiated builds go first under the global build limit.
    user_initiated: bool

    def __str__(self) -> str:
        return f"{self.kind} {self.old or '-'} -> {self.new or '-'}"


SPEC_CHANGED = "SpecChanged"
PARENT_CHANGED = "ParentChanged"
MANUAL_TRIGGER = "ManualTrigger"
# The git context's revision resolved to a new commit (a moved branch): like a moved parent,
# an automatic rebuild that cascades to the descendants.
SOURCE_CHANGED = "SourceChanged"
FIRST_BUILD = "FirstBuild"


def rebuild_reasons(built: BuiltFrom | None, wanted: BuiltFrom) -> list[RebuildReason]:
    """The reasons ``wanted`` inputs need a build that ``built`` inputs do not satisfy."""
    if built is None:
        return [RebuildReason(FIRST_BUILD, None, wanted.parent_digest, user_initiated=True)]
    reasons: list[RebuildReason] = []
    if wanted.generation != built.generation:
        reasons.append(
            RebuildReason(SPEC_CHANGED, str(built.generation), str(wanted.generation), True)
        )
    if wanted.parent_digest != built.parent_digest:
        reasons.append(
            RebuildReason(PARENT_CHANGED, built.parent_digest, wanted.parent_digest, False)
        )
    if wanted.source_commit is not None and wanted.source_commit != built.source_commit:
        reasons.append(
            RebuildReason(SOURCE_CHANGED, built.source_commit, wanted.source_commit, False)
        )
    if wanted.trigger is not None and wanted.trigger != built.trigger:
        reasons.append(RebuildReason(MANUAL_TRIGGER, built.trigger, wanted.trigger, True))
    return reasons
