"""The build Job when the engine is Buildah: the same Job as BuildKit's, another builder.

Everything but the builder container is the engine-independent Job of
:func:`lamina.domain.build_job.build_job`: the same Dockerfile (generated or pinned), the same
context delivery (the unprivileged init container copying the ConfigMap's keys as plain
files), the same build args (``SOURCE_DATE_EPOCH`` always among them), the same push
credentials, the same manifest annotations (:mod:`lamina.domain.image_annotations`) and the
same report: the pushed digest alone in the termination message, which
:mod:`lamina.domain.build_outcome` reads whatever the engine.

The builder is Debian's ``buildah`` (1.28), privileged in the operator's namespace as BuildKit
is, its storage in an emptyDir (kernel overlay by default, ``vfs`` as the operator's fallback
setting).  RUN steps run with OCI isolation (:data:`ISOLATION_ARGS`): each step is a runc
container of its own, with its own PID, mount, IPC and UTS namespaces, as BuildKit runs its
steps; the build container's processes, mounts and credentials are not in a step's view.  The
network is the pod's, as BuildKit's steps have it (its OCI worker's host network: the pod's
namespace, not the node's).  Cgroups are cgroupfs (a pod has no systemd), under the build
container's own cgroup, so its limits hold for the steps too.

Rootless Buildah was tried on the node tier (uid 1000 with subuid ranges, vfs, chroot
isolation) and does not build: under the RuntimeDefault seccomp profile that "restricted"
requires, ``unshare(CLONE_NEWUSER)`` is refused; with seccomp Unconfined (which "baseline"
forbids anyway) ``newuidmap`` cannot write the uid map and Buildah's single-ID fallback fails
every RUN step (``setgroups``).  A user namespace per step (``--userns-uid-map``) fails on
these nodes even as root with all capabilities (runc: "failed to unshare user namespace:
Operation not permitted", the builder's rootfs run on the node host), so a step's root is
root, as in BuildKit's steps.

No spec value reaches a shell as code.  The ``command`` is the constant :data:`BUILDAH_SCRIPT`
for every Image: it runs ``buildah build "$@"``, then pushes the built image (by the ID
``--iidfile`` wrote) once for each ``--tag=`` element of its own arguments, with
``--digestfile``, and copies that digest to the termination message.  Spec values are only
ever whole ``--flag=value`` elements of ``args`` (buildah's flags for build args, annotations
and tags are string arrays: a comma inside a value stays in the value), so the ``case`` on
``--tag=*`` can only ever match the elements made here from the checked repository and tags.

The registry build cache, when the operator turns it on, is Buildah's ``--cache-to`` and
``--cache-from`` on the Image's cache repository (:mod:`lamina.domain.build_cache`).

``--timestamp`` is the build's epoch: buildah sets the config's and history's created time to
it and the times of every file it writes into the new layers, so the same inputs push the same
digest.  The parent's layers are copied, never rewritten, so they stay shared with the parent.

Registries: the same mirrors and plain-HTTP registries as the node and BuildKit, as a
``registries.conf`` (:func:`registries_conf`).  It reaches the builder as a pod annotation
projected to a file (a downward API volume), so no key of the tenant's context ConfigMap is
taken by it.  TLS verification is turned off only for the registries configured insecure,
and for the output registry when ``spec.output.insecure`` says so: never ``--tls-verify=false``
for a whole build.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lamina.api.image import ImageSpec
from lamina.domain.build_cache import BuildCache, buildah_cache_args
from lamina.domain.dockerfile import DockerfileError
from lamina.domain.image_annotations import SOURCE_DATE_EPOCH, source_date_epoch

__all__ = [
    "BUILDAH_COMMAND",
    "BUILDAH_SCRIPT",
    "DIGEST_FILE",
    "IMAGE_ID_FILE",
    "ISOLATION_ARGS",
    "REGISTRIES_ANNOTATION",
    "REGISTRIES_CONF",
    "STORAGE_DRIVERS",
    "BuildahSettings",
    "buildah_args",
    "buildah_pod",
    "registries_conf",
    "registry_host",
]

IMAGE_ID_FILE = "/tmp/lamina-image-id"
DIGEST_FILE = "/tmp/lamina-pushed-digest"
REGISTRIES_DIR = "/etc/lamina/registries"
REGISTRIES_CONF = f"{REGISTRIES_DIR}/registries.conf"
REGISTRIES_ANNOTATION = "lamina.dev/registries-conf"
STORAGE_DIR = "/var/lib/containers"
STORAGE_DRIVERS = ("overlay", "vfs")
DOCKERFILE = "/workspace/dockerfile/Dockerfile"

DEFAULT_IMAGE = "quay.io/buildah/stable:latest"


@dataclass(frozen=True)
class BuildahSettings:
    """The operator's Buildah settings, and the registry settings every builder gets."""

    image: str = DEFAULT_IMAGE
    storage_driver: str = "overlay"
    # The administrator may turn Buildah off (LAMINA_BUILDAH_ENABLED=false).
    enabled: bool = True
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    insecure: frozenset[str] = frozenset()


