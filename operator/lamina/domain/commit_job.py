"""The Job that performs a ContainerCommit, as a pure function of the commit and its target.

The Job runs on the target Pod's node (``nodeName``), in the operator's namespace: it needs
the host's PID namespace (to check the container's init against its containerd shim and read
the shim's mount table), containerd's task directory of the CRI namespace and the overlayfs
snapshot directory, both read-only (the task bundle names the init; the snapshots hold the
upperdir and lowerdirs), and, only to pause the container, the cgroup filesystem; reading
other processes' mount tables and ``trusted.*`` xattrs takes a privileged pod.  Nothing else
of the host is mounted.  User namespaces stay "restricted"; only this Job is privileged.

No value from the ContainerCommit or the Pod can become an option of the committer (an
``author`` of ``--help``, an exclude path ``--to=evil``): identifiers and references go as one
``--name=VALUE`` element each, and the free text (message, author, exclude paths, config
changes) as one JSON object in ``--commit-json={...}``, which also survives values that
argparse would otherwise mangle (it drops a value of exactly ``--``).  The committer's parser
takes no abbreviations and no positionals.

The name is derived from the commit's UID, so an operator restarted mid-commit finds and
adopts its Job instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lamina.api.commit import ContainerCommitSpec
from lamina.domain.attestations import CommitSource
from lamina.domain.commit_slots import CommitSlots
from lamina.domain.job_resources import JobResources
from lamina.domain.labels import label_value

MANAGED_BY = "lamina"
LABEL_COMMIT_NAMESPACE = "lamina.dev/commit-namespace"
LABEL_COMMIT_NAME = "lamina.dev/commit-name"
LABEL_COMMIT_UID = "lamina.dev/commit-uid"
# The same keys as annotations, with the whole names (labels hold 63 characters).
ANNOTATION_COMMIT_NAMESPACE = LABEL_COMMIT_NAMESPACE
ANNOTATION_COMMIT_NAME = LABEL_COMMIT_NAME
LABEL_PURPOSE = "lamina.dev/purpose"
HOST_ROOT = "/host"
DOCKER_CONFIG_DIR = "/var/run/lamina/docker"
# containerd's defaults; the operator's settings override them for nodes configured otherwise.
CONTAINERD_ROOT = "/var/lib/containerd"
CONTAINERD_STATE = "/run/containerd"
CRI_NAMESPACE = "k8s.io"
TASKS_DIRECTORY = "io.containerd.runtime.v2.task"
SNAPSHOTS_DIRECTORY = "io.containerd.snapshotter.v1.overlayfs/snapshots"
# Bounds a commit that hangs (registry unreachable, a huge layer): the Job is then Failed and
# the target thawed.
DEFAULT_DEADLINE_SECONDS = 1800


@dataclass(frozen=True)
class CommitTarget:
    """Where the container runs and what it was started from (from the Pod's status)."""

    node: str
    container_id: str
    parent_ref: str
    parent_digest: str | None


@dataclass(frozen=True)
class CommitSettings:
    """Operator settings that shape commit Jobs."""

    namespace: str
    image: str
    image_pull_policy: str = "IfNotPresent"
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    registry_config: str | None = None
    containerd_root: str = CONTAINERD_ROOT
    containerd_state: str = CONTAINERD_STATE
    slots: CommitSlots = field(default_factory=CommitSlots)
    resources: JobResources = field(default_factory=JobResources)

    @property
    def tasks_path(self) -> str:
        """The CRI namespace's task bundles on the node."""
        return f"{self.containerd_state.rstrip('/')}/{TASKS_DIRECTORY}/{CRI_NAMESPACE}"

    @property
    def snapshots_path(self) -> str:
        """The overlayfs snapshotter's snapshots on the node."""
        return f"{self.containerd_root.rstrip('/')}/{SNAPSHOTS_DIRECTORY}"


def _suffix(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:10]


def commit_job_name(uid: str) -> str:
    return f"lamina-commit-{_suffix(uid)}"


def thaw_job_name(uid: str) -> str:
    return f"lamina-thaw-{_suffix(uid)}"


def push_secret_copy_name(uid: str) -> str:
    return f"lamina-commit-{_suffix(uid)}-push"


def parent_reference(target: CommitTarget) -> str:
    """The container's image, pinned by digest when the runtime reported one."""
    if target.parent_digest is None:
        return target.parent_ref
    repository = target.parent_ref.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:  # drop the tag: the digest says it exactly
        repository = repository[: repository.rfind(":")]
    return f"{repository}@{target.parent_digest}"


def _option(name: str, value: str) -> str:
    """One argv element: the value can never be read as an option of its own."""
    return f"--{name}={value}"


def snapshot_arguments(
    namespace: str,
    name: str,
    spec: ContainerCommitSpec,
    target: CommitTarget,
    settings: CommitSettings,
    *,
    source: CommitSource | None = None,
) -> list[str]:
    """The ``lamina snapshot`` command line for this commit.

    ``source`` (who asked, which pod and container) goes into the committed image's
    provenance, as one JSON argument like the free text.
    """
    output = spec.output
    args = [
        "snapshot",
        _option("container-id", target.container_id),
        _option("containerd-root", settings.containerd_root),
        _option("containerd-state", settings.containerd_state),
        _option("containerd-namespace", CRI_NAMESPACE),
        _option("host-root", HOST_ROOT),
        _option("parent", parent_reference(target)),
        _option("to", f"{output.repository}:{output.tag}"),
        _option("created-by", f"lamina ContainerCommit {namespace}/{name}"),
    ]
    if output.insecure:
        args.append("--insecure")
    if spec.pause:
        args.append("--pause")
    # Free text (and the changes) as one JSON object: see the module docstring.
    values: dict[str, Any] = {}
    if spec.message:
        values["message"] = spec.message
    if spec.author:
        values["author"] = spec.author
    if spec.exclude_paths:
        values["exclude"] = list(spec.exclude_paths)
    if spec.changes is not None:
        values["changes"] = spec.changes.model_dump(by_alias=True, exclude_none=True, mode="json")
    if values:
        args.append(_option("commit-json", json.dumps(values, sort_keys=True)))
    if source is not None:
        args.append(_option("source-json", json.dumps(source.json(), sort_keys=True)))
    if output.push_secret:
        args.append(_option("docker-config", f"{DOCKER_CONFIG_DIR}/config.json"))
    return args


def _host_directory(name: str, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A node directory, read-only (submounts too) at the same path under ``HOST_ROOT``."""
    volume = {"name": name, "hostPath": {"path": path, "type": "Directory"}}
    mount = {
        "name": name,
        "mountPath": HOST_ROOT + path,
        "readOnly": True,
        "recursiveReadOnly": "IfPossible",
    }
    return volume, mount


def _cgroup_directory() -> tuple[dict[str, Any], dict[str, Any]]:
    """The node's cgroup filesystem, writable: freezing and thawing write to it."""
    volume = {"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup", "type": "Directory"}}
    return volume, {"name": "cgroup", "mountPath": "/sys/fs/cgroup"}


def _labels(namespace: str, name: str, uid: str, purpose: str) -> dict[str, str]:
    # A ContainerCommit may be named up to 128 characters; a label value holds 63.  The label
    # is a stable stand-in (for selectors and people), the annotations hold the real names.
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_PURPOSE: purpose,
        LABEL_COMMIT_NAMESPACE: label_value(namespace),
        LABEL_COMMIT_NAME: label_value(name),
        LABEL_COMMIT_UID: uid,
    }


