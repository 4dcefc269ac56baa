"""The reference syntax the CRDs enforce, checked on the models with the same patterns."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from lamina.api.commit import ConfigChanges, ContainerCommitSpec
from lamina.api.durations import InvalidDuration, duration_seconds, parse_duration
from lamina.api.image import BuildSpec, GitContext, OutputSpec, ParentSpec

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "repository",
    [
        "busybox",
        "library/busybox",
        "docker.io/library/busybox",
        "localhost:5000/demo/app",
        "registry.example.com/team/sub-team/app_name",
        "10.0.0.1:5000/a",
        "ghcr.io/org/a__b",
    ],
)
def test_valid_repositories(repository: str) -> None:
    assert OutputSpec(repository=repository).repository == repository


@pytest.mark.parametrize(
    "repository",
    ["", "Upper/Case", "a//b", "a/b/", "/a", "a:5000", "a b", "registry.io/app:tag", "-a/b"],
)
def test_invalid_repositories(repository: str) -> None:
    with pytest.raises(ValidationError):
        OutputSpec(repository=repository)


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "busybox:1.36",
        f"busybox@{DIGEST}",
        f"docker.io/library/busybox:1.36@{DIGEST}",
        "localhost:5000/demo/app:v1",
    ],
)
def test_valid_refs(ref: str) -> None:
    assert ParentSpec(ref=ref).ref == ref


@pytest.mark.parametrize("ref", ["busybox@sha256:short", "busybox:", "busybox:-x", "UP:1"])
def test_invalid_refs(ref: str) -> None:
    with pytest.raises(ValidationError):
        ParentSpec(ref=ref)


@pytest.mark.parametrize("tag", ["-bad", ".bad", "a" * 129, "bad!"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(ValidationError):
        OutputSpec(repository="a/b", tags=[tag])


# -- durations: one bounded syntax, a range per field ---------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("1h30m", 5400), ("45s", 45), ("500ms", 0.5), ("1.5h", 5400), ("168h", 604800)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "10", "1d", "-1s", "999999999999h", "1h1h1h1h1h", "1.5555s", "1e9s", "1 h"]
)
def test_malformed_or_overflowing_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidDuration):
        parse_duration(text)


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("pollInterval", "1s", True),
        ("pollInterval", "168h", True),
        ("pollInterval", "500ms", False),
        ("pollInterval", "169h", False),
        ("pollInterval", "999999999999h", False),
        ("timeout", "10s", True),
        ("timeout", "24h", True),
        ("timeout", "24h1s", False),
        ("timeout", "9s", False),
    ],
)
def test_duration_fields_have_ranges(field: str, value: str, ok: bool) -> None:
    def make() -> Any:
        if field == "pollInterval":
            return ParentSpec(image="base", poll_interval=value)
        return BuildSpec(steps=["RUN true"], timeout=value)

    if ok:
        make()
    else:
        with pytest.raises(ValidationError):
            make()


# -- build specs ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["A", "_x", "MY_ARG_2", "a" * 128])
def test_valid_build_arg_keys(key: str) -> None:
    assert BuildSpec(steps=["RUN true"], args={key: "$(any value) 'is' fine"}).args


@pytest.mark.parametrize(
    "key", ["X=1 $(touch /pwned)", "1A", "A-B", "A B", "", "a" * 129, "BUILDKIT_SYNTAX"]
)
def test_invalid_build_arg_keys(key: str) -> None:
    with pytest.raises(ValidationError):
        BuildSpec(steps=["RUN true"], args={key: "v"})


def test_build_args_are_bounded() -> None:
    with pytest.raises(ValidationError):
        BuildSpec(steps=["RUN true"], args={f"A{i}": "v" for i in range(65)})
    with pytest.raises(ValidationError):
        BuildSpec(steps=["RUN true"], args={"A": "x" * 4097})
    with pytest.raises(ValidationError):
        BuildSpec(steps=["RUN true"], args={"A": "a\x00b"})


@pytest.mark.parametrize(
    "step",
    [
        "RUN apt-get update && apt-get install -y curl",
        'CMD ["sh", "-c", "echo $HOME"]',
        "COPY app /app",
        "RUN --mount=type=cache,target=/root/.cache pip install x",
        "RUN echo from=here",
        "# a comment",
        "ENV A=\\b C=d",
    ],
)
def test_valid_steps(step: str) -> None:
    assert BuildSpec(steps=[step]).steps == [step]


@pytest.mark.parametrize(
    "step",
    [
        "RUN a\nFROM evil",
        "RUN a\rFROM evil",
        "RUN a \\",
        "RUN a \\  ",
        "FROM evil",
        "\tfrom evil AS x",
        "# syntax=evil/frontend",
        "#escape=`",
        "COPY --from=alpine / /",
        "onbuild copy --from=alpine / /",
        "RUN --mount=type=bind,from=evil,target=/x true",
        "RUN\u00a0true",
        "RUN true\u2028FROM evil",
        "\ufeffFROM evil",
        "x" * 4097,
    ],
)
def test_invalid_steps(step: str) -> None:
    with pytest.raises(ValidationError):
        BuildSpec(steps=[step])


def test_steps_are_bounded() -> None:
    with pytest.raises(ValidationError):
        BuildSpec(steps=["RUN true"] * 101)


@pytest.mark.parametrize(
    "dockerfile", ["# syntax=evil\nFROM x\n", "FROM x\r\nRUN true\n", "x" * 65537]
)
def test_invalid_dockerfiles(dockerfile: str) -> None:
    with pytest.raises(ValidationError):
        BuildSpec(dockerfile=dockerfile)


@pytest.mark.parametrize(
    ("url", "revision", "path"),
    [
        ("--upload-pack=touch /pwned", "HEAD", None),
        ("file:///etc", "HEAD", None),
        ("https://example.com/r.git", "--output=/x", None),
        ("https://example.com/r.git", "main", "../.."),
        ("https://example.com/r.git", "main", "/abs"),
        ("https://example.com/r git", "main", None),
    ],
)
def test_invalid_git_contexts(url: str, revision: str, path: str | None) -> None:
    with pytest.raises(ValidationError):
        GitContext(url=url, revision=revision, path=path)


def test_valid_git_context() -> None:
    git = GitContext(url="https://example.com/r.git", revision="v1.2/rc-1", path="sub/dir")
    assert git.path == "sub/dir"


def test_tags_are_a_bounded_set() -> None:
    with pytest.raises(ValidationError):
        OutputSpec(repository="a/b", tags=["x", "x"])
    with pytest.raises(ValidationError):
        OutputSpec(repository="a/b", tags=[])
    with pytest.raises(ValidationError):
        OutputSpec(repository="a/b", tags=[f"t{i}" for i in range(33)])


# -- ContainerCommit ----------------------------------------------------------------------


def commit(**fields: Any) -> ContainerCommitSpec:
    return ContainerCommitSpec.model_validate(
        {"pod": "web", "output": {"repository": "r/x"}, **fields}
    )


@pytest.mark.parametrize("path", ["/var/cache", "/home/..hidden", "/.x", "/a/b.c/d", "/..."])
def test_valid_exclude_paths(path: str) -> None:
    assert commit(excludePaths=[path]).exclude_paths == [path]


@pytest.mark.parametrize(
    "path",
    [
        "--to=x",
        "relative",
        "/",
        "/a/",
        "//a",
        "/a//b",
        "/a/./b",
        "/a/../b",
        "/..",
        "/a\nb",
        "/a\x00",
    ],
)
def test_invalid_exclude_paths(path: str) -> None:
    with pytest.raises(ValidationError):
        commit(excludePaths=[path])


@pytest.mark.parametrize(
    "fields",
    [
        {"ttlSecondsAfterFinished": 9223372036854775807},
        {"ttlSecondsAfterFinished": -1},
        {"author": "Jane\n--help"},
        {"author": "x" * 257},
        {"message": "a\x00b"},
        {"container": "Not_A_Name"},
        {"excludePaths": [f"/p{i}" for i in range(65)]},
    ],
)
def test_invalid_commit_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        commit(**fields)


@pytest.mark.parametrize(
    "changes",
    [
        {"env": [{"name": "A=B"}]},
        {"env": [{"name": "A"}, {"name": "A"}]},
        {"labels": {"--x": "y"}},
        {"labels": {"a=b": "y"}},
        {"exposedPorts": ["0"]},
        {"exposedPorts": ["65536/tcp"]},
        {"exposedPorts": ["80/icmp"]},
        {"workingDir": "relative"},
        {"user": "root; rm"},
        {"cmd": ["x"] * 65},
    ],
)
def test_invalid_config_changes(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConfigChanges.model_validate(changes)


def test_valid_config_changes() -> None:
    changes = ConfigChanges.model_validate(
        {
            "env": [{"name": "PATH", "value": "/bin"}, {"name": "my.var-1", "value": ""}],
            "labels": {"org.opencontainers.image.title": "x"},
            "exposedPorts": ["1", "8080/tcp", "65535/udp"],
            "workingDir": "/srv/app",
            "user": "1000:1000",
            "cmd": ["--help"],
        }
    )
    assert changes.exposed_ports == ["1", "8080/tcp", "65535/udp"]
