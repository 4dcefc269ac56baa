"""Steps before the state lock: Debian packages and the binaries (builds wait on their own
lock, so two instances never compile the same thing)."""

from __future__ import annotations

from harness.components import NODE_PACKAGES
from harness.host.tools import ensure_binaries, ensure_packages
from harness.steps.base import UpContext


def packages(ctx: UpContext) -> None:
    ensure_packages(NODE_PACKAGES)


def binaries(ctx: UpContext) -> None:
    ensure_binaries(ctx.s, ctx.tier)
