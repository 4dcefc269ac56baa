"""The Image resource: an image built from a parent plus build steps.

Images form a tree through ``spec.parent.image``; the operator records the ancestry, the
layers and the build history in ``status``, and never writes ``spec``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, JsonValue

from lamina.api.attestation import AttestationStatus, attestations_field
from lamina.api.durations import duration_check, duration_range
from lamina.api.meta import (
    DIGEST_PATTERN,
    OBJECT_NAME_MAX_LENGTH,
    OBJECT_NAME_PATTERN,
    REFERENCE_PATTERN,
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
    BUILD_ARGS_MAX_PROPERTIES,
    BUILD_ARGS_RULE,
    PATH_MAX_LENGTH,
    RELATIVE_PATH_PATTERN,
    STEPS_MAX_ITEMS,
    BuildArgKey,
    BuildArgValue,
    BuildStep,
    DockerfileText,
)

# Only what the operator runs (the CRD's enum refuses anything else): BuildKit and Buildah.
# Kaniko's upstream was archived in 2025 and is not an engine here.
BuildEngine = Literal["buildkit", "buildah"]
BUILD_ENGINES: tuple[BuildEngine, ...] = ("buildkit", "buildah")
TAGS_MAX_ITEMS = 32
# Clone URLs the operator resolves itself (git's smart HTTP or the git:// protocol): no white
# space or controls, no user info in the authority (credentials come from a Secret, never the
# URL, which is written into the image), no query or fragment (the operator appends
# /info/refs).  Never an option (a leading "-").
GIT_URL_PATTERN = r"^(https|http|git)://[^\s\x00-\x1f\x7f/@?#]+(/[^\s\x00-\x1f\x7f?#]*)?$"
# A branch, tag or commit: what git's check-ref-format admits, minus a leading "-".
GIT_REVISION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./@{}^~+-]*$"
RebuildPolicy = Literal["Automatic", "Manual"]
RebuildStrategy = Literal["Rebuild", "Rebase"]


class ParentSpec(Model):
    """Where the image starts: another Image (a lineage edge) or an external reference."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.image) != has(self.ref)",
                    "exactly one of spec.parent.image or spec.parent.ref must be set",
                )
            ]
        }
    )

    image: str | None = Field(
        default=None,
        pattern=OBJECT_NAME_PATTERN,
        max_length=OBJECT_NAME_MAX_LENGTH,
        description="Name of another Image in the same namespace.",
    )
    ref: str | None = Field(
        default=None,
        pattern=REFERENCE_PATTERN,
        max_length=512,
        description=(
            "An external image reference (repository[:tag][@digest]). Lamina pins it by "
            "digest and re-resolves it every pollInterval to notice a moved tag."
        ),
    )
    poll_interval: Annotated[str, duration_range("1s", "168h"), duration_check("1s", "168h")] = (
        Field(
            default="10m",
            description="How often an external ref is re-resolved, e.g. 10m or 1h (1s to 168h).",
        )
    )


class ConfigMapContext(Model):
    """Build context files taken from a ConfigMap in the same namespace."""

    name: str = Field(pattern=OBJECT_NAME_PATTERN, max_length=253)


class GitContext(Model):
    """Build context from a git repository."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=GIT_URL_PATTERN,
        description="Clone URL: https://, http:// or git://, without credentials.",
    )
    revision: str = Field(
        default="HEAD",
        max_length=255,
        pattern=GIT_REVISION_PATTERN,
        description="Branch, tag or commit.",
    )
    path: str | None = Field(
        default=None,
        max_length=PATH_MAX_LENGTH,
        pattern=RELATIVE_PATH_PATTERN,
        description="Sub-directory used as the context (relative, without . or .. segments).",
    )
    secret: str | None = Field(
        default=None,
        pattern=OBJECT_NAME_PATTERN,
        max_length=253,
        description=(
            "A Secret in the same namespace with HTTP credentials: username and password "
            "(kubernetes.io/basic-auth), or a token (sent as the password, username "
            "x-access-token unless username is set)."
        ),
    )
    poll_interval: Annotated[str, duration_range("1s", "168h"), duration_check("1s", "168h")] = (
        Field(
            default="10m",
            description="How often the revision is re-resolved to notice a moved branch "
            "(1s to 168h); a new commit rebuilds the Image and its descendants.",
        )
    )


class BuildContext(Model):
    """Where the build's files come from; without either, the build has no context."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.configMap) && has(self.git))",
                    "at most one of spec.build.context.configMap or spec.build.context.git "
                    "may be set",
                )
            ]
        }
    )

    config_map: ConfigMapContext | None = None
    git: GitContext | None = None


