"""The build Job carries no spec value into a shell, and refuses what would make lineage lie.

Specs are built here both through the models (what the API server would admit) and around
them (``model_copy`` skips validation: an object stored before the schema was tightened), so
the generator's own refusals are exercised, not only the schema's.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lamina.api.image import BuildContext, GitContext, ImageSpec
from lamina.config import OperatorConfig
from lamina.domain.build_cache import BuildCache
from lamina.domain.build_job import (
    ANNOTATION_IMAGE_NAME,
    BUILDER_COMMAND,
    CONFIG_MAP_LIMIT,
    CONTEXT_COMMAND,
    CONTEXT_SCRIPT,
    METADATA_FILE,
    REPORT_SCRIPT,
    BuildNotSupported,
    BuildSettings,
    DockerfileError,
    build_job,
    buildctl_args,
    buildkitd_toml,
    cache_args,
    context_config_map,
    context_digest,
    context_size_problem,
    dockerfile_for,
    job_name,
)
from lamina.domain.dockerfile import check_dockerfile
from lamina.domain.labels import label_value

P1 = "sha256:" + "1" * 64
PARENT = f"r/base@{P1}"
SETTINGS = BuildSettings(namespace="lamina-system", builder_image="bk", deadline_seconds=1800)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
HOSTILE = "x'\"; $(touch /pwned) `id` && rm -rf / #"


def spec(build: dict[str, Any], **output: Any) -> ImageSpec:
    return ImageSpec.model_validate(
        {
            "parent": {"image": "base"},
            "build": build,
            "output": {"repository": "registry.local/demo/app", **output},
        }
    )


def unchecked(base: ImageSpec, *, output: dict[str, Any] | None = None, **build: Any) -> ImageSpec:
    """``base`` with fields set past validation, as an object stored under an older schema."""
    assert base.build is not None
    updated = base.model_copy(update={"build": base.build.model_copy(update=build)})
    if output:
        updated = updated.model_copy(update={"output": base.output.model_copy(update=output)})
    return updated


def job_for(
    image: ImageSpec,
    name: str = "app",
    namespace: str = "team",
    settings: BuildSettings = SETTINGS,
) -> dict[str, Any]:
    return build_job(
        namespace=namespace,
        name=name,
        uid="0b7e4a2c-6a43-4c5e-9a54-0c9c1c0e1f00",
        inputs="abc123def456",
        spec=image,
        parent=PARENT,
        settings=settings,
        context_config_map="lamina-build-abc123def456",
        push_secret_copy="lamina-build-abc123def456-push",
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return dict(only)


# -- argv, not a script ------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        spec({"steps": ["RUN true"]}),
        spec({"steps": ["RUN true"], "args": {"V": HOSTILE, "W": "--help"}}, insecure=True),
        spec({"steps": [f"RUN echo {HOSTILE}"]}, tags=["1", "latest"]),
        spec({"dockerfile": f"FROM x\nRUN echo {HOSTILE}\n"}),
    ],
    ids=["plain", "hostile-arg-values", "hostile-step", "dockerfile"],
)
def test_the_command_is_the_same_constant_for_every_image(image: ImageSpec) -> None:
    build = container(job_for(image))
    assert build["command"] == BUILDER_COMMAND == ["/bin/sh", "-c", REPORT_SCRIPT, "lamina-build"]
    assert isinstance(build["args"], list) and all(isinstance(a, str) for a in build["args"])
    # Spec values are only ever whole argv elements, each a --flag=value buildctl parses.
    assert all(a == "build" or a.startswith("--") for a in build["args"])
    assert HOSTILE not in REPORT_SCRIPT
    assert '"$@"' in REPORT_SCRIPT and "eval" not in REPORT_SCRIPT


def test_buildctl_args_hold_each_value_in_one_element() -> None:
    image = spec(
        {"steps": ["RUN true"], "args": {"B": "two words", "A": HOSTILE}},
        tags=["1", "latest"],
        insecure=True,
    )
    assert buildctl_args(image, PARENT) == [
        "build",
        "--progress=plain",
        "--frontend=dockerfile.v0",
        "--local=context=/workspace/context",
        "--local=dockerfile=/workspace/dockerfile",
        f"--opt=build-arg:A={HOSTILE}",
        "--opt=build-arg:B=two words",
        f"--opt=build-arg:LAMINA_CONTEXT_DIGEST={context_digest({})}",
        "--opt=build-arg:SOURCE_DATE_EPOCH=0",
        "--opt=attest:provenance=mode=max,version=v1,"
        "builder-id=https://lamina.dev/builders/buildkit",
        '--output=type=image,"name=registry.local/demo/app:1,registry.local/demo/app:latest",'
        "push=true,registry.insecure=true,oci-mediatypes=true,rewrite-timestamp=true,"
        f'"annotation-manifest.org.opencontainers.image.base.digest={P1}",'
        '"annotation-manifest.org.opencontainers.image.base.name=r/base",'
        '"annotation-manifest.org.opencontainers.image.created=1970-01-01T00:00:00Z"',
        f"--metadata-file={METADATA_FILE}",
    ]


def test_the_report_script_passes_hostile_arguments_through_a_real_shell(tmp_path: Path) -> None:
    """Run the constant script with /bin/sh, a stand-in buildctl-daemonless.sh recording argv."""
    bin_dir, canary = tmp_path / "bin", tmp_path / "pwned"
    bin_dir.mkdir()
    metadata, termination = tmp_path / "metadata.json", tmp_path / "termination-log"
    fake = bin_dir / "buildctl-daemonless.sh"
    fake.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""\
            import json, sys
            open({str(tmp_path / "argv.json")!r}, "w").write(json.dumps(sys.argv[1:]))
            open({str(metadata)!r}, "w").write(json.dumps(
                {{"containerimage.digest": "{P1}", "image.name": "x"}}, indent=2))
            """
        )
    )
    fake.chmod(0o755)
    image = spec(
        {"steps": ["RUN true"], "args": {"A": f"$(touch {canary})", "B": f"`touch {canary}`"}},
    )
    args = buildctl_args(image, PARENT)
    script = REPORT_SCRIPT.replace(METADATA_FILE, str(metadata)).replace(
        "/dev/termination-log", str(termination)
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["/bin/sh", "-c", script, "lamina-build", *args], env=env, check=True)
    assert json.loads((tmp_path / "argv.json").read_text()) == args
    assert termination.read_text().strip() == P1
    assert not canary.exists()


