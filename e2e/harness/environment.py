"""Reads the machine for `Settings`: the environment, e2e/lib/versions.sh, the recorded tier."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.errors import Fail
from harness.files import read_json
from harness.paths import REPO, VERSIONS_SH
from harness.settings import Settings, Tier, Versions, as_tier, settings_from_env

VERSION_VARS = (
    "K8S_VERSION",
    "ETCD_VERSION",
    "LAMINA_CACHE",
    "CONTAINERD_VERSION",
    "PAUSE_VERSION",
)


def read_versions_sh(names: tuple[str, ...] = VERSION_VARS) -> dict[str, str]:
    """versions.sh is the single source of truth (and honours K8S_VERSION etc. overrides)."""
    script = 'source "$1" && printf "%s\\n" ' + " ".join(f'"${v}"' for v in names)
    out = subprocess.run(
        ["bash", "-c", script, "versions", str(VERSIONS_SH)],
        check=False,
        capture_output=True,
        text=True,
    )
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != len(names) or not all(lines):
        raise Fail(f"could not read {VERSIONS_SH}: {out.stderr.strip()}")
    return dict(zip(names, lines, strict=True))


def read_versions() -> Versions:
    v = read_versions_sh()
    return Versions(
        k8s=v["K8S_VERSION"],
        etcd=v["ETCD_VERSION"],
        cache=Path(v["LAMINA_CACHE"]).expanduser().resolve(),
        containerd=v["CONTAINERD_VERSION"],
        pause=v["PAUSE_VERSION"],
    )


def state_dir() -> Path:
    state = os.environ.get("LAMINA_STATE_DIR", "").strip()
    return Path(state).resolve() if state else REPO / ".state" / "cluster"


def recorded_tier(state: Path) -> Tier:
    """The tier that is up (for status, env, ...), else the api tier."""
    return as_tier((read_json(state / "run" / "cluster.json") or {}).get("tier", "api"))


def load_settings(tier: Tier | None = None) -> Settings:
    """The settings of this invocation: for `tier`, or for the tier that is up."""
    state = state_dir()
    if tier is None:
        tier = recorded_tier(state)
    return settings_from_env(os.environ, read_versions(), state=state, tier=tier)
