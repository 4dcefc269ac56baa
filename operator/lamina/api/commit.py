"""The ContainerCommit resource: ``docker commit`` for a running pod's container.

Like a Job, its spec is immutable once created: a commit is an event, not a desired state, so
editing it afterwards would make its status lie about what was committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, JsonValue

from lamina.api.attestation import AttestationStatus, attestations_field
from lamina.api.meta import (
    DIGEST_PATTERN,
    LABEL_NAME_PATTERN,
    OBJECT_NAME_PATTERN,
    REPOSITORY_PATTERN,
    TAG_PATTERN,
    Condition,
    Model,
    cel,
    conditions_field,
    distinct,
    name_length_rule,
)
from lamina.api.signing import SignatureStatus, SignSpec
from lamina.api.text import (
    MULTI_LINE_PATTERN,
    NO_NUL_PATTERN,
    SINGLE_LINE_PATTERN,
    AbsolutePath,
)

# Environment variable names as Kubernetes admits them in a container's env.
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# Label keys of an image config: reverse-DNS words, never an option or an "=".
IMAGE_LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
# 1 to 65535, optionally with a protocol.
PORT_PATTERN = (
    r"^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    r"(/(tcp|udp|sctp))?$"
)
# The image config's user: a name or id, optionally with a group.
USER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$"
ARGV_MAX_ITEMS = 64
ENV_MAX_ITEMS = 128
LABELS_MAX_PROPERTIES = 64
EXCLUDE_MAX_ITEMS = 64
TTL_MAX_SECONDS = 30 * 24 * 3600
_ARGUMENT = Annotated[str, Field(max_length=4096, pattern=NO_NUL_PATTERN)]

CommitPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class CommitOutput(Model):
    """Where the committed image is pushed."""

    repository: str = Field(pattern=REPOSITORY_PATTERN, max_length=255)
    tag: str = Field(default="latest", pattern=TAG_PATTERN, max_length=128)
    push_secret: str | None = Field(
        default=None,
        pattern=OBJECT_NAME_PATTERN,
        max_length=253,
        description="A kubernetes.io/dockerconfigjson Secret in the same namespace.",
    )
    insecure: bool = Field(default=False, description="The registry speaks plain HTTP.")
    sign: SignSpec | None = Field(
        default=None,
        description=(
            "Sign the committed image with this key; without it, the operator's default key, "
            "if one is configured. A commit whose image cannot be signed fails."
        ),
    )


class EnvVar(Model):
    """An environment variable set in the committed image's config."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    value: str = Field(default="", max_length=32768, pattern=NO_NUL_PATTERN)


def _distinct_names(env: list[EnvVar]) -> list[EnvVar]:
    distinct([variable.name for variable in env])
    return env


class ConfigChanges(Model):
    """Changes to the image config, like ``docker commit --change``."""

    env: Annotated[list[EnvVar], AfterValidator(_distinct_names)] | None = Field(
        default=None,
        max_length=ENV_MAX_ITEMS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    cmd: list[_ARGUMENT] | None = Field(default=None, max_length=ARGV_MAX_ITEMS)
    entrypoint: list[_ARGUMENT] | None = Field(default=None, max_length=ARGV_MAX_ITEMS)
    working_dir: AbsolutePath | None = None
    user: str | None = Field(default=None, max_length=256, pattern=USER_PATTERN)
    labels: (
        dict[
            Annotated[str, Field(max_length=256, pattern=IMAGE_LABEL_KEY_PATTERN)],
            Annotated[str, Field(max_length=4096, pattern=NO_NUL_PATTERN)],
        ]
        | None
    ) = Field(default=None, max_length=LABELS_MAX_PROPERTIES)
    exposed_ports: (
        Annotated[
            list[Annotated[str, Field(pattern=PORT_PATTERN, max_length=11)]],
            AfterValidator(distinct),
        ]
        | None
    ) = Field(
        default=None,
        max_length=ARGV_MAX_ITEMS,
        description="Ports such as 8080/tcp.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
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
        default=None,
        pattern=LABEL_NAME_PATTERN,
        max_length=63,
        description="Container name; the pod's first container when unset.",
    )
    output: CommitOutput
    message: str | None = Field(default=None, max_length=4096, pattern=MULTI_LINE_PATTERN)
    author: str | None = Field(
        default=None,
        max_length=256,
        pattern=SINGLE_LINE_PATTERN,
        description="One line, e.g. Jane Doe <jane@example.com>.",
    )
    pause: bool = Field(
        default=True, description="Freeze the container while its writable layer is read."
    )
    changes: ConfigChanges | None = None
    exclude_paths: (
        Annotated[
            list[AbsolutePath],
            AfterValidator(distinct),
        ]
        | None
    ) = Field(
        default=None,
        max_length=EXCLUDE_MAX_ITEMS,
        description=(
            "Paths (and everything below them) left out of the layer: absolute and normalised "
            "(no empty, . or .. segments, no trailing slash)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=TTL_MAX_SECONDS,
        description="Delete this object that long after it finished (at most 30 days).",
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
    index_digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description="The image index the tag points at: the image and its provenance.",
    )
    attestations: list[AttestationStatus] | None = attestations_field()
    frozen_seconds: float | None = None
    diff_seconds: float | None = None
    push_seconds: float | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    signature: SignatureStatus | None = None


class ContainerCommit(Model):
    """A ContainerCommit custom resource as read from the API server."""

    kind: ClassVar[str] = "ContainerCommit"
    plural: ClassVar[str] = "containercommits"
    short_names: ClassVar[list[str]] = ["ccommit"]
    root_validations: ClassVar[list[dict[str, JsonValue]]] = [
        name_length_rule("a ContainerCommit (it names the Image that records it)")
    ]

    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ContainerCommitSpec
    status: ContainerCommitStatus = Field(default_factory=ContainerCommitStatus)
