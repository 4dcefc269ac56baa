"""Hostile specs on a real API server: refused with a message naming the field and the rule.

What a tenant with namespace rights would try against the privileged builder and committer
(shell syntax in build-arg names, a new stage smuggled into a step, option-like paths) and
against the one build loop everyone shares (durations, integers and names that overflow or
make a derived object invalid).  Each is applied with kubectl, as a tenant would, and must
be refused, with nothing stored.  The last test runs the real operator on an Image whose
name is too long for a label, and checks the build Job it creates.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_build_planning import push
from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for
from tests.integration.conftest import Registry

pytestmark = pytest.mark.api

LABEL_VALUE_MAX = 63


def image(
    *,
    name: str = "subject",
    parent: dict[str, Any] | None = None,
    build: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
) -> str:
    return json.dumps(
        {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "Image",
            "metadata": {"name": name},
            "spec": {
                "parent": parent or {"image": "base"},
                "build": build or {"steps": ["RUN true"]},
                "output": output or {"repository": "localhost:5000/demo/x"},
            },
        }
    )


def commit(**spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "ContainerCommit",
            "metadata": {"name": "snap"},
            "spec": {"pod": "web", "output": {"repository": "localhost:5000/demo/web"}, **spec},
        }
    )


HOSTILE = [
    pytest.param(
        image(build={"steps": ["RUN true"], "args": {"X=1 $(touch /pwned)": "v"}}),
        'spec.build.args: Invalid value: "object": keys must match ^[A-Za-z_][A-Za-z0-9_]*$',
        id="build-arg-key-with-shell",
    ),
    pytest.param(
        image(build={"steps": ["RUN true"], "args": {"BUILDKIT_SYNTAX": "evil/frontend"}}),
        "build-arg names starting with BUILDKIT_ configure BuildKit itself",
        id="build-arg-picks-the-frontend",
    ),
    pytest.param(
        image(build={"steps": ["RUN true\nFROM evil"]}),
        'spec.build.steps[0]: Invalid value: "string": a step is one instruction on one line',
        id="step-smuggles-a-stage-by-newline",
    ),
    pytest.param(
        image(build={"steps": ["RUN true\rFROM evil"]}),
        "a step is one instruction on one line",
        id="step-smuggles-a-stage-by-carriage-return",
    ),
    pytest.param(
        image(build={"steps": ["RUN true \\", "FROM evil"]}),
        'spec.build.steps[0]: Invalid value: "string": a step may not end with a backslash',
        id="step-continues-into-the-next",
    ),
    pytest.param(
        image(build={"steps": ["RUN true", " from evil AS x"]}),
        'spec.build.steps[1]: Invalid value: "string": a step may not be a FROM',
        id="step-is-a-from",
    ),
    pytest.param(
        image(build={"steps": ["# syntax=docker.io/evil/frontend"]}),
        "a step may not be a parser directive",
        id="step-is-a-directive",
    ),
    pytest.param(
        image(build={"steps": ["COPY --from=docker.io/library/alpine / /"]}),
        "COPY/ADD --from takes files from an image lineage does not know",
        id="step-copies-from-another-image",
    ),
    pytest.param(
        image(build={"steps": ["RUN --mount=type=bind,from=evil,target=/e true"]}),
        "RUN --mount=...,from= takes files from an image lineage does not know",
        id="step-mounts-another-image",
    ),
    pytest.param(
        image(build={"dockerfile": "# syntax=docker.io/evil/frontend\nFROM x\n"}),
        'spec.build.dockerfile: Invalid value: "string": the Dockerfile may not carry parser '
        "directives",
        id="dockerfile-picks-the-frontend",
    ),
    pytest.param(
        image(parent={"image": "base", "pollInterval": "999999999999h"}),
        "spec.parent.pollInterval in body should match",
        id="poll-interval-overflows",
    ),
    pytest.param(
        image(parent={"image": "base", "pollInterval": "200h"}),
        'spec.parent.pollInterval: Invalid value: "string": must be between 1s and 168h',
        id="poll-interval-too-long",
    ),
    pytest.param(
        image(build={"steps": ["RUN true"], "timeout": "9999h"}),
        'spec.build.timeout: Invalid value: "string": must be between 10s and 24h',
        id="timeout-too-long",
    ),
    pytest.param(
        image(name="a" * 253),
        "metadata.name of an Image must be at most 128 characters",
        id="image-name-253",
    ),
    pytest.param(
        image(output={"repository": "localhost:5000/x", "tags": ["a", "a"]}),
        'spec.output.tags[1]: Duplicate value: "a"',
        id="duplicate-tag",
    ),
    pytest.param(
        image(output={"repository": "localhost:5000/x", "tags": [f"t{i}" for i in range(33)]}),
        "spec.output.tags: Too many: 33: must have at most 32 items",
        id="too-many-tags",
    ),
    pytest.param(
        image(build={"steps": ["RUN true"] * 101}),
        "spec.build.steps: Too many: 101: must have at most 100 items",
        id="too-many-steps",
    ),
    pytest.param(
        image(build={"steps": ["RUN true"], "context": {"git": {"url": "--upload-pack=x"}}}),
        "spec.build.context.git.url in body should match",
        id="git-url-is-an-option",
    ),
    pytest.param(
        image(
            build={
                "steps": ["RUN true"],
                "context": {"git": {"url": "https://robot:pw@git.example/app.git"}},
            }
        ),
        "spec.build.context.git.url in body should match",
        id="git-url-carries-credentials",
    ),
    pytest.param(
        image(build={"steps": ["RUN true"], "context": {"git": {"url": "ssh://git.example/a"}}}),
        "spec.build.context.git.url in body should match",
        id="git-url-ssh-is-not-resolved",
    ),
    pytest.param(
        image(
            build={
                "steps": ["RUN true"],
                "context": {"git": {"url": "https://git.example/a", "secret": "../other-ns"}},
            }
        ),
        "spec.build.context.git.secret in body should match",
        id="git-secret-is-a-name-not-a-path",
    ),
    pytest.param(
        commit(ttlSecondsAfterFinished=9223372036854775807),
        "spec.ttlSecondsAfterFinished in body should be less than or equal to 2592000",
        id="ttl-overflows",
    ),
    pytest.param(
        commit(excludePaths=["--to=x"]),
        'spec.excludePaths[0]: Invalid value: "string": must be an absolute, normalised path',
        id="exclude-path-is-an-option",
    ),
    pytest.param(
        commit(excludePaths=["/var/../etc/shadow"]),
        'spec.excludePaths[0]: Invalid value: "string": must be an absolute, normalised path',
        id="exclude-path-climbs",
    ),
    pytest.param(
        commit(author="Jane\n--help"),
        "spec.author in body should match",
        id="author-spans-lines",
    ),
    pytest.param(
        commit(changes={"env": [{"name": "A=B", "value": "x"}]}),
        "spec.changes.env[0].name in body should match",
        id="env-name-with-equals",
    ),
    pytest.param(
        commit(changes={"labels": {"--x": "y"}}),
        'spec.changes.labels: Invalid value: "object": keys must match',
        id="label-key-is-an-option",
    ),
    pytest.param(
        commit(changes={"exposedPorts": ["70000/tcp"]}),
        "spec.changes.exposedPorts[0] in body should match",
        id="port-out-of-range",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), HOSTILE)
def test_hostile_objects_are_refused_by_the_api_server(
    crds_installed: KubeCluster, namespace: str, manifest: str, message: str
) -> None:
    result = crds_installed.apply(manifest, namespace)
    assert result.returncode != 0
    assert "is invalid" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    # Nothing was stored.
    listed = crds_installed.kubectl(
        "get", "images,containercommits", "-n", namespace, "-o", "name", check=True
    )
    assert listed.stdout.strip() == ""


def test_the_same_objects_within_bounds_are_accepted(
    crds_installed: KubeCluster, namespace: str
) -> None:
    """The rules refuse the attack, not the feature: the nearest legitimate values pass."""
    accepted = [
        image(name="a" * 128, build={"steps": ["RUN true"], "args": {"X_1": "$(not a shell)"}}),
        image(
            name="multi-stage",
            build={
                "dockerfile": "FROM x AS build\nRUN make \\\n  install\nFROM build\n"
                "COPY --from=build /out /out\n",
                "timeout": "24h",
            },
            parent={"image": "base", "pollInterval": "168h"},
        ),
        commit(
            excludePaths=["/var/cache", "/home/..hidden", "/tmp/.x"],
            ttlSecondsAfterFinished=2592000,
            author="Jane Doe <jane@example.com>",
            changes={"env": [{"name": "A", "value": "1"}], "labels": {"org.example/x": "y"}},
        ),
    ]
    for manifest in accepted:
        result = crds_installed.apply(manifest, namespace)
        assert result.returncode == 0, result.stderr


# -- the real operator on an Image whose name does not fit in a label ---------------------


@pytest.fixture
def long_namespace(crds_installed: KubeCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}-" + "n" * 52  # 63 characters, the most there can be
    crds_installed.kubectl("create", "namespace", name, check=True)
    yield name
    crds_installed.kubectl("delete", "namespace", name, "--wait=false")


def test_a_long_named_image_gets_a_valid_build_job(
    crds_installed: KubeCluster,
    registry: Registry,
    long_namespace: str,
    tmp_path: Path,
) -> None:
    kube = crds_installed
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", operator_ns, check=True)
    settings = tmp_path / "registries.yaml"
    settings.write_text(f'registries:\n  "{registry.address}":\n    insecure: true\n')
    log = tmp_path / "operator.log"
    process = start_operator(
        kube.kubeconfig,
        log,
        "--metrics-port=0",
        "--health-port=0",
        env={
            "LAMINA_NAMESPACE": operator_ns,
            "LAMINA_REGISTRY_CONFIG": str(settings),
            "LAMINA_BUILD_POLL_SECONDS": "1",
            "LAMINA_BUILDER_IMAGE": "builder:test",
        },
    )
    try:
        repository = f"parents/{uuid.uuid4().hex[:8]}"
        digest = push(registry, repository, "1", "one", tmp_path)
        name = "a-very-long-image-name-" + "x" * 80 + ".v1"  # 106 characters
        created = kube.apply(
            image(
                name=name,
                parent={"ref": registry.ref(repository, "1"), "pollInterval": "1s"},
                build={"steps": ["RUN true"], "args": {"MODE": "$(touch /pwned)"}},
                output={"repository": f"{registry.address}/out/long", "insecure": True},
            ),
            long_namespace,
        )
        assert created.returncode == 0, created.stderr

        def jobs() -> list[dict[str, Any]]:
            listed = kube.kubectl("get", "jobs", "-n", operator_ns, "-o", "json", check=True)
            return [
                job
                for job in json.loads(listed.stdout)["items"]
                if job["metadata"].get("annotations", {}).get("lamina.dev/image-name") == name
            ]

        (job,) = wait_for(jobs, timeout=60, what="the build Job of the long-named Image")
        assert len(job["metadata"]["name"]) <= LABEL_VALUE_MAX
        labels = job["metadata"]["labels"]
        assert all(len(value) <= LABEL_VALUE_MAX for value in labels.values())
        assert labels["lamina.dev/image-namespace"] == long_namespace
        assert labels["lamina.dev/image-name"] != name  # hashed to fit
        assert job["metadata"]["annotations"]["lamina.dev/image-namespace"] == long_namespace
        build = job["spec"]["template"]["spec"]["containers"][0]
        assert build["command"][:2] == ["/bin/sh", "-c"] and build["command"][3:] == [
            "lamina-build"
        ]
        assert "--opt=build-arg:MODE=$(touch /pwned)" in build["args"]
        assert "$(touch" not in build["command"][2]
        # The API server created the pods' template labels too: the Job controller may run it.
        assert (
            job["spec"]["template"]["metadata"]["labels"]["lamina.dev/image-name"]
            == (labels["lamina.dev/image-name"])
        )

        def status() -> dict[str, Any]:
            found = kube.get("image", name, long_namespace) or {}
            return found.get("status") or {}

        wait_for(
            lambda: status().get("build", {}).get("phase") == "Running",
            what="the build recorded on the Image",
        )
        assert status()["build"]["job"] == job["metadata"]["name"]
        assert status()["build"]["wanted"]["parentDigest"] == digest
    finally:
        stop_operator(process, log)
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")
    assert "Traceback" not in log.read_text()
