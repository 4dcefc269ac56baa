"""The Dockerfile a build runs, and what a tenant's Dockerfile may say so lineage stays true.

Lineage, ``own`` layers and Rebase all assume one thing of a built image: its first layers are
its parent's, pinned by digest, and nothing else came from another image.  So:

- ``steps`` are appended after a generated ``FROM <parent>@<digest>``; each must be one
  instruction that adds no stage and takes files from no other image
  (:func:`lamina.api.text.step_problem`, the same rules as the CRD's).
- A full ``dockerfile`` may have several stages.  The first stage's base is replaced by the
  parent pinned by digest; every later stage must be based on an earlier stage (``FROM
  <stage name>``), and ``COPY --from`` / ``RUN --mount=...,from=`` may name only earlier stages.
  Every stage then descends from the parent, the last one (the pushed image) included, so the
  parent's layers are the image's first layers; files copied from a builder stage were built
  on the same parent.  A stage based on any other image, or a variable in a ``FROM``, would
  bring in content lineage does not know (and a moved tag would never cascade): refused.

The analysis reads the Dockerfile the way BuildKit's parser does where it matters (lines split
on ``\\n``, a trailing ``\\`` joins the next line, comment and blank lines inside a continuation
are skipped) and refuses whatever could make the two readings differ: parser directives
(``# escape=`` changes the continuation character; ``# syntax=`` picks the frontend image),
heredocs (their bodies are not instructions), a ``FROM`` line that continues another line, and
characters Go treats as white space besides space and tab (the schema refuses those too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lamina.api.text import (
    DOCKERFILE_MAX_LENGTH,
    DOCKERFILE_PATTERN,
    pattern_found,
    pattern_matches,
    source_problem,
    step_problem,
)

_CONTINUATION = re.compile(r"\\[ \t]*$")
_DIRECTIVE = re.compile(r"^[ \t]*#[ \t]*(syntax|escape|check)[ \t]*=", re.IGNORECASE)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9._-]*$")
_HEREDOC_INSTRUCTIONS = {"RUN", "COPY", "ADD"}


class DockerfileError(ValueError):
    """This build cannot be turned into a Dockerfile that keeps lineage true.

    ``reason`` is the condition reason the Image gets; the message says what to change.
    """

    reason = "DockerfileInvalid"


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based, of the instruction's first physical line
    keyword: str  # upper case
    text: str  # the logical line, continuations joined


def instructions(text: str) -> list[Instruction]:
    """The logical instructions of a Dockerfile, as BuildKit's parser groups its lines."""
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.lstrip(" \t")
        if pending:
            if not stripped or stripped.startswith("#"):
                continue  # BuildKit drops blank and comment lines inside a continuation
            if re.match(r"(?i)from([ \t]|$)", stripped):
                raise DockerfileError(
                    f"line {number}: a FROM may not continue the previous line (which ends "
                    "with a backslash)"
                )
        elif not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if _CONTINUATION.search(line):
            pending.append(_CONTINUATION.sub("", line))
            continue
        pending.append(line)
        logical = " ".join(part.strip(" \t") for part in pending)
        pending = []
        result.append(Instruction(start, logical.split(None, 1)[0].upper(), logical))
    if pending:
        raise DockerfileError("the Dockerfile ends with a backslash")
    return result


@dataclass(frozen=True)
class Stage:
    index: int
    base: str  # the image or stage named by FROM, as written
    name: str | None  # lower case, as BuildKit compares them


def _from_parts(instruction: Instruction) -> tuple[list[str], str, str | None]:
    """(flags, base, stage name) of a FROM instruction."""
    words = instruction.text.split()[1:]
    flags = [w for w in words if w.startswith("--")]
    rest = [w for w in words if not w.startswith("--")]
    if len(rest) == 1:
        return flags, rest[0], None
    if len(rest) == 3 and rest[1].upper() == "AS":
        return flags, rest[0], rest[2].lower()
    raise DockerfileError(
        f"line {instruction.line}: FROM takes an image and an optional AS name: "
        f"{instruction.text[:120]!r}"
    )


