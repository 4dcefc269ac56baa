"""The CRDs on a real API server: established, shown by kubectl, and refusing bad input.

Every CEL rule and the syntax patterns are exercised by applying what a user would write and
reading the API server's refusal, which must name the field.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import REPO, KubeCluster

pytestmark = pytest.mark.api

DIGEST = "sha256:" + "a" * 64


def image(parent: str, build: str, output: str = "repository: localhost:5000/demo/x") -> str:
    return textwrap.dedent(
        """\
        apiVersion: lamina.dev/v1alpha1
        kind: Image
        metadata:
          name: subject
        spec:
          parent: {parent}
          build: {build}
          output: {{{output}}}
        """
    ).format(parent=parent, build=build, output=output)


def test_crds_are_established_with_names_and_columns(crds_installed: KubeCluster) -> None:
    result = crds_installed.kubectl(
        "get", "crd", "-l", "app.kubernetes.io/part-of=lamina", "-o", "json"
    )
    crds = {item["metadata"]["name"]: item for item in json.loads(result.stdout)["items"]}
    assert set(crds) == {"images.lamina.dev", "layers.lamina.dev", "containercommits.lamina.dev"}
    for crd in crds.values():
        established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
        assert established[0]["status"] == "True"
        assert crd["spec"]["names"]["categories"] == ["lamina"]
    assert crds["images.lamina.dev"]["spec"]["names"]["shortNames"] == ["img"]


def test_examples_apply_and_show_in_the_lamina_category(
    crds_installed: KubeCluster, namespace: str
) -> None:
    result = crds_installed.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples"))
    assert result.returncode == 0, result.stderr
    listed = crds_installed.kubectl("get", "lamina", "-n", namespace, "-o", "name")
    names = set(listed.stdout.split())
    assert {"image.lamina.dev/base", "image.lamina.dev/app", "image.lamina.dev/app-debug"} <= names
    assert "containercommit.lamina.dev/scratchpad-snapshot" in names
    table = crds_installed.kubectl("get", "img", "-n", namespace)
    header = table.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "READY", "REASON", "DIGEST", "PARENT"]


def test_defaults_are_applied_by_the_server(crds_installed: KubeCluster, namespace: str) -> None:
    manifest = image("{image: base}", "{steps: [RUN true]}")
    assert crds_installed.apply(manifest, namespace).returncode == 0
    obj = crds_installed.get("image", "subject", namespace)
    assert obj is not None
    assert obj["spec"]["rebuild"] == {"policy": "Automatic", "strategy": "Rebuild"}
    assert obj["spec"]["output"]["tags"] == ["latest"]
    assert obj["spec"]["historyLimit"] == 10


@pytest.mark.parametrize(
    ("parent", "build", "output", "expected"),
    [
        pytest.param(
            "{image: base, ref: 'busybox:1'}",
            "{steps: [RUN true]}",
            "repository: localhost:5000/x",
            "exactly one of spec.parent.image or spec.parent.ref must be set",
            id="both-parents",
        ),
        pytest.param(
            "{pollInterval: 5m}",
            "{steps: [RUN true]}",
            "repository: localhost:5000/x",
            "exactly one of spec.parent.image or spec.parent.ref must be set",
            id="no-parent",
        ),
        pytest.param(
            "{image: base}",
            "{steps: [RUN true], dockerfile: 'FROM x'}",
            "repository: localhost:5000/x",
            "exactly one of spec.build.steps or spec.build.dockerfile must be set",
            id="steps-and-dockerfile",
        ),
        pytest.param(
            "{image: base}",
            "{args: {A: b}}",
            "repository: localhost:5000/x",
            "exactly one of spec.build.steps or spec.build.dockerfile must be set",
            id="no-steps-no-dockerfile",
        ),
        pytest.param(
            "{image: base}",
            "{steps: [RUN true]}",
            "repository: 'Registry:5000//Bad Repo'",
            "spec.output.repository",
            id="malformed-repository",
        ),
        pytest.param(
            "{image: base}",
            "{steps: [RUN true]}",
            "repository: localhost:5000/x, tags: ['-bad!']",
            "spec.output.tags[0]",
            id="malformed-tag",
        ),
        pytest.param(
            "{ref: 'docker.io/library/busybox:1.36@sha256:xyz'}",
            "{steps: [RUN true]}",
            "repository: localhost:5000/x",
            "spec.parent.ref",
            id="malformed-ref",
        ),
        pytest.param(
            "{image: base}",
            "{steps: [RUN true], context: {configMap: {name: c}, git: {url: 'https://x'}}}",
            "repository: localhost:5000/x",
            "at most one of spec.build.context.configMap or spec.build.context.git may be set",
            id="two-contexts",
        ),
    ],
)
def test_invalid_images_are_refused_naming_the_field(
    crds_installed: KubeCluster, namespace: str, parent: str, build: str, output: str, expected: str
) -> None:
    result = crds_installed.apply(image(parent, build, output), namespace)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_unknown_rebuild_policy_is_refused(crds_installed: KubeCluster, namespace: str) -> None:
    manifest = image("{image: base}", "{steps: [RUN true]}") + "  rebuild: {policy: Sometimes}\n"
    result = crds_installed.apply(manifest, namespace)
    assert result.returncode != 0
    assert "spec.rebuild.policy" in result.stderr
    assert "Automatic" in result.stderr


def test_layer_name_must_be_its_digest(crds_installed: KubeCluster, namespace: str) -> None:
    bad = "apiVersion: lamina.dev/v1alpha1\nkind: Layer\nmetadata: {name: my-layer}\nspec: {}\n"
    result = crds_installed.apply(bad, namespace)
    assert result.returncode != 0
    assert "metadata.name" in result.stderr
    assert "sha256-<64 hex digits>" in result.stderr
    good = bad.replace("my-layer", "sha256-" + "b" * 64)
    assert crds_installed.apply(good, namespace).returncode == 0


def test_layer_advisory_severity_is_checked(crds_installed: KubeCluster, namespace: str) -> None:
    manifest = (
        "apiVersion: lamina.dev/v1alpha1\nkind: Layer\n"
        f"metadata: {{name: sha256-{'c' * 64}}}\n"
        "spec: {advisory: {id: CVE-1, severity: Apocalyptic}}\n"
    )
    result = crds_installed.apply(manifest, namespace)
    assert result.returncode != 0
    assert "spec.advisory.severity" in result.stderr


COMMIT = """\
apiVersion: lamina.dev/v1alpha1
kind: ContainerCommit
metadata: {name: snap}
spec:
  pod: web
  output: {repository: localhost:5000/demo/web, tag: v1}
"""


def test_container_commit_spec_is_immutable(crds_installed: KubeCluster, namespace: str) -> None:
    assert crds_installed.apply(COMMIT, namespace).returncode == 0
    created = crds_installed.get("containercommit", "snap", namespace)
    assert created is not None
    assert created["spec"]["pause"] is True  # server-side default
    edited = crds_installed.apply(COMMIT.replace("tag: v1", "tag: v2"), namespace)
    assert edited.returncode != 0
    assert "spec is immutable" in edited.stderr
    # Metadata stays editable (labels, annotations), as on a Job.
    labelled = crds_installed.kubectl("label", "containercommit", "snap", "-n", namespace, "a=b")
    assert labelled.returncode == 0, labelled.stderr


def test_container_commit_cannot_name_another_namespace(
    crds_installed: KubeCluster, namespace: str
) -> None:
    result = crds_installed.apply(COMMIT.replace("pod: web", "pod: other-ns/web"), namespace)
    assert result.returncode != 0
    assert "spec.pod" in result.stderr
