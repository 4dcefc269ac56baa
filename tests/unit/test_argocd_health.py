"""The Argo CD health check (charts/lamina/argocd/health.lua), run by a real Lua interpreter
(Debian's lua5.4, installed by e2e/setup) against statuses made the way the operator makes them
(the domain's kstatus verdicts, stamped by merge_conditions, serialised by the API models), and
the copies in charts/lamina/argocd-health.yaml checked to be that script."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from lamina.api.meta import Condition
from lamina.domain.conditions import Verdict, kstatus, merge_conditions
from tests.conftest import REPO, require_setup

CHART = REPO / "charts" / "lamina"
SCRIPT = CHART / "argocd" / "health.lua"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def lua_literal(value: Any) -> str:
    """A Lua table constructor for JSON-like data (what Argo CD hands the script as ``obj``)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            f"\\{ord(ch):03d}" if ch in "\\\"'" or ord(ch) < 32 or ord(ch) > 126 else ch
            for ch in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        items = (
            f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items() if v is not None
        )
        return "{" + ", ".join(items) + "}"
    raise TypeError(value)


def health(obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    lua = shutil.which("lua5.4")
    if lua is None:
        require_setup("packages")
        pytest.fail("lua5.4 is missing although e2e/setup says the packages are installed")
    driver = tmp_path / "driver.lua"
    driver.write_text(
        f"obj = {lua_literal(obj)}\n"
        "local check = assert(loadfile(arg[1]))\n"
        "local hs = check()\n"
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    result = subprocess.run(
        [lua, str(driver), str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\n")
    return status, message


def conditions(*verdicts: Verdict, generation: int = 1) -> list[dict[str, Any]]:
    stamped: list[Condition] = merge_conditions(None, verdicts, generation=generation, now=NOW)
    return [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in stamped]


def obj(kind: str, status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "demo", "generation": generation},
        **({"status": status} if status is not None else {}),
    }


def test_a_new_object_is_progressing(tmp_path: Path) -> None:
    assert health(obj("Image", None), tmp_path) == (
        "Progressing",
        "Waiting for the Lamina operator",
    )


def test_a_status_of_an_older_generation_is_progressing(tmp_path: Path) -> None:
    ready = kstatus(ready=True, progressing=False, reason="UpToDate", message="built")
    status = {"observedGeneration": 1, "conditions": conditions(*ready, generation=1)}
    assert health(obj("Image", status, generation=2), tmp_path) == (
        "Progressing",
        "Waiting for the Lamina operator to observe generation 2",
    )


@pytest.mark.parametrize(
    ("kind", "ready", "progressing", "reason", "message", "expected"),
    [
        ("Image", True, False, "UpToDate", "sha256:ab from parent sha256:cd", "Healthy"),
        ("Image", False, True, "BuildQueued", "FirstBuild; waiting for a slot", "Progressing"),
        ("Image", False, True, "Building", 'Job "lamina-build-1" runs', "Progressing"),
        ("Image", False, False, "BuildFailed", "RUN false: exit code 1", "Degraded"),
        ("Image", False, False, "ParentCycle", "a -> b -> a", "Degraded"),
        ("ContainerCommit", True, False, "Committed", "pushed sha256:ef", "Healthy"),
        ("ContainerCommit", False, True, "Committing", 'Job "lamina-commit-1" runs', "Progressing"),
        ("ContainerCommit", False, False, "PodNotFound", 'pod "web" not found', "Degraded"),
        ("Layer", True, False, "NoKnownAdvisory", "", "Healthy"),
    ],
)
def test_kstatus_conditions_decide(
    tmp_path: Path,
    kind: str,
    ready: bool,
    progressing: bool,
    reason: str,
    message: str,
    expected: str,
) -> None:
    verdicts = kstatus(ready=ready, progressing=progressing, reason=reason, message=message)
    status = {"observedGeneration": 1, "conditions": conditions(*verdicts)}
    assert health(obj(kind, status), tmp_path) == (
        expected,
        f"{reason}: {message}" if message else reason,
    )


def test_a_vulnerable_image_stays_healthy_and_says_so(tmp_path: Path) -> None:
    verdicts = (
        *kstatus(ready=True, progressing=False, reason="UpToDate", message="current"),
        Verdict("Vulnerable", "True", "VulnerableLayer", "sha256-11 (CVE-2024-3094) inherited"),
    )
    status = {"observedGeneration": 1, "conditions": conditions(*verdicts)}
    assert health(obj("Image", status), tmp_path) == (
        "Healthy",
        "UpToDate: current; Vulnerable: VulnerableLayer: sha256-11 (CVE-2024-3094) inherited",
    )


def test_hostile_text_in_a_message_is_only_text(tmp_path: Path) -> None:
    message = 'quote " backslash \\ newline \n ]] end os.exit(3) --'
    verdicts = kstatus(ready=False, progressing=False, reason="BuildFailed", message=message)
    status = {"observedGeneration": 1, "conditions": conditions(*verdicts)}
    assert health(obj("Image", status), tmp_path) == ("Degraded", f"BuildFailed: {message}")


def test_the_configmap_snippet_carries_the_script_for_each_kind() -> None:
    snippet = yaml.safe_load((CHART / "argocd-health.yaml").read_text())
    script = SCRIPT.read_text()
    for kind in ("Image", "Layer", "ContainerCommit"):
        assert snippet["data"][f"resource.customizations.health.lamina.dev_{kind}"] == script