# Every RUN step a runc container: its own PID, mount, IPC and UTS namespaces, the pod's network.
ISOLATION_ARGS = (
    "--isolation=oci",
    "--pid=private",
    "--ipc=private",
    "--uts=private",
    "--network=host",
)

# The builder's only shell code: the same for every Image; spec values arrive as "$@".
BUILDAH_SCRIPT = (
    "set -eu\n"
    # cgroupfs: no systemd in a build pod; each step's cgroup is under the container's own.
    'buildah --cgroup-manager=cgroupfs build "$@"\n'
    f'image="$(cat {IMAGE_ID_FILE})"\n'
    'image="${image#sha256:}"\n'
    "first=\n"
    "for arg do\n"
    '  case "$arg" in\n'
    "    --tag=*)\n"
    '      name="${arg#--tag=}"\n'
    f'      buildah push --digestfile={DIGEST_FILE} "$image" "docker://$name"\n'
    f'      digest="$(cat {DIGEST_FILE})"\n'
    '      [ -n "$first" ] || first="$digest"\n'
    # Every tag names the one manifest, or the digest reported would not be the image's.
    '      if [ "$digest" != "$first" ]; then\n'
    '        echo "buildah pushed $name as $digest but an earlier tag as $first" >&2\n'
    "        exit 1\n"
    "      fi\n"
    "      ;;\n"
    "  esac\n"
    "done\n"
    # The digest, alone, is the result the operator reads back and verifies.
    'printf "%s" "$first" > /dev/termination-log\n'
)
BUILDAH_COMMAND = ["/bin/sh", "-c", BUILDAH_SCRIPT, "lamina-build"]


def buildah_args(
    spec: ImageSpec,
    annotations: Mapping[str, str],
    context_dir: str,
    cache: BuildCache | None = None,
) -> list[str]:
    """``buildah build`` arguments: one ``--flag=value`` element each, never split or parsed.

    The operator's constants first (:data:`ISOLATION_ARGS`), then the spec's values.  ``spec``
    has passed :func:`lamina.domain.build_job.check_build` (tags and repository
    checked, build-arg names checked, no NUL anywhere) and ``annotations`` are the checked
    lineage of :func:`lamina.domain.build_job.lineage_annotations`.  Every ``--build-arg``
    element has its ``=``: buildah takes a bare name's value from its own environment.
    ``cache`` adds the Image's registry cache
    (:func:`lamina.domain.build_cache.buildah_cache_args`).
    """
    assert spec.build is not None
    epoch = source_date_epoch(spec)
    build_args = {**(spec.build.args or {}), SOURCE_DATE_EPOCH: str(epoch)}
    for key, value in annotations.items():
        if "\x00" in key or "\x00" in value or "=" in key:
            raise DockerfileError(f"{key[:200]!r} cannot be an annotation")
    output = spec.output
    return [
        *ISOLATION_ARGS,
        # One layer per step, as BuildKit writes them (each step's layer is its own); the
        # registry cache needs it too.
        "--layers",
        "--format=oci",
        f"--timestamp={epoch}",
        f"--file={DOCKERFILE}",
        *(f"--build-arg={key}={value}" for key, value in sorted(build_args.items())),
        *(f"--annotation={key}={value}" for key, value in sorted(annotations.items())),
        f"--iidfile={IMAGE_ID_FILE}",
        *(f"--tag={output.repository}:{tag}" for tag in output.tags),
        *buildah_cache_args(spec, cache),
        context_dir,
    ]


