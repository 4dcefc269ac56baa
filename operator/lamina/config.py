"""Operator configuration: one place, read from the environment (the Helm chart sets it).

Every setting has a ``LAMINA_`` environment variable (docs/configuration.md lists them); the
namespaces and ports also have a flag of ``lamina operator``, which wins.  The Helm chart
sets the variables from its values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lamina.api.image import BuildEngine
from lamina.domain.build_cache import CACHE_REPOSITORY_PATTERN, DEFAULT_CACHE_REPOSITORY
from lamina.domain.job_resources import JobResources, check_size_limit, parse_job_resources


class OperatorConfig(BaseModel):
    """Settings of one operator process."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means all."
    )
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="0 disables metrics.")
    health_port: int = Field(
        default=8080, ge=0, le=65535, description="Liveness endpoint /healthz; 0 disables it."
    )

    resync_seconds: float = Field(
        default=600.0,
        ge=0,
        description="Full relist-and-fix period, the safety net for lost patches; 0 disables it.",
    )

    namespace: str = Field(
        default="lamina-system",
        description="The operator's own namespace, where commit Jobs run.",
    )
    committer_image: str = Field(
        default="lamina:latest", description="Image of commit Jobs (Lamina's own image)."
    )
    commit_deadline_seconds: int = Field(default=1800, ge=30)
    max_concurrent_commits: int = Field(
        default=4, ge=1, description="Global limit on commit Jobs running at once."
    )
    max_commits_per_namespace: int | None = Field(
        default=None,
        ge=1,
        description="At most this many commit Jobs of one namespace at once (unset: none).",
    )
    containerd_root: str = Field(
        default="/var/lib/containerd",
        pattern=r"^/",
        description="containerd's root on the nodes (commit Jobs read its overlayfs snapshots).",
    )
    containerd_state: str = Field(
        default="/run/containerd",
        pattern=r"^/",
        description="containerd's state directory on the nodes (commit Jobs read task bundles).",
    )
    builder_image: str = Field(
        default="docker.io/moby/buildkit:latest",
        description="Image of build Jobs: buildkitd, buildctl and buildctl-daemonless.sh.",
    )
    sbom_generator_image: str = Field(
        default="docker.io/docker/buildkit-syft-scanner:stable-1",
        pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$",
        description=(
            "BuildKit's SBOM generator image (its scanner protocol, e.g. "
            "docker/buildkit-syft-scanner): every build carries an SPDX SBOM made by it; "
            "empty: provenance only."
        ),
    )
    sbom_scanner_image: str = Field(
        default="",
        pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$",
        description=(
            "An image whose entrypoint is syft (e.g. docker.io/anchore/syft): every image "
            "without an SBOM of its own (rebased, committed, Buildah-built) is scanned by a Job "
            "running it and gets an SPDX SBOM; empty: no scans."
        ),
    )
    max_concurrent_scans: int = Field(
        default=2, ge=1, description="Global limit on SBOM scan Jobs running at once."
    )
    scan_deadline_seconds: int = Field(
        default=600, ge=30, description="activeDeadlineSeconds of an SBOM scan Job."
    )
    default_build_engine: BuildEngine = Field(
        default="buildkit",
        description="The engine of an Image whose spec.build.engine is unset: buildkit or buildah.",
    )
    buildah_image: str = Field(
        default="quay.io/buildah/stable:latest",
        min_length=1,
        description="Image of Buildah build Jobs: buildah, a POSIX sh, runc or crun.",
    )
    buildah_storage_driver: Literal["overlay", "vfs"] = Field(
        default="overlay",
        description=(
            "Buildah's storage driver in build Jobs: overlay (kernel overlayfs over an emptyDir, "
            "privileged) or vfs (slower, full copies; where overlay cannot mount)."
        ),
    )
    buildah_enabled: bool = Field(
        default=True,
        description=(
            "Whether Images may be built with Buildah ($LAMINA_BUILDAH_ENABLED). On by default: "
            "Buildah runs each RUN step in a runc container of its own (OCI isolation), as "
            "BuildKit does; false refuses engine: buildah with BuildNotSupported."
        ),
    )
    build_deadline_seconds: int = Field(default=1800, ge=60)
    max_concurrent_builds: int = Field(
        default=2, ge=1, description="Global limit on build Jobs running at once."
    )
    max_builds_per_namespace: int | None = Field(
        default=None,
        ge=1,
        description=(
            "At most this many build Jobs of one namespace at once (unset: only the global "
            "limit); slots always go first to the namespace with the fewest builds running."
        ),
    )
    build_resources: JobResources = Field(
        default_factory=JobResources,
        description="Requests and limits of the build container ($LAMINA_BUILD_RESOURCES, JSON).",
    )
    build_state_size_limit: str | None = Field(
        default=None,
        description="Size limit of BuildKit's state volume ($LAMINA_BUILD_STATE_SIZE_LIMIT).",
    )
    commit_resources: JobResources = Field(
        default_factory=JobResources,
        description="Requests and limits of the committer ($LAMINA_COMMIT_RESOURCES, JSON).",
    )
    build_cache_tag: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description=(
            "Registry build cache: each build imports and exports its cache in the Image's "
            "cache repository (BuildKit's mode=max cache manifest as this tag; Buildah's step "
            "images by cache key); unset builds without a cache."
        ),
    )
    build_cache_repository: str = Field(
        default=DEFAULT_CACHE_REPOSITORY,
        pattern=CACHE_REPOSITORY_PATTERN,
        max_length=128,
        description=(
            "The cache repository of an Image: {repository} (its output repository) and a "
            "suffix ($LAMINA_BUILD_CACHE_REPOSITORY, e.g. {repository}-buildcache or "
            "{repository}/buildcache); an Image pushing to such a repository is refused."
        ),
    )
    build_poll_seconds: float = Field(
        default=30.0, gt=0, description="How often the build loop looks for due parent refs."
    )
    registry_action_seconds: float = Field(
        default=300.0,
        ge=1,
        le=3600,
        description=(
            "Deadline of one registry-bound build action (collecting a finished build, "
            "rebasing, signing): past it, that Image is RegistryTimeout and retried later; "
            "other Images never wait for it."
        ),
    )
    signing_secret: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description=(
            "A Secret in the operator's namespace with the default cosign key "
            "(cosign.key, cosign.password): it signs every pushed image whose object names "
            "no key of its own (spec.output.sign)."
        ),
    )
    registry_config: str | None = Field(
        default=None,
        description=(
            "Text of the registry settings file ($LAMINA_REGISTRY_CONFIG: mirrors, plain-HTTP "
            "registries), passed on to commit Jobs."
        ),
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        if namespaces := source.get("LAMINA_NAMESPACES", "").strip():
            values["namespaces"] = [n.strip() for n in namespaces.split(",") if n.strip()]
        if port := source.get("LAMINA_METRICS_PORT"):
            values["metrics_port"] = port
        if port := source.get("LAMINA_HEALTH_PORT"):
            values["health_port"] = port
        if seconds := source.get("LAMINA_RESYNC_SECONDS"):
            values["resync_seconds"] = seconds
        if namespace := source.get("LAMINA_NAMESPACE") or _service_account_namespace():
            values["namespace"] = namespace
        if image := source.get("LAMINA_COMMITTER_IMAGE"):
            values["committer_image"] = image
        if seconds := source.get("LAMINA_COMMIT_DEADLINE_SECONDS"):
            values["commit_deadline_seconds"] = seconds
        for variable, key in (
            ("LAMINA_BUILDER_IMAGE", "builder_image"),
            ("LAMINA_DEFAULT_BUILD_ENGINE", "default_build_engine"),
            ("LAMINA_BUILDAH_IMAGE", "buildah_image"),
            ("LAMINA_BUILDAH_STORAGE_DRIVER", "buildah_storage_driver"),
            ("LAMINA_BUILD_DEADLINE_SECONDS", "build_deadline_seconds"),
            ("LAMINA_MAX_CONCURRENT_BUILDS", "max_concurrent_builds"),
            ("LAMINA_MAX_BUILDS_PER_NAMESPACE", "max_builds_per_namespace"),
            ("LAMINA_MAX_CONCURRENT_COMMITS", "max_concurrent_commits"),
            ("LAMINA_MAX_COMMITS_PER_NAMESPACE", "max_commits_per_namespace"),
            ("LAMINA_BUILD_POLL_SECONDS", "build_poll_seconds"),
            ("LAMINA_REGISTRY_ACTION_SECONDS", "registry_action_seconds"),
            ("LAMINA_BUILD_CACHE_TAG", "build_cache_tag"),
            ("LAMINA_BUILD_CACHE_REPOSITORY", "build_cache_repository"),
            ("LAMINA_CONTAINERD_ROOT", "containerd_root"),
            ("LAMINA_CONTAINERD_STATE", "containerd_state"),
            ("LAMINA_SIGNING_SECRET", "signing_secret"),
            ("LAMINA_SBOM_SCANNER_IMAGE", "sbom_scanner_image"),
            ("LAMINA_MAX_CONCURRENT_SCANS", "max_concurrent_scans"),
            ("LAMINA_SCAN_DEADLINE_SECONDS", "scan_deadline_seconds"),
        ):
            if value := source.get(variable):
                values[key] = value
        for variable, key in (
            ("LAMINA_BUILD_RESOURCES", "build_resources"),
            ("LAMINA_COMMIT_RESOURCES", "commit_resources"),
        ):
            if value := source.get(variable):
                values[key] = parse_job_resources(value, variable)
        if limit := source.get("LAMINA_BUILD_STATE_SIZE_LIMIT"):
            values["build_state_size_limit"] = check_size_limit(
                limit, "LAMINA_BUILD_STATE_SIZE_LIMIT"
            )
        if "LAMINA_SBOM_GENERATOR_IMAGE" in source:  # set but empty: no SBOM
            values["sbom_generator_image"] = source["LAMINA_SBOM_GENERATOR_IMAGE"].strip()
        if enabled := source.get("LAMINA_BUILDAH_ENABLED"):
            values["buildah_enabled"] = enabled.strip().lower() in ("1", "true", "yes")
        if path := source.get("LAMINA_REGISTRY_CONFIG"):
            values["registry_config"] = Path(path).read_text()
        config = cls.model_validate(values)
        if config.default_build_engine == "buildah" and not config.buildah_enabled:
            raise ValueError(
                "LAMINA_DEFAULT_BUILD_ENGINE=buildah needs LAMINA_BUILDAH_ENABLED=true "
                "(it is false: the administrator turned Buildah off)"
            )
        return config


def _service_account_namespace() -> str | None:
    """In a pod, the namespace it runs in."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else None
