"""What free text in a spec may contain: the syntax of build steps, build-arg keys, paths.

Every pattern here is written for RE2 (the API server's regex engine) and pydantic's Rust
regex at once; the CRD and the models use the very same strings.  What a pattern cannot say
(RE2 has no look-around) is a CEL rule beside it and the same rule as a pydantic validator.
The build and commit Job generators check these again, so an object stored before a schema
upgrade is refused by the code as the schema would refuse it now.

Build steps are single Dockerfile instructions appended after a generated ``FROM
<parent>@<digest>``.  BuildKit splits a Dockerfile on ``\\n``, trims leading whitespace with
Go's ``unicode.IsSpace`` and joins a line ending in ``\\`` (plus blanks) with the next one; so
a step may contain no line break, no character Go counts as white space other than space and
tab, and may not end in a backslash.  It may not be a ``FROM`` (a new stage whose base lineage
does not know), a parser directive (``# syntax=`` runs a frontend image of the tenant's
choosing in the privileged builder; ``# escape=`` changes the continuation character), or take
files from another image (``COPY --from=``, ``RUN --mount=...,from=``): the only stage is the
parent, so any other source is an image lineage does not see.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from lamina.api.meta import cel, cel_string

# Characters BuildKit (Go) treats as line breaks or white space, besides space and tab, and
# invisible format characters: none of them may appear in a build step or a Dockerfile line.
_UNSAFE = (
    r"\x00-\x08\x0b-\x1f\x7f\x{85}\x{a0}\x{1680}\x{2000}-\x{200f}"
    r"\x{2028}-\x{202f}\x{205f}-\x{206f}\x{3000}\x{feff}"
)
STEP_PATTERN = rf"^[^\n{_UNSAFE}]*$"
DOCKERFILE_PATTERN = rf"^[^{_UNSAFE}]*$"
STEP_MAX_LENGTH = 4096
STEPS_MAX_ITEMS = 100
DOCKERFILE_MAX_LENGTH = 65536

# The rules on one instruction line, as (RE2 pattern it must NOT match, why).
_FROM_LINE = r"^[ \t]*(?i:from)([ \t]|$)"
_DIRECTIVE_LINE = r"^[ \t]*#[ \t]*(?i:syntax|escape|check)[ \t]*="
_CONTINUED_LINE = r"\\[ \t]*$"
_COPY_LINE = r"^[ \t]*((?i:onbuild)[ \t]+)?(?i:copy|add)([ \t]|$)"
_RUN_LINE = r"^[ \t]*((?i:onbuild)[ \t]+)?(?i:run)([ \t]|$)"
_FROM_FLAG = r"(?i:--from)"
_MOUNT_FROM = r"(?i:--mount)"
_FROM_OPTION = r"(?i:from)[ \t]*="

STEP_REFUSALS: list[tuple[str, str]] = [
    (_FROM_LINE, "a step may not be a FROM: the only stage is the parent"),
    (_DIRECTIVE_LINE, "a step may not be a parser directive (# syntax=, # escape=, # check=)"),
    (_CONTINUED_LINE, "a step may not end with a backslash (it would continue on the next step)"),
]

BUILD_ARG_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
BUILD_ARG_KEY_MAX_LENGTH = 128
BUILD_ARG_VALUE_PATTERN = r"^[^\x00]*$"
BUILD_ARG_VALUE_MAX_LENGTH = 4096
BUILD_ARGS_MAX_PROPERTIES = 64
# BuildKit reads build args named BUILDKIT_* as frontend settings (BUILDKIT_SYNTAX picks the
# frontend image, others change caching and context handling): they are not the tenant's.
RESERVED_BUILD_ARG_PREFIX = "BUILDKIT_"

# An absolute, normalised path: segments that are neither empty, "." nor "..", no NUL, no
# line break.  Written without look-around: a segment starts with a non-dot, or is a dot
# followed by a non-dot, or two dots followed by at least one more character.
_SEGMENT_CHAR = r"[^/\x00\n\r]"
_SEGMENT = (
    rf"(?:[^/.\x00\n\r]{_SEGMENT_CHAR}*|\.[^/.\x00\n\r]{_SEGMENT_CHAR}*"
    rf"|\.\.{_SEGMENT_CHAR}+)"
)
ABSOLUTE_PATH_PATTERN = rf"^(?:/{_SEGMENT})+$"
RELATIVE_PATH_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
PATH_MAX_LENGTH = 4096

# One line of text for humans: no control characters (tab allowed).
SINGLE_LINE_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"
# Text that may span lines, but carries no NUL or other control characters.
MULTI_LINE_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"


def step_problem(step: str) -> str | None:
    """Why ``step`` cannot be a build step, or None.  The same rules as the CRD's."""
    if not pattern_matches(STEP_PATTERN, step):
        return "a step is one line: no line break, control or Unicode space character"
    return instruction_problem(step, STEP_REFUSALS)


def instruction_problem(line: str, refusals: list[tuple[str, str]]) -> str | None:
    """Why an instruction line is refused (the refusals, then foreign sources), or None."""
    for pattern, why in refusals:
        if pattern_found(pattern, line):
            return why
    return source_problem(line)


