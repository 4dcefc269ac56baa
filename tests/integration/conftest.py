"""Integration tier: real overlay mounts, a real registry, independent oracles.

The registry is Debian's ``docker-registry`` started by ``e2e/registry up`` (once per session;
one that is already answering is reused and left running, one this session started is stopped
at the end).  ``skopeo`` pulls what Lamina pushed and ``umoci`` unpacks it, so the layer is
checked by tools that share no code with Lamina.  Packages are installed by
``e2e/lib/packages.sh`` when missing.  Mounting overlays needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGISTRY_SCRIPT = REPO / "e2e" / "registry"
PACKAGES = ("docker-registry", "skopeo", "umoci", "attr", "curl", "runc", "busybox-static")


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], text=True, capture_output=True, check=False)
    if check and result.returncode != 0:
        command = " ".join(map(str, args))
        raise AssertionError(
            f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass(frozen=True)
class Registry:
    address: str

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"{self.address}/{repository}:{tag}"


@pytest.fixture(scope="session")
def tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("the integration tier mounts overlays and installs packages: run it as root")
    run("bash", "-c", f"source {REPO}/e2e/lib/packages.sh && ensure_packages {' '.join(PACKAGES)}")


@pytest.fixture(scope="session")
def registry(tools: None) -> Iterator[Registry]:
    already_up = run(REGISTRY_SCRIPT, "status", check=False).returncode == 0
    if not already_up:
        run(REGISTRY_SCRIPT, "up")
    address = run(REGISTRY_SCRIPT, "address").stdout.strip()
    yield Registry(address)
    if not already_up:
        run(REGISTRY_SCRIPT, "down", check=False)


@pytest.fixture
def repository() -> str:
    return f"it/{uuid.uuid4().hex[:10]}"


def lamina_snapshot(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, as the commit Job runs it."""
    return run(sys.executable, "-m", "lamina.cli.main", "snapshot", *args, check=False)


def push_parent(rootfs: Path, ref: str, work: Path) -> None:
    """An image whose single layer is ``rootfs``, made by umoci and pushed by skopeo."""
    layout = work / "parent-oci"
    bundle = work / "parent-bundle"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:base")
    run("umoci", "unpack", "--image", f"{layout}:base", bundle)
    for child in rootfs.iterdir():
        run("cp", "-a", child, bundle / "rootfs")
    run("umoci", "repack", "--image", f"{layout}:base", bundle)
    run(
        "umoci",
        "config",
        "--image",
        f"{layout}:base",
        "--config.env",
        "FROM_PARENT=1",
        "--config.cmd",
        "sh",
    )
    run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:base", f"docker://{ref}")
    shutil.rmtree(bundle)


def pull_and_unpack(ref: str, work: Path) -> Path:
    """skopeo pulls ``ref`` into an OCI layout; umoci unpacks it; returns the rootfs."""
    layout = work / "pulled-oci"
    bundle = work / "pulled-bundle"
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:pulled")
    run("umoci", "unpack", "--image", f"{layout}:pulled", bundle)
    return bundle / "rootfs"


def inspect_config(ref: str) -> dict[str, object]:
    out = run("skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{ref}").stdout
    config: dict[str, object] = json.loads(out)
    return config
