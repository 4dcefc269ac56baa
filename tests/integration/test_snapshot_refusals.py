"""What ``lamina snapshot`` refuses, on real mounts and a real (or absent) registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import Registry, lamina_snapshot, push_parent, run

pytestmark = pytest.mark.integration


def mount_overlay(base: Path, options: str) -> tuple[Path, Path, Path]:
    lower, upper, work, merged = (base / n for n in ("lower", "upper", "work", "merged"))
    for directory in (upper, work, merged):
        directory.mkdir()
    (lower / "dir").mkdir(parents=True)
    (lower / "dir" / "file").write_text("below")
    (lower / "plain").write_text("below")
    result = run(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={lower},upperdir={upper},workdir={work},{options}",
        merged,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"this kernel refuses overlay option {options!r}: {result.stderr.strip()}")
    return lower, upper, merged


@pytest.mark.parametrize(
    ("options", "change", "feature"),
    [
        ("redirect_dir=on", lambda m: os.rename(m / "dir", m / "moved"), "redirect"),
        ("metacopy=on", lambda m: (m / "plain").chmod(0o600), "metacopy"),
    ],
)
def test_redirect_and_metacopy_are_refused_with_a_clear_error(
    tmp_path: Path,
    registry: Registry,
    repository: str,
    options: str,
    change: object,
    feature: str,
) -> None:
    lower, upper, merged = mount_overlay(tmp_path, options)
    try:
        change(merged)  # type: ignore[operator]
    finally:
        run("umount", merged)
    result = lamina_snapshot(
        "--upper",
        upper,
        "--lower",
        lower,
        "--parent",
        registry.ref(f"{repository}/parent"),
        "--to",
        registry.ref(f"{repository}/never-pushed"),
        "--insecure",
    )
    assert result.returncode == 1
    assert f"trusted.overlay.{feature}" in result.stderr
    assert "refuses to write a layer that could be wrong" in result.stderr
    assert result.stdout == ""


def test_an_unreachable_registry_fails_clearly_after_bounded_retries(
    tmp_path: Path, registry: Registry
) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_text("x")
    result = lamina_snapshot(
        "--upper",
        upper,
        "--parent",
        registry.ref("it/none", "1"),
        "--to",
        "127.0.0.1:1/it/refused:1",
        "--insecure",
        "--retries",
        "2",
    )
    assert result.returncode == 1
    assert "cannot reach registry 127.0.0.1:1 (http)" in result.stderr
    assert "after 3 attempts" in result.stderr


def test_a_missing_parent_fails_with_the_registrys_own_message(
    tmp_path: Path, registry: Registry, repository: str
) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_text("x")
    result = lamina_snapshot(
        "--upper",
        upper,
        "--parent",
        registry.ref(f"{repository}/missing", "nope"),
        "--to",
        registry.ref(f"{repository}/out"),
        "--insecure",
    )
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr
    assert "MANIFEST_UNKNOWN" in result.stderr


def test_a_tls_registry_is_not_spoken_to_in_plain_http_unless_asked(
    tmp_path: Path, registry: Registry, repository: str
) -> None:
    parent = registry.ref(f"{repository}/parent", "1")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "a").write_text("a")
    push_parent(rootfs, parent, tmp_path)
    upper = tmp_path / "upper"
    upper.mkdir()
    result = lamina_snapshot(
        "--upper",
        upper,
        "--parent",
        parent,
        "--to",
        registry.ref(f"{repository}/out"),
        "--retries",
        "0",
    )
    assert result.returncode == 1
    assert "(https)" in result.stderr
