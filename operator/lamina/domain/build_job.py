"""The Job that builds an Image, as a pure function of the Image and its pinned parent.

Engines: ``spec.build.engine``, else the operator's default (:func:`build_engine`).  Buildah
replaces only the builder container of this Job (:mod:`lamina.domain.buildah_job`); what
follows describes BuildKit and everything the two share.

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

Every build carries its attestations, made by BuildKit and pushed with the image as an
attestation manifest in its index (:mod:`lamina.domain.attestation_index`): SLSA v1
provenance in ``mode=max`` (the frontend's inputs: the Dockerfile, every build arg, the pinned
parent as a resolved dependency) and, when the operator names an SBOM generator image
(``LAMINA_SBOM_GENERATOR_IMAGE``; BuildKit's protocol, e.g. docker/buildkit-syft-scanner), an
SPDX SBOM.  The context is a ConfigMap BuildKit sees only as a local directory, so its identity
is one more build arg, :data:`CONTEXT_DIGEST_ARG`: the sha256 of its files
(:func:`context_digest`), recorded in the provenance with the other inputs and consumed by no
Dockerfile (unused build args change no layer).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lamina.api.durations import InvalidDuration, duration_seconds
from lamina.api.image import GIT_REVISION_PATTERN, GIT_URL_PATTERN, BuildEngine, ImageSpec
from lamina.api.meta import REPOSITORY_PATTERN, TAG_PATTERN
from lamina.api.text import RELATIVE_PATH_PATTERN, build_arg_key_problem, pattern_matches
from lamina.domain.build_cache import BuildCache, buildkit_cache_args
from lamina.domain.buildah_job import BuildahSettings, buildah_pod
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
from lamina.domain.job_resources import JobResources
from lamina.domain.labels import label_value

MANAGED_BY = "lamina"
LABEL_PURPOSE = "lamina.dev/purpose"
LABEL_IMAGE_NAMESPACE = "lamina.dev/image-namespace"
LABEL_IMAGE_NAME = "lamina.dev/image-name"
LABEL_IMAGE_UID = "lamina.dev/image-uid"
LABEL_INPUTS = "lamina.dev/inputs"
# The Image's full name (the label holds a hashed stand-in when the name is longer than 63).
ANNOTATION_IMAGE_NAME = "lamina.dev/image-name"
# The engine that ran the build: the spec's, or the operator's default when the spec has none.
ANNOTATION_ENGINE = "lamina.dev/build-engine"
# What the operator put into the build, for the provenance it writes itself (a Buildah build:
# lamina.handlers.provenance), read back from its own Job, never from the build pod.
ANNOTATION_PARENT = "lamina.dev/parent"
ANNOTATION_DOCKERFILE_DIGEST = "lamina.dev/dockerfile-digest"
ANNOTATION_CONTEXT_DIGEST = "lamina.dev/context-digest"
ANNOTATION_GIT_URL = "lamina.dev/git-url"
ANNOTATION_GIT_REVISION = "lamina.dev/git-revision"
ANNOTATION_SOURCE_COMMIT = "lamina.dev/source-commit"
DOCKER_CONFIG_DIR = "/var/run/lamina/docker"
METADATA_FILE = "/tmp/lamina-build-metadata.json"
CONTEXT_DIGEST_ARG = "LAMINA_CONTEXT_DIGEST"
# SLSA v1 provenance with the frontend's full inputs (BuildKit v0.34 defaults to v1; say so),
# naming the builder: BuildKit run by Lamina's build Job (BuildKit leaves the id empty).
PROVENANCE_OPTION = (
    "attest:provenance=mode=max,version=v1,builder-id=https://lamina.dev/builders/buildkit"
)
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

GIT_DIR = "/workspace/git"
# A git context: the tree of exactly the resolved commit (a sub-directory of it when the spec
# names one), without .git, as plain files in the context directory.  ``$1`` is the URL,
# ``$2`` the commit, ``$3`` the sub-directory or empty; the same constant for every Image.
# The fetch asks for the commit itself (protocol v2 admits any want), so a branch that moved
# since the operator resolved it cannot change what is built; the check after it refuses
# anything else.  Credentials, when there are any, arrive as git configuration in the
# environment (GIT_CONFIG_*, from a Secret), never on a command line or in a file of the
# context; redirects are not followed, so they are only ever sent to the URL's host.
GIT_SCRIPT = (
    "set -eu -o pipefail\n"
    f"export HOME={GIT_DIR} GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1\n"
    "export GIT_ALLOW_PROTOCOL=http:https:git\n"
    f'git init -q --template= "{GIT_DIR}/repo"\n'
    f'cd "{GIT_DIR}/repo"\n'
    "git -c protocol.version=2 -c http.followRedirects=false fetch -q --depth=1 --no-tags "
    '-- "$1" "$2"\n'
    'fetched="$(git rev-parse FETCH_HEAD)"\n'
    'if [ "$fetched" != "$2" ]; then\n'
    '  echo "fetched $fetched, not the resolved commit $2" >&2; exit 1\n'
    "fi\n"
    "tree=FETCH_HEAD\n"
    '[ -n "$3" ] && tree="FETCH_HEAD:$3"\n'
    f'git archive --format=tar "$tree" | tar -x -C "{CONTEXT_DIR}"\n'
)
GIT_COMMAND = ["/bin/sh", "-c", GIT_SCRIPT, "lamina-git"]
# The key of the Job-owned Secret copy holding the Authorization header for git.
GIT_AUTH_KEY = "authorization"

__all__ = [
    "ANNOTATION_CONTEXT_DIGEST",
    "ANNOTATION_DOCKERFILE_DIGEST",
    "ANNOTATION_ENGINE",
    "ANNOTATION_GIT_REVISION",
    "ANNOTATION_GIT_URL",
    "ANNOTATION_IMAGE_NAME",
    "ANNOTATION_PARENT",
    "ANNOTATION_SOURCE_COMMIT",
    "BUILDER_COMMAND",
    "CONTEXT_COMMAND",
    "CONTEXT_DIGEST_ARG",
    "CONTEXT_SCRIPT",
    "GIT_AUTH_KEY",
    "GIT_COMMAND",
    "GIT_SCRIPT",
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
    "build_engine",
    "build_job",
    "buildctl_args",
    "buildkitd_toml",
    "cache_args",
    "check_engine",
    "check_git",
    "context_config_map",
    "context_digest",
    "deadline_seconds",
    "dockerfile_for",
    "git_secret",
    "job_name",
    "lineage_annotations",
    "pinned_parent",
]


class BuildNotSupported(DockerfileError):
    """The spec asks for something this operator does not build (an ssh:// git context,
    stored before the CRD narrowed the URL to what the operator resolves)."""

    reason = "BuildNotSupported"


@dataclass(frozen=True)
class BuildSettings:
    namespace: str
    builder_image: str
    deadline_seconds: int
    buildkitd_toml: str = ""
    resources: JobResources = field(default_factory=JobResources)
    # BuildKit's state volume (layers, cache): without a limit a build can fill the node's disk.
    state_size_limit: str | None = None
    # BuildKit's SBOM generator image; empty: builds carry provenance only.
    sbom_generator_image: str = ""

    # spec.build.engine when the spec leaves it unset; Buildah's image and storage.
    default_engine: BuildEngine = "buildkit"
    buildah: BuildahSettings = field(default_factory=BuildahSettings)
    # The operator's registry build cache (LAMINA_BUILD_CACHE_TAG, _REPOSITORY): each Image's
    # cache lives in a repository beside its own (:mod:`lamina.domain.build_cache`); None
    # builds without a cache.
    cache: BuildCache | None = None


def context_digest(files: Mapping[str, str], binary_files: Mapping[str, str] | None = None) -> str:
    """The identity of a build context: sha256 over its files, sorted by name.

    Each file is its name and its content, both length-prefixed, so no two contexts share a
    digest by moving bytes between names and contents.  Binary files (``binaryData``, base64)
    count by their bytes under ``binary:<name>``: a ConfigMap key has no colon, so a text file
    can never stand for a binary one.
    """
    entries = {name: content.encode() for name, content in files.items()}
    for name, encoded in (binary_files or {}).items():
        try:
            entries[f"binary:{name}"] = base64.b64decode(encoded, validate=True)
        except ValueError:
            entries[f"binary:{name}"] = encoded.encode()
    sha256 = hashlib.sha256()
    for name in sorted(entries):
        for part in (name.encode(), entries[name]):
            sha256.update(len(part).to_bytes(8, "big"))
            sha256.update(part)
    return "sha256:" + sha256.hexdigest()


def build_engine(spec: ImageSpec, settings: BuildSettings) -> BuildEngine:
    """The engine of this build: the spec's, else the operator's default (at each build)."""
    engine = spec.build.engine if spec.build is not None else None
    return engine or settings.default_engine


def check_engine(spec: ImageSpec, settings: BuildSettings) -> None:
    """Raises BuildNotSupported for an engine the administrator has not enabled."""
    if build_engine(spec, settings) == "buildah" and not settings.buildah.enabled:
        raise BuildNotSupported(
            "spec.build.engine: buildah is not enabled on this cluster (the administrator "
            "sets LAMINA_BUILDAH_ENABLED=true, the chart's buildahEnabled); use buildkit"
        )


def cache_args(spec: ImageSpec, cache: BuildCache | None) -> list[str]:
    """BuildKit's registry cache flags for this Image (:mod:`lamina.domain.build_cache`);
    DockerfileError for an Image that cannot have a cache (its output is a cache repository)."""
    return buildkit_cache_args(spec, cache)


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
        check_git(build.context.git.url, build.context.git.revision, build.context.git.path)
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


def check_git(url: str, revision: str, path: str | None) -> None:
    """The CRD's rules for a git context, again (an object stored before them is refused)."""
    if url.startswith("ssh://"):
        raise BuildNotSupported(
            "ssh:// git URLs are not built: use https:// (credentials from "
            "spec.build.context.git.secret), http:// or git://"
        )
    if not pattern_matches(GIT_URL_PATTERN, url) or len(url) > 2048:
        raise DockerfileError(
            f"spec.build.context.git.url {url[:300]!r} is not an http(s):// or git:// URL "
            "without credentials, query or fragment"
        )
    if not pattern_matches(GIT_REVISION_PATTERN, revision) or len(revision) > 255:
        raise DockerfileError(f"spec.build.context.git.revision {revision[:300]!r} is malformed")
    if path is not None and not pattern_matches(RELATIVE_PATH_PATTERN, path):
        raise DockerfileError(f"spec.build.context.git.path {path[:300]!r} is not relative")


