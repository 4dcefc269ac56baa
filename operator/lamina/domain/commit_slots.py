"""Whether one more commit Job may start: a global limit and an optional per-namespace cap.

A commit Job is privileged, runs on the target's node and may freeze a tenant's container
while it reads the writable layer; without a limit, one tenant applying a thousand
ContainerCommits would start a thousand of them at once.  A commit that finds no slot waits
in ``Pending`` with reason ``CommitQueued`` (saying which limit holds it) and starts when a
slot frees.

Free slots are shared like build slots (:func:`lamina.domain.builds.choose_builds`): each
goes to the namespace with the fewest commit Jobs running (or just given a slot), and within
a namespace to the commit that has waited longest.  A tenant that queues fifty commits
cannot take every slot that frees while another tenant's one commit waits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

COMMIT_QUEUED = "CommitQueued"


@dataclass(frozen=True)
class CommitSlots:
    limit: int = 4
    per_namespace: int | None = None


@dataclass(frozen=True)
class QueuedCommit:
    """A commit that asked for a slot and has none yet; ``since``: when it first asked."""

    namespace: str
    name: str
    since: datetime


def choose_commits(
    queued: Sequence[QueuedCommit],
    running: Mapping[str, int],
    slots: CommitSlots,
    served: Mapping[str, datetime] | None = None,
) -> list[QueuedCommit]:
    """Which queued commits get the free slots now, shared fairly between namespaces.

    Each free slot goes to the namespace with the fewest commit Jobs running or just
    chosen; ties go to the namespace ``served`` (given a slot) longest ago, never served
    first, then to the one whose first commit has waited longest, then by name: with one
    slot, namespaces take turns however many commits each has queued.  Never beyond
    ``slots.per_namespace``; within a namespace the longest waiting first.  The order is
    total, so the choice is stable from one asking commit to the next.
    """
    served = served or {}
    free = max(0, slots.limit - sum(running.values()))
    queues: dict[str, list[QueuedCommit]] = {}
    for commit in sorted(queued, key=lambda c: (c.since, c.namespace, c.name)):
        queues.setdefault(commit.namespace, []).append(commit)
    counts = dict(running)
    chosen: list[QueuedCommit] = []
    while free > 0:
        open_namespaces = [
            namespace
            for namespace, queue in queues.items()
            if queue
            and (slots.per_namespace is None or counts.get(namespace, 0) < slots.per_namespace)
        ]
        if not open_namespaces:
            break
        namespace = min(
            open_namespaces,
            key=lambda n: (
                counts.get(n, 0),
                n in served,
                served.get(n, queues[n][0].since),
                queues[n][0].since,
                n,
            ),
        )
        chosen.append(queues[namespace].pop(0))
        counts[namespace] = counts.get(namespace, 0) + 1
        free -= 1
    return chosen


def commit_slot_refusal(
    running: Mapping[str, int],
    namespace: str,
    slots: CommitSlots,
    *,
    asking: QueuedCommit | None = None,
    queued: Sequence[QueuedCommit] = (),
    served: Mapping[str, datetime] | None = None,
) -> str | None:
    """Why a commit in ``namespace`` cannot start now (None: it can).

    ``running``: the commit Jobs running now, by the namespace of their ContainerCommit.
    ``asking``: the commit asking (in ``namespace``); ``queued``: the others waiting for a
    slot.  With a slot free, the asking commit takes it only when :func:`choose_commits`
    gives it one: a free slot is another namespace's turn when that one has fewer running.
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
    if asking is None:
        return None
    others = [c for c in queued if (c.namespace, c.name) != (asking.namespace, asking.name)]
    chosen = choose_commits([*others, asking], running, slots, served)
    if asking in chosen:
        return None
    ahead = len(chosen)
    return (
        f"waiting for a commit slot: {total} of {slots.limit} commit Jobs are running; the "
        f"free {'slot goes' if ahead == 1 else f'{ahead} slots go'} first to commits of "
        "namespaces with fewer commit Jobs running, or whose turn it is (fair share)"
    )
