"""The one exception the harness raises on purpose."""

from __future__ import annotations


class Fail(Exception):
    """A user-facing failure: printed without a traceback, exit code 1 (or .code)."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.code = code