class BuildSpec(Model):
    """How the image is built on top of its parent."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.steps) != has(self.dockerfile)",
                    "exactly one of spec.build.steps or spec.build.dockerfile must be set",
                )
            ]
        }
    )

    steps: list[BuildStep] | None = Field(
        default=None,
        min_length=1,
        max_length=STEPS_MAX_ITEMS,
        description=(
            "Dockerfile instructions appended after a generated FROM <parent>@<digest>, one "
            "instruction each: no line breaks or trailing backslash, no FROM, no parser "
            "directive, no COPY --from / RUN --mount from= (the parent is the only stage)."
        ),
    )
    dockerfile: DockerfileText | None = Field(
        default=None,
        description=(
            "A full Dockerfile; its first stage's base is replaced by the parent, pinned by "
            "digest. Later stages must be based on earlier stages (FROM <stage>), and "
            "COPY --from / RUN --mount from= may name only earlier stages, so the pushed image "
            "always starts with the parent's layers; no parser directives, no heredocs."
        ),
    )
    context: BuildContext | None = None
    args: dict[BuildArgKey, BuildArgValue] | None = Field(
        default=None,
        max_length=BUILD_ARGS_MAX_PROPERTIES,
        description=(
            "Build arguments; names match [A-Za-z_][A-Za-z0-9_]* and may not start with BUILDKIT_."
        ),
        json_schema_extra={"x-kubernetes-validations": [BUILD_ARGS_RULE]},
    )
    engine: BuildEngine | None = Field(
        default=None,
        description=(
            "Build engine: buildkit or buildah. Unset means the operator's default engine "
            "(LAMINA_DEFAULT_BUILD_ENGINE, chart value defaultBuildEngine), read at each build."
        ),
    )
    timeout: Annotated[str, duration_range("10s", "24h"), duration_check("10s", "24h")] = Field(
        default="30m",
        description="Deadline of one build (10s to 24h; the operator may cap it lower).",
    )


class OutputSpec(Model):
    """Where the built image is pushed."""

    repository: str = Field(
        pattern=REPOSITORY_PATTERN,
        max_length=255,
        description="Target repository, e.g. registry.example.com/team/app.",
    )
    tags: Annotated[
        list[Annotated[str, Field(pattern=TAG_PATTERN, max_length=128)]],
        AfterValidator(distinct),
    ] = Field(
        default_factory=lambda: ["latest"],
        min_length=1,
        max_length=TAGS_MAX_ITEMS,
        description=f"Tags to push (1 to {TAGS_MAX_ITEMS}, each once).",
        json_schema_extra={"default": ["latest"], "x-kubernetes-list-type": "set"},
    )
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
            "Sign every pushed digest (built, rebased) with this key; without it, the "
            "operator's default key, if one is configured. A digest that cannot be signed "
            "is never recorded as Ready."
        ),
    )


class RebuildSpec(Model):
    """What happens when the parent's digest changes."""

    policy: RebuildPolicy = Field(
        default="Automatic",
        description="Automatic rebuilds on a new parent digest; Manual waits for a trigger.",
    )
    strategy: RebuildStrategy = Field(
        default="Rebuild",
        description=(
            "Rebuild runs the build again; Rebase swaps the parent's layers under this "
            "image's own layers without running the build (opt-in)."
        ),
    )


class CommitSource(Model):
    """Marks an Image that records a ContainerCommit's result instead of being built."""

    name: str = Field(
        pattern=OBJECT_NAME_PATTERN,
        max_length=OBJECT_NAME_MAX_LENGTH,
        description="The ContainerCommit.",
    )


