"""The Job that builds an Image, as a pure function of the Image and its pinned parent.

Engine: BuildKit, run daemonless (``buildctl-daemonless.sh``: a buildkitd for the length of
one build).  Rootless BuildKit needs seccomp and AppArmor "Unconfined", which neither the
"restricted" nor the "baseline" Pod Security profile admits, so builds run the way commit
Jobs do: privileged, in the operator's namespace, never in the user's.  The Dockerfile and the
build context are copied there as a ConfigMap owned by the Job (an unprivileged init
container turns its volume into plain files, :data:`CONTEXT_SCRIPT`); push credentials as a
Secret owned by the Job.  The engine writes the pushed digest to the termination message.

No spec value reaches a shell as code.  The container's ``command`` is the same for every
Image: ``/bin/sh -c`` with :data:`REPORT_SCRIPT`, a constant that runs ``buildctl-daemonless.sh
"$@"`` and copies the pushed digest from buildctl's metadata file to the termination message
(buildctl writes that file by renaming a temporary file over it, which a bind-mounted
``/dev/termination-log`` refuses, so a copy step is needed).  The spec's values are elements of
``args``, each one ``--flag=value`` argument that buildctl parses itself; the shell only passes
them on.  What BuildKit would still interpret (the Dockerfile, build-arg names, the output
names) is checked here again, as the CRD checks it, so an object stored before a schema
upgrade is refused with a reason instead of built.

Every build is reproducible and says where it came from: ``SOURCE_DATE_EPOCH`` is a build
arg (0 unless the spec sets it), the image exporter rewrites layer timestamps to it
(``rewrite-timestamp=true``), and the manifest carries the base name, the pinned base digest
and the created time derived from the epoch (:mod:`lamina.domain.image_annotations`), so
the same inputs push the same digest.
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
from lamina.domain.image_annotations import (
    SOURCE_DATE_EPOCH,
    InvalidLineage,
    build_annotations,
    source_date_epoch,
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

CONTEXT_SOURCE = "/workspace/source"
CONTEXT_DIR = "/workspace/context"
# The build context as plain files: a ConfigMap volume is the kubelet's atomic-writer tree
# (each key a symlink into "..data", itself a symlink to a directory named after the time it
# was written), so sending it as is would put that timestamped name into every COPY of the
# context and no two builds would push the same digest.  Keys cannot start with "..", so the
# two globs take every key and none of the writer's entries; buildkitd.toml is the
# operator's, not the tenant's.  The same constant for every Image: no spec value is code.
CONTEXT_SCRIPT = (
    "set -eu\n"
    f"cd {CONTEXT_SOURCE}\n"
    "for name in * .[!.]*; do\n"
    '  [ -f "$name" ] || continue\n'
    '  [ "$name" = buildkitd.toml ] && continue\n'
    f'  cp -L "./$name" "{CONTEXT_DIR}/$name"\n'
    "done\n"
)
CONTEXT_COMMAND = ["/bin/sh", "-c", CONTEXT_SCRIPT, "lamina-context"]

__all__ = [
    "ANNOTATION_IMAGE_NAME",
    "BUILDER_COMMAND",
    "CONTEXT_COMMAND",
    "CONTEXT_SCRIPT",
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
    "cache_args",
    "cache_ref",
    "context_config_map",
    "deadline_seconds",
    "dockerfile_for",
    "job_name",
    "lineage_annotations",
    "pinned_parent",
]


class BuildNotSupported(DockerfileError):
    """The spec asks for something this operator does not build (a git context)."""

    reason = "BuildNotSupported"


@dataclass(frozen=True)
class BuildSettings:
    namespace: str
    builder_image: str
    deadline_seconds: int
    buildkitd_toml: str = ""
    # The operator's LAMINA_BUILD_CACHE_TAG: each Image's registry cache is this tag of its own
    # output repository (:func:`cache_args`); None builds without a cache.
    cache_tag: str | None = None


def cache_ref(spec: ImageSpec, cache_tag: str) -> str:
    """Where an Image's build cache lives: a tag of its own output repository.

    Derived, never named by the tenant: the cache is pushed with the Image's own push
    credentials to a repository it may already write, and one Image can never import the cache
    another Image's builds wrote (an imported cache is trusted build output).  The tag must
    not be one the Image pushes, or the cache manifest would replace the image.
    """
    output = spec.output
    if not pattern_matches(TAG_PATTERN, cache_tag):
        raise DockerfileError(f"the build cache tag {cache_tag[:200]!r} is not a tag")
    if cache_tag in output.tags:
        raise DockerfileError(
            f"spec.output.tags: {cache_tag!r} is the operator's build cache tag "
            "(LAMINA_BUILD_CACHE_TAG); push the image under another tag"
        )
    return f"{output.repository}:{cache_tag}"


def cache_args(spec: ImageSpec, cache_tag: str | None) -> list[str]:
    """BuildKit's registry cache for this Image: import what the last build exported, export
    every intermediate step (``mode=max``), so a rebuild whose parent and earlier steps did
    not change runs only the steps after the first changed one.

    The reference is checked like the output names (no quotes, no commas), so it cannot add
    cache options.  A first build finds no cache to import; BuildKit says so and builds.
    """
    if cache_tag is None:
        return []
    ref = cache_ref(spec, cache_tag)
    insecure = ",registry.insecure=true" if spec.output.insecure else ""
    return [
        f"--export-cache=type=registry,ref={ref},mode=max,oci-mediatypes=true{insecure}",
        f"--import-cache=type=registry,ref={ref}{insecure}",
    ]


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
    try:
        source_date_epoch(spec)
    except InvalidLineage as error:
        raise DockerfileError(str(error)) from None
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


def lineage_annotations(spec: ImageSpec, parent: str) -> dict[str, str]:
    """The manifest annotations of this build, or the refusal the Image gets."""
    try:
        return build_annotations(spec, parent)
    except InvalidLineage as error:
        raise DockerfileError(str(error)) from None


def dockerfile_for(spec: ImageSpec, parent: str) -> str:
    """The Dockerfile to build: generated from steps, or the tenant's with its base pinned.

    The whole build spec is checked first (:func:`check_build`), and so is the lineage the
    image will carry (``parent`` is ``repository@digest``), so a refusal surfaces here,
    before anything is created.  See :mod:`lamina.domain.dockerfile` for what a Dockerfile
    may say.
    """
    check_build(spec)
    lineage_annotations(spec, parent)
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


def _csv_field(text: str) -> str:
    """One quoted field of buildctl's ``--output`` CSV: a comma inside stays data."""
    if '"' in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        # The lineage values are references, digests and dates; never quotes or controls.
        raise DockerfileError(f"{text[:300]!r} cannot be an exporter option")
    return f'"{text}"'


