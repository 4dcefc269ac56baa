"""Progress lines: on stderr, prefixed, so stdout stays for what scripts parse."""

from __future__ import annotations

import sys


def say(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)
