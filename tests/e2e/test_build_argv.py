"""The build Job's argv on the node tier: hostile values arrive as data, long names build.

A real BuildKit Job builds an Image whose name is too long for a label, with build-arg values
full of shell and buildctl syntax (command substitution, backquotes, a comma followed by the
``cmdline=`` option that would pick a frontend image).  The image it pushes records the values
exactly as written, and no command in them ran.  Its child is a multi-stage Dockerfile whose
last stage descends from the parent: the pushed image starts with the parent's layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import NodeCluster, node_operator
from tests.e2e.test_image_builds import ready, run_pod

pytestmark = pytest.mark.e2e

HOSTILE = "1,cmdline=docker.io/evil/frontend $(touch /pwned) `touch /pwned`; touch /pwned"


@pytest.fixture(scope="module")
def build_operator(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NodeCluster, str]]:
    log = tmp_path_factory.mktemp("argv-operator") / "operator.log"
    with node_operator(node_cluster, log, LAMINA_BUILD_POLL_SECONDS="2") as operator_ns:
        yield node_cluster, operator_ns


def image(
    name: str, parent: dict[str, str], build: dict[str, Any], kube: NodeCluster, ns: str
) -> dict[str, Any]:
    return {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": "Image",
        "metadata": {"name": name},
        "spec": {
            "parent": parent,
            "build": build,
            "output": {"repository": f"{kube.registry}/e2e/{ns}/{name[:40]}", "insecure": True},
        },
    }


def test_hostile_build_args_are_data_and_long_names_build(
    build_operator: tuple[NodeCluster, str], ns: str
) -> None:
    kube, operator_ns = build_operator
    long_name = "argv-" + "x" * 90 + ".v1"  # 98 characters: hashed in the Job's labels
    kube.apply_objects(
        ns,
        image(
            long_name,
            {"ref": "docker.io/library/busybox:latest", "pollInterval": "1h"},
            {
                "steps": ["ARG V", "ARG W", 'RUN printf \'%s|%s\' "$V" "$W" > /args'],
                "args": {"V": HOSTILE, "W": "--help"},
            },
            kube,
            ns,
        ),
        image(
            "stages",
            {"image": long_name},
            {
                "dockerfile": (
                    "FROM parent-placeholder AS build\n"
                    "RUN echo built > /artifact && \\\n"
                    "    echo more >> /artifact\n"
                    "FROM build\n"
                    "COPY --from=build /artifact /copied\n"
                )
            },
            kube,
            ns,
        ),
    )
    built = wait_for(lambda: ready(kube, ns, long_name), timeout=600, what="long-named built")
    job = kube.ok("get", "job", built["build"]["job"], "-n", operator_ns, "-o", "name")
    assert job.strip()
    out = run_pod(
        kube,
        ns,
        "check-args",
        built["imageRef"],
        "cat /args; echo; test -e /pwned && echo PWNED || echo clean",
    )
    assert out == f"{HOSTILE}|--help\nclean\n"

    stages = wait_for(lambda: ready(kube, ns, "stages"), timeout=600, what="multi-stage built")
    parent_layers = [layer["digest"] for layer in built["layers"]]
    layers = stages["layers"]
    assert [layer["digest"] for layer in layers[: len(parent_layers)]] == parent_layers
    assert [layer["own"] for layer in layers] == [False] * len(parent_layers) + [True] * (
        len(layers) - len(parent_layers)
    )
    assert stages["lineage"][0] == {"name": long_name, "digest": built["digest"]}
    out = run_pod(kube, ns, "check-stages", stages["imageRef"], "cat /copied /args")
    assert out == f"built\nmore\n{HOSTILE}|--help"
