"""The API server refuses the engines the operator cannot run, and defaults to the one it can.

Kaniko's upstream was archived in 2025 and Buildah is not wired: an Image naming either is
refused at admission, naming the field and the values it admits, and nothing is stored.
"""

from __future__ import annotations

import pytest

from tests.api.test_crd_validation import image
from tests.conftest import KubeCluster

pytestmark = pytest.mark.api


@pytest.mark.parametrize("engine", ["kaniko", "buildah"])
def test_an_engine_the_operator_cannot_run_is_refused(
    crds_installed: KubeCluster, namespace: str, engine: str
) -> None:
    result = crds_installed.apply(
        image("{image: base}", f"{{steps: [RUN true], engine: {engine}}}"), namespace
    )
    assert result.returncode != 0
    assert "spec.build.engine" in result.stderr, result.stderr
    assert f'Unsupported value: "{engine}"' in result.stderr, result.stderr
    assert '"buildkit"' in result.stderr, result.stderr
    assert crds_installed.get("image", "subject", namespace) is None


def test_the_engine_defaults_to_buildkit(crds_installed: KubeCluster, namespace: str) -> None:
    assert (
        crds_installed.apply(image("{image: base}", "{steps: [RUN true]}"), namespace).returncode
        == 0
    )
    stored = crds_installed.get("image", "subject", namespace)
    assert stored is not None and stored["spec"]["build"]["engine"] == "buildkit"
