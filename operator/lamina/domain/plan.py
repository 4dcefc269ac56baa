"""``lamina plan``: what a new digest of one Image would set off below it, before it happens.

The answer follows the same rules as the operator: a descendant rebuilds (or rebases) when its
policy is Automatic, and a Manual descendant stops the cascade below itself until someone
triggers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lamina.domain.graph import ImageGraph


@dataclass(frozen=True)
class RebuildPolicy:
    policy: str = "Automatic"
    strategy: str = "Rebuild"


@dataclass(frozen=True)
class PlannedStep:
    """One Image the change would reach."""

    name: str
    depth: int
    parent: str
    policy: str
    strategy: str
    action: str  # "rebuild", "rebase", "waits (Manual)" or "blocked by <ancestor>"


def plan_cascade(
    root: str, graph: ImageGraph, policies: Mapping[str, RebuildPolicy]
) -> list[PlannedStep]:
    """Every descendant of ``root`` in cascade order (parents first), with what happens to it."""
    steps: list[PlannedStep] = []
    seen = {root}
    # (name, depth, the Manual ancestor holding it back, if any)
    frontier: list[tuple[str, int, str | None]] = [(root, 0, None)]
    while frontier:
        following: list[tuple[str, int, str | None]] = []
        for name, depth, held_by in frontier:
            for child in graph.children(name):
                if child in seen:
                    continue
                seen.add(child)
                policy = policies.get(child, RebuildPolicy())
                if held_by is not None:
                    action = f"blocked by {held_by}"
                elif policy.policy == "Manual":
                    action = "waits (Manual)"
                else:
                    action = policy.strategy.lower()
                steps.append(
                    PlannedStep(child, depth + 1, name, policy.policy, policy.strategy, action)
                )
                holder = held_by or (child if policy.policy == "Manual" else None)
                following.append((child, depth + 1, holder))
        frontier = following
    return steps