def check_dockerfile(text: str) -> list[Stage]:
    """The stages of a tenant's Dockerfile, or why it would make lineage lie."""
    if len(text) > DOCKERFILE_MAX_LENGTH:
        raise DockerfileError(f"the Dockerfile is longer than {DOCKERFILE_MAX_LENGTH} characters")
    if not pattern_matches(DOCKERFILE_PATTERN, text):
        raise DockerfileError(
            "the Dockerfile may not contain control characters (other than tab and newline) "
            "or Unicode space characters"
        )
    for number, line in enumerate(text.split("\n"), start=1):
        if _DIRECTIVE.match(line):
            raise DockerfileError(
                f"line {number}: parser directives (# syntax=, # escape=, # check=) are not "
                "allowed: the frontend and the escape character are Lamina's"
            )
    stages: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "ONBUILD":
            # A trigger runs in a child's build, where this file's stages mean nothing.
            inner = instruction.text.split(None, 1)[1] if " " in instruction.text else ""
            problem = _instruction_problem(inner, [], 0)
        else:
            problem = _instruction_problem(instruction.text, [s.name for s in stages], len(stages))
        if problem is not None:
            raise DockerfileError(f"line {instruction.line}: {problem}")
        if instruction.keyword != "FROM":
            if not stages and instruction.keyword != "ARG":
                raise DockerfileError(
                    f"line {instruction.line}: the Dockerfile must start with FROM (only ARG "
                    "may come before it)"
                )
            continue
        _, base, name = _from_parts(instruction)
        if name is not None and not _STAGE_NAME.match(name):
            raise DockerfileError(f"line {instruction.line}: {name!r} is not a stage name")
        if name is not None and name in {s.name for s in stages}:
            raise DockerfileError(f"line {instruction.line}: stage {name!r} is named twice")
        if stages:
            earlier = {s.name for s in stages if s.name is not None}
            if base.lower() not in earlier:
                raise DockerfileError(
                    f"line {instruction.line}: FROM {base} is not an earlier stage; every stage "
                    "after the first must be based on an earlier one (FROM <stage name>), so "
                    "the image descends from its parent and lineage stays true"
                )
        stages.append(Stage(len(stages), base, name))
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM line for its base stage")
    return stages


def _instruction_problem(text: str, earlier: list[str | None], current: int) -> str | None:
    keyword = text.split(None, 1)[0].upper() if text.strip() else ""
    if keyword in _HEREDOC_INSTRUCTIONS and "<<" in text:
        return (
            "heredocs (<<) are not supported in a Dockerfile given to Lamina: write the "
            "file into the context, or use steps"
        )
    if source_problem(text) is None:
        return None
    names = {name for name in earlier if name is not None}
    for source in _sources(text):
        if source.lower() in names or (source.isdigit() and int(source) < current):
            continue
        return (
            f"files from {source!r}: COPY --from and RUN --mount from= may name only an "
            "earlier stage, never another image"
        )
    return None


_FROM_FLAG = re.compile(r"--from=(\"[^\"]*\"|'[^']*'|[^\s]*)", re.IGNORECASE)
_FROM_OPTION = re.compile(
    # "=" too: the first option of "--mount=from=alpine,..." follows the flag's own "=".
    r"(?:^|[\s,\"'=])from[ \t]*=[ \t]*(\"[^\"]*\"|'[^']*'|[^\s,\"']*)",
    re.IGNORECASE,
)


def _sources(text: str) -> list[str]:
    """Every image or stage an instruction may take files from, never fewer than BuildKit sees.

    For a RUN with ``--mount`` every ``from=`` anywhere on the line counts (a quoted mount
    option may contain spaces, so words are not trusted); a source that cannot be read
    (empty, a variable) is returned as ``""``, which names no stage.
    """
    found = [m.strip("\"'") for m in _FROM_FLAG.findall(text)]
    if pattern_found(r"(?i:--mount)", text):
        found += [m.strip("\"'") for m in _FROM_OPTION.findall(text)]
    if not found or any(not source or "$" in source for source in found):
        return [""]
    return found


def dockerfile_from_steps(parent: str, steps: list[str]) -> str:
    """``FROM <parent>`` and one step per line, each checked like the CRD checks it."""
    for index, step in enumerate(steps):
        problem = step_problem(step)
        if problem is not None:
            raise DockerfileError(f"spec.build.steps[{index}]: {problem}")
    return "\n".join([f"FROM {parent}", *steps]) + "\n"


_FIRST_FROM = re.compile(r"^([ \t]*FROM[ \t]+)((?:--\S+[ \t]+)*)(\S+)(.*)$", re.IGNORECASE)


def pin_dockerfile(text: str, parent: str) -> str:
    """The tenant's Dockerfile, checked, with its first stage based on the pinned parent."""
    check_dockerfile(text)
    lines = text.split("\n")
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            line = lines[instruction.line - 1]
            match = _FIRST_FROM.match(line)
            if match is None or _CONTINUATION.search(line):
                raise DockerfileError(
                    f"line {instruction.line}: the base stage's FROM must be on one line"
                )
            head, flags, _, rest = match.groups()
            lines[instruction.line - 1] = f"{head}{flags}{parent}{rest}"
            return "\n".join(lines).rstrip("\n") + "\n"
    raise DockerfileError("the Dockerfile has no FROM line for its base stage")


__all__ = [
    "DockerfileError",
    "Instruction",
    "Stage",
    "check_dockerfile",
    "dockerfile_from_steps",
    "instructions",
    "pin_dockerfile",
]
