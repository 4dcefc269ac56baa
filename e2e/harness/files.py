"""Small file helpers: atomic writes, JSON records, the end of a log."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def write_file(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Atomic write (temp file + rename) so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, record: Record, *, indent: int | None = None) -> None:
    write_file(path, json.dumps(record, indent=indent) + "\n")


def read_json(path: Path) -> Record | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return "(no log file)"
    text = data.decode(errors="replace").rstrip("\n").splitlines()
    return "\n".join(text[-lines:]) if text else "(log is empty)"
