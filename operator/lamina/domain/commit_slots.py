"""Whether one more commit Job may start: a global limit and an optional per-namespace cap.

A commit Job is privileged, runs on the target's node and may freeze a tenant's container
while it reads the writable layer; without a limit, one tenant applying a thousand
ContainerCommits would start a thousand of them at once.  A commit that finds no slot waits
in ``Pending`` with reason ``CommitQueued`` (saying which limit holds it) and starts when a
slot frees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

COMMIT_QUEUED = "CommitQueued"


@dataclass(frozen=True)
class CommitSlots:
    limit: int = 4
    per_namespace: int | None = None


def commit_slot_refusal(
    running: Mapping[str, int], namespace: str, slots: CommitSlots
) -> str | None:
    """Why a commit in ``namespace`` cannot start now (None: it can).

    ``running``: the commit Jobs running now, by the namespace of their ContainerCommit.
    """
    total = sum(running.values())
    if total >= slots.limit:
        return (
            f"waiting for a commit slot: {total} of {slots.limit} commit Jobs are running "
            "(LAMINA_MAX_CONCURRENT_COMMITS)"
        )
    mine = running.get(namespace, 0)
    if slots.per_namespace is not None and mine >= slots.per_namespace:
        return (
            f"waiting for a commit slot: {mine} commit Jobs of namespace {namespace} are "
            f"running, at most {slots.per_namespace} (LAMINA_MAX_COMMITS_PER_NAMESPACE)"
        )
    return None
