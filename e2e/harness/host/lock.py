"""The state lock: two `up`/`down` of one cluster instance never interleave."""

from __future__ import annotations

import fcntl
import os
from types import TracebackType

from harness.log import say
from harness.settings import Settings


class Lock:
    """An exclusive flock on <state>/lock."""

    def __init__(self, s: Settings) -> None:
        s.state.mkdir(parents=True, exist_ok=True)
        self.path = s.state / "lock"
        self.fd = -1

    def __enter__(self) -> Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another `e2e/cluster up/down` holds the state lock; waiting for it")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.close(self.fd)
