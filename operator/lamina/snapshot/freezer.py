"""Freeze a container's cgroup while its writable layer is read, and always thaw it.

A frozen container cannot change its files halfway through the read, so the layer is a
consistent snapshot.  cgroup v1 uses the ``freezer`` controller (``freezer.state``:
``FROZEN``/``THAWED``); cgroup v2 uses ``cgroup.freeze`` (``1``/``0``) and reports completion
in ``cgroup.events`` (``frozen 1``).  On a hybrid host (v1 controllers plus a v2 tree), the v1
freezer is used when the process has one, as runc itself does.

Thawing happens in every exit path the committer can see: the ``with`` block's ``finally``,
and SIGTERM/SIGINT/SIGHUP handlers that thaw first and then exit (a Job deadline or
``kubectl delete`` sends SIGTERM).  SIGKILL cannot be caught: the operator thaws the
container when the commit pod dies (``lamina snapshot --thaw`` does the same by hand).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class FreezeFailed(Exception):
    """The cgroup could not be frozen (it was thawed again before this was raised)."""


@dataclass(frozen=True)
class CgroupFreezer:
    """One cgroup's freeze switch."""

    directory: Path
    version: int

    @classmethod
    def for_cgroups(
        cls, cgroups: dict[str, str], cgroup_root: str = "/sys/fs/cgroup"
    ) -> CgroupFreezer:
        """Pick the v1 freezer if the process has one, else the v2 (unified) cgroup."""
        root = Path(cgroup_root)
        for controllers, path in cgroups.items():
            if "freezer" in controllers.split(","):
                directory = root / "freezer" / path.lstrip("/")
                if (directory / "freezer.state").exists():
                    return cls(directory, 1)
        if "" in cgroups:
            for base in (root, root / "unified"):
                directory = base / cgroups[""].lstrip("/")
                if (directory / "cgroup.freeze").exists():
                    return cls(directory, 2)
        raise FreezeFailed(f"no freezer found under {cgroup_root} for cgroups {cgroups}")

    def freeze(self) -> None:
        if self.version == 1:
            (self.directory / "freezer.state").write_text("FROZEN")
        else:
            (self.directory / "cgroup.freeze").write_text("1")

    def thaw(self) -> None:
        if self.version == 1:
            (self.directory / "freezer.state").write_text("THAWED")
        else:
            (self.directory / "cgroup.freeze").write_text("0")

    def is_frozen(self) -> bool:
        if self.version == 1:
            return (self.directory / "freezer.state").read_text().strip() == "FROZEN"
        events = (self.directory / "cgroup.events").read_text().split()
        return "frozen" in events and events[events.index("frozen") + 1] == "1"

    def wait_frozen(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_frozen():
            if time.monotonic() > deadline:
                raise FreezeFailed(f"{self.directory} did not freeze within {timeout}s")
            # v1 may stay FREEZING while a task is in an uninterruptible sleep; re-asking
            # is what `runc pause` does too.
            self.freeze()
            time.sleep(0.005)

    @contextlib.contextmanager
    def frozen(self, timeout: float = 10.0) -> Iterator[Callable[[], float]]:
        """Freeze for the block; yields a function giving the seconds frozen so far."""
        previous = {number: signal.getsignal(number) for number in _HANDLED_SIGNALS}

        def thaw_and_exit(number: int, frame: FrameType | None) -> None:
            with contextlib.suppress(OSError):
                self.thaw()
            sys.stderr.write(f"lamina: signal {number}: container thawed, exiting\n")
            os._exit(128 + number)

        for number in _HANDLED_SIGNALS:
            signal.signal(number, thaw_and_exit)
        started = time.monotonic()
        try:
            self.freeze()
            try:
                self.wait_frozen(timeout)
            except FreezeFailed:
                self.thaw()
                raise
            yield lambda: time.monotonic() - started
        finally:
            self.thaw()
            for number, handler in previous.items():
                signal.signal(number, handler)
