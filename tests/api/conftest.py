"""The API tier shares the integration tier's real local registry (Debian's docker-registry)."""

from tests.integration.conftest import registry, tools

__all__ = ["registry", "tools"]