def source_problem(line: str) -> str | None:
    """A COPY/ADD ``--from`` or a RUN ``--mount`` with ``from=`` (any image lineage misses)."""
    if pattern_found(_COPY_LINE, line) and pattern_found(_FROM_FLAG, line):
        return "COPY/ADD --from takes files from an image lineage does not know"
    if (
        pattern_found(_RUN_LINE, line)
        and pattern_found(_MOUNT_FROM, line)
        and pattern_found(_FROM_OPTION, line)
    ):
        return "RUN --mount=...,from= takes files from an image lineage does not know"
    return None


def build_arg_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a build-arg name, or None."""
    if len(key) > BUILD_ARG_KEY_MAX_LENGTH or not pattern_matches(BUILD_ARG_KEY_PATTERN, key):
        return (
            f"build-arg name {key[:80]!r} must match {BUILD_ARG_KEY_PATTERN} "
            f"(at most {BUILD_ARG_KEY_MAX_LENGTH} characters)"
        )
    if key.startswith(RESERVED_BUILD_ARG_PREFIX):
        return f"build-arg name {key!r}: names starting with BUILDKIT_ configure BuildKit itself"
    return None


# -- the same patterns in Python's re, and as CEL ------------------------------------------


def _python(pattern: str) -> str:
    """RE2's ``\\x{hhhh}`` in Python's spelling (the rest is common to both)."""
    return re.sub(r"\\x\{([0-9a-fA-F]+)\}", lambda m: f"\\u{int(m[1], 16):04x}", pattern)


def pattern_found(pattern: str, text: str) -> bool:
    """``re.search`` with a pattern written for RE2 (as the CRD states it)."""
    return re.search(_python(pattern), text) is not None


def pattern_matches(pattern: str, text: str) -> bool:
    """``re.fullmatch`` with a pattern written for RE2 (as the CRD states it)."""
    return re.fullmatch(_python(pattern), text) is not None


def _not_matching(pattern: str, message: str) -> dict[str, Any]:
    return cel(f"!self.matches({cel_string(pattern)})", message)


def _check_step(step: str) -> str:
    problem = step_problem(step)
    if problem is not None:
        raise ValueError(problem)
    return step


def _check_build_arg_key(key: str) -> str:
    problem = build_arg_key_problem(key)
    if problem is not None:
        raise ValueError(problem)
    return key


def _step_schema() -> Any:
    """One build step's schema: the pattern, the length and the CEL rules of STEP_REFUSALS."""
    return Field(
        max_length=STEP_MAX_LENGTH,
        pattern=STEP_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.matches({cel_string(STEP_PATTERN)})",
                    "a step is one instruction on one line: no line break, control or Unicode "
                    "space character",
                ),
                *(_not_matching(pattern, why) for pattern, why in STEP_REFUSALS),
                cel(
                    f"!(self.matches({cel_string(_COPY_LINE)}) && "
                    f"self.matches({cel_string(_FROM_FLAG)}))",
                    "COPY/ADD --from takes files from an image lineage does not know",
                ),
                cel(
                    f"!(self.matches({cel_string(_RUN_LINE)}) && "
                    f"self.matches({cel_string(_MOUNT_FROM)}) && "
                    f"self.matches({cel_string(_FROM_OPTION)}))",
                    "RUN --mount=...,from= takes files from an image lineage does not know",
                ),
            ]
        },
    )


BuildArgKey = Annotated[
    str,
    Field(pattern=BUILD_ARG_KEY_PATTERN, max_length=BUILD_ARG_KEY_MAX_LENGTH),
    AfterValidator(_check_build_arg_key),
]
BuildArgValue = Annotated[
    str, Field(pattern=BUILD_ARG_VALUE_PATTERN, max_length=BUILD_ARG_VALUE_MAX_LENGTH)
]
BUILD_ARGS_RULE = cel(
    f"self.all(k, !k.startsWith('{RESERVED_BUILD_ARG_PREFIX}'))",
    "build-arg names starting with BUILDKIT_ configure BuildKit itself and are not allowed",
)

DOCKERFILE_RULES = [
    _not_matching(
        "(?m)" + _DIRECTIVE_LINE,
        "the Dockerfile may not carry parser directives (# syntax=, # escape=, # check=): "
        "the frontend and the escape character are Lamina's",
    )
]


def _check_dockerfile(text: str) -> str:
    if not pattern_matches(DOCKERFILE_PATTERN, text):
        raise ValueError("the Dockerfile may not contain control or Unicode space characters")
    if re.search(_python("(?m)" + _DIRECTIVE_LINE), text):
        raise ValueError("the Dockerfile may not carry parser directives")
    return text


DockerfileText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=DOCKERFILE_MAX_LENGTH,
        pattern=DOCKERFILE_PATTERN,
        json_schema_extra={"x-kubernetes-validations": DOCKERFILE_RULES},
    ),
    AfterValidator(_check_dockerfile),
]
BuildStep = Annotated[str, _step_schema(), AfterValidator(_check_step)]


def _absolute_path_schema() -> Any:
    return Field(
        max_length=PATH_MAX_LENGTH,
        pattern=ABSOLUTE_PATH_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.matches({cel_string(ABSOLUTE_PATH_PATTERN)})",
                    "must be an absolute, normalised path: starts with /, no empty, . or .. "
                    "segments, no trailing /, no NUL or line break",
                )
            ]
        },
    )


AbsolutePath = Annotated[str, _absolute_path_schema()]
