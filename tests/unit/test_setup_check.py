"""``e2e/setup --check`` builds nothing and names what set-up has not done, so the test
fixtures can fail fast with "run e2e/setup" instead of building under a test timeout."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import SETUP


def check(cache: Path, *steps: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SETUP), "--check", *steps],
        env={**os.environ, "LAMINA_CACHE": str(cache), "GOMODCACHE": "", "GOCACHE": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_an_empty_cache_is_reported_step_by_step_without_building(tmp_path: Path) -> None:
    started = time.monotonic()
    result = check(tmp_path, "binaries", "images", "wheels")
    assert result.returncode == 1
    assert "not set up: binaries images wheels" in result.stderr
    assert "run: e2e/setup" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was built or downloaded
    assert time.monotonic() - started < 30


def test_built_binaries_satisfy_the_check(tmp_path: Path) -> None:
    versions = subprocess.run(
        ["bash", "-c", f"set -a && source {SETUP.parent}/lib/versions.sh && env"],
        env={**os.environ, "LAMINA_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    v = dict(line.split("=", 1) for line in versions.splitlines() if "=" in line)
    bins = tmp_path / "bin"
    wanted = [
        f"etcd-{v['ETCD_VERSION']}/etcd",
        f"containerd-{v['CONTAINERD_VERSION']}/containerd",
        f"buildkit-{v['BUILDKIT_VERSION']}/buildkitd",
        f"helm-{v['HELM_VERSION']}/helm",
        f"cosign-{v['COSIGN_VERSION']}/cosign",
        *(
            f"kubernetes-{v['K8S_VERSION']}/{c}"
            for c in (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubelet",
                "kube-proxy",
                "kubectl",
            )
        ),
    ]
    for relative in wanted:
        path = bins / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    assert check(tmp_path, "binaries").returncode == 0
    (bins / wanted[-1]).unlink()
    missing = check(tmp_path, "binaries")
    assert missing.returncode == 1
    assert "not set up: binaries" in missing.stderr