def lineage_annotations(
    spec: ImageSpec, parent: str, source_commit: str | None = None
) -> dict[str, str]:
    """The manifest annotations of this build, or the refusal the Image gets."""
    try:
        return build_annotations(spec, parent, source_commit)
    except InvalidLineage as error:
        raise DockerfileError(str(error)) from None


def dockerfile_for(spec: ImageSpec, parent: str, source_commit: str | None = None) -> str:
    """The Dockerfile to build: generated from steps, or the tenant's with its base pinned.

    The whole build spec is checked first (:func:`check_build`), and so is the lineage the
    image will carry (``parent`` is ``repository@digest``), so a refusal surfaces here,
    before anything is created.  See :mod:`lamina.domain.dockerfile` for what a Dockerfile
    may say.
    """
    check_build(spec)
    lineage_annotations(spec, parent, source_commit)
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


def attestation_options(settings: BuildSettings | None) -> list[str]:
    """The frontend options that make BuildKit attach provenance (always) and an SBOM."""
    options = [f"--opt={PROVENANCE_OPTION}"]
    generator = settings.sbom_generator_image if settings is not None else ""
    if generator:
        # A reference from the operator's own settings, never from a spec; it is one CSV
        # field of BuildKit's attest syntax, so it must not be able to add another.
        if any(c in generator for c in ',"=') or any(ord(c) <= 0x20 for c in generator):
            raise ValueError(f"SBOM generator image {generator[:200]!r} is not a reference")
        options.append(f"--opt=attest:sbom=generator={generator}")
    return options


