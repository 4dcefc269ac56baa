"""The build Job of a git context: what reaches the init container, and what never does."""

from __future__ import annotations

import json

import pytest

from lamina.api.image import ImageSpec
from lamina.domain.build_job import (
    CONTEXT_COMMAND,
    GIT_AUTH_KEY,
    GIT_COMMAND,
    BuildSettings,
    DockerfileError,
    build_job,
    buildctl_args,
    dockerfile_for,
    git_secret,
)
from lamina.handlers.builds import _mounts_secret

PARENT = "registry.example/base@sha256:" + "1" * 64
COMMIT = "c" * 40
URL = "https://git.example/team/app.git"
SETTINGS = BuildSettings("lamina-system", "moby/buildkit:test", 3600)


def spec(**git: object) -> ImageSpec:
    return ImageSpec.model_validate(
        {
            "parent": {"ref": "registry.example/base:1"},
            "build": {"steps": ["COPY . /"], "context": {"git": {"url": URL, **git}}},
            "output": {"repository": "registry.example/team/app"},
        }
    )


def job(image: ImageSpec, secret: str | None = None) -> dict[str, object]:
    return build_job(
        namespace="team",
        name="app",
        uid="uid-app",
        inputs="abc123",
        spec=image,
        parent=PARENT,
        settings=SETTINGS,
        context_config_map="lamina-build-abc123",
        push_secret_copy=None,
        source_commit=COMMIT,
        git_secret_copy=secret,
    )


def pod_spec(body: dict[str, object]) -> dict[str, object]:
    return body["spec"]["template"]["spec"]  # type: ignore[index,no-any-return]


def test_the_init_container_fetches_the_commit_with_spec_values_as_arguments_only() -> None:
    (init,) = pod_spec(job(spec(revision="main", path="docker")))["initContainers"]  # type: ignore[misc]
    assert init["command"] == GIT_COMMAND  # the same shell code for every Image
    assert init["args"] == [URL, COMMIT, "docker"]
    assert init["env"] == []
    assert init["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    (plain,) = pod_spec(job(spec()))["initContainers"]  # type: ignore[misc]
    assert plain["args"][2] == ""  # no path: the whole tree


def test_credentials_reach_only_the_init_container_and_only_by_reference() -> None:
    body = job(spec(secret="creds"), secret="lamina-build-abc123-git")
    spec_of_pod = pod_spec(body)
    (init,) = spec_of_pod["initContainers"]  # type: ignore[misc]
    assert init["env"] == [
        {"name": "GIT_CONFIG_COUNT", "value": "1"},
        {"name": "GIT_CONFIG_KEY_0", "value": "http.extraHeader"},
        {
            "name": "GIT_CONFIG_VALUE_0",
            "valueFrom": {"secretKeyRef": {"name": "lamina-build-abc123-git", "key": GIT_AUTH_KEY}},
        },
    ]
    (build,) = spec_of_pod["containers"]  # type: ignore[misc]
    assert "GIT_CONFIG" not in json.dumps(build)
    assert "creds" not in json.dumps(body)  # the tenant's Secret is never named in the Job


def test_the_copy_holds_only_the_header_and_is_owned_by_the_job() -> None:
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "lamina-build-abc123", "uid": "u"}
    copy = git_secret(
        name="lamina-build-abc123-git", settings=SETTINGS, authorization="Basic eDp5", owner=owner
    )
    assert copy["metadata"]["namespace"] == "lamina-system"
    assert copy["metadata"]["ownerReferences"] == [{**owner, "blockOwnerDeletion": False}]
    assert copy["stringData"] == {GIT_AUTH_KEY: "Authorization: Basic eDp5"}


def test_the_manifest_names_the_source_and_the_commit() -> None:
    output = next(
        a for a in buildctl_args(spec(), PARENT, source_commit=COMMIT) if a.startswith("--output=")
    )
    assert f'"annotation-manifest.org.opencontainers.image.source={URL}"' in output
    assert f'"annotation-manifest.org.opencontainers.image.revision={COMMIT}"' in output


@pytest.mark.parametrize("commit", [None, "main", "c" * 39, "C" * 40, "c" * 40 + "\n"])
def test_no_build_without_a_resolved_commit(commit: str | None) -> None:
    with pytest.raises(DockerfileError, match="no resolved commit"):
        dockerfile_for(spec(), PARENT, commit)


def test_a_configmap_context_keeps_its_copying_container() -> None:
    image = ImageSpec.model_validate(
        {
            "parent": {"ref": "registry.example/base:1"},
            "build": {"steps": ["COPY . /"], "context": {"configMap": {"name": "files"}}},
            "output": {"repository": "registry.example/team/app"},
        }
    )
    body = build_job(
        namespace="team",
        name="app",
        uid="uid-app",
        inputs="abc123",
        spec=image,
        parent=PARENT,
        settings=SETTINGS,
        context_config_map="lamina-build-abc123",
        push_secret_copy=None,
    )
    (init,) = pod_spec(body)["initContainers"]  # type: ignore[misc]
    assert init["command"] == CONTEXT_COMMAND
    output = next(a for a in buildctl_args(image, PARENT) if a.startswith("--output="))
    assert "image.source" not in output and "image.revision" not in output


def test_the_credentials_copy_is_found_from_the_job_not_the_spec() -> None:
    """Collecting a build deletes the copy its Job uses, whatever the spec says by then."""
    with_secret = job(spec(), secret="lamina-build-abc-git")
    assert _mounts_secret(with_secret, "lamina-build-abc-git")
    assert not _mounts_secret(with_secret, "lamina-build-other-git")
    assert not _mounts_secret(job(spec()), "lamina-build-abc-git")
