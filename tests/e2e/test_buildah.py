"""Buildah as the build engine, end to end on the node tier.

A real Buildah Job (Debian's buildah, made offline by ``e2e/lib/build-images.sh`` and pulled
as ``quay.io/buildah/stable`` through the node's mirror) builds ``hello`` from busybox with a
build arg, a ConfigMap context and a RUN step; the image runs in a pod and prints what the
build wrote.  Its manifest names and pins its parent and says it was created at the epoch,
as BuildKit's do, and its first layers are busybox's own (shared, not rewritten).  A child
built by BuildKit on it carries the lineage the same way: lineage does not depend on the
engine.  Buildah writes no attestations, so the operator does: ``hello``'s tag names an index
of the image, a SLSA provenance the operator wrote (Buildah as the builder, the pinned parent,
the build args, the context's digest) and the SBOM its scan Job made of the pushed digest.
Then ``hello`` is rebuilt by the trigger, which changes no input: a new Buildah Job pushes the
same digest, and the child is not rebuilt.

A RUN step is a runc container of its own (OCI isolation): a step writes what it sees of its
namespaces into the image, and the test reads it back from the pushed layer.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, wait_for
from tests.e2e.conftest import NodeCluster, node_operator
from tests.e2e.test_attestations import SLSA, SPDX, attestations, key, packages, with_sbom
from tests.e2e.test_build_lineage import BUSYBOX, EPOCH_0, build_jobs, skopeo
from tests.e2e.test_image_builds import image, ready, run_pod, status

pytestmark = pytest.mark.e2e

POLL_SECONDS = 2
# Shell and buildah syntax in a build-arg value: a comma (string-slice flags would split
# there), what looks like another tag, command substitution.  It must arrive as data.
GREETING = "hi, --tag=evil/x:1 $(touch /pwned) `touch /pwned`; touch /pwned"
_VERSION = re.search(
    r'^BUILDAH_VERSION="\$\{BUILDAH_VERSION:-([^}]+)\}"',
    (REPO / "e2e" / "lib" / "versions.sh").read_text(),
    re.MULTILINE,
)
assert _VERSION is not None
BUILDAH_VERSION = _VERSION.group(1)
BUILDAH_IMAGE = f"quay.io/buildah/stable:{BUILDAH_VERSION}"


@pytest.fixture(scope="module")
def buildah_operator(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NodeCluster, str]]:
    log = tmp_path_factory.mktemp("buildah-operator") / "operator.log"
    with node_operator(
        node_cluster,
        log,
        LAMINA_BUILD_POLL_SECONDS=str(POLL_SECONDS),
        LAMINA_BUILDAH_IMAGE=BUILDAH_IMAGE,
    ) as operator_ns:
        yield node_cluster, operator_ns


def job_of(kube: NodeCluster, operator_ns: str, name: str) -> dict[str, Any]:
    return json.loads(kube.ok("get", "job", name, "-n", operator_ns, "-o", "json"))  # type: ignore[no-any-return]


def assert_lineage_whatever_the_engine(
    kube: NodeCluster, ns: str, built: dict[str, Any], on_top: dict[str, Any]
) -> None:
    """The Buildah-built manifest and the BuildKit-built child's pin their parents alike."""
    # Lineage in the manifests: the same annotations whichever engine pushed them.
    manifest = skopeo(built["imageRef"], "--raw")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"] == {
        "org.opencontainers.image.base.name": BUSYBOX,
        "org.opencontainers.image.base.digest": built["parent"]["digest"],
        "org.opencontainers.image.created": EPOCH_0,
    }
    child_manifest = skopeo(on_top["imageRef"], "--raw")
    assert child_manifest["annotations"] == {
        "org.opencontainers.image.base.name": f"{kube.registry}/e2e/{ns}/hello",
        "org.opencontainers.image.base.digest": built["digest"],
        "org.opencontainers.image.created": EPOCH_0,
    }
    assert on_top["parent"] == {"image": "hello", "digest": built["digest"]}
    # The parent's layers are the parent's blobs; the child's start with all of hello's.
    busybox_manifest = skopeo(
        f"{kube.registry}/library/busybox@{built['parent']['digest']}", "--raw"
    )
    parent_layers = [layer["digest"] for layer in busybox_manifest["layers"]]
    layers = [layer["digest"] for layer in manifest["layers"]]
    assert layers[: len(parent_layers)] == parent_layers and len(layers) > len(parent_layers)
    assert [layer["digest"] for layer in child_manifest["layers"]][: len(layers)] == layers
    own = [entry for entry in built["layers"] if entry.get("own")]
    assert [entry["digest"] for entry in own] == layers[len(parent_layers) :]


