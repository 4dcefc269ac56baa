"""A fix for kopf's start-up readiness, which is quadratic in the number of indexed objects.

kopf holds every handler back until all indexes hold their initial listing.  It tracks that
with one toggle per listed object in one ``ToggleSet``, and every toggle added or dropped wakes
every worker waiting on the set, each of which re-evaluates the set: with N listed objects that
is N x N wake-ups.  Measured here (kopf 1.45.2, 2 busy cores): 2,300 objects took 35 s to
become ready and 4,500 took 159 s, before any handler ran; 25,000 (5,000 Images, 20,000
Layers) would take hours.  The waiters only ever wait for the *set's* state to be on or off,
so waking them only when that state flips keeps every waiter's answer and makes a start
linear.  Applied once, at import, to kopf's own class; the check below refuses to patch a kopf
whose ToggleSet does not look as expected (then it stays as it is, only slow).
"""

from __future__ import annotations

from typing import Any

from kopf._cogs.aiokits import aiotoggles

_PATCHED = "_lamina_flip_only"


async def _make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != before:
            self._condition.notify_all()


def install() -> bool:
    """Patch kopf's ToggleSet; False when it does not have the expected shape."""
    cls: Any = aiotoggles.ToggleSet
    if getattr(cls, _PATCHED, False):
        return True
    probe = cls(all)
    if not all(hasattr(probe, attr) for attr in ("_condition", "_toggles", "is_on")):
        return False
    cls.make_toggle = _make_toggle
    cls.drop_toggle = _drop_toggle
    setattr(cls, _PATCHED, True)
    return True
