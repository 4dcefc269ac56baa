"""Building blocks shared by the three resources: the model base, conditions, syntax patterns.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python; the
alias generator keeps the two in step so no field is spelled twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

GROUP = "lamina.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Patterns follow the distribution reference grammar (github.com/distribution/reference),
# written without look-arounds because the API server validates them with RE2.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
)
REPOSITORY_PATTERN = rf"^{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*$"
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
REFERENCE_PATTERN = (
    rf"^{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
LABEL_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Images and ContainerCommits are named at most this long (a ContainerCommit names the Image
# that records it): their names are copied into other objects' status (lineage, a Layer's
# usedBy), and Job names and label values derived from them are hashed to fit in 63.
OBJECT_NAME_MAX_LENGTH = 128


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, JsonValue]:
    """One ``x-kubernetes-validations`` rule, as the API server expects it."""
    entry: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def cel_string(text: str) -> str:
    """``text`` as a CEL string literal (for a regex in ``matches()``)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def name_length_rule(what: str) -> dict[str, JsonValue]:
    """The root rule bounding ``metadata.name`` to :data:`OBJECT_NAME_MAX_LENGTH`."""
    return cel(
        f"size(self.metadata.name) <= {OBJECT_NAME_MAX_LENGTH}",
        f"metadata.name of {what} must be at most {OBJECT_NAME_MAX_LENGTH} characters",
    )


def distinct(values: list[str]) -> list[str]:
    """A list validator: each value at most once (the CRD says ``x-kubernetes-list-type: set``)."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


class Model(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields ignored when reading.

    Unknown fields are ignored rather than refused so that an older operator can still read
    objects written by a newer CRD version; the API server's schema is what refuses bad input.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: aliases, no unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """A status condition, following the Kubernetes API conventions and kstatus."""

    type: str = Field(description="Type of the condition, e.g. Ready, Reconciling, Stalled.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase word saying why the condition is as it is.")
    message: str = Field(default="", description="A sentence for humans.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed from."
    )


def conditions_field() -> Any:
    """``status.conditions``: a list map keyed by ``type``, so server-side apply merges by type."""
    return Field(
        default=None,
        description="Ready, Reconciling and Stalled (kstatus) plus domain conditions.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
