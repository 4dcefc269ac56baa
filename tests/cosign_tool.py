"""The cosign binary that e2e/setup builds (the oracle for Lamina's signatures), and how the
tests call it: offline, against a plain-HTTP local registry, with no transparency log."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def cosign_binary() -> Path:
    script = (
        f"source {REPO}/e2e/lib/versions.sh && "
        'echo "$LAMINA_CACHE/bin/cosign-$COSIGN_VERSION/cosign"'
    )
    path = Path(
        subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run e2e/setup (its binaries step builds cosign)")
    return path


def cosign(
    *args: str, password: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """cosign with no network but the local registry: no TUF root, no Rekor, no Fulcio."""
    env = {
        **os.environ,
        "COSIGN_PASSWORD": password,
        "COSIGN_YES": "true",
        "TUF_ROOT": str((cwd or Path("/tmp")) / ".sigstore"),
        "SIGSTORE_NO_CACHE": "true",
        "HOME": str(cwd or Path("/tmp")),
    }
    return subprocess.run(
        [str(cosign_binary()), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def generate_key_pair(directory: Path, password: str) -> tuple[Path, Path]:
    """``cosign generate-key-pair`` into ``directory``: (cosign.key, cosign.pub)."""
    directory.mkdir(parents=True, exist_ok=True)
    made = cosign("generate-key-pair", password=password, cwd=directory)
    assert made.returncode == 0, made.stderr
    return directory / "cosign.key", directory / "cosign.pub"


def verify(image: str, public_key: Path) -> subprocess.CompletedProcess[str]:
    """``cosign verify --key``, offline: no transparency log to check (no network here)."""
    return cosign(
        "verify",
        "--key",
        str(public_key),
        "--insecure-ignore-tlog=true",
        "--allow-http-registry=true",
        "--allow-insecure-registry=true",
        image,
        cwd=public_key.parent,
    )