def assert_attested_by_the_operator(kube: NodeCluster, ns: str, built: dict[str, Any]) -> None:
    """The provenance the operator wrote of the Buildah build, and the SBOM it scanned."""
    found = with_sbom(kube, ns, "hello", built["digest"])
    index_digest, statements, recorded = attestations(
        kube.registry, f"{kube.registry}/e2e/{ns}/hello", "latest", built["digest"]
    )
    assert set(statements) == {SLSA, SPDX}
    assert found["indexDigest"] == index_digest
    assert key(found["attestations"]) == key(recorded)
    provenance = statements[SLSA]["predicate"]
    assert provenance["runDetails"]["builder"]["id"] == "https://lamina.dev/builders/buildah"
    definition = provenance["buildDefinition"]
    assert definition["externalParameters"]["parent"]["digest"] == built["parent"]["digest"]
    assert definition["externalParameters"]["args"] == {
        "GREETING": GREETING,
        "SOURCE_DATE_EPOCH": "0",
    }
    assert definition["externalParameters"]["context"]["digest"].startswith("sha256:")
    assert definition["externalParameters"]["dockerfile"]["digest"].startswith("sha256:")
    assert {
        "sha256:" + entry["digest"]["sha256"] for entry in definition["resolvedDependencies"]
    } == {built["parent"]["digest"]}
    assert provenance["runDetails"]["metadata"]["invocationId"]
    # syft found busybox in the pushed image: the SBOM is of the image as pushed.
    assert any(name == "busybox" for name, _ in packages(statements[SPDX]))