def buildctl_args(
    spec: ImageSpec,
    parent: str,
    settings: BuildSettings | None = None,
    context: str | None = None,
    source_commit: str | None = None,
) -> list[str]:
    """``buildctl`` arguments: one ``--flag=value`` element each, values never split or parsed.

    ``parent`` is the pinned parent (``repository@digest``) the Dockerfile starts from.
    The output names and annotations are CSV inside one argument (BuildKit's syntax):
    repository and tags are checked to contain neither quotes nor commas, and each annotation
    is a quoted field of a checked reference, digest or date, so none can add exporter
    options.  A build-arg value may contain anything but NUL, commas included: buildctl
    (v0.34 sets urfave/cli's ``DisableSliceFlagSeparator``) takes each ``--opt=`` whole, so a
    value cannot add a frontend option such as ``cmdline=``; the node tier's
    ``test_build_argv`` checks it against the builder image the cluster runs.

    ``context`` is :func:`context_digest` of the context files (the provenance's record of
    them).  ``settings`` names the SBOM generator (see :func:`attestation_options`).

    ``SOURCE_DATE_EPOCH`` is always a build arg (BuildKit clamps history and config times to
    it and, with ``rewrite-timestamp=true``, the file times in the layers it writes); the
    parent's layers are never rewritten, so they stay shared with the parent.

    ``settings.cache`` (the operator's setting) adds the Image's registry cache,
    :func:`cache_args`.
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
    for key, value in sorted(lineage_annotations(spec, parent, source_commit).items()):
        image_output += "," + _csv_field(f"annotation-manifest.{key}={value}")
    build_args = {
        **(spec.build.args or {}),
        SOURCE_DATE_EPOCH: str(source_date_epoch(spec)),
        CONTEXT_DIGEST_ARG: context or context_digest({}),
    }
    return [
        "build",
        "--progress=plain",
        "--frontend=dockerfile.v0",
        f"--local=context={CONTEXT_DIR}",
        "--local=dockerfile=/workspace/dockerfile",
        *(f"--opt=build-arg:{key}={value}" for key, value in sorted(build_args.items())),
        *attestation_options(settings),
        f"--output={image_output}",
        *cache_args(spec, settings.cache if settings is not None else None),
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
    context: str | None = None,
    source_commit: str | None = None,
    git_secret_copy: str | None = None,
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
    engine = build_engine(spec, settings)
    annotations = {
        ANNOTATION_IMAGE_NAME: name,
        "lamina.dev/image-namespace": namespace,
        ANNOTATION_ENGINE: engine,
        ANNOTATION_PARENT: parent,
        ANNOTATION_DOCKERFILE_DIGEST: "sha256:"
        + hashlib.sha256(dockerfile_for(spec, parent, source_commit).encode()).hexdigest(),
    }
    if context is not None:
        annotations[ANNOTATION_CONTEXT_DIGEST] = context
    git = spec.build.context.git if spec.build and spec.build.context else None
    if git is not None:
        annotations[ANNOTATION_GIT_URL] = git.url
        annotations[ANNOTATION_GIT_REVISION] = git.revision
        if source_commit is not None:
            annotations[ANNOTATION_SOURCE_COMMIT] = source_commit
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
        {
            "name": "state",
            "emptyDir": {"sizeLimit": settings.state_size_limit}
            if settings.state_size_limit
            else {},
        },
    ]
    if spec.build is not None and spec.build.context and spec.build.context.git:
        volumes.append({"name": "git", "emptyDir": {}})
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
    job: dict[str, Any] = {
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
                        _context_container(spec, settings, source_commit, git_secret_copy)
                    ],
                    "containers": [
                        {
                            "name": "build",
                            "image": settings.builder_image,
                            "command": list(BUILDER_COMMAND),
                            "args": buildctl_args(spec, parent, settings, context, source_commit),
                            "env": env,
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "securityContext": {"privileged": True},
                            "volumeMounts": mounts,
                            **_resources(settings.resources),
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }
    if engine == "buildah":
        return buildah_pod(
            job,
            spec=spec,
            annotations=lineage_annotations(spec, parent, source_commit),
            context_dir=CONTEXT_DIR,
            settings=settings.buildah,
            cache=settings.cache,
        )
    return job


_UNPRIVILEGED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _context_container(
    spec: ImageSpec,
    settings: BuildSettings,
    source_commit: str | None,
    git_secret_copy: str | None,
) -> dict[str, Any]:
    """The unprivileged init container that fills the context directory: the ConfigMap's
    files, or the git tree at ``source_commit`` (credentials from ``git_secret_copy``, a
    Secret in the operator's namespace owned by the Job; only this container sees them)."""
    git = spec.build.context.git if spec.build and spec.build.context else None
    if git is None:
        return {
            "name": "context",
            "image": settings.builder_image,
            "command": list(CONTEXT_COMMAND),
            "securityContext": dict(_UNPRIVILEGED),
            "volumeMounts": [
                {"name": "context-source", "mountPath": CONTEXT_SOURCE, "readOnly": True},
                {"name": "workspace", "mountPath": CONTEXT_DIR},
            ],
        }
    check_git(git.url, git.revision, git.path)
    if source_commit is None or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", source_commit):
        raise DockerfileError(f"the git context has no resolved commit ({source_commit!r})")
    env: list[dict[str, Any]] = []
    if git_secret_copy is not None:
        env = [
            {"name": "GIT_CONFIG_COUNT", "value": "1"},
            {"name": "GIT_CONFIG_KEY_0", "value": "http.extraHeader"},
            {
                "name": "GIT_CONFIG_VALUE_0",
                "valueFrom": {"secretKeyRef": {"name": git_secret_copy, "key": GIT_AUTH_KEY}},
            },
        ]
    return {
        "name": "context",
        "image": settings.builder_image,
        "command": list(GIT_COMMAND),
        "args": [git.url, source_commit, git.path or ""],
        "env": env,
        # git's own words on a failed fetch (stderr) become the build's failure message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": dict(_UNPRIVILEGED),
        "volumeMounts": [
            {"name": "git", "mountPath": GIT_DIR},
            {"name": "workspace", "mountPath": CONTEXT_DIR},
        ],
    }


def git_secret(
    *, name: str, settings: BuildSettings, authorization: str, owner: dict[str, str]
) -> dict[str, Any]:
    """The Job-owned copy of a git credentials Secret: only the ``Authorization`` header the
    init container sends (never the username and password as such), in the operator's
    namespace, deleted when the build is collected (and by the garbage collector with its
    Job at the latest)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_PURPOSE: "git-auth"},
            "ownerReferences": [{**owner, "blockOwnerDeletion": False}],
        },
        "stringData": {GIT_AUTH_KEY: f"Authorization: {authorization}"},
    }


# What the API server lets one ConfigMap hold: data and binaryData together, keys included.
CONFIG_MAP_LIMIT = 1024 * 1024


def context_size_problem(
    *,
    settings: BuildSettings,
    dockerfile: str,
    files: dict[str, str],
    binary_files: dict[str, str] | None = None,
) -> str | None:
    """Why the context cannot travel in its ConfigMap, or None.

    Checked before anything is created: the API server would refuse the ConfigMap only after
    the Job that owns it exists, and the same context would be refused on every retry."""
    text = {**files, "Dockerfile": dockerfile, "buildkitd.toml": settings.buildkitd_toml}
    size = sum(len(key) + len(value.encode()) for key, value in text.items())
    for key, value in (binary_files or {}).items():
        size += len(key) + len(value) * 3 // 4  # base64 on the wire, bytes in the limit
    if size <= CONFIG_MAP_LIMIT:
        return None
    return (
        f"the build context is {size:,} bytes with its Dockerfile; one ConfigMap carries at "
        f"most {CONFIG_MAP_LIMIT:,} (use a git context for larger sources)"
    )


def context_config_map(
    *,
    name: str,
    settings: BuildSettings,
    dockerfile: str,
    files: dict[str, str],
    owner: dict[str, str],
    binary_files: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Dockerfile, buildkitd settings and context files, owned by the Job that uses them.

    ``binary_files``: the context's binary files, base64 as a ConfigMap's ``binaryData``
    holds them (a key the generated files also use is theirs: the operator's win)."""
    binary = {
        key: value
        for key, value in (binary_files or {}).items()
        if key not in ("Dockerfile", "buildkitd.toml")
    }
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
        **({"binaryData": binary} if binary else {}),
    }


def _resources(resources: JobResources) -> dict[str, Any]:
    wire = resources.wire()
    return {"resources": wire} if wire else {}