def buildctl_args(spec: ImageSpec, parent: str, cache_tag: str | None = None) -> list[str]:
    """``buildctl`` arguments: one ``--flag=value`` element each, values never split or parsed.

    ``parent`` is the pinned parent (``repository@digest``) the Dockerfile starts from.
    The output names and annotations are CSV inside one argument (BuildKit's syntax):
    repository and tags are checked to contain neither quotes nor commas, and each annotation
    is a quoted field of a checked reference, digest or date, so none can add exporter
    options.  A build-arg value may contain anything but NUL, commas included: buildctl
    (v0.34 sets urfave/cli's ``DisableSliceFlagSeparator``) takes each ``--opt=`` whole, so a
    value cannot add a frontend option such as ``cmdline=``; the node tier's
    ``test_build_argv`` checks it against the builder image the cluster runs.

    ``SOURCE_DATE_EPOCH`` is always a build arg (BuildKit clamps history and config times to
    it and, with ``rewrite-timestamp=true``, the file times in the layers it writes); the
    parent's layers are never rewritten, so they stay shared with the parent.

    ``cache_tag`` (the operator's setting) adds the Image's registry cache, :func:`cache_args`.
    """
    check_build(spec)
    assert spec.build is not None
    output = spec.output
    names = ",".join(f"{output.repository}:{tag}" for tag in output.tags)
    image_output = f'type=image,"name={names}",push=true'
    if output.insecure:
        image_output += ",registry.insecure=true"
    # Annotations are an OCI manifest field; BuildKit v0.34 defaults to OCI types, say so.
    image_output += ",oci-mediatypes=true,rewrite-timestamp=true"
    for key, value in sorted(lineage_annotations(spec, parent).items()):
        image_output += "," + _csv_field(f"annotation-manifest.{key}={value}")
    build_args = {
        **(spec.build.args or {}),
        SOURCE_DATE_EPOCH: str(source_date_epoch(spec)),
    }
    return [
        "build",
        "--progress=plain",
        "--frontend=dockerfile.v0",
        f"--local=context={CONTEXT_DIR}",
        "--local=dockerfile=/workspace/dockerfile",
        *(f"--opt=build-arg:{key}={value}" for key, value in sorted(build_args.items())),
        f"--output={image_output}",
        *cache_args(spec, cache_tag),
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
    parent: str,
    settings: BuildSettings,
    context_config_map: str,
    push_secret_copy: str | None,
) -> dict[str, Any]:
    """The build Job.  ``context_config_map`` holds the Dockerfile and context files.

    ``parent`` is the pinned parent (``repository@digest``), the one :func:`dockerfile_for`
    was given: the pushed manifest names it as its base.

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
        {"name": "workspace", "mountPath": CONTEXT_DIR},
        {"name": "dockerfile", "mountPath": "/workspace/dockerfile"},
        {"name": "buildkitd", "mountPath": "/etc/buildkit"},
        {"name": "state", "mountPath": "/var/lib/buildkit"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "workspace", "emptyDir": {}},
        {"name": "context-source", "configMap": {"name": context_config_map}},
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
                    "initContainers": [
                        {
                            "name": "context",
                            "image": settings.builder_image,
                            "command": list(CONTEXT_COMMAND),
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {
                                    "name": "context-source",
                                    "mountPath": CONTEXT_SOURCE,
                                    "readOnly": True,
                                },
                                {"name": "workspace", "mountPath": CONTEXT_DIR},
                            ],
                        }
                    ],
                    "containers": [
                        {
                            "name": "build",
                            "image": settings.builder_image,
                            "command": list(BUILDER_COMMAND),
                            "args": buildctl_args(spec, parent, settings.cache_tag),
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
