"""Durations as the CRDs spell them (``10m``, ``1h30m``, ``45s``, ``500ms``)."""

from __future__ import annotations

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """``10m``, ``1h30m``, ``45s``, ``500ms`` -> seconds (the CRD pattern admits only these).

    Raises ValueError for anything else; a value too large for a timedelta raises
    OverflowError where it is used, and the caller turns that into the object's condition.
    """
    total, number, index = 0.0, "", 0
    while index < len(text):
        if text[index].isdigit() or text[index] == ".":
            number += text[index]
            index += 1
            continue
        unit = "ms" if text.startswith("ms", index) else text[index]
        if unit not in _UNITS:
            raise ValueError(f"{text!r} is not a duration (e.g. 10m, 1h30m, 45s, 500ms)")
        total += float(number or 0) * _UNITS[unit]
        number, index = "", index + len(unit)
    return total
