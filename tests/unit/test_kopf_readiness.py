"""kopf's readiness toggles, patched to wake waiters only when the set's state flips."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from lamina.handlers import kopf_readiness


def test_waiters_still_wake_when_the_last_toggle_goes_and_only_then() -> None:
    assert kopf_readiness.install()

    async def scenario() -> tuple[int, bool]:
        toggles = aiotoggles.ToggleSet(all)
        per_object = [await toggles.make_toggle(name=f"object-{n}") for n in range(2000)]
        wakeups = 0
        original = toggles.is_on

        def counting() -> bool:
            nonlocal wakeups
            wakeups += 1
            return original()

        toggles.is_on = counting  # type: ignore[method-assign]
        waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(2000)]
        await asyncio.sleep(0)
        for toggle in per_object[:-1]:
            await toggles.drop_toggle(toggle)
        await asyncio.sleep(0)
        early = any(w.done() for w in waiters)
        await toggles.drop_toggle(per_object[-1])
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
        return wakeups, early

    wakeups, early = asyncio.run(scenario())
    assert not early
    # Linear: each drop evaluates the set twice, each waiter once or twice; unpatched kopf
    # re-evaluated it in every waiter on every drop (4,000,000 here).
    assert wakeups < 5 * 2000 * 2
