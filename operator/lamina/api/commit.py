"""The ContainerCommit resource: ``docker commit`` for a running pod's container.

Like a Job, its spec is immutable once created: a commit is an event, not a desired state, so
editing it afterwards would make its status lie about what was committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from lamina.api.meta import (
    DIGEST_PATTERN,
    OBJECT_NAME_PATTERN,
    REPOSITORY_PATTERN,
    TAG_PATTERN,
    Condition,
    Model,
    cel,
    conditions_field,
)

CommitPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class CommitOutput(Model):
    """Where the committed image is pushed."""

    repository: str = Field(pattern=REPOSITORY_PATTERN, max_length=255)
    tag: str = Field(default="latest", pattern=TAG_PATTERN)
    push_secret: str | None = Field(
        default=None,
        pattern=OBJECT_NAME_PATTERN,
        description="A kubernetes.io/dockerconfigjson Secret in the same namespace.",
    )
    insecure: bool = Field(default=False, description="The registry speaks plain HTTP.")


class EnvVar(Model):
    """An environment variable set in the committed image's config."""

    name: str = Field(min_length=1, pattern=r"^[^=]+$")
    value: str = ""


class ConfigChanges(Model):
    """Changes to the image config, like ``docker commit --change``."""

    env: list[EnvVar] | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None
    labels: dict[str, str] | None = None
    exposed_ports: list[Annotated[str, Field(pattern=r"^[0-9]{1,5}(/(tcp|udp|sctp))?$")]] | None = (
        Field(default=None, description="Ports such as 8080/tcp.")
    )


class ContainerCommitSpec(Model):
    """What to snapshot and where to push it.  Immutable once created."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "spec is immutable: create a new ContainerCommit instead")
            ]
        }
    )

    pod: str = Field(
        pattern=OBJECT_NAME_PATTERN, max_length=253, description="Pod in this namespace."
    )
    container: str | None = Field(
        default=None, description="Container name; the pod's first container when unset."
    )
    output: CommitOutput
    message: str | None = Field(default=None, max_length=4096)
    author: str | None = Field(default=None, max_length=256)
    pause: bool = Field(
        default=True, description="Freeze the container while its writable layer is read."
    )
    changes: ConfigChanges | None = None
    exclude_paths: list[str] | None = Field(
        default=None, description="Paths (and everything below them) left out of the layer."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete this object that long after it finished."
    )


class ImageDigestRef(Model):
    """An image reference with the digest it resolved to."""

    ref: str | None = None
    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN)


class CommittedLayer(Model):
    """The layer made from the container's writable layer."""

    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN)
    diff_id: str | None = Field(default=None, alias="diffID", pattern=DIGEST_PATTERN)
    size: int | None = Field(default=None, ge=0)
    entries: int | None = Field(default=None, ge=0)


class ContainerCommitStatus(Model):
    """Progress and result of the commit."""

    observed_generation: int | None = None
    phase: CommitPhase | None = None
    conditions: list[Condition] | None = conditions_field()
    node: str | None = None
    container_id: str | None = Field(default=None, alias="containerID")
    parent: ImageDigestRef | None = None
    image: ImageDigestRef | None = None
    layer: CommittedLayer | None = None
    frozen_seconds: float | None = None
    diff_seconds: float | None = None
    push_seconds: float | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


class ContainerCommit(Model):
    """A ContainerCommit custom resource as read from the API server."""

    kind: ClassVar[str] = "ContainerCommit"
    plural: ClassVar[str] = "containercommits"
    short_names: ClassVar[list[str]] = ["ccommit"]

    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ContainerCommitSpec
    status: ContainerCommitStatus = Field(default_factory=ContainerCommitStatus)
