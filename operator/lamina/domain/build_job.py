"""The Job that builds an Image, as a pure function of the Image and its pinned parent.

Engine: BuildKit, run daemonless (``buildctl-daemonless.sh``: a buildkitd for the length of
one build).  Rootless BuildKit needs seccomp and AppArmor "Unconfined", which neither the
"restricted" nor the "baseline" Pod Security profile admits, so builds run the way commit
Jobs do: privileged, in the operator's namespace, never in the user's.  The Dockerfile and the
build context are copied there as a ConfigMap owned by the Job; push credentials as a Secret
owned by the Job.  The engine writes the pushed digest to the termination message.

No spec value reaches a shell as code.  The container's ``command`` is the same for every
Image: ``/bin/sh -c`` with :data:`REPORT_SCRIPT`, a constant that runs ``buildctl-daemonless.sh
"$@"`` and copies the pushed digest from buildctl's metadata file to the termination message
(buildctl writes that file by renaming a temporary file over it, which a bind-mounted
``/dev/termination-log`` refuses, so a copy step is needed).  The spec's values are elements of
``args``, each one ``--flag=value`` argument that buildctl parses itself; the shell only passes
them on.  What BuildKit would still interpret (the Dockerfile, build-arg names, the output
names) is checked here again, as the CRD checks it, so an object stored before a schema
upgrade is refused with a reason instead of built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from lamina.api.durations import InvalidDuration, duration_seconds
from lamina.api.image import ImageSpec
from lamina.api.meta import REPOSITORY_PATTERN, TAG_PATTERN
from lamina.api.text import build_arg_key_problem, pattern_matches
from lamina.domain.dockerfile import (
    DockerfileError,
    check_dockerfile,
    dockerfile_from_steps,
    pin_dockerfile,
)
from lamina.domain.labels import label_value

MANAGED_BY = "lamina"
LABEL_PURPOSE = "lamina.dev/purpose"
LABEL_IMAGE_NAMESPACE = "lamina.dev/image-namespace"
LABEL_IMAGE_NAME = "lamina.dev/image-name"
LABEL_IMAGE_UID = "lamina.dev/image-uid"
LABEL_INPUTS = "lamina.dev/inputs"
# The Image's full name (the label holds a hashed stand-in when the name is longer than 63).
ANNOTATION_IMAGE_NAME = "lamina.dev/image-name"
DOCKER_CONFIG_DIR = "/var/run/lamina/docker"
METADATA_FILE = "/tmp/lamina-build-metadata.json"
_INPUTS = re.compile(r"^[a-f0-9]{1,40}$")

# The builder's only shell code: the same for every Image; spec values arrive as "$@".
REPORT_SCRIPT = (
    "set -eu\n"
    'buildctl-daemonless.sh "$@"\n'
    # The digest, alone, is the result the operator reads back and verifies.
    'grep -o \'"containerimage.digest": *"sha256:[a-f0-9]*"\' '
    + METADATA_FILE
    + " | grep -o 'sha256:[a-f0-9]*' > /dev/termination-log\n"
)
BUILDER_COMMAND = ["/bin/sh", "-c", REPORT_SCRIPT, "lamina-build"]

__all__ = [
    "ANNOTATION_IMAGE_NAME",
    "BUILDER_COMMAND",
    "LABEL_IMAGE_NAME",
    "LABEL_IMAGE_NAMESPACE",
    "LABEL_IMAGE_UID",
    "LABEL_INPUTS",
    "LABEL_PURPOSE",
    "MANAGED_BY",
    "REPORT_SCRIPT",
    "BuildNotSupported",
    "BuildSettings",
    "DockerfileError",
    "build_job",
    "buildctl_args",
    "buildkitd_toml",
    "context_config_map",
    "deadline_seconds",
    "dockerfile_for",
    "job_name",
    "pinned_parent",
]


class BuildNotSupported(DockerfileError):
    """The spec asks for something this operator does not build (an engine, a git context)."""

    reason = "BuildNotSupported"


@dataclass(frozen=True)
class BuildSettings:
    namespace: str
    builder_image: str
    deadline_seconds: int
    buildkitd_toml: str = ""


def job_name(inputs: str) -> str:
    """The build Job's name: derived from the inputs hash only, so always short and valid."""
    if not _INPUTS.match(inputs):
        raise ValueError(f"build inputs key {inputs[:64]!r} is not a short hex hash")
    return f"lamina-build-{inputs}"


def pinned_parent(repository: str, digest: str) -> str:
    return f"{repository}@{digest}"


