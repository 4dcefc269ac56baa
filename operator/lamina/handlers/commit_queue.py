"""The commits waiting for a slot, as this operator process has seen them ask.

Commits are reconciled one at a time (each by its own handler), so no pass sees them all at
once as the build pass sees Images.  Each commit that finds no slot is remembered here with
when it first asked; the next to ask is given a slot only when the fair share of
:func:`lamina.domain.commit_slots.choose_commits` over everything queued gives it one.  A
queued commit asks again every few seconds; one that stopped asking (deleted, its target
gone, started) drops out after :data:`FORGET_AFTER`, so it holds no turn for long.  After a
restart the queue refills within one recheck.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lamina.domain.commit_slots import QueuedCommit

# Queued commits ask again every QUEUED_RECHECK_SECONDS (5 s); four missed rechecks: gone.
FORGET_AFTER = timedelta(seconds=20)
# When a namespace was last given a slot matters only against the commits waiting now.
FORGET_SERVED_AFTER = timedelta(hours=6)


@dataclass
class CommitQueue:
    # (namespace, name) -> (uid, first asked, last asked)
    _waiting: dict[tuple[str, str], tuple[str, datetime, datetime]] = field(default_factory=dict)
    # namespace -> when one of its commits was last given a slot (whose turn it is next)
    served: dict[str, datetime] = field(default_factory=dict)

    def asking(self, namespace: str, name: str, uid: str, now: datetime) -> QueuedCommit:
        """The commit asking now, with when it first asked (now, for a new or re-created one)."""
        known = self._waiting.get((namespace, name))
        since = known[1] if known is not None and known[0] == uid else now
        self._waiting[(namespace, name)] = (uid, since, now)
        return QueuedCommit(namespace, name, since)

    def others(self, namespace: str, name: str, now: datetime) -> list[QueuedCommit]:
        """The other commits still waiting (forgetting those that stopped asking)."""
        for key, (_, _, last) in list(self._waiting.items()):
            if now - last > FORGET_AFTER:
                del self._waiting[key]
        for tenant, at in list(self.served.items()):
            if now - at > FORGET_SERVED_AFTER:
                del self.served[tenant]
        return [
            QueuedCommit(key[0], key[1], since)
            for key, (_, since, _) in self._waiting.items()
            if key != (namespace, name)
        ]

    def forget(self, namespace: str, name: str) -> None:
        """A commit whose start failed: it asks again at the back, holding no turn now."""
        self._waiting.pop((namespace, name), None)

    def started(self, namespace: str, name: str, now: datetime) -> None:
        self._waiting.pop((namespace, name), None)
        self.served[namespace] = now


# One per operator process, like the slot lock it is used under.
QUEUE = CommitQueue()
