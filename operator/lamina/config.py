"""Operator configuration: one place, read from the environment (the Helm chart sets it).

Every setting has a ``LAMINA_`` environment variable and a command-line flag of
``lamina operator``; the flag wins.  The chart's ``values.yaml`` documents the same names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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
        return cls.model_validate(values)