def _annotations(namespace: str, name: str) -> dict[str, str]:
    return {ANNOTATION_COMMIT_NAMESPACE: namespace, ANNOTATION_COMMIT_NAME: name}


def commit_of(labels: Mapping[str, str], annotations: Mapping[str, str]) -> tuple[str, str] | None:
    """The (namespace, name) of the ContainerCommit a commit Job or its pod works for.

    From the annotations (whole names); Jobs made before they existed carry only labels.
    """
    namespace = annotations.get(ANNOTATION_COMMIT_NAMESPACE) or labels.get(LABEL_COMMIT_NAMESPACE)
    name = annotations.get(ANNOTATION_COMMIT_NAME) or labels.get(LABEL_COMMIT_NAME)
    return (namespace, name) if namespace and name else None


def _privileged_node_job(
    *,
    job_name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    node: str,
    settings: CommitSettings,
    args: list[str],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    if settings.registry_config is not None:
        env.append({"name": "LAMINA_REGISTRY_CONFIG_INLINE", "value": settings.registry_config})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeName": node,
                    "hostPID": True,
                    "automountServiceAccountToken": False,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "committer",
                            "image": settings.image,
                            "imagePullPolicy": settings.image_pull_policy,
                            # The result is the last thing written; on failure the log's
                            # tail (the error) becomes the termination message instead.
                            "command": [
                                "/bin/sh",
                                "-c",
                                'lamina "$@" > /dev/termination-log',
                                "--",
                            ],
                            "args": args,
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "env": env,
                            # Root, explicitly: Lamina's image runs as 65532 by default
                            # (the operator's "restricted" user); the committer reads the host.
                            "securityContext": {"privileged": True, "runAsUser": 0},
                            "volumeMounts": mounts,
                            **(
                                {"resources": settings.resources.wire()}
                                if settings.resources.wire()
                                else {}
                            ),
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def commit_job(
    *,
    namespace: str,
    name: str,
    uid: str,
    spec: ContainerCommitSpec,
    target: CommitTarget,
    settings: CommitSettings,
    container: str | None = None,
) -> dict[str, Any]:
    """The Job that snapshots the target container and pushes the new image.

    ``container`` is the target container's name (``spec.container``, or the pod's first).
    """
    directories = [
        _host_directory("containerd-tasks", settings.tasks_path),
        _host_directory("containerd-snapshots", settings.snapshots_path),
    ]
    if spec.pause:
        directories.append(_cgroup_directory())
    volumes = [volume for volume, _ in directories]
    mounts = [mount for _, mount in directories]
    if spec.output.push_secret:
        volumes.append(
            {
                "name": "push-secret",
                "secret": {
                    "secretName": push_secret_copy_name(uid),
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
        mounts.append({"name": "push-secret", "mountPath": DOCKER_CONFIG_DIR, "readOnly": True})
    return _privileged_node_job(
        job_name=commit_job_name(uid),
        labels=_labels(namespace, name, uid, "commit"),
        annotations=_annotations(namespace, name),
        node=target.node,
        settings=settings,
        args=snapshot_arguments(
            namespace,
            name,
            spec,
            target,
            settings,
            source=CommitSource(
                namespace=namespace,
                name=name,
                uid=uid,
                pod=spec.pod,
                container=container or spec.container or "",
                container_id=target.container_id,
                node=target.node,
            ),
        ),
        volumes=volumes,
        mounts=mounts,
    )


def thaw_job(
    *, namespace: str, name: str, uid: str, target: CommitTarget, settings: CommitSettings
) -> dict[str, Any]:
    """A Job that thaws the target container after a commit Job died while it was frozen."""
    cgroup_volume, cgroup_mount = _cgroup_directory()
    return _privileged_node_job(
        job_name=thaw_job_name(uid),
        labels=_labels(namespace, name, uid, "thaw"),
        annotations=_annotations(namespace, name),
        node=target.node,
        settings=settings,
        args=["thaw", _option("container-id", target.container_id)],
        volumes=[cgroup_volume],
        mounts=[cgroup_mount],
    )


def push_secret_copy(
    *, uid: str, settings: CommitSettings, docker_config_json: str, owner: dict[str, str]
) -> dict[str, Any]:
    """The push credentials, copied into the operator's namespace for the Job's lifetime.

    Owned by the Job, so Kubernetes deletes the copy with it.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": push_secret_copy_name(uid),
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [{**owner, "blockOwnerDeletion": False}],
        },
        "stringData": {".dockerconfigjson": docker_config_json},
    }