class ImageSpec(Model):
    """The desired image."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.build) != has(self.commit)",
                    "exactly one of spec.build or spec.commit must be set",
                )
            ]
        }
    )

    parent: ParentSpec
    build: BuildSpec | None = None
    commit: CommitSource | None = Field(
        default=None,
        description=(
            "Set by the operator on the Images it creates for ContainerCommits: such an "
            "Image records a snapshot and is never rebuilt."
        ),
    )
    output: OutputSpec
    rebuild: RebuildSpec = Field(default_factory=RebuildSpec, json_schema_extra={"default": {}})
    history_limit: int = Field(
        default=10, ge=1, le=100, description="How many past digests status.history keeps."
    )


class ImageParentStatus(Model):
    """The parent this image's digest was built on."""

    image: str | None = None
    ref: str | None = None
    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN)


class LineageEntry(Model):
    """One ancestor, nearest first; the last entry is the root."""

    name: str | None = Field(default=None, description="The ancestor Image's name.")
    ref: str | None = Field(default=None, description="The external reference at the root.")
    digest: str | None = Field(default=None, description="The ancestor's current digest.")


class ImageLayer(Model):
    """One layer of the image, bottom first."""

    digest: str = Field(pattern=DIGEST_PATTERN)
    size: int = Field(ge=0)
    own: bool = Field(description="True when this image introduced the layer.")


class BuiltFromStatus(Model):
    """What the current digest was built from."""

    generation: int | None = None
    parent_digest: str | None = None
    trigger: str | None = None
    source_commit: str | None = Field(
        default=None, description="The git commit of the build context (git contexts only)."
    )


class BuildWaiting(Model):
    """Why a running build does not progress, in the words of its pod."""

    reason: str = Field(description="A catalogued CamelCase reason, e.g. ImagePullBackOff.")
    message: str = ""


class BuildStatus(Model):
    """The current or last build."""

    job: str | None = Field(default=None, description="The build Job (operator namespace).")
    phase: Literal["Running", "Succeeded", "Failed"] | None = None
    reasons: list[str] | None = Field(
        default=None, description="Why it runs, each 'Kind old -> new'."
    )
    inputs: str | None = Field(
        default=None,
        description="Hash of what was built; a failed build is not retried "
        "until these inputs change or a rebuild is requested.",
    )
    wanted: BuiltFromStatus | None = Field(
        default=None, description="The inputs this build runs on (generation, parent digest)."
    )
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failure: str | None = Field(
        default=None, description="Why the last build failed, a CamelCase reason."
    )
    message: str | None = None
    waiting: BuildWaiting | None = Field(
        default=None,
        description="While the running build's pod cannot start (ImagePullBackOff, ...); "
        "cleared when it starts or the build finishes.",
    )


class ResolvedParent(Model):
    """The digest an external parent reference resolved to, and when."""

    ref: str
    digest: str | None = None
    resolved_at: datetime | None = None
    message: str | None = None


class ResolvedSource(Model):
    """The commit a git context's revision resolved to, and when (git contexts only)."""

    url: str
    revision: str
    commit: str | None = Field(
        default=None, description="The commit id; the last known one while resolving fails."
    )
    resolved_at: datetime | None = None
    message: str | None = Field(
        default=None, description="Why the revision is not freshly resolved ('Reason: text')."
    )


class HistoryEntry(Model):
    """A past digest of this image."""

    digest: str = Field(pattern=DIGEST_PATTERN)
    parent_digest: str | None = None
    reason: str | None = None
    built_at: datetime | None = None


class ImageStatus(Model):
    """What the operator observed and did.  The digest changes only when a build succeeds."""

    observed_generation: int | None = None
    conditions: list[Condition] | None = conditions_field()
    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN)
    image_ref: str | None = None
    parent: ImageParentStatus | None = None
    lineage: list[LineageEntry] | None = None
    layers: list[ImageLayer] | None = None
    build: BuildStatus | None = None
    built_from: BuiltFromStatus | None = None
    resolved: ResolvedParent | None = None
    source: ResolvedSource | None = None
    history: list[HistoryEntry] | None = None
    index_digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description=(
            "The image index the tags point at: the image (digest) and its attestation manifests."
        ),
    )
    attestations: list[AttestationStatus] | None = attestations_field()
    signature: SignatureStatus | None = None


class Image(Model):
    """An Image custom resource as read from the API server."""

    kind: ClassVar[str] = "Image"
    plural: ClassVar[str] = "images"
    short_names: ClassVar[list[str]] = ["img"]
    root_validations: ClassVar[list[dict[str, JsonValue]]] = [name_length_rule("an Image")]

    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ImageSpec
    status: ImageStatus = Field(default_factory=ImageStatus)
