"""The Job that performs a ContainerCommit, as a pure function of the commit and its target.

The Job runs on the target Pod's node (``nodeName``), in the operator's namespace: it needs
the host's PID namespace (to find the container's init process), the host root read-only (to
read the overlay upperdir) and the cgroup filesystem (to freeze the container), which only a
privileged pod has.  User namespaces stay "restricted"; only this Job is privileged.

The name is derived from the commit's UID, so an operator restarted mid-commit finds and
adopts its Job instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lamina.api.commit import ContainerCommitSpec

MANAGED_BY = "lamina"
LABEL_COMMIT_NAMESPACE = "lamina.dev/commit-namespace"
LABEL_COMMIT_NAME = "lamina.dev/commit-name"
LABEL_COMMIT_UID = "lamina.dev/commit-uid"
LABEL_PURPOSE = "lamina.dev/purpose"
HOST_ROOT = "/host"
DOCKER_CONFIG_DIR = "/var/run/lamina/docker"
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


def snapshot_arguments(
    namespace: str, name: str, spec: ContainerCommitSpec, target: CommitTarget
) -> list[str]:
    """The ``lamina snapshot`` command line for this commit."""
    output = spec.output
    args = [
        "snapshot",
        "--container-id",
        target.container_id,
        "--parent",
        parent_reference(target),
        "--to",
        f"{output.repository}:{output.tag}",
        "--created-by",
        f"lamina ContainerCommit {namespace}/{name}",
        "--host-root",
        HOST_ROOT,
    ]
    if output.insecure:
        args.append("--insecure")
    if spec.pause:
        args.append("--pause")
    if spec.message:
        args += ["--message", spec.message]
    if spec.author:
        args += ["--author", spec.author]
    for path in spec.exclude_paths or []:
        args += ["--exclude", path]
    if spec.changes is not None:
        changes = spec.changes.model_dump(by_alias=True, exclude_none=True, mode="json")
        args += ["--change-json", json.dumps(changes, sort_keys=True)]
    if output.push_secret:
        args += ["--docker-config", f"{DOCKER_CONFIG_DIR}/config.json"]
    return args


def _labels(namespace: str, name: str, uid: str, purpose: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_PURPOSE: purpose,
        LABEL_COMMIT_NAMESPACE: namespace,
        LABEL_COMMIT_NAME: name,
        LABEL_COMMIT_UID: uid,
    }


def _privileged_node_job(
    *,
    job_name: str,
    labels: dict[str, str],
    node: str,
    settings: CommitSettings,
    args: list[str],
    extra_volumes: list[dict[str, Any]],
    extra_mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    if settings.registry_config is not None:
        env.append({"name": "LAMINA_REGISTRY_CONFIG_INLINE", "value": settings.registry_config})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": settings.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
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
                            "volumeMounts": [
                                {
                                    "name": "host-root",
                                    "mountPath": HOST_ROOT,
                                    "readOnly": True,
                                    "mountPropagation": "HostToContainer",
                                },
                                {"name": "cgroup", "mountPath": "/sys/fs/cgroup"},
                                *extra_mounts,
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}},
                        {
                            "name": "cgroup",
                            "hostPath": {"path": "/sys/fs/cgroup", "type": "Directory"},
                        },
                        *extra_volumes,
                    ],
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
) -> dict[str, Any]:
    """The Job that snapshots the target container and pushes the new image."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
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
        node=target.node,
        settings=settings,
        args=snapshot_arguments(namespace, name, spec, target),
        extra_volumes=volumes,
        extra_mounts=mounts,
    )


def thaw_job(
    *, namespace: str, name: str, uid: str, target: CommitTarget, settings: CommitSettings
) -> dict[str, Any]:
    """A Job that thaws the target container after a commit Job died while it was frozen."""
    return _privileged_node_job(
        job_name=thaw_job_name(uid),
        labels=_labels(namespace, name, uid, "thaw"),
        node=target.node,
        settings=settings,
        args=["thaw", "--container-id", target.container_id],
        extra_volumes=[],
        extra_mounts=[],
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
