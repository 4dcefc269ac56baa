"""Durations in specs (``10m``, ``1h30m``, ``500ms``): one syntax, bounded in schema and code.

The syntax is a subset of Go's ``time.ParseDuration`` (what CEL's ``duration()`` parses), with
at most four components of at most six digits, so no value can overflow anything downstream
(Go's int64 nanoseconds, a Job's ``activeDeadlineSeconds``).  Each field also has a range,
checked twice from the same numbers: by a CEL rule in the CRD and by a pydantic validator here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import AfterValidator, Field

from lamina.api.meta import cel, cel_string

DURATION_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h)){1,4}$"
DURATION_MAX_LENGTH = 48

_COMPONENT = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,3})?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class InvalidDuration(ValueError):
    """Not a duration of the form the CRDs admit."""


def parse_duration(text: str) -> timedelta:
    """``10m``, ``1h30m``, ``45s``, ``500ms``, ``1.5h`` -> a timedelta."""
    if len(text) > DURATION_MAX_LENGTH or not re.fullmatch(DURATION_PATTERN, text):
        raise InvalidDuration(
            f"{text[:DURATION_MAX_LENGTH]!r} is not a duration such as 30s, 10m or 1h30m"
        )
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _COMPONENT.findall(text))
    return timedelta(seconds=seconds)


def duration_seconds(text: str) -> float:
    """The duration in seconds (see :func:`parse_duration`)."""
    return parse_duration(text).total_seconds()


def duration_range(minimum: str, maximum: str) -> Any:
    """The schema of a duration field admitting ``minimum`` to ``maximum`` (pattern and CEL).

    Use with :func:`duration_check`: ``Annotated[str, duration_range(a, b), duration_check(a, b)]``.
    """
    return Field(
        pattern=DURATION_PATTERN,
        max_length=DURATION_MAX_LENGTH,
        json_schema_extra={
            "x-kubernetes-validations": [
                # Only a well-formed duration is compared (the pattern refuses the others).
                cel(
                    f"!self.matches({cel_string(DURATION_PATTERN)}) || "
                    f"(duration(self) >= duration('{minimum}') && "
                    f"duration(self) <= duration('{maximum}'))",
                    f"must be between {minimum} and {maximum}",
                )
            ]
        },
    )


def duration_check(minimum: str, maximum: str) -> AfterValidator:
    """The pydantic half of :func:`duration_range`: the same bounds, checked in Python."""
    low, high = parse_duration(minimum), parse_duration(maximum)

    def check(value: str) -> str:
        if not low <= parse_duration(value) <= high:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return AfterValidator(check)
