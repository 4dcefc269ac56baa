"""The Job that builds an Image, as a pure function of the Image and its pinned parent.

Engine: BuildKit, run daemonless (``buildctl-daemonless.sh``: a buildkitd for the length of
one build).  Rootless BuildKit needs seccomp and AppArmor "Unconfined", which neither the
"restricted" nor the "baseline" Pod Security profile admits, so builds run the way commit
Jobs do: privileged, in the operator's namespace, never in the user's.  The Dockerfile and the
build context are copied there as a ConfigMap owned by the Job; push credentials as a Secret
owned by the Job.  The engine writes the pushed digest to the termination message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lamina.api.image import ImageSpec

MANAGED_BY = "lamina"
LABEL_PURPOSE = "lamina.dev/purpose"
LABEL_IMAGE_NAMESPACE = "lamina.dev/image-namespace"
LABEL_IMAGE_NAME = "lamina.dev/image-name"
LABEL_IMAGE_UID = "lamina.dev/image-uid"
LABEL_INPUTS = "lamina.dev/inputs"
DOCKER_CONFIG_DIR = "/var/run/lamina/docker"

_FROM = re.compile(r"^(\s*FROM\s+)((?:--\S+\s+)*)(\S+)(.*)$", re.IGNORECASE)


class DockerfileError(ValueError):
    """The Dockerfile has no base stage to put the parent in."""


@dataclass(frozen=True)
class BuildSettings:
    namespace: str
    builder_image: str
    deadline_seconds: int
    buildkitd_toml: str = ""


def job_name(inputs: str) -> str:
    return f"lamina-build-{inputs}"


def pinned_parent(repository: str, digest: str) -> str:
    return f"{repository}@{digest}"


def dockerfile_for(spec: ImageSpec, parent: str) -> str:
    """The Dockerfile to build: generated from steps, or the user's with its base pinned.

    For a full Dockerfile the *first* FROM is the base stage (multi-stage builds keep their
    other stages); its image is replaced by the parent pinned by digest.
    """
    build = spec.build
    if build is None:
        raise DockerfileError("this Image records a commit and has no build")
    if build.steps is not None:
        return "\n".join([f"FROM {parent}", *build.steps]) + "\n"
    lines = (build.dockerfile or "").splitlines()
    for index, line in enumerate(lines):
        match = _FROM.match(line)
        if match:
            head, flags, _, rest = match.groups()
            lines[index] = f"{head}{flags}{parent}{rest}"
            return "\n".join(lines) + "\n"
        if line.strip() and not line.lstrip().startswith(("#", "ARG")):
            break
    raise DockerfileError("the Dockerfile has no FROM line for its base stage")


def buildkitd_toml(mirrors: dict[str, tuple[str, ...]], insecure: frozenset[str]) -> str:
    """buildkitd's registry settings: the same mirrors and plain-HTTP registries as the node."""
    lines: list[str] = []
    for registry in sorted(set(mirrors) | set(insecure)):
        lines.append(f'[registry."{registry}"]')
        if registry in mirrors:
            quoted = ", ".join(f'"{m}"' for m in mirrors[registry])
            lines.append(f"  mirrors = [{quoted}]")
        if registry in insecure:
            lines += ["  http = true", "  insecure = true"]
    return "\n".join(lines) + ("\n" if lines else "")


def build_script(spec: ImageSpec) -> str:
    """The builder container's shell script: build, push, then report the digest."""
    output = spec.output
    names = ",".join(f"{output.repository}:{tag}" for tag in output.tags)
    image_output = f'type=image,\\"name={names}\\",push=true'
    if output.insecure:
        image_output += ",registry.insecure=true"
    args = " ".join(
        f"--opt build-arg:{key}={_shell_quote(value)}"
        for key, value in sorted((spec.build.args or {}).items() if spec.build else [])
    )
    return (
        "set -eu\n"
        "buildctl-daemonless.sh build --frontend dockerfile.v0"
        " --local context=/workspace/context --local dockerfile=/workspace/dockerfile"
        f' {args} --output "{image_output}" --metadata-file /tmp/metadata.json\n'
        # The digest, alone, is the result the operator reads back and verifies.
        'grep -o \'"containerimage.digest": *"sha256:[a-f0-9]*"\' /tmp/metadata.json'
        " | grep -o 'sha256:[a-f0-9]*' > /dev/termination-log\n"
    )


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def build_job(
    *,
    namespace: str,
    name: str,
    uid: str,
    inputs: str,
    spec: ImageSpec,
    settings: BuildSettings,
    context_config_map: str,
    push_secret_copy: str | None,
) -> dict[str, Any]:
    """The build Job.  ``context_config_map`` holds the Dockerfile and context files."""
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_PURPOSE: "build",
        LABEL_IMAGE_NAMESPACE: namespace,
        LABEL_IMAGE_NAME: name,
        LABEL_IMAGE_UID: uid,
        LABEL_INPUTS: inputs,
    }
    env = [{"name": "BUILDKITD_FLAGS", "value": "--config /etc/buildkit/buildkitd.toml"}]
    mounts: list[dict[str, Any]] = [
        {"name": "workspace", "mountPath": "/workspace/context"},
        {"name": "dockerfile", "mountPath": "/workspace/dockerfile"},
        {"name": "buildkitd", "mountPath": "/etc/buildkit"},
        {"name": "state", "mountPath": "/var/lib/buildkit"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "workspace", "configMap": {"name": context_config_map}},
        {
            "name": "dockerfile",
            "configMap": {
                "name": context_config_map,
                "items": [{"key": "Dockerfile", "path": "Dockerfile"}],
            },
        },
        {
            "name": "buildkitd",
            "configMap": {
                "name": context_config_map,
                "items": [{"key": "buildkitd.toml", "path": "buildkitd.toml"}],
            },
        },
        {"name": "state", "emptyDir": {}},
    ]
    if push_secret_copy is not None:
        env.append({"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG_DIR})
        mounts.append({"name": "push-secret", "mountPath": DOCKER_CONFIG_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "push-secret",
                "secret": {
                    "secretName": push_secret_copy,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(inputs), "namespace": settings.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "build",
                            "image": settings.builder_image,
                            "command": ["/bin/sh", "-c", build_script(spec)],
                            "env": env,
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "securityContext": {"privileged": True},
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def context_config_map(
    *,
    name: str,
    settings: BuildSettings,
    dockerfile: str,
    files: dict[str, str],
    owner: dict[str, str],
) -> dict[str, Any]:
    """Dockerfile, buildkitd settings and context files, owned by the Job that uses them."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [{**owner, "blockOwnerDeletion": False}],
        },
        "data": {**files, "Dockerfile": dockerfile, "buildkitd.toml": settings.buildkitd_toml},
    }
