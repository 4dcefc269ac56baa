"""The API server admits the engines the operator runs, and leaves the choice to the operator.

``spec.build.engine`` admits ``buildkit`` and ``buildah``; anything else (Kaniko, whose
upstream was archived in 2025, a misspelling, another case) is refused at admission, naming
the field and the values it admits, and nothing is stored.  An Image that leaves the field
unset is stored without it, and the real operator builds it with its own default engine
(``LAMINA_DEFAULT_BUILD_ENGINE``), not with one the schema would have forced.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.api.build_loop import build_loop_operator
from tests.api.test_build_planning import push
from tests.api.test_crd_validation import image
from tests.api.test_hostile_specs import image as json_image
from tests.conftest import KubeCluster, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api


@pytest.mark.parametrize("engine", ["kaniko", "docker", "BuildKit", "Buildah", '""'])
def test_an_engine_the_operator_cannot_run_is_refused(
    crds_installed: KubeCluster, namespace: str, engine: str
) -> None:
    result = crds_installed.apply(
        image("{image: base}", f"{{steps: [RUN true], engine: {engine}}}"), namespace
    )
    assert result.returncode != 0
    assert "spec.build.engine" in result.stderr, result.stderr
    assert f'Unsupported value: "{engine.strip(chr(34))}"' in result.stderr, result.stderr
    assert 'supported values: "buildkit", "buildah"' in result.stderr, result.stderr
    assert crds_installed.get("image", "subject", namespace) is None


@pytest.mark.parametrize("engine", ["buildkit", "buildah"])
def test_an_engine_the_operator_runs_is_stored_as_written(
    crds_installed: KubeCluster, namespace: str, engine: str
) -> None:
    result = crds_installed.apply(
        image("{image: base}", f"{{steps: [RUN true], engine: {engine}}}"), namespace
    )
    assert result.returncode == 0, result.stderr
    stored = crds_installed.get("image", "subject", namespace)
    assert stored is not None and stored["spec"]["build"]["engine"] == engine


def test_an_unset_engine_stays_unset(crds_installed: KubeCluster, namespace: str) -> None:
    assert (
        crds_installed.apply(image("{image: base}", "{steps: [RUN true]}"), namespace).returncode
        == 0
    )
    stored = crds_installed.get("image", "subject", namespace)
    assert stored is not None and "engine" not in stored["spec"]["build"]


def test_the_operators_default_engine_builds_an_image_that_names_none(
    crds_installed: KubeCluster, registry: Registry, namespace: str, tmp_path: Path
) -> None:
    """With ``LAMINA_DEFAULT_BUILD_ENGINE=buildah``, an Image without an engine gets a Buildah
    Job and one that names buildkit gets BuildKit's: the spec wins, the default fills in."""
    kube = crds_installed
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", operator_ns, check=True)
    try:
        with build_loop_operator(
            kube,
            registry,
            tmp_path,
            operator_ns,
            LAMINA_BUILDAH_IMAGE="buildah:test",
            LAMINA_DEFAULT_BUILD_ENGINE="buildah",
        ) as operator:
            repository = f"parents/{uuid.uuid4().hex[:8]}"
            push(registry, repository, "1", "one", tmp_path)
            parent = {"ref": registry.ref(repository, "1"), "pollInterval": "1s"}
            for name, build in (
                ("unset", {"steps": ["RUN true"], "args": {"MODE": "$(touch /pwned)"}}),
                ("named", {"steps": ["RUN true"], "engine": "buildkit"}),
            ):
                output = {"repository": f"{registry.address}/out/{name}", "insecure": True}
                created = kube.apply(
                    json_image(name=name, parent=parent, build=build, output=output), namespace
                )
                assert created.returncode == 0, created.stderr

            def jobs() -> dict[str, dict[str, Any]]:
                listed = kube.kubectl("get", "jobs", "-n", operator_ns, "-o", "json", check=True)
                found = {
                    job["metadata"]["annotations"].get("lamina.dev/image-name"): job
                    for job in json.loads(listed.stdout)["items"]
                }
                return found if {"unset", "named"} <= set(found) else {}

            found = wait_for(jobs, timeout=60, what="the build Jobs of both Images")
            unset, named = found["unset"], found["named"]
            assert unset["metadata"]["annotations"]["lamina.dev/build-engine"] == "buildah"
            assert named["metadata"]["annotations"]["lamina.dev/build-engine"] == "buildkit"
            (build,) = unset["spec"]["template"]["spec"]["containers"]
            assert build["image"] == "buildah:test"
            assert build["command"][:2] == ["/bin/sh", "-c"] and build["command"][3:] == [
                "lamina-build"
            ]
            script = build["command"][2]
            assert "buildah --cgroup-manager=cgroupfs build" in script and "$(touch" not in script
            assert "--build-arg=MODE=$(touch /pwned)" in build["args"]
            # RUN steps in runc containers (Buildah on by default for that reason).
            assert build["args"][:2] == ["--isolation=oci", "--pid=private"]
            assert build["securityContext"] == {"privileged": True}
            # The registries.conf the builder reads: the operator's plain-HTTP registry only.
            conf = unset["spec"]["template"]["metadata"]["annotations"][
                "lamina.dev/registries-conf"
            ]
            assert f'location = "{registry.address}"\ninsecure = true' in conf
            (other,) = named["spec"]["template"]["spec"]["containers"]
            assert other["image"] == "builder:test"
            assert any(arg.startswith("--opt=build-arg:") for arg in other["args"])
    finally:
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")
    assert "Traceback" not in operator.log.read_text()
