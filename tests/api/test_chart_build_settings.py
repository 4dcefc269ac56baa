"""The chart's Buildah and build-cache values reach the operator as settings it accepts.

``helm template`` renders the Deployment; its container's environment is read back by the
operator's own configuration (:meth:`OperatorConfig.from_env`), so the chart's schema and the
operator agree on what a value may be: Buildah on by default, the cache off by default, and a
cache repository template that the schema and the operator both refuse when it is not the
output repository and a suffix.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from lamina.config import OperatorConfig
from tests.api.test_helm_chart import CHART, IMAGE, helm

pytestmark = pytest.mark.api

__all__ = ["helm"]  # the fixture, shared with the chart's other tests


def operator_env(helm: str, values: Path | None = None) -> dict[str, str]:
    rendered = subprocess.run(
        [helm, "template", "lamina", str(CHART), "-n", "ops", *IMAGE]
        + (["-f", str(values)] if values else []),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in operator["env"] if "value" in e}


def test_buildah_is_on_and_the_cache_off_by_default(helm: str) -> None:
    env = operator_env(helm)
    assert env["LAMINA_BUILDAH_ENABLED"] == "true"
    assert "LAMINA_BUILD_CACHE_TAG" not in env
    config = OperatorConfig.from_env({**env, "LAMINA_REGISTRY_CONFIG": ""})
    assert config.buildah_enabled is True and config.build_cache_tag is None


def test_the_cache_repository_template_reaches_the_operator(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "buildCacheTag": "lamina-buildcache",
                "buildCacheRepository": "{repository}/buildcache",
                "buildahEnabled": False,
            }
        )
    )
    env = operator_env(helm, values)
    assert env["LAMINA_BUILD_CACHE_TAG"] == "lamina-buildcache"
    assert env["LAMINA_BUILD_CACHE_REPOSITORY"] == "{repository}/buildcache"
    config = OperatorConfig.from_env({**env, "LAMINA_REGISTRY_CONFIG": ""})
    assert config.build_cache_repository == "{repository}/buildcache"
    assert config.buildah_enabled is False


@pytest.mark.parametrize(
    "template", ["cache/{repository}", "{repository}", "{repository}-Cache", "{repository},x=1"]
)
def test_a_cache_repository_that_is_not_a_suffix_is_refused_by_the_schema(
    helm: str, tmp_path: Path, template: str
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"buildCacheRepository": template}))
    refused = subprocess.run(
        [helm, "template", "lamina", str(CHART), *IMAGE, "-f", str(values)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "values don't meet the specifications of the schema" in refused.stderr
    assert "/buildCacheRepository" in refused.stderr, refused.stderr