def check_build(spec: ImageSpec) -> None:
    """Refuse, with the reason the Image gets, what the generator will not turn into a Job.

    The same rules as the CRD's for what reaches BuildKit, and what is not wired here.
    """
    build = spec.build
    if build is None:
        raise DockerfileError("this Image records a commit and has no build")
    if build.engine not in (None, "buildkit"):
        raise BuildNotSupported(
            f"spec.build.engine {build.engine} is not wired in this operator: only buildkit "
            "builds (remove engine or set it to buildkit)"
        )
    if build.context is not None and build.context.git is not None:
        raise BuildNotSupported(
            "spec.build.context.git is not wired in this operator: put the context in a "
            "ConfigMap (spec.build.context.configMap)"
        )
    if build.steps is not None:
        dockerfile_from_steps("parent", list(build.steps))
    elif build.dockerfile is not None:
        check_dockerfile(build.dockerfile)
    else:
        raise DockerfileError("exactly one of spec.build.steps or spec.build.dockerfile is needed")
    for key in sorted(build.args or {}):
        problem = build_arg_key_problem(key)
        if problem is not None:
            raise DockerfileError(f"spec.build.args: {problem}")
        if "\x00" in (build.args or {})[key]:
            raise DockerfileError(f"spec.build.args: the value of {key} contains a NUL")
    output = spec.output
    if not pattern_matches(REPOSITORY_PATTERN, output.repository) or len(output.repository) > 255:
        raise DockerfileError(f"spec.output.repository {output.repository[:300]!r} is malformed")
    if not output.tags or len(set(output.tags)) != len(output.tags):
        raise DockerfileError("spec.output.tags must name at least one tag, each once")
    for tag in output.tags:
        if not pattern_matches(TAG_PATTERN, tag):
            raise DockerfileError(f"spec.output.tags: {tag[:200]!r} is not a tag")
    try:
        duration_seconds(build.timeout)
    except InvalidDuration as error:
        raise DockerfileError(f"spec.build.timeout: {error}") from None


def dockerfile_for(spec: ImageSpec, parent: str) -> str:
    """The Dockerfile to build: generated from steps, or the tenant's with its base pinned.

    The whole build spec is checked first (:func:`check_build`), so a refusal surfaces here,
    before anything is created.  See :mod:`lamina.domain.dockerfile` for what a Dockerfile
    may say.
    """
    check_build(spec)
    assert spec.build is not None
    if spec.build.steps is not None:
        return dockerfile_from_steps(parent, list(spec.build.steps))
    return pin_dockerfile(spec.build.dockerfile or "", parent)


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


def buildctl_args(spec: ImageSpec) -> list[str]:
    """``buildctl`` arguments: one ``--flag=value`` element each, values never split or parsed.

    The output names are CSV inside one argument (BuildKit's syntax); repository and tags
    are checked to contain neither quotes nor commas, so they cannot add exporter options.
    A build-arg value may contain anything but NUL, commas included: buildctl (v0.34 sets
    urfave/cli's ``DisableSliceFlagSeparator``) takes each ``--opt=`` whole, so a value cannot
    add a frontend option such as ``cmdline=``; the node tier's ``test_build_argv`` checks it
    against the builder image the cluster runs.
    """
    check_build(spec)
    assert spec.build is not None
    output = spec.output
    names = ",".join(f"{output.repository}:{tag}" for tag in output.tags)
    image_output = f'type=image,"name={names}",push=true'
    if output.insecure:
        image_output += ",registry.insecure=true"
    return [
        "build",
        "--progress=plain",
        "--frontend=dockerfile.v0",
        "--local=context=/workspace/context",
        "--local=dockerfile=/workspace/dockerfile",
        *(
            f"--opt=build-arg:{key}={value}"
            for key, value in sorted((spec.build.args or {}).items())
        ),
        f"--output={image_output}",
        f"--metadata-file={METADATA_FILE}",
    ]


def deadline_seconds(spec: ImageSpec, settings: BuildSettings) -> int:
    """``spec.build.timeout``, capped by the operator's ``LAMINA_BUILD_DEADLINE_SECONDS``."""
    check_build(spec)
    assert spec.build is not None
    asked = max(1, math.ceil(duration_seconds(spec.build.timeout)))
    return min(asked, settings.deadline_seconds)


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
    """The build Job.  ``context_config_map`` holds the Dockerfile and context files.

    Its name comes from ``inputs`` alone and its labels are valid whatever the Image's name
    (a longer one is hashed to fit, see :func:`lamina.domain.labels.label_value`; the full
    name is the ``lamina.dev/image-name`` annotation), so the API server always takes it and a
    restarted operator finds it again.
    """
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_PURPOSE: "build",
        LABEL_IMAGE_NAMESPACE: label_value(namespace),
        LABEL_IMAGE_NAME: label_value(name),
        LABEL_IMAGE_UID: label_value(uid),
        LABEL_INPUTS: label_value(inputs),
    }
    annotations = {ANNOTATION_IMAGE_NAME: name, "lamina.dev/image-namespace": namespace}
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
        "metadata": {
            "name": job_name(inputs),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds(spec, settings),
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
                            "command": list(BUILDER_COMMAND),
                            "args": buildctl_args(spec),
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
