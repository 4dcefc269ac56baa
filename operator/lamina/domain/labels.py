"""Label values and object names derived from user-chosen names, always valid, always the same.

A label value is at most 63 characters of ``[A-Za-z0-9._-]``, beginning and ending with an
alphanumeric; an Image may be named up to 128 characters, a namespace up to 63.  A value
that does not fit is cut and suffixed with a hash of the whole, so two long names never share
a value and the value of one name never changes (a restarted operator finds its Jobs by the
same labels).  The full name goes in an annotation beside it, for people and for lookups.
"""

from __future__ import annotations

import hashlib
import re

LABEL_VALUE_MAX = 63
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_HASH_LENGTH = 10


def label_value(text: str) -> str:
    """``text`` if it is a valid label value, else a valid, unique, stable stand-in for it."""
    if len(text) <= LABEL_VALUE_MAX and _LABEL_VALUE.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]
    keep = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[: LABEL_VALUE_MAX - _HASH_LENGTH - 1]
    keep = keep.strip("-_.")
    return f"{keep}-{digest}" if keep else digest