def test_a_buildah_image_runs_carries_its_lineage_and_rebuilds_to_the_same_digest(
    buildah_operator: tuple[NodeCluster, str], ns: str
) -> None:
    kube, operator_ns = buildah_operator
    busybox = {"ref": BUSYBOX, "pollInterval": "1h"}
    hello = image(
        "hello",
        busybox,
        [
            "ARG GREETING",
            "ARG SOURCE_DATE_EPOCH",
            'RUN echo "$GREETING from a buildah step at epoch $SOURCE_DATE_EPOCH" > /hello',
            "COPY . /ctx/",
        ],
        kube.registry,
        ns,
    )
    hello["spec"]["build"].update(
        engine="buildah",
        args={"GREETING": GREETING},
        context={"configMap": {"name": "files"}},
    )
    child = image("child", {"image": "hello"}, ["RUN cat /hello > /child"], kube.registry, ns)
    child["spec"]["build"]["engine"] = "buildkit"
    kube.apply_objects(
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "files"},
            "data": {"app.conf": "x=1\n"},
        },
        hello,
        child,
    )
    built = wait_for(lambda: ready(kube, ns, "hello"), timeout=600, what="hello built by buildah")
    on_top = wait_for(lambda: ready(kube, ns, "child"), timeout=600, what="child built on it")

    # Each was built by the engine it names (and pushed by it: the digests are the registry's).
    job = job_of(kube, operator_ns, built["build"]["job"])
    assert job["metadata"]["annotations"]["lamina.dev/build-engine"] == "buildah"
    (builder,) = job["spec"]["template"]["spec"]["containers"]
    assert builder["image"] == BUILDAH_IMAGE
    child_job = job_of(kube, operator_ns, on_top["build"]["job"])
    assert child_job["metadata"]["annotations"]["lamina.dev/build-engine"] == "buildkit"
    config = skopeo(built["imageRef"], "--config")
    assert config["config"]["Labels"]["io.buildah.version"] == BUILDAH_VERSION.lstrip("v")
    assert config["created"] == EPOCH_0

    # The image runs, and says what its build steps wrote (the build arg taken as data).
    out = run_pod(
        kube, ns, "hello", built["imageRef"], "cat /hello; ls -A /ctx; ls /pwned 2>&1 || true"
    )
    # The context is the ConfigMap's keys and the generated Dockerfile, as BuildKit's is.
    assert out.splitlines() == [
        f"{GREETING} from a buildah step at epoch 0",
        "Dockerfile",
        "app.conf",
        "ls: /pwned: No such file or directory",
    ]
    out = run_pod(kube, ns, "child", on_top["imageRef"], "cat /child")
    assert out.strip() == f"{GREETING} from a buildah step at epoch 0"
    # Only the Image's own repository was pushed: the value's "--tag=" stayed in the value.
    evil = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{kube.registry}/evil/x:1"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert evil.returncode != 0

    assert_lineage_whatever_the_engine(kube, ns, built, on_top)
    assert_attested_by_the_operator(kube, ns, built)

    # The same inputs, built again by a new Buildah Job: the same digest, no child rebuild.
    hello_uid = kube.ok("get", "image", "hello", "-n", ns, "-o", "jsonpath={.metadata.uid}")
    child_uid = kube.ok("get", "image", "child", "-n", ns, "-o", "jsonpath={.metadata.uid}")
    child_jobs = build_jobs(kube, operator_ns, child_uid)
    kube.ok("annotate", "image", "hello", "-n", ns, "lamina.dev/rebuild=same-inputs")

    def rebuilt() -> dict[str, Any] | None:
        found = ready(kube, ns, "hello")
        if found and (found.get("builtFrom") or {}).get("trigger") == "same-inputs":
            return found
        return None

    again = wait_for(rebuilt, timeout=600, what="hello rebuilt by the trigger")
    assert again["build"]["job"] != built["build"]["job"]
    assert len(build_jobs(kube, operator_ns, hello_uid)) == 2
    assert (
        job_of(kube, operator_ns, again["build"]["job"])["metadata"]["annotations"][
            "lamina.dev/build-engine"
        ]
        == "buildah"
    )
    assert again["digest"] == built["digest"], "the same inputs pushed a different image"
    time.sleep(5 * POLL_SECONDS)
    after = status(kube, ns, "child")
    assert build_jobs(kube, operator_ns, child_uid) == child_jobs
    assert after["digest"] == on_top["digest"] and len(after["history"]) == 1


def test_a_failing_buildah_step_is_reported_with_buildahs_words(
    buildah_operator: tuple[NodeCluster, str], ns: str
) -> None:
    """The failed Job's log tail (``FallbackToLogsOnError``) is the Image's message, as
    BuildKit's is, and nothing is pushed."""
    kube, _ = buildah_operator
    broken = image(
        "broken",
        {"ref": BUSYBOX, "pollInterval": "1h"},
        ["RUN echo about-to-fail && false"],
        kube.registry,
        ns,
    )
    broken["spec"]["build"]["engine"] = "buildah"
    kube.apply_objects(ns, broken)

    def failed() -> dict[str, Any] | None:
        build = status(kube, ns, "broken").get("build") or {}
        return build if build.get("phase") == "Failed" else None

    build = wait_for(failed, timeout=300, what="the failed buildah build recorded")
    assert build["failure"] == "BuildFailed"
    lines = build["message"].splitlines()
    assert "STEP 2/2: RUN echo about-to-fail && false" in lines
    # OCI isolation: the step ran in a runc container, and Buildah says so.
    assert lines[-1] == (
        'Error: building at STEP "RUN echo about-to-fail && false": '
        "while running runtime: exit status 1"
    )
    found = status(kube, ns, "broken")
    assert "digest" not in found
    conditions = {c["type"]: c for c in found["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    pushed = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{kube.registry}/e2e/{ns}/broken"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert pushed.returncode != 0


# What a RUN step sees of its own process: its PID (1 in a PID namespace of its own), PID 1's
# program and command line, every process it can see, its namespaces and its cgroup.  Under
# chroot isolation PID 1 is the build container's script and buildah's processes are visible.
PROBE_MARK = "lamina-ns-probe"
PROBE_STEP = (
    f"RUN echo {PROBE_MARK} >/dev/null; mkdir /probe; echo $$ > /probe/pid;"
    " readlink /proc/1/exe > /probe/pid1-exe;"
    " tr '\\000' ' ' < /proc/1/cmdline > /probe/pid1-cmdline;"
    " for p in /proc/[0-9]*; do tr '\\000' ' ' < $p/cmdline; echo; done > /probe/processes;"
    " for n in pid mnt uts ipc net; do echo $n $(readlink /proc/self/ns/$n); done > /probe/ns;"
    " cat /proc/self/cgroup > /probe/cgroup"
)


def last_layer_files(ref: str, workdir: Path) -> dict[str, str]:
    """The regular files of the image's last layer (the step's own), read from the registry."""
    layout = workdir / "layout"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
         f"oci:{layout}:image"],
        check=True,
        timeout=120,
    )  # fmt: skip
    index = json.loads((layout / "index.json").read_text())
    (manifest_desc,) = index["manifests"]
    blob = layout / "blobs" / "sha256"
    manifest = json.loads((blob / manifest_desc["digest"].removeprefix("sha256:")).read_bytes())
    layer = (blob / manifest["layers"][-1]["digest"].removeprefix("sha256:")).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        return {
            member.name.removeprefix("./"): tar.extractfile(member).read().decode()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }


def test_a_buildah_run_step_is_a_container_of_its_own(
    buildah_operator: tuple[NodeCluster, str], ns: str, tmp_path: Path
) -> None:
    kube, operator_ns = buildah_operator
    probe = image("probe", {"ref": BUSYBOX, "pollInterval": "1h"}, [PROBE_STEP], kube.registry, ns)
    probe["spec"]["build"]["engine"] = "buildah"
    kube.apply_objects(ns, probe)
    built = wait_for(lambda: ready(kube, ns, "probe"), timeout=600, what="probe built by buildah")
    files = last_layer_files(built["imageRef"], tmp_path)
    seen = {name.removeprefix("probe/"): text for name, text in files.items()}
    assert set(seen) >= {"pid", "pid1-exe", "pid1-cmdline", "processes", "ns", "cgroup"}, files

    # Its own PID namespace: the step's shell is PID 1 and sees only itself and its children.
    assert seen["pid"].strip() == "1", seen
    assert seen["pid1-exe"].strip() == "/bin/busybox", seen
    assert PROBE_MARK in seen["pid1-cmdline"], seen["pid1-cmdline"]
    processes = [line for line in seen["processes"].splitlines() if line.strip()]
    assert processes and all(PROBE_MARK in p or p.startswith("tr ") for p in processes), processes
    for builder_word in ("buildah", "lamina-build", "set -eu", "/pause"):
        assert builder_word not in seen["processes"], seen["processes"]

    # Namespaces of its own, not the node host's (this test runs there): PID, mount, UTS, IPC;
    # the network is the pod's.
    step_ns = dict(line.split(" ", 1) for line in seen["ns"].splitlines())
    for kind in ("pid", "mnt", "uts", "ipc", "net"):
        assert step_ns[kind] != os.readlink(f"/proc/self/ns/{kind}"), (kind, step_ns)

    # Its cgroup is a child of the build pod's own, so the pod's limits hold for the step too.
    job = built["build"]["job"]
    pods = json.loads(
        kube.ok("get", "pods", "-n", operator_ns, "-l", f"job-name={job}", "-o", "json")
    )
    (pod,) = pods["items"]
    memory = next(line for line in seen["cgroup"].splitlines() if ":memory:" in line)
    path = memory.split(":", 2)[2]
    pod_uid = pod["metadata"]["uid"]
    assert re.search(rf"/pod{re.escape(pod_uid)}/[0-9a-f]{{64}}/buildah-[^/]+$", path) or re.search(
        rf"pod{re.escape(pod_uid.replace('-', '_'))}.*/buildah-[^/]+$", path
    ), (path, pod_uid)
