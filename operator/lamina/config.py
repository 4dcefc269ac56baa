"""Operator configuration: one place, read from the environment (the Helm chart sets it).

Every setting has a ``LAMINA_`` environment variable and a command-line flag of
``lamina operator``; the flag wins.  The chart's ``values.yaml`` documents the same names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field


class OperatorConfig(BaseModel):
    """Settings of one operator process."""

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
    build_deadline_seconds: int = Field(default=1800, ge=60)
    max_concurrent_builds: int = Field(
        default=2, ge=1, description="Global limit on build Jobs running at once."
    )
    build_cache_tag: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description=(
            "Registry build cache: each build imports and exports (mode=max) BuildKit's cache "
            "as this tag of the Image's own output repository; unset builds without a cache."
        ),
    )
    build_poll_seconds: float = Field(
        default=30.0, gt=0, description="How often the build loop looks for due parent refs."
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
            ("LAMINA_BUILD_DEADLINE_SECONDS", "build_deadline_seconds"),
            ("LAMINA_MAX_CONCURRENT_BUILDS", "max_concurrent_builds"),
            ("LAMINA_BUILD_POLL_SECONDS", "build_poll_seconds"),
            ("LAMINA_BUILD_CACHE_TAG", "build_cache_tag"),
            ("LAMINA_CONTAINERD_ROOT", "containerd_root"),
            ("LAMINA_CONTAINERD_STATE", "containerd_state"),
        ):
            if value := source.get(variable):
                values[key] = value
        if path := source.get("LAMINA_REGISTRY_CONFIG"):
            values["registry_config"] = Path(path).read_text()
        return cls.model_validate(values)


def _service_account_namespace() -> str | None:
    """In a pod, the namespace it runs in."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else None