def registry_host(repository: str) -> str:
    """The registry a repository lives on, as the docker transport reads it."""
    first, slash, _ = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's for every character they write)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise DockerfileError(f"registry setting {text[:200]!r} contains a control character")
    return json.dumps(text, ensure_ascii=False)


def registries_conf(
    mirrors: Mapping[str, Iterable[str]], insecure: Iterable[str], output_insecure: str | None
) -> str:
    """containers-registries.conf(5): the node's mirrors and plain-HTTP registries.

    ``output_insecure`` is the output registry when ``spec.output.insecure`` is set.
    Unqualified names resolve on docker.io, as BuildKit and the docker transport do.
    """
    plain = set(insecure) | ({output_insecure} if output_insecure else set())
    lines = ['unqualified-search-registries = ["docker.io"]', 'short-name-mode = "permissive"']
    for registry in sorted(set(mirrors) | plain):
        lines += ["", "[[registry]]", f"location = {_toml_string(registry)}"]
        if registry in plain:
            lines.append("insecure = true")
        for mirror in mirrors.get(registry, ()):
            lines += ["[[registry.mirror]]", f"location = {_toml_string(mirror)}"]
            if mirror in plain:
                lines.append("insecure = true")
    return "\n".join(lines) + "\n"


def buildah_pod(
    job: Mapping[str, Any],
    *,
    spec: ImageSpec,
    annotations: Mapping[str, str],
    context_dir: str,
    settings: BuildahSettings,
    cache: BuildCache | None = None,
) -> dict[str, Any]:
    """``job`` (the engine-independent build Job) with Buildah as its builder.

    The init container that copies the context runs the Buildah image too (it has ``sh`` and
    ``cp``), so a Buildah build needs no BuildKit image.  BuildKit's own settings and state
    volumes are left out; the storage emptyDir and the projected registries.conf come in.
    """
    image, storage_driver = settings.image, settings.storage_driver
    if storage_driver not in STORAGE_DRIVERS:
        raise DockerfileError(f"buildah storage driver {storage_driver!r} is not overlay or vfs")
    output = spec.output
    registries = registries_conf(
        settings.mirrors,
        settings.insecure,
        registry_host(output.repository) if output.insecure else None,
    )
    result = copy.deepcopy(dict(job))
    template = result["spec"]["template"]
    template["metadata"].setdefault("annotations", {})[REGISTRIES_ANNOTATION] = registries
    pod = template["spec"]
    for init in pod["initContainers"]:
        if init["name"] == "context":
            init["image"] = image
    (build,) = [c for c in pod["containers"] if c["name"] == "build"]
    env = [e for e in build.get("env", []) if e["name"] not in ("BUILDKITD_FLAGS", "DOCKER_CONFIG")]
    docker_config = next((m for m in build["volumeMounts"] if m["name"] == "push-secret"), None)
    if docker_config is not None:
        # containers/image reads its credentials from REGISTRY_AUTH_FILE (docker's format).
        env.append(
            {"name": "REGISTRY_AUTH_FILE", "value": f"{docker_config['mountPath']}/config.json"}
        )
    env += [
        {"name": "BUILDAH_ISOLATION", "value": "oci"},
        {"name": "STORAGE_DRIVER", "value": storage_driver},
        {"name": "CONTAINERS_REGISTRIES_CONF", "value": REGISTRIES_CONF},
    ]
    dropped = {"buildkitd", "state"}
    # Buildah's storage takes the place of BuildKit's state, size limit included.
    state: dict[str, Any] = next((v for v in pod["volumes"] if v["name"] == "state"), {})
    build.update(
        image=image,
        command=list(BUILDAH_COMMAND),
        args=buildah_args(spec, annotations, context_dir, cache),
        env=env,
        volumeMounts=[m for m in build["volumeMounts"] if m["name"] not in dropped]
        + [
            {"name": "containers-storage", "mountPath": STORAGE_DIR},
            {"name": "registries", "mountPath": REGISTRIES_DIR, "readOnly": True},
        ],
    )
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in dropped] + [
        {"name": "containers-storage", "emptyDir": dict(state.get("emptyDir") or {})},
        {
            "name": "registries",
            "downwardAPI": {
                "items": [
                    {
                        "path": "registries.conf",
                        "fieldRef": {
                            "fieldPath": f"metadata.annotations['{REGISTRIES_ANNOTATION}']"
                        },
                    }
                ]
            },
        },
    ]
    return result