# -- what the generator refuses, whatever the schema let through ---------------------------

SAFE = spec({"steps": ["RUN true"]})


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (unchecked(SAFE, args={"X=1 $(touch /pwned)": "v"}), "must match ^[A-Za-z_]"),
        (unchecked(SAFE, args={"BUILDKIT_SYNTAX": "evil/frontend"}), "BUILDKIT_"),
        (unchecked(SAFE, args={"A": "a\x00b"}), "NUL"),
        (unchecked(SAFE, steps=["RUN a\nFROM evil"]), "steps[0]: a step is one line"),
        (unchecked(SAFE, steps=["RUN a\rFROM evil"]), "steps[0]: a step is one line"),
        (unchecked(SAFE, steps=["RUN a \\", "FROM evil"]), "steps[0]: a step may not end with"),
        (unchecked(SAFE, steps=["RUN a", "  from evil"]), "steps[1]: a step may not be a FROM"),
        (unchecked(SAFE, steps=["# syntax=evil/frontend"]), "parser directive"),
        (unchecked(SAFE, steps=["# escape=`"]), "parser directive"),
        (unchecked(SAFE, steps=["COPY --from=alpine:3 / /"]), "COPY/ADD --from"),
        (unchecked(SAFE, steps=["RUN --mount=type=bind,from=evil,target=/x true"]), "--mount"),
        (unchecked(SAFE, steps=["RUN\u00a0a"]), "a step is one line"),
        (unchecked(SAFE, dockerfile="FROM x\nFROM evil\n", steps=None), "not an earlier stage"),
        (
            unchecked(SAFE, output={"repository": 'r/a",push=false,"name=evil/x'}),
            "spec.output.repository",
        ),
        (unchecked(SAFE, output={"tags": ["1,evil/x:2"]}), "spec.output.tags"),
        (unchecked(SAFE, output={"tags": []}), "at least one tag"),
        (unchecked(SAFE, timeout="999999999999h"), "spec.build.timeout"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_the_generator_refuses_what_the_schema_would(image: ImageSpec, message: str) -> None:
    with pytest.raises(DockerfileError, match=re.escape(message)) as refused:
        dockerfile_for(image, PARENT)
    assert refused.value.reason == "DockerfileInvalid"
    with pytest.raises(DockerfileError):
        job_for(image)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            # Stored before the CRD narrowed git URLs to what the operator resolves.
            unchecked(
                SAFE,
                context=BuildContext(
                    git=GitContext.model_construct(
                        url="ssh://git@example.com/r.git",
                        revision="main",
                        path=None,
                        secret=None,
                        poll_interval="10m",
                    )
                ),
            ),
            "ssh:// git URLs are not built",
        ),
    ],
)
def test_what_is_not_wired_is_refused_not_ignored(image: ImageSpec, message: str) -> None:
    with pytest.raises(BuildNotSupported, match=re.escape(message)) as refused:
        dockerfile_for(image, PARENT)
    assert refused.value.reason == "BuildNotSupported"


# -- Dockerfiles: several stages, all descending from the parent ---------------------------


def test_dockerfile_from_steps_pins_the_parent() -> None:
    text = dockerfile_for(spec({"steps": ["RUN echo hi > /hi", "CMD cat /hi"]}), PARENT)
    assert text == f"FROM {PARENT}\nRUN echo hi > /hi\nCMD cat /hi\n"


def test_multi_stage_dockerfile_gets_its_base_stage_pinned() -> None:
    dockerfile = textwrap.dedent(
        """\
        # a note, not a directive
        ARG X=1
        FROM --platform=linux/amd64 anything:latest AS build
        RUN make && \\
            # comments inside a continuation are dropped, as BuildKit does
            make install
        FROM build AS test
        RUN --mount=type=bind,from=build,target=/src true
        FROM build
        COPY --from=test /out /out
        COPY --from=0 /a /b
        """
    )
    text = dockerfile_for(spec({"dockerfile": dockerfile}), PARENT)
    assert f"FROM --platform=linux/amd64 {PARENT} AS build\n" in text
    assert text.replace(f"{PARENT}", "anything:latest") == dockerfile  # nothing else changes
    assert [s.name for s in check_dockerfile(dockerfile)] == ["build", "test", None]


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM a\nFROM busybox\nCOPY --from=0 / /\n", "FROM busybox is not an earlier stage"),
        ("FROM a AS one\nFROM $BASE\n", "FROM $BASE is not an earlier stage"),
        ("FROM a AS one\nFROM later\nFROM a AS later\n", "FROM later is not an earlier stage"),
        ("FROM a\nCOPY --from=alpine /bin/sh /sh\n", "files from 'alpine'"),
        ("FROM a\nCOPY --from=$X / /\n", "files from ''"),
        ('FROM a AS b\nRUN --mount="type=bind,target=/a b,from=evil" true\n', "'evil'"),
        # The first option right after "--mount=", beside a mount of a real stage.
        (
            "FROM a AS builder\nFROM builder\n"
            "RUN --mount=from=alpine,target=/a --mount=type=bind,from=builder,target=/b true\n",
            "'alpine'",
        ),
        ("FROM a\nONBUILD COPY --from=a / /\n", "files from 'a'"),
        ("FROM a AS x\nRUN echo \\\nFROM x AS y\nFROM y\n", "a FROM may not continue"),
        ("ARG V=\\\nFROM evil\nFROM a\n", "a FROM may not continue"),
        ("FROM a\nRUN <<EOF\nFROM a AS y\nEOF\n", "heredocs"),
        ("# syntax=docker.io/evil/frontend\nFROM a\n", "parser directives"),
        ("# escape=`\nFROM a\n", "parser directives"),
        ("RUN true\nFROM a\n", "must start with FROM"),
        ("FROM \\\n  a\n", "must be on one line"),
        ("FROM a\nRUN true \\\n", "ends with a backslash"),
        ("FROM a AS x\nFROM x AS x\n", "named twice"),
        ("FROM a\r\nRUN true\n", "control characters"),
        ("\ufeffFROM a\n", "control characters"),
        ("# only a comment\n", "no FROM line"),
    ],
)
def test_dockerfiles_that_would_make_lineage_lie_are_refused(dockerfile: str, message: str) -> None:
    image = unchecked(SAFE, dockerfile=dockerfile, steps=None)
    with pytest.raises(DockerfileError, match=re.escape(message)):
        dockerfile_for(image, PARENT)


# -- names, labels and the deadline ------------------------------------------------------


@pytest.mark.parametrize("name", ["app", "a" * 63, "a" * 64, "b" * 100 + ".v1", "c" * 128])
def test_job_names_and_labels_are_valid_for_every_image_name(name: str) -> None:
    job = job_for(SAFE, name=name, namespace="n" * 63)
    assert job["metadata"]["name"] == job_name("abc123def456")
    assert len(job["metadata"]["name"]) <= 63
    labels = job["metadata"]["labels"]
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert job["metadata"]["annotations"][ANNOTATION_IMAGE_NAME] == name
    # Deterministic, so a restarted operator finds the same Job by the same labels.
    assert job_for(SAFE, name=name, namespace="n" * 63) == job


def test_long_names_get_distinct_stable_label_values() -> None:
    first, second = "x" * 100 + "-one", "x" * 100 + "-two"
    assert label_value(first) != label_value(second)
    assert label_value(first) == label_value(first)
    assert label_value("short.name-1") == "short.name-1"
    assert label_value("-" * 70) == label_value("-" * 70) and LABEL_VALUE.match(
        label_value("-" * 70)
    )


def test_job_names_come_only_from_an_inputs_hash() -> None:
    with pytest.raises(ValueError, match="not a short hex hash"):
        job_name("../../x")


@pytest.mark.parametrize(("timeout", "seconds"), [("5m", 300), ("30m", 1800), ("2h", 1800)])
def test_the_deadline_is_the_spec_timeout_capped_by_the_operator(
    timeout: str, seconds: int
) -> None:
    job = job_for(spec({"steps": ["RUN true"], "timeout": timeout}))
    assert job["spec"]["activeDeadlineSeconds"] == seconds


def test_job_mounts_the_context_and_the_push_secret() -> None:
    job = job_for(SAFE)
    assert job["metadata"]["namespace"] == "lamina-system"
    pod = job["spec"]["template"]["spec"]
    assert {v["name"] for v in pod["volumes"]} >= {"workspace", "dockerfile", "push-secret"}
    assert container(job)["securityContext"] == {"privileged": True}


def test_buildkitd_settings_mirror_and_allow_plain_http() -> None:
    text = buildkitd_toml({"docker.io": ("10.0.0.1:5000",)}, frozenset({"10.0.0.1:5000"}))
    assert text == (
        '[registry."10.0.0.1:5000"]\n  http = true\n  insecure = true\n'
        '[registry."docker.io"]\n  mirrors = ["10.0.0.1:5000"]\n'
    )


# -- lineage and reproducibility, as buildctl will read them -------------------------------


def output_fields(args: list[str]) -> dict[str, str]:
    """The ``--output`` CSV split the way buildctl splits it (quoted fields, key=value)."""
    (value,) = [a.removeprefix("--output=") for a in args if a.startswith("--output=")]
    (fields,) = list(csv.reader([value]))
    pairs = [field.split("=", 1) for field in fields]
    assert all(len(pair) == 2 for pair in pairs), fields
    found = dict(pairs)  # type: ignore[arg-type]
    assert len(found) == len(fields), "an exporter option appears twice"
    return found


def test_the_manifest_names_and_pins_its_base_and_its_created_time() -> None:
    fields = output_fields(buildctl_args(SAFE, PARENT))
    assert fields == {
        "type": "image",
        "name": "registry.local/demo/app:latest",
        "push": "true",
        "oci-mediatypes": "true",
        "rewrite-timestamp": "true",
        "annotation-manifest.org.opencontainers.image.base.name": "r/base",
        "annotation-manifest.org.opencontainers.image.base.digest": P1,
        "annotation-manifest.org.opencontainers.image.created": "1970-01-01T00:00:00Z",
    }
    # No source or revision: a ConfigMap or inline context has neither.
    assert not any("image.source" in key or "image.revision" in key for key in fields)


def test_an_external_parent_is_named_as_the_user_wrote_it() -> None:
    ref = "docker.io/library/debian:bookworm"
    image = ImageSpec.model_validate(
        {
            "parent": {"ref": ref},
            "build": {"steps": ["RUN true"]},
            "output": {"repository": "registry.local/demo/app"},
        }
    )
    fields = output_fields(buildctl_args(image, f"docker.io/library/debian@{P1}"))
    assert fields["annotation-manifest.org.opencontainers.image.base.name"] == ref
    assert fields["annotation-manifest.org.opencontainers.image.base.digest"] == P1


def test_every_build_has_a_source_date_epoch_and_the_same_inputs_give_the_same_job() -> None:
    args = buildctl_args(SAFE, PARENT)
    assert "--opt=build-arg:SOURCE_DATE_EPOCH=0" in args
    assert job_for(SAFE) == job_for(SAFE)
    moved = f"r/base@sha256:{'2' * 64}"
    assert buildctl_args(SAFE, moved) != args  # a new parent is a new input


def test_a_source_date_epoch_in_the_spec_is_the_build_epoch() -> None:
    image = spec({"steps": ["RUN true"], "args": {"SOURCE_DATE_EPOCH": "1700000000"}})
    args = buildctl_args(image, PARENT)
    assert [a for a in args if "SOURCE_DATE_EPOCH" in a] == [
        "--opt=build-arg:SOURCE_DATE_EPOCH=1700000000"
    ]
    created = output_fields(args)["annotation-manifest.org.opencontainers.image.created"]
    assert created == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize("value", ["", "now", "-1", "1.5", "017", " 1", "1" * 13, "253402300800"])
def test_a_malformed_source_date_epoch_is_refused_before_anything_runs(value: str) -> None:
    image = spec({"steps": ["RUN true"], "args": {"SOURCE_DATE_EPOCH": value}})
    with pytest.raises(
        DockerfileError, match=re.escape("SOURCE_DATE_EPOCH must be whole seconds")
    ) as refused:
        dockerfile_for(image, PARENT)
    assert refused.value.reason == "DockerfileInvalid"
    with pytest.raises(DockerfileError):
        job_for(image)


@pytest.mark.parametrize(
    "parent",
    [
        f'r/base",push=false,"name=evil/x@{P1}',
        f"r/base,evil@{P1}",
        "r/base:latest",
        "r/base@sha256:xyz",
        f"r/base\n@{P1}",
    ],
)
def test_a_pinned_parent_that_is_not_repository_at_digest_is_refused(parent: str) -> None:
    with pytest.raises(DockerfileError, match="the pinned parent"):
        dockerfile_for(SAFE, parent)
    with pytest.raises(DockerfileError, match="the pinned parent"):
        buildctl_args(SAFE, parent)


def test_a_stored_parent_ref_that_is_not_a_reference_is_refused() -> None:
    image = SAFE.model_copy(
        update={"parent": SAFE.parent.model_copy(update={"image": None, "ref": 'r/x",push=false'})}
    )
    with pytest.raises(DockerfileError, match=re.escape("spec.parent.ref")):
        dockerfile_for(image, PARENT)


# -- the context as plain files ------------------------------------------------------------


def atomic_writer_volume(root: Path, files: dict[str, str], written: str) -> None:
    """A ConfigMap volume as the kubelet lays it out: keys -> ..data -> a timestamped dir."""
    stamped = root / f"..{written}"
    stamped.mkdir(parents=True)
    for key, text in files.items():
        (stamped / key).write_text(text)
        (root / key).symlink_to(f"..data/{key}")
    (root / "..data").symlink_to(stamped.name)


def run_context_script(source: Path, target: Path) -> None:
    script = CONTEXT_SCRIPT.replace("/workspace/source", str(source)).replace(
        "/workspace/context", str(target)
    )
    target.mkdir()
    subprocess.run(["/bin/sh", "-c", script, "lamina-context"], check=True)


def test_the_context_is_the_keys_as_plain_files_whenever_the_volume_was_written(
    tmp_path: Path,
) -> None:
    files = {
        "app.py": "print(1)\n",
        ".dockerignore": "*.tmp\n",
        "-rf": "a key that looks like an option\n",
        "Dockerfile": "FROM x\n",
        "buildkitd.toml": "[registry]\n",
    }
    contexts = []
    for written in ("2026_12_01_11_00_00.1", "2026_12_01_12_30_00.2"):
        source, target = tmp_path / f"src-{written}", tmp_path / f"ctx-{written}"
        atomic_writer_volume(source, files, written)
        run_context_script(source, target)
        contexts.append(
            {path.name: (path.is_symlink(), path.read_text()) for path in target.iterdir()}
        )
    expected = {key: (False, text) for key, text in files.items() if key != "buildkitd.toml"}
    assert contexts == [expected, expected]


def test_an_empty_context_copies_nothing(tmp_path: Path) -> None:
    source = tmp_path / "src"
    atomic_writer_volume(source, {}, "2026_12_01_11_00_00.1")
    run_context_script(source, tmp_path / "ctx")
    assert list((tmp_path / "ctx").iterdir()) == []


def test_the_context_is_copied_by_an_unprivileged_init_container() -> None:
    pod = job_for(SAFE)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == CONTEXT_COMMAND
    assert init["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["workspace"] == {"name": "workspace", "emptyDir": {}}
    assert volumes["context-source"]["configMap"] == {"name": "lamina-build-abc123def456"}
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert mounts["context-source"]["readOnly"] is True
    assert mounts["workspace"]["mountPath"] == "/workspace/context"


def test_the_context_copy_keeps_binary_files_and_the_operators_own_files_win() -> None:
    copy = context_config_map(
        name="lamina-build-abc",
        settings=SETTINGS,
        dockerfile="FROM x\n",
        files={"app.py": "print(1)\n", "Dockerfile": "FROM evil\n"},
        binary_files={"logo.png": "iVBORw0KGgo=", "buildkitd.toml": "ZXZpbA=="},
        owner={"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"},
    )
    assert copy["data"]["Dockerfile"] == "FROM x\n"
    assert copy["data"]["app.py"] == "print(1)\n"
    assert copy["binaryData"] == {"logo.png": "iVBORw0KGgo="}


def test_the_context_digest_counts_binary_files_by_their_bytes() -> None:
    text = {"app.py": "print(1)\n"}
    plain = context_digest(text)
    with_logo = context_digest(text, {"logo.png": "iVBORw0KGgo="})
    assert with_logo != plain
    assert context_digest(text, {"logo.png": "iVBORw0KGgA="}) != with_logo
    # A text file cannot stand for a binary file of the same name and bytes.
    assert context_digest({**text, "logo.png": "\x89PNG\r\n\x1a\n"}) != with_logo


# -- the registry build cache (LAMINA_BUILD_CACHE_TAG, LAMINA_BUILD_CACHE_REPOSITORY) -------

CACHE_EXPORT = "--export-cache=type=registry,ref={ref},mode=max,oci-mediatypes=true{insecure}"
CACHE_IMPORT = "--import-cache=type=registry,ref={ref}{insecure}"


@pytest.mark.parametrize(
    ("image", "cache", "wanted"),
    [
        (SAFE, None, []),
        (
            SAFE,
            BuildCache("buildcache"),
            [
                CACHE_EXPORT.format(
                    ref="registry.local/demo/app-buildcache:buildcache", insecure=""
                ),
                CACHE_IMPORT.format(
                    ref="registry.local/demo/app-buildcache:buildcache", insecure=""
                ),
            ],
        ),
        (
            spec({"steps": ["RUN true"]}, insecure=True, tags=["1", "2"]),
            BuildCache("lamina.cache-v1", "{repository}/cache"),
            [
                CACHE_EXPORT.format(
                    ref="registry.local/demo/app/cache:lamina.cache-v1",
                    insecure=",registry.insecure=true",
                ),
                CACHE_IMPORT.format(
                    ref="registry.local/demo/app/cache:lamina.cache-v1",
                    insecure=",registry.insecure=true",
                ),
            ],
        ),
        (
            # The cache has its own repository: the image may push the cache tag's name too.
            spec({"steps": ["RUN true"]}, tags=["buildcache"]),
            BuildCache("buildcache", "{repository}.cache"),
            [
                CACHE_EXPORT.format(ref="registry.local/demo/app.cache:buildcache", insecure=""),
                CACHE_IMPORT.format(ref="registry.local/demo/app.cache:buildcache", insecure=""),
            ],
        ),
    ],
    ids=["no-cache", "default-repository", "own-template-insecure", "same-tag-as-the-image"],
)
def test_the_cache_is_a_repository_beside_the_images_own(
    image: ImageSpec, cache: BuildCache | None, wanted: list[str]
) -> None:
    settings = BuildSettings(
        namespace="lamina-system", builder_image="bk", deadline_seconds=1800, cache=cache
    )
    args = buildctl_args(image, PARENT, settings)
    assert [a for a in args if "-cache=" in a] == wanted
    # Never the image's own repository: the cache export and the image push share no repository.
    outputs = [a for a in args if a.startswith("--output=")]
    assert all(f"ref={image.output.repository}:" not in a for a in wanted), outputs
    # The cache flags sit before the metadata file and change nothing else in the argv.
    assert [a for a in args if "-cache=" not in a] == buildctl_args(image, PARENT)
    assert args[-1] == f"--metadata-file={METADATA_FILE}"
    job = build_job(
        namespace="team",
        name="app",
        uid="0b7e4a2c-6a43-4c5e-9a54-0c9c1c0e1f00",
        inputs="abc123def456",
        spec=image,
        parent=PARENT,
        settings=settings,
        context_config_map="lamina-build-abc123def456",
        push_secret_copy=None,
    )
    assert container(job)["args"] == args


@pytest.mark.parametrize(
    ("repository", "cache", "message"),
    [
        ("registry.local/demo/app-buildcache", BuildCache("c"), "is a build cache repository"),
        ("registry.local/a/cache", BuildCache("c", "{repository}/cache"), "is a build cache"),
        ("registry.local/" + "a" * 240, BuildCache("c"), "longer than 255 characters"),
        ("registry.local/demo/app", BuildCache("bad,tag"), "is not a tag"),
        ("registry.local/demo/app", BuildCache('x",push=false'), "is not a tag"),
        ("registry.local/demo/app", BuildCache("-x"), "is not a tag"),
        ("registry.local/demo/app", BuildCache("c", "other/{repository}"), "is not {repository}"),
        ("registry.local/demo/app", BuildCache("c", "{repository}"), "is not {repository}"),
        ("registry.local/demo/app", BuildCache("c", "{repository},push=1"), "is not {repository}"),
    ],
)
def test_an_image_that_cannot_have_a_cache_is_refused_with_the_reason(
    repository: str, cache: BuildCache, message: str
) -> None:
    settings = BuildSettings(
        namespace="lamina-system", builder_image="bk", deadline_seconds=1800, cache=cache
    )
    with pytest.raises(DockerfileError, match=re.escape(message)):
        buildctl_args(spec({"steps": ["RUN true"]}, repository=repository), PARENT, settings)
    with pytest.raises(DockerfileError, match=re.escape(message)):
        cache_args(spec({"steps": ["RUN true"]}, repository=repository), cache)


@pytest.mark.parametrize(
    ("env", "cache"),
    [
        ({}, None),
        ({"LAMINA_BUILD_CACHE_TAG": "c"}, ("c", "{repository}-buildcache")),
        (
            {"LAMINA_BUILD_CACHE_TAG": "c", "LAMINA_BUILD_CACHE_REPOSITORY": "{repository}/bc"},
            ("c", "{repository}/bc"),
        ),
    ],
)
def test_the_cache_settings_come_from_the_environment(
    env: dict[str, str], cache: tuple[str, str] | None
) -> None:
    config = OperatorConfig.from_env({"LAMINA_NAMESPACE": "x", **env})
    found = (
        (config.build_cache_tag, config.build_cache_repository) if config.build_cache_tag else None
    )
    assert found == cache


@pytest.mark.parametrize(
    "template", ["{repository}", "cache/{repository}", "{repository}-Cache", "{repository}//x", ""]
)
def test_a_cache_repository_template_that_is_not_a_suffix_stops_the_operator(
    template: str,
) -> None:
    with pytest.raises(ValidationError, match="build_cache_repository"):
        OperatorConfig.from_env(
            {"LAMINA_NAMESPACE": "x", "LAMINA_BUILD_CACHE_REPOSITORY": template or " "}
        )


@pytest.mark.parametrize(
    ("text_bytes", "binary_bytes", "refused"),
    [
        (1000, 0, False),
        (CONFIG_MAP_LIMIT - 4096, 0, False),
        (CONFIG_MAP_LIMIT, 0, True),
        (600_000, 600_000, True),
        (0, 900_000, False),
    ],
)
def test_a_context_too_large_for_its_config_map_is_refused_before_anything_is_created(
    text_bytes: int, binary_bytes: int, refused: bool
) -> None:
    files = {"big.txt": "x" * text_bytes}
    binary = {"blob.bin": base64.b64encode(b"\0" * binary_bytes).decode()}
    problem = context_size_problem(
        settings=SETTINGS, dockerfile="FROM scratch\n", files=files, binary_files=binary
    )
    assert (problem is not None) is refused
    if problem:
        assert "one ConfigMap carries at most 1,048,576" in problem
