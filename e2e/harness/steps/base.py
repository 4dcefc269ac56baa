"""Steps: what `up` does, as named functions run in order, each one timed (as kind's actions)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from harness.components import COMPONENTS
from harness.settings import TIERS, Settings, Tier


@dataclass
class UpContext:
    """What the steps of one `up` share."""

    s: Settings
    tier: Tier
    t0: float = field(default_factory=time.monotonic)
    # Set by the plan step.
    fingerprint: dict[str, Any] = field(default_factory=dict)
    running: dict[str, Any] | None = None  # what the running cluster was started with
    switch_argv: dict[str, Any] | None = None  # its command lines, on a tier switch in place
    # Set by the restarts step: index (in start order) of the first component to (re)start.
    start_from: int | None = None
    finished: bool = False  # nothing more to do (the cluster was already up)
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def components(self) -> tuple[str, ...]:
        return COMPONENTS[self.tier]

    def starts(self, component: str) -> bool:
        """True when `component` is (re)started by this `up`."""
        return self.start_from is not None and self.components.index(component) >= self.start_from


C = TypeVar("C", bound=UpContext)


@dataclass(frozen=True)
class Step(Generic[C]):
    name: str
    run: Callable[[C], None]
    tiers: tuple[Tier, ...] = TIERS


def run_steps(ctx: C, steps: Sequence[Step[C]]) -> None:
    """Run the steps of the context's tier in order, until one finishes the `up`."""
    for step in steps:
        if ctx.finished:
            return
        if ctx.tier not in step.tiers:
            continue
        t0 = time.monotonic()
        step.run(ctx)
        ctx.timings.append((step.name, time.monotonic() - t0))


def timings_line(timings: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {took:.1f}s" for name, took in timings)
