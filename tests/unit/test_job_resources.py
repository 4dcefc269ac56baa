"""Resources of Lamina's Job containers: what the settings accept, and what the Jobs carry."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lamina.api.commit import ContainerCommitSpec
from lamina.config import OperatorConfig
from lamina.domain.commit_job import CommitSettings, CommitTarget, commit_job
from lamina.domain.job_resources import JobResources, parse_job_resources
from tests.unit.test_build_job import SETTINGS, job_for, spec


def make_job(**settings: Any) -> dict[str, Any]:
    return job_for(spec({"steps": ["RUN true"]}), settings=replace(SETTINGS, **settings))


CHART_BUILD = '{"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "4Gi"}}'


def test_the_charts_default_parses() -> None:
    resources = parse_job_resources(CHART_BUILD, "LAMINA_BUILD_RESOURCES")
    assert resources.wire() == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "4Gi"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "LAMINA_BUILD_RESOURCES: not JSON"),
        ("[]", 'must be an object with only "requests" and "limits"'),
        ('{"requests": {}, "claims": []}', 'must be an object with only "requests" and "limits"'),
        ('{"requests": {"gpu": "1"}}', "LAMINA_BUILD_RESOURCES.requests: unknown resource 'gpu'"),
        ('{"limits": {"memory": "4 GB"}}', "limits.memory: '4 GB' is not a quantity"),
        ('{"limits": {"memory": "4Gi; rm -rf /"}}', "is not a quantity"),
        ('{"limits": {"cpu": true}}', "limits.cpu: 'True' is not a quantity"),
        ('{"requests": "1"}', "requests: must be an object of resource quantities"),
    ],
)
def test_a_setting_the_operator_cannot_use_is_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^LAMINA_BUILD_RESOURCES") as refused:
        parse_job_resources(text, "LAMINA_BUILD_RESOURCES")
    assert message in str(refused.value)


def test_the_operator_reads_them_from_its_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "LAMINA_BUILD_RESOURCES": CHART_BUILD,
            "LAMINA_COMMIT_RESOURCES": '{"limits": {"memory": "1Gi"}}',
            "LAMINA_BUILD_STATE_SIZE_LIMIT": "20Gi",
        }
    )
    assert config.build_resources.wire()["limits"] == {"memory": "4Gi"}
    assert config.commit_resources.wire() == {"limits": {"memory": "1Gi"}}
    assert config.build_state_size_limit == "20Gi"
    with pytest.raises(ValueError, match="LAMINA_BUILD_STATE_SIZE_LIMIT: 'lots' is not"):
        OperatorConfig.from_env({"LAMINA_BUILD_STATE_SIZE_LIMIT": "lots"})


def test_build_jobs_carry_the_resources_and_the_state_limit() -> None:
    resources = parse_job_resources(CHART_BUILD, "x")
    job = make_job(resources=resources, state_size_limit="20Gi")
    pod = job["spec"]["template"]["spec"]
    (build,) = pod["containers"]
    assert build["resources"] == resources.wire()
    (state,) = [v for v in pod["volumes"] if v["name"] == "state"]
    assert state["emptyDir"] == {"sizeLimit": "20Gi"}
    # Unset: no resources key, no limit (a LimitRange may still apply).
    bare = make_job()["spec"]["template"]["spec"]
    assert "resources" not in bare["containers"][0]
    assert next(v for v in bare["volumes"] if v["name"] == "state")["emptyDir"] == {}


def test_commit_jobs_carry_the_resources() -> None:
    settings = CommitSettings(
        namespace="lamina-system",
        image="lamina:1",
        resources=JobResources(limits=(("memory", "1Gi"),)),
    )
    job = commit_job(
        namespace="team",
        name="snap",
        uid="u-1",
        spec=ContainerCommitSpec.model_validate(
            {"pod": "web", "output": {"repository": "registry.example/team/web", "tag": "v1"}}
        ),
        target=CommitTarget("node-1", "containerd://abc", "busybox:1", None),
        settings=settings,
    )
    (committer,) = job["spec"]["template"]["spec"]["containers"]
    assert committer["resources"] == {"limits": {"memory": "1Gi"}}


def test_buildah_jobs_keep_the_resources_and_the_storage_limit() -> None:
    resources = parse_job_resources(CHART_BUILD, "x")
    job = make_job(resources=resources, state_size_limit="20Gi", default_engine="buildah")
    pod = job["spec"]["template"]["spec"]
    (build,) = pod["containers"]
    assert build["command"][2].count("buildah") >= 1
    assert build["resources"] == resources.wire()
    (storage,) = [v for v in pod["volumes"] if v["name"] == "containers-storage"]
    assert storage["emptyDir"] == {"sizeLimit": "20Gi"}
