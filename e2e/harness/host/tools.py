"""The repository's shell tools the harness drives: Debian packages, the binary builds, the
local registry, the offline images, and kubectl."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from harness.components import K8S_BINARIES
from harness.errors import Fail
from harness.log import say
from harness.paths import BUILD_SCRIPT, IMAGES_SCRIPT, PACKAGES_SH, REGISTRY_SCRIPT, REPO
from harness.settings import Settings, Tier


def ensure_packages(pkgs: tuple[str, ...]) -> None:
    if not PACKAGES_SH.is_file():
        raise Fail(f"{PACKAGES_SH.relative_to(REPO)} is missing")
    r = subprocess.run(
        ["bash", "-c", 'source "$1"; shift; ensure_packages "$@"', "pkgs", str(PACKAGES_SH), *pkgs],
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,
        check=False,
    )
    if r.returncode != 0:
        raise Fail(f"could not install Debian packages {' '.join(pkgs)}")


def binaries_present(s: Settings, tier: Tier) -> bool:
    comps = K8S_BINARIES[tier]
    have = all(
        (s.k8s_bin / c).is_file() and os.access(s.k8s_bin / c, os.X_OK)
        for c in comps
        if c.startswith("kube")
    )
    if "containerd" in comps:
        have = have and (s.containerd_bin / "containerd").is_file()
    return have and all((s.etcd_bin / b).is_file() for b in ("etcd", "etcdctl"))


def ensure_binaries(s: Settings, tier: Tier) -> None:
    have = binaries_present(s, tier)
    if not have:
        say(f"building missing binaries into {s.cache}/bin (a cold build takes tens of minutes)")
    t0 = time.monotonic()
    r = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *K8S_BINARIES[tier]],
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,
        check=False,
    )
    if r.returncode != 0:
        raise Fail(f"{BUILD_SCRIPT.relative_to(REPO)} failed (exit {r.returncode})")
    if not have:
        say(f"binaries built in {time.monotonic() - t0:.0f}s")


def registry_env(s: Settings) -> dict[str, str]:
    return dict(
        os.environ,
        LAMINA_STATE_DIR=str(s.state),
        LAMINA_REGISTRY_ADDR=s.advertise,
        LAMINA_REGISTRY_PORT=str(s.registry_port),
    )


def registry_up(s: Settings) -> None:
    t0 = time.monotonic()
    r = subprocess.run(
        [str(REGISTRY_SCRIPT), "up"],
        env=registry_env(s),
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise Fail(f"e2e/registry up ({s.registry}) failed:\n{r.stdout}{r.stderr}")
    say(f"registry on {s.registry} ({time.monotonic() - t0:.1f}s, storage {s.registry_state})")


def registry_down(s: Settings) -> str | None:
    """Stop the registry `up` started (its pid file is in its storage); one line, or None."""
    if not (s.registry_state / "registry.pid").exists():
        return None
    r = subprocess.run(
        [str(REGISTRY_SCRIPT), "down"],
        env=registry_env(s),
        capture_output=True,
        text=True,
        check=False,
    )
    return (r.stdout.strip() or r.stderr.strip()).replace("\n", "; ")


def push_images(target: str) -> float:
    """e2e/lib/build-images.sh: make the offline images (cached) and push them to `target`."""
    t0 = time.monotonic()
    r = subprocess.run(
        ["bash", str(IMAGES_SCRIPT), target],
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,
        check=False,
    )
    if r.returncode != 0:
        raise Fail(f"{IMAGES_SCRIPT.relative_to(REPO)} failed (exit {r.returncode})")
    return time.monotonic() - t0


def kubectl_env(s: Settings) -> dict[str, str]:
    return dict(os.environ, KUBECONFIG=str(s.admin_kubeconfig), KUBECACHEDIR=str(s.kube_cache))


def kubectl_run(s: Settings, *args: str, input: str | None = None) -> str:
    r = subprocess.run(
        [str(s.kubectl), *args],
        input=input,
        env=kubectl_env(s),
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise Fail(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout
