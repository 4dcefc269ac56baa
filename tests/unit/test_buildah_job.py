"""Buildah as a build engine: the schema admits only what runs, the Job carries argv only.

The Buildah Job is the BuildKit Job with another builder container, so what the two share
(context copy, labels, deadline, refusals) is proven in ``test_build_job``; here: which engine
a spec gets, the exact ``buildah build`` argv, the constant script run by a real ``/bin/sh``
with hostile values, and the registries.conf it reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lamina.api.crd import RESOURCE_KINDS, crd_manifest
from lamina.api.image import ImageSpec
from lamina.config import OperatorConfig
from lamina.domain.build_cache import BuildCache
from lamina.domain.build_job import (
    ANNOTATION_ENGINE,
    BUILDER_COMMAND,
    CONTEXT_COMMAND,
    BuildNotSupported,
    BuildSettings,
    DockerfileError,
    build_engine,
    build_job,
    check_engine,
)
from lamina.domain.build_outcome import judge_build
from lamina.domain.buildah_job import (
    BUILDAH_COMMAND,
    BUILDAH_SCRIPT,
    DIGEST_FILE,
    IMAGE_ID_FILE,
    ISOLATION_ARGS,
    REGISTRIES_ANNOTATION,
    BuildahSettings,
    registries_conf,
    registry_host,
)
from lamina.domain.commit_outcome import JobOutcome

P1 = "sha256:" + "1" * 64
D1 = "sha256:" + "d" * 64
PARENT = f"r/base@{P1}"
HOSTILE = "x'\"; $(touch /pwned) `id` && rm -rf / #, --tag=evil/x:1"
BUILDAH = BuildahSettings(
    image="buildah:test",
    storage_driver="overlay",
    mirrors={"docker.io": ("10.0.0.1:5000",)},
    insecure=frozenset({"10.0.0.1:5000"}),
)
SETTINGS = BuildSettings(
    namespace="lamina-system", builder_image="bk", deadline_seconds=1800, buildah=BUILDAH
)


def spec(build: dict[str, Any], **output: Any) -> ImageSpec:
    return ImageSpec.model_validate(
        {
            "parent": {"image": "base"},
            "build": build,
            "output": {"repository": "registry.local/demo/app", **output},
        }
    )


def job_for(image: ImageSpec, settings: BuildSettings = SETTINGS) -> dict[str, Any]:
    return build_job(
        namespace="team",
        name="app",
        uid="0b7e4a2c-6a43-4c5e-9a54-0c9c1c0e1f00",
        inputs="abc123def456",
        spec=image,
        parent=PARENT,
        settings=settings,
        context_config_map="lamina-build-abc123def456",
        push_secret_copy="lamina-build-abc123def456-push",
    )


def builder(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return dict(only)


BUILDAH_SPEC = spec({"steps": ["RUN true"], "engine": "buildah"})


# -- which engine: the schema's enum, the operator's default -------------------------------


@pytest.mark.parametrize("engine", ["kaniko", "docker", "BuildKit", ""])
def test_an_engine_the_operator_cannot_run_is_not_a_spec(engine: str) -> None:
    with pytest.raises(ValidationError, match=re.escape("build.engine")):
        spec({"steps": ["RUN true"], "engine": engine})


def test_the_crd_admits_buildkit_and_buildah_and_defaults_to_neither() -> None:
    (images,) = [kind for kind in RESOURCE_KINDS if kind.kind == "Image"]
    (version,) = crd_manifest(images)["spec"]["versions"]
    build = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["build"]
    engine = build["properties"]["engine"]
    assert engine["enum"] == ["buildkit", "buildah"]
    # Unset stays unset: the operator's default decides at build time, not the schema.
    assert "default" not in engine


@pytest.mark.parametrize(
    ("asked", "default", "engine"),
    [
        (None, "buildkit", "buildkit"),
        (None, "buildah", "buildah"),
        ("buildkit", "buildah", "buildkit"),
        ("buildah", "buildkit", "buildah"),
    ],
)
def test_the_spec_names_the_engine_else_the_operators_default(
    asked: str | None, default: str, engine: str
) -> None:
    image = spec({"steps": ["RUN true"], **({"engine": asked} if asked else {})})
    settings = BuildSettings(
        namespace="lamina-system",
        builder_image="bk",
        deadline_seconds=1800,
        default_engine=default,  # type: ignore[arg-type]
        buildah=BUILDAH,
    )
    assert build_engine(image, settings) == engine
    job = job_for(image, settings)
    assert job["metadata"]["annotations"][ANNOTATION_ENGINE] == engine
    expected = BUILDAH_COMMAND if engine == "buildah" else BUILDER_COMMAND
    assert builder(job)["command"] == expected
    assert builder(job)["image"] == ("buildah:test" if engine == "buildah" else "bk")


def test_operator_settings_for_buildah_come_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "LAMINA_DEFAULT_BUILD_ENGINE": "buildah",
            "LAMINA_BUILDAH_ENABLED": "true",
            "LAMINA_BUILDAH_IMAGE": "quay.io/buildah/stable:v1.28.2",
            "LAMINA_BUILDAH_STORAGE_DRIVER": "vfs",
            "LAMINA_NAMESPACE": "lamina-system",
        }
    )
    assert (config.default_build_engine, config.buildah_image, config.buildah_storage_driver) == (
        "buildah",
        "quay.io/buildah/stable:v1.28.2",
        "vfs",
    )
    defaults = OperatorConfig.from_env({"LAMINA_NAMESPACE": "x"})
    assert (defaults.default_build_engine, defaults.buildah_storage_driver) == (
        "buildkit",
        "overlay",
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LAMINA_DEFAULT_BUILD_ENGINE", "kaniko"),
        ("LAMINA_BUILDAH_STORAGE_DRIVER", "fuse-overlayfs"),
    ],
)
def test_operator_settings_it_cannot_run_are_refused_at_start(variable: str, value: str) -> None:
    with pytest.raises(ValidationError, match=variable.removeprefix("LAMINA_").lower()):
        OperatorConfig.from_env({variable: value, "LAMINA_NAMESPACE": "x"})


# -- the Job: argv only, BuildKit's shape otherwise ----------------------------------------


def test_buildah_argv_holds_each_value_in_one_element() -> None:
    image = spec(
        {
            "steps": ["RUN true"],
            "engine": "buildah",
            "args": {"B": "two words, one comma", "A": HOSTILE},
        },
        tags=["1", "latest"],
    )
    assert builder(job_for(image))["args"] == [
        "--isolation=oci",
        "--pid=private",
        "--ipc=private",
        "--uts=private",
        "--network=host",
        "--layers",
        "--format=oci",
        "--timestamp=0",
        "--file=/workspace/dockerfile/Dockerfile",
        f"--build-arg=A={HOSTILE}",
        "--build-arg=B=two words, one comma",
        "--build-arg=SOURCE_DATE_EPOCH=0",
        f"--annotation=org.opencontainers.image.base.digest={P1}",
        "--annotation=org.opencontainers.image.base.name=r/base",
        "--annotation=org.opencontainers.image.created=1970-01-01T00:00:00Z",
        f"--iidfile={IMAGE_ID_FILE}",
        "--tag=registry.local/demo/app:1",
        "--tag=registry.local/demo/app:latest",
        "/workspace/context",
    ]


def test_the_spec_epoch_is_buildahs_timestamp_and_a_build_arg() -> None:
    image = spec({"steps": ["RUN true"], "engine": "buildah", "args": {"SOURCE_DATE_EPOCH": "77"}})
    args = builder(job_for(image))["args"]
    assert "--timestamp=77" in args and "--build-arg=SOURCE_DATE_EPOCH=77" in args
    assert "--annotation=org.opencontainers.image.created=1970-01-01T00:01:17Z" in args


@pytest.mark.parametrize(
    "image",
    [
        BUILDAH_SPEC,
        spec({"steps": [f"RUN echo {HOSTILE}"], "engine": "buildah", "args": {"V": HOSTILE}}),
        spec({"dockerfile": f"FROM x\nRUN echo {HOSTILE}\n", "engine": "buildah"}, insecure=True),
    ],
    ids=["plain", "hostile", "dockerfile"],
)
def test_the_command_is_the_same_constant_for_every_image(image: ImageSpec) -> None:
    build = builder(job_for(image))
    assert build["command"] == BUILDAH_COMMAND == ["/bin/sh", "-c", BUILDAH_SCRIPT, "lamina-build"]
    assert all(isinstance(a, str) for a in build["args"])
    assert all(a.startswith("--") for a in build["args"][:-1])
    assert build["args"][-1] == "/workspace/context"
    assert HOSTILE not in BUILDAH_SCRIPT and "eval" not in BUILDAH_SCRIPT


def test_the_buildah_job_is_privileged_in_the_operators_namespace_with_its_own_storage() -> None:
    job = job_for(BUILDAH_SPEC)
    assert job["metadata"]["namespace"] == "lamina-system"
    pod = job["spec"]["template"]["spec"]
    build = builder(job)
    assert build["securityContext"] == {"privileged": True}
    assert build["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in build["env"]}
    assert env == {
        "REGISTRY_AUTH_FILE": "/var/run/lamina/docker/config.json",
        "BUILDAH_ISOLATION": "oci",
        "STORAGE_DRIVER": "overlay",
        "CONTAINERS_REGISTRIES_CONF": "/etc/lamina/registries/registries.conf",
    }
    mounts = {m["name"]: m["mountPath"] for m in build["volumeMounts"]}
    assert mounts == {
        "workspace": "/workspace/context",
        "dockerfile": "/workspace/dockerfile",
        "push-secret": "/var/run/lamina/docker",
        "containers-storage": "/var/lib/containers",
        "registries": "/etc/lamina/registries",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {
        "workspace",
        "context-source",
        "dockerfile",
        "push-secret",
        "containers-storage",
        "registries",
    }
    assert volumes["containers-storage"] == {"name": "containers-storage", "emptyDir": {}}
    (item,) = volumes["registries"]["downwardAPI"]["items"]
    assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{REGISTRIES_ANNOTATION}']"
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert tomllib.loads(annotations[REGISTRIES_ANNOTATION])["registry"][0]["location"] == (
        "10.0.0.1:5000"
    )
    # The same unprivileged context copy as BuildKit's, from the Buildah image.
    (init,) = pod["initContainers"]
    assert init["command"] == CONTEXT_COMMAND and init["image"] == "buildah:test"
    assert init["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False


def test_the_buildkit_job_is_unchanged_by_the_engine_setting() -> None:
    image = spec({"steps": ["RUN true"], "engine": "buildkit"})
    build = builder(job_for(image))
    assert [e["name"] for e in build["env"]] == ["BUILDKITD_FLAGS", "DOCKER_CONFIG"]
    assert "annotations" not in job_for(image)["spec"]["template"]["metadata"]


def test_a_storage_driver_buildah_cannot_use_here_is_refused() -> None:
    settings = BuildSettings(
        namespace="lamina-system",
        builder_image="bk",
        deadline_seconds=1800,
        buildah=BuildahSettings(image="b", storage_driver="btrfs"),
    )
    with pytest.raises(DockerfileError, match="storage driver"):
        job_for(BUILDAH_SPEC, settings)


# -- the script, run by a real shell -------------------------------------------------------


def fake_buildah(tmp_path: Path, digests: list[str]) -> Path:
    """A stand-in buildah: records each call's argv, writes the id and the push digests."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "buildah"
    calls, iid, digest = tmp_path / "calls.jsonl", tmp_path / "iid", tmp_path / "digest"
    fake.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""\
            import json, sys
            with open({str(calls)!r}, "a") as out:
                out.write(json.dumps(sys.argv[1:]) + "\\n")
            if sys.argv[1:3] == ["--cgroup-manager=cgroupfs", "build"]:
                open({str(iid)!r}, "w").write("sha256:{"e" * 64}")
            else:
                pushed = sum(1 for _ in open({str(calls)!r})) - 2
                open({str(digest)!r}, "w").write({digests!r}[pushed])
            """
        )
    )
    fake.chmod(0o755)
    return bin_dir


def run_script(
    tmp_path: Path, args: list[str], digests: list[str]
) -> tuple[subprocess.CompletedProcess[str], list[list[str]], Path]:
    bin_dir = fake_buildah(tmp_path, digests)
    termination = tmp_path / "termination-log"
    script = (
        BUILDAH_SCRIPT.replace(IMAGE_ID_FILE, str(tmp_path / "iid"))
        .replace(DIGEST_FILE, str(tmp_path / "digest"))
        .replace("/dev/termination-log", str(termination))
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["/bin/sh", "-c", script, "lamina-build", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    calls_file = tmp_path / "calls.jsonl"
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    return done, calls, termination


def test_the_script_builds_then_pushes_every_tag_and_reports_the_digest(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    image = spec(
        {
            "steps": ["RUN true"],
            "engine": "buildah",
            "args": {"A": f"$(touch {canary})", "B": f"`touch {canary}`", "C": "--tag=evil/x:1"},
        },
        tags=["1", "latest"],
    )
    args = builder(job_for(image))["args"]
    done, calls, termination = run_script(tmp_path, args, [D1, D1])
    assert done.returncode == 0, done.stderr
    image_id = "e" * 64
    assert calls == [
        ["--cgroup-manager=cgroupfs", "build", *args],
        ["push", f"--digestfile={tmp_path / 'digest'}", image_id,
         "docker://registry.local/demo/app:1"],
        ["push", f"--digestfile={tmp_path / 'digest'}", image_id,
         "docker://registry.local/demo/app:latest"],
    ]  # fmt: skip
    assert termination.read_text() == D1
    assert not canary.exists()


def test_tags_that_push_different_digests_fail_the_build(tmp_path: Path) -> None:
    image = spec({"steps": ["RUN true"], "engine": "buildah"}, tags=["1", "2"])
    done, _, termination = run_script(tmp_path, builder(job_for(image))["args"], [D1, P1])
    assert done.returncode == 1
    assert f"pushed registry.local/demo/app:2 as {P1} but an earlier tag as {D1}" in done.stderr
    assert not termination.exists()


# -- registries.conf: the node's mirrors and plain-HTTP registries, nothing wider ----------


def test_registries_conf_mirrors_and_marks_only_plain_http_registries_insecure() -> None:
    text = registries_conf(
        {"docker.io": ("10.0.0.1:5000", "mirror.example.com/hub")},
        frozenset({"10.0.0.1:5000"}),
        None,
    )
    conf = tomllib.loads(text)
    assert conf["unqualified-search-registries"] == ["docker.io"]
    assert conf["registry"] == [
        {"location": "10.0.0.1:5000", "insecure": True},
        {
            "location": "docker.io",
            "mirror": [
                {"location": "10.0.0.1:5000", "insecure": True},
                {"location": "mirror.example.com/hub"},
            ],
        },
    ]


def test_an_insecure_output_makes_only_its_registry_plain_http() -> None:
    job = job_for(spec({"steps": ["RUN true"], "engine": "buildah"}, insecure=True))
    text = job["spec"]["template"]["metadata"]["annotations"][REGISTRIES_ANNOTATION]
    insecure = {r["location"] for r in tomllib.loads(text)["registry"] if r.get("insecure")}
    assert insecure == {"10.0.0.1:5000", "registry.local"}
    assert not any("tls-verify" in arg for arg in builder(job)["args"])


@pytest.mark.parametrize(
    ("repository", "host"),
    [
        ("registry.local/demo/app", "registry.local"),
        ("10.0.0.1:5000/app", "10.0.0.1:5000"),
        ("localhost/app", "localhost"),
        ("demo/app", "docker.io"),
        ("app", "docker.io"),
    ],
)
def test_the_output_registry_is_the_docker_transports(repository: str, host: str) -> None:
    assert registry_host(repository) == host


@pytest.mark.parametrize("host", ['evil"\nlocation = "x', "a\x00b", "a\tb"])
def test_a_registry_setting_that_would_break_out_of_its_string_is_refused(host: str) -> None:
    with pytest.raises(DockerfileError, match="control character"):
        registries_conf({}, frozenset({host}), None)


def test_a_quote_in_a_registry_setting_stays_in_its_string() -> None:
    host = 'evil" insecure = true x="'
    conf = tomllib.loads(registries_conf({"docker.io": (host,)}, frozenset(), None))
    (registry,) = conf["registry"]
    assert registry == {"location": "docker.io", "mirror": [{"location": host}]}


# -- the outcome: Buildah's own words, read by the engine-independent judge ----------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (D1, None),
        (
            "STEP 2/2: RUN false\nsubprocess exited with status 1\n"
            'Error: building at STEP "RUN false": while running runtime: exit status 1',
            "BuildFailed",
        ),
        (
            'Error: error pushing image "e3b0" to "docker://registry.local/demo/app:1": '
            "writing blob: initiating layer upload to /v2/demo/app/blobs/uploads/ in "
            "registry.local: unauthorized: authentication required",
            "PushDenied",
        ),
    ],
    ids=["digest", "failed-step", "push-denied"],
)
def test_buildahs_results_are_judged_like_buildkits(message: str, reason: str | None) -> None:
    outcome = (
        JobOutcome("succeeded", termination_message=message)
        if reason is None
        else JobOutcome("failed", termination_message=message)
    )
    result = judge_build(outcome)
    assert (result.digest, result.reason) == ((D1, None) if reason is None else (None, reason))
    if reason is not None:
        assert message.splitlines()[-1] in result.message


def test_buildah_is_on_unless_the_administrator_turns_it_off() -> None:
    """Its RUN steps are runc containers, as BuildKit's are (SECURITY.md)."""
    assert OperatorConfig.from_env({"LAMINA_NAMESPACE": "x"}).buildah_enabled is True
    assert BuildahSettings().enabled is True
    off_env = {"LAMINA_BUILDAH_ENABLED": "false", "LAMINA_NAMESPACE": "x"}
    assert OperatorConfig.from_env(off_env).buildah_enabled is False
    with pytest.raises(ValueError, match="needs LAMINA_BUILDAH_ENABLED=true"):
        OperatorConfig.from_env({**off_env, "LAMINA_DEFAULT_BUILD_ENGINE": "buildah"})
    image = ImageSpec.model_validate(
        {
            "parent": {"ref": "registry.example/base:1"},
            "build": {"steps": ["RUN true"], "engine": "buildah"},
            "output": {"repository": "registry.example/team/app"},
        }
    )
    on = BuildSettings(namespace="lamina-system", builder_image="bk", deadline_seconds=1800)
    check_engine(image, on)
    off = replace(on, buildah=BuildahSettings(enabled=False))
    with pytest.raises(BuildNotSupported, match="buildah is not enabled on this cluster"):
        check_engine(image, off)


# -- RUN steps in runc containers: the operator's flags, first and whatever the spec says ----


@pytest.mark.parametrize(
    "image",
    [
        BUILDAH_SPEC,
        spec({"steps": ["RUN true"], "engine": "buildah", "args": {"X": "--isolation=chroot"}}),
        spec({"dockerfile": "FROM x\nRUN --network=none true\n", "engine": "buildah"}),
    ],
    ids=["plain", "isolation-in-a-value", "dockerfile"],
)
def test_every_buildah_build_runs_its_steps_with_oci_isolation(image: ImageSpec) -> None:
    build = builder(job_for(image))
    args = build["args"]
    assert args[: len(ISOLATION_ARGS)] == list(ISOLATION_ARGS)
    # No spec value is a flag of its own: the isolation flags appear once, as the operator's.
    for flag in ("--isolation", "--pid", "--ipc", "--uts", "--network", "--userns"):
        assert [a for a in args if a.startswith(flag + "=")] == [
            a for a in ISOLATION_ARGS if a.startswith(flag + "=")
        ]
    assert {"name": "BUILDAH_ISOLATION", "value": "oci"} in build["env"]
    assert "buildah --cgroup-manager=cgroupfs build" in BUILDAH_SCRIPT
    assert build["securityContext"] == {"privileged": True}


# -- the registry build cache: Buildah's --cache-to/--cache-from on the cache repository -----


@pytest.mark.parametrize(
    ("cache", "wanted"),
    [
        (None, []),
        (
            BuildCache("buildcache"),
            [
                "--cache-to=registry.local/demo/app-buildcache",
                "--cache-from=registry.local/demo/app-buildcache",
            ],
        ),
        (
            BuildCache("buildcache", "{repository}/cache"),
            [
                "--cache-to=registry.local/demo/app/cache",
                "--cache-from=registry.local/demo/app/cache",
            ],
        ),
    ],
    ids=["no-cache", "default-repository", "own-template"],
)
def test_the_buildah_cache_is_the_images_cache_repository(
    cache: BuildCache | None, wanted: list[str]
) -> None:
    image = spec({"steps": ["RUN true"], "engine": "buildah"}, tags=["1"])
    args = builder(job_for(image, replace(SETTINGS, cache=cache)))["args"]
    assert [a for a in args if a.startswith("--cache-")] == wanted
    # Before the context directory, after everything else: the rest of the argv is unchanged.
    assert [a for a in args if not a.startswith("--cache-")] == builder(job_for(image))["args"]
    assert args[-1] == "/workspace/context" and "--layers" in args


def test_the_script_pushes_no_cache_flag_as_a_tag(tmp_path: Path) -> None:
    image = spec({"steps": ["RUN true"], "engine": "buildah"}, tags=["1"])
    args = builder(job_for(image, replace(SETTINGS, cache=BuildCache("c"))))["args"]
    done, calls, _ = run_script(tmp_path, args, [D1])
    assert done.returncode == 0, done.stderr
    assert [call[0] for call in calls] == ["--cgroup-manager=cgroupfs", "push"]
    assert calls[1][-1] == "docker://registry.local/demo/app:1"


def test_an_image_pushing_to_a_cache_repository_is_refused_for_buildah_too() -> None:
    image = spec(
        {"steps": ["RUN true"], "engine": "buildah"}, repository="registry.local/demo/x-buildcache"
    )
    with pytest.raises(DockerfileError, match="is a build cache repository"):
        job_for(image, replace(SETTINGS, cache=BuildCache("c")))
