"""Resource requests and limits of Lamina's Job containers (builds, commits), from settings.

Without them a tenant's build can take a node's memory and disk: BuildKit's state and a
commit's layer are written to the pod's own storage.  The administrator sets them once (the
chart's ``buildResources`` / ``commitResources``, as JSON in ``LAMINA_BUILD_RESOURCES`` /
``LAMINA_COMMIT_RESOURCES``); a ``LimitRange`` in the operator namespace still applies on top.
Checked here so a typo stops the operator at start with its name, instead of every Job being
refused by the API server later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
# A Kubernetes quantity as people write them: 250m, 1.5, 512Mi, 20Gi, 1e3.
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei|e[0-9]+)?$")


@dataclass(frozen=True)
class JobResources:
    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()

    def wire(self) -> dict[str, dict[str, str]]:
        """The container's ``resources`` (empty when nothing is set)."""
        found: dict[str, dict[str, str]] = {}
        if self.requests:
            found["requests"] = dict(self.requests)
        if self.limits:
            found["limits"] = dict(self.limits)
        return found


def parse_job_resources(text: str, setting: str) -> JobResources:
    """``{"requests": {...}, "limits": {...}}`` as JSON; ValueError naming ``setting``."""
    try:
        body: Any = json.loads(text) if text.strip() else {}
    except ValueError as error:
        raise ValueError(f"{setting}: not JSON: {error}") from None
    if not isinstance(body, dict) or set(body) - {"requests", "limits"}:
        raise ValueError(f'{setting}: must be an object with only "requests" and "limits"')
    return JobResources(
        requests=_quantities(body.get("requests"), f"{setting}.requests"),
        limits=_quantities(body.get("limits"), f"{setting}.limits"),
    )


def _quantities(found: object, where: str) -> tuple[tuple[str, str], ...]:
    if found is None:
        return ()
    if not isinstance(found, Mapping):
        raise ValueError(f"{where}: must be an object of resource quantities")
    pairs: list[tuple[str, str]] = []
    for name, value in found.items():
        if name not in RESOURCE_NAMES:
            raise ValueError(f"{where}: unknown resource {name!r} (one of {RESOURCE_NAMES})")
        quantity = str(value)
        if isinstance(value, bool) or not QUANTITY.fullmatch(quantity):
            raise ValueError(f"{where}.{name}: {quantity!r} is not a quantity (e.g. 250m, 512Mi)")
        pairs.append((str(name), quantity))
    return tuple(sorted(pairs))


def check_size_limit(text: str, setting: str) -> str:
    """A volume size limit (``20Gi``); ValueError naming ``setting``."""
    if not QUANTITY.fullmatch(text):
        raise ValueError(f"{setting}: {text!r} is not a quantity (e.g. 20Gi)")
    return text
