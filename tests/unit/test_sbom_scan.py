"""The SBOM of an image without one: when it is scanned, the scan Job, what its output must be,
and how the document joins the statements the image already carries.

Pure: lamina.domain.sbom_scan, lamina.domain.attestations (the SBOM statement, the Buildah
provenance) and lamina.domain.attestation_index (the merged attestation manifest).  The SPDX
document is the one syft v1.57.1 printed for busybox pushed to a local registry
(``syft scan registry:127.0.0.1:5118/t/busybox@DIGEST -o spdx-json``), byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lamina.api.attestation import AttestationStatus
from lamina.api.image import ImageSpec, ImageStatus
from lamina.domain.attestation_index import (
    ATTESTATION_MANIFEST,
    IN_TOTO_LAYER,
    attested_image,
    kept_statements,
    reattested_image,
)
from lamina.domain.attestations import (
    BUILDAH_BUILD_TYPE,
    BUILDAH_BUILDER,
    SLSA_PROVENANCE,
    SPDX_DOCUMENT,
    RebaseOrigin,
    buildah_provenance,
    rebase_provenance,
    sbom_statement,
)
from lamina.domain.build_job import BuildSettings, build_job
from lamina.domain.buildah_job import BuildahSettings
from lamina.domain.conditions import REASONS, SBOM, Verdict, merge_conditions
from lamina.domain.reconcile import ClusterState, decide
from lamina.domain.sbom_scan import (
    SBOM_MAX_BYTES,
    ScanImage,
    ScanResultInvalid,
    ScanSettings,
    parse_sbom,
    retry_delay,
    scan_due,
    scan_failed,
    scan_job,
    scan_job_name,
    scan_of,
    scanned,
    scanning,
    with_sbom_condition,
)
from lamina.domain.snapshot import ImageRecord
from lamina.handlers.provenance import buildah_build
from tests.conftest import REPO

SYFT_DOCUMENT = (REPO / "tests" / "unit" / "data" / "sbom" / "syft-busybox.spdx.json").read_bytes()
SCANNED = "sha256:f0f2bb423fc4e856c34b1da479516097b35858391a01315b76d9d655dfc9dc67"
OTHER = "sha256:" + "e" * 64
PARENT = "sha256:" + "1" * 64
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = ScanSettings(namespace="lamina-system", image="docker.io/anchore/syft:v1.57.1")


def record(**status: Any) -> ImageRecord:
    spec = ImageSpec.model_validate(
        {
            "parent": {"image": "base"},
            "commit": {"name": "snap"},
            "output": {"repository": "registry.example/team/snap", "tags": ["v1"]},
        }
    )
    return ImageRecord(
        "ns", "snap", uid="uid-snap", generation=1, spec=spec, status=ImageStatus(**status)
    )


def attestation(predicate: str, subject: str) -> AttestationStatus:
    return AttestationStatus(
        predicate_type=predicate, digest=PARENT, manifest_digest=PARENT, subject=subject
    )


# -- when to scan ------------------------------------------------------------------------------


def test_a_digest_without_an_sbom_is_scanned_and_one_with_an_sbom_is_not() -> None:
    provenance_only = record(digest=SCANNED, attestations=[attestation(SLSA_PROVENANCE, SCANNED)])
    assert scan_due(provenance_only) == ScanImage("ns", "snap", SCANNED)
    assert scan_due(record(digest=SCANNED)) == ScanImage("ns", "snap", SCANNED)
    with_sbom = record(digest=SCANNED, attestations=[attestation(SPDX_DOCUMENT, SCANNED)])
    assert scan_due(with_sbom) is None
    # An SBOM about another digest (the image before a rebase) is not this digest's.
    stale = record(digest=SCANNED, attestations=[attestation(SPDX_DOCUMENT, OTHER)])
    assert scan_due(stale) == ScanImage("ns", "snap", SCANNED)
    assert scan_due(record()) is None  # nothing pushed yet


def test_the_decision_scans_only_with_a_scanner_and_never_beside_another_action() -> None:
    image = record(digest=SCANNED)
    cluster = ClusterState(now=NOW, images={"ns": {"snap": image}})
    assert decide(cluster).actions == ()
    scanning_on = ClusterState(now=NOW, images={"ns": {"snap": image}}, scanning=True)
    assert decide(scanning_on).actions == (ScanImage("ns", "snap", SCANNED),)
    # The scan changes no status field the loop decides: a second pass writes nothing more.
    assert [w.name for w in decide(scanning_on).writes] == [w.name for w in decide(cluster).writes]


# -- the scan Job ------------------------------------------------------------------------------


def job(**extra: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "namespace": "ns",
        "name": "snap",
        "uid": "uid-snap",
        "repository": "registry.example/team/snap",
        "digest": SCANNED,
        "output_insecure": False,
        "push_secret_copy": None,
        "settings": SETTINGS,
        **extra,
    }
    return scan_job(**arguments)


def test_the_scan_job_runs_syft_on_the_digest_unprivileged_without_a_token() -> None:
    body = job()
    assert body["metadata"]["namespace"] == "lamina-system"
    assert body["metadata"]["name"] == scan_job_name("uid-snap", SCANNED)
    pod = body["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container  # the image's entrypoint is syft
    assert container["args"] == [
        "scan",
        f"registry:registry.example/team/snap@{SCANNED}",
        "--output",
        "spdx-json",
        "--quiet",
    ]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in json.dumps(body)
    assert "hostPath" not in json.dumps(body)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SYFT_CHECK_FOR_APP_UPDATE"] == "false"
    assert "SYFT_REGISTRY_INSECURE_USE_HTTP" not in env  # TLS unless the registry is plain
    assert "DOCKER_CONFIG" not in env
    assert body["spec"]["backoffLimit"] == 0
    # None of a build Job's labels: selecting an Image's build Jobs never finds its scans.
    assert body["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "lamina",
        "lamina.dev/purpose": "scan",
        "lamina.dev/scanned-image-uid": "uid-snap",
    }
    assert body["spec"]["activeDeadlineSeconds"] == SETTINGS.deadline_seconds
    assert scan_of(body["metadata"]["labels"], body["metadata"]["annotations"]) == (
        "ns",
        "snap",
        SCANNED,
    )


def test_plain_http_and_credentials_reach_the_scan_as_they_reach_a_build() -> None:
    plain = {
        e["name"]: e["value"]
        for e in job(output_insecure=True)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert plain["SYFT_REGISTRY_INSECURE_USE_HTTP"] == "true"
    configured = ScanSettings(
        namespace="lamina-system", image="syft", insecure=frozenset({"registry.example"})
    )
    body = job(settings=configured, push_secret_copy="lamina-scan-x-push")
    pod = body["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["SYFT_REGISTRY_INSECURE_USE_HTTP"] == "true"
    assert env["DOCKER_CONFIG"] == "/var/run/lamina/docker"
    (secret,) = [v for v in pod["volumes"] if "secret" in v]
    assert secret["secret"]["secretName"] == "lamina-scan-x-push"


def test_each_digest_gets_its_own_job_name_and_hostile_names_are_refused() -> None:
    assert scan_job_name("uid-snap", SCANNED) == scan_job_name("uid-snap", SCANNED)
    assert scan_job_name("uid-snap", SCANNED) != scan_job_name("uid-snap", OTHER)
    assert scan_job_name("uid-snap", SCANNED) != scan_job_name("uid-other", SCANNED)
    assert len(scan_job_name("u" * 300, SCANNED)) <= 63
    with pytest.raises(ValueError, match="not a repository"):
        job(repository="registry.example/team/snap --output=json=/etc/passwd")
    with pytest.raises(ValueError, match="not a sha256 digest"):
        job(digest="latest")


def test_a_job_without_lamina_s_scan_annotations_names_no_image() -> None:
    assert scan_of({"lamina.dev/purpose": "build"}, {}) is None
    labels = {"lamina.dev/purpose": "scan"}
    assert scan_of(labels, {"lamina.dev/image-name": "x"}) is None
    bad = {
        "lamina.dev/image-name": "x",
        "lamina.dev/image-namespace": "ns",
        "lamina.dev/scanned-digest": "sha256:zz",
    }
    assert scan_of(labels, bad) is None


# -- the scan's output is hostile --------------------------------------------------------------


def test_syft_s_document_of_the_scanned_digest_is_taken() -> None:
    document = parse_sbom(SYFT_DOCUMENT, SCANNED)
    assert document["spdxVersion"] == "SPDX-2.3"
    assert {p["name"] for p in document["packages"]} >= {"busybox"}


@pytest.mark.parametrize(
    ("output", "refused"),
    [
        (b"", "printed nothing"),
        (b"   \n", "printed nothing"),
        (b"x" * (SBOM_MAX_BYTES + 1), f"more than {SBOM_MAX_BYTES} bytes"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"not json", "not JSON"),
        # syft's stderr mixed into the log after the document: not one JSON value
        (SYFT_DOCUMENT + b"\n[0001] WARN something", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'["SPDX-2.3"]', "not a JSON object"),
        (b'{"spdxVersion": "SPDX-3.0"}', "not an SPDX 2 document"),
        (b'{"spdxVersion": "SPDX-2.3", "SPDXID": "x"}', "no SPDXRef-DOCUMENT"),
        (
            b'{"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "packages": {}}',
            "no package list",
        ),
    ],
)
def test_output_that_is_not_an_sbom_is_refused_with_the_check_it_failed(
    output: bytes, refused: str
) -> None:
    with pytest.raises(ScanResultInvalid, match=refused) as caught:
        parse_sbom(output, SCANNED)
    assert "WARN" not in str(caught.value)  # what the output held never reaches status


def test_an_sbom_of_another_image_is_refused() -> None:
    with pytest.raises(ScanResultInvalid, match=f"does not describe the image {OTHER}"):
        parse_sbom(SYFT_DOCUMENT, OTHER)


def test_a_package_with_the_digest_that_the_document_does_not_describe_is_not_the_image() -> None:
    document = json.loads(SYFT_DOCUMENT)
    # The hostile document lists the digest on a package, but describes another.
    document["relationships"] = [
        r for r in document["relationships"] if r["relationshipType"] != "DESCRIBES"
    ] + [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relatedSpdxElement": document["packages"][0]["SPDXID"],
            "relationshipType": "DESCRIBES",
        }
    ]
    with pytest.raises(ScanResultInvalid, match="does not describe the image"):
        parse_sbom(json.dumps(document).encode(), SCANNED)
    # documentDescribes (SPDX 2.2) counts as describing too.
    document["documentDescribes"] = [
        p["SPDXID"] for p in document["packages"] if p.get("versionInfo") == SCANNED
    ]
    assert parse_sbom(json.dumps(document).encode(), SCANNED)["spdxVersion"] == "SPDX-2.3"


# -- the statement and where it goes -----------------------------------------------------------


def test_the_sbom_statement_is_buildkit_s_kind_about_the_image_manifest() -> None:
    document = parse_sbom(SYFT_DOCUMENT, SCANNED)
    statement = sbom_statement("registry.example/team/snap", SCANNED, document)
    assert statement["predicateType"] == SPDX_DOCUMENT == "https://spdx.dev/Document"
    assert statement["predicate"] == document
    assert statement["subject"] == [
        {
            "name": "pkg:docker/registry.example/team/snap?platform=linux%2Famd64",
            "digest": {"sha256": SCANNED.removeprefix("sha256:")},
        }
    ]


def provenance() -> dict[str, Any]:
    origin = RebaseOrigin(
        namespace="ns",
        image="app",
        repository="registry.example/team/app",
        previous_digest=OTHER,
        previous_parent_digest=PARENT,
        parent_name="registry.example/team/base",
        parent_repository="registry.example/team/base",
        parent_digest=PARENT,
        kept_layers=[],
        invocation="uid/inputs",
        started=NOW,
        finished=NOW,
    )
    return rebase_provenance(origin, SCANNED, "0.1")


IMAGE = {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": SCANNED,
    "size": 500,
    "platform": {"architecture": "amd64", "os": "linux"},
}


def test_the_sbom_joins_the_provenance_in_one_attestation_manifest() -> None:
    rebased = attested_image(
        manifest_digest=SCANNED,
        manifest_size=500,
        manifest_media_type=IMAGE["mediaType"],
        platform=IMAGE["platform"],
        statement=provenance(),
    )
    old_index = json.loads(rebased.index)
    old_index["manifests"].append(
        {"mediaType": IMAGE["mediaType"], "digest": OTHER, "size": 9, "platform": {"os": "x"}}
    )
    kept = kept_statements(json.loads(rebased.attestation_manifest), SPDX_DOCUMENT)
    assert [k["digest"] for k in kept] == [rebased.statement.digest]
    statement = sbom_statement(
        "registry.example/team/app", SCANNED, parse_sbom(SYFT_DOCUMENT, SCANNED)
    )
    merged = reattested_image(index=old_index, image=IMAGE, kept=kept, statement=statement)
    index = json.loads(merged.index)
    attestations = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("vnd.docker.reference.type") == ATTESTATION_MANIFEST
    ]
    assert len(attestations) == 1, "one attestation manifest per image, as BuildKit writes it"
    assert attestations[0]["digest"] == merged.attestation_digest
    assert attestations[0]["annotations"]["vnd.docker.reference.digest"] == SCANNED
    # The image and the index's other entry are kept as they were.
    assert [m["digest"] for m in index["manifests"]] == [SCANNED, OTHER, merged.attestation_digest]
    manifest = json.loads(merged.attestation_manifest)
    layers = [(layer["mediaType"], layer["annotations"]) for layer in manifest["layers"]]
    assert layers == [
        (IN_TOTO_LAYER, {"in-toto.io/predicate-type": SLSA_PROVENANCE}),
        (IN_TOTO_LAYER, {"in-toto.io/predicate-type": SPDX_DOCUMENT}),
    ]
    config = json.loads(merged.attestation_config)
    assert config["rootfs"]["diff_ids"] == [rebased.statement.digest, merged.statement.digest]
    digest = "sha256:" + hashlib.sha256(merged.attestation_config).hexdigest()
    assert manifest["config"]["digest"] == digest


def test_a_plain_manifest_gets_an_index_of_it_and_its_sbom() -> None:
    statement = sbom_statement("r.example/a", SCANNED, parse_sbom(SYFT_DOCUMENT, SCANNED))
    merged = reattested_image(index=None, image=IMAGE, kept=[], statement=statement)
    index = json.loads(merged.index)
    assert [m["digest"] for m in index["manifests"]] == [SCANNED, merged.attestation_digest]
    assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}


def test_kept_statements_are_only_well_formed_in_toto_layers_of_other_types() -> None:
    good = {
        "mediaType": IN_TOTO_LAYER,
        "digest": PARENT,
        "size": 10,
        "annotations": {"in-toto.io/predicate-type": SLSA_PROVENANCE},
        "urls": ["http://elsewhere.example/x"],  # not copied into what is signed
    }
    manifest = {
        "layers": [
            good,
            {**good, "mediaType": "application/vnd.oci.image.layer.v1.tar"},
            {**good, "digest": "sha256:bad"},
            {**good, "size": "10"},
            {**good, "size": 0},
            {**good, "annotations": {"in-toto.io/predicate-type": "javascript:x"}},
            {**good, "digest": OTHER, "annotations": {"in-toto.io/predicate-type": SPDX_DOCUMENT}},
            good,  # twice: once
            "not a layer",
        ]
    }
    assert kept_statements(manifest, SPDX_DOCUMENT) == [
        {
            "mediaType": IN_TOTO_LAYER,
            "digest": PARENT,
            "size": 10,
            "annotations": {"in-toto.io/predicate-type": SLSA_PROVENANCE},
        }
    ]
    assert kept_statements({"layers": "x"}, SPDX_DOCUMENT) == []


# -- the SBOM condition ------------------------------------------------------------------------


def test_the_sbom_condition_is_its_own_type_and_ready_is_left_alone() -> None:
    assert {REASONS["Scanning"], REASONS["ScanFailed"], REASONS["Scanned"]} == {SBOM}
    ready = record(digest=SCANNED).status.model_copy(
        update={
            "conditions": merge_conditions(
                None, [Verdict("Ready", "True", "Committed", "x")], generation=1, now=NOW
            )
        }
    )
    failing = with_sbom_condition(
        ready, scan_failed(SCANNED, "the scan Job failed", 2, retry_delay(2)), 1, NOW
    )
    by_type = {c.type: c for c in failing.conditions or []}
    assert by_type["Ready"].status == "True"
    assert by_type["SBOM"].status == "False"
    assert by_type["SBOM"].reason == "ScanFailed"
    assert "scanned again in 60s (attempt 2)" in by_type["SBOM"].message
    # The same verdict again writes nothing.
    again = with_sbom_condition(
        failing, scan_failed(SCANNED, "the scan Job failed", 2, retry_delay(2)), 1, NOW
    )
    assert again is failing
    done = with_sbom_condition(failing, scanned(SCANNED, PARENT), 1, NOW)
    assert {c.type: c.reason for c in done.conditions or []} == {
        "Ready": "Committed",
        "SBOM": "Scanned",
    }
    assert scanning(SCANNED, "ns/job").reason == "Scanning"


def test_retries_back_off_from_thirty_seconds_to_an_hour() -> None:
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert retry_delay(50) == timedelta(hours=1)


# -- Buildah's provenance, from the operator's own Job -----------------------------------------


def test_a_buildah_build_s_provenance_says_buildah_the_parent_and_the_inputs() -> None:
    spec = ImageSpec.model_validate(
        {
            "parent": {"image": "base"},
            "build": {"engine": "buildah", "steps": ["RUN echo hi"], "args": {"GREETING": "hi"}},
            "output": {"repository": "registry.example/team/app", "tags": ["latest"]},
        }
    )
    settings = BuildSettings(
        namespace="lamina-system",
        builder_image="buildkit",
        deadline_seconds=600,
        buildah=BuildahSettings(image="buildah:1", enabled=True),
    )
    body = build_job(
        namespace="ns",
        name="app",
        uid="uid-app",
        inputs="abc123",
        spec=spec,
        parent=f"registry.example/team/base@{PARENT}",
        settings=settings,
        context_config_map="lamina-build-abc123",
        push_secret_copy=None,
        context="sha256:" + "c" * 64,
    )
    body["metadata"]["uid"] = "job-uid"
    body["status"] = {"startTime": "2026-12-01T11:59:00Z", "completionTime": "2026-12-01T12:00:00Z"}
    image = ImageRecord("ns", "app", uid="uid-app", generation=1, spec=spec)
    build = buildah_build(image, body, NOW)
    statement = buildah_provenance(build, SCANNED, "0.1")
    predicate = statement["predicate"]
    assert statement["predicateType"] == SLSA_PROVENANCE
    assert statement["subject"][0]["digest"] == {"sha256": SCANNED.removeprefix("sha256:")}
    assert predicate["runDetails"]["builder"]["id"] == BUILDAH_BUILDER
    assert predicate["buildDefinition"]["buildType"] == BUILDAH_BUILD_TYPE
    parameters = predicate["buildDefinition"]["externalParameters"]
    assert parameters["parent"] == {"name": "registry.example/team/base", "digest": PARENT}
    assert parameters["args"] == {"GREETING": "hi", "SOURCE_DATE_EPOCH": "0"}
    assert parameters["context"] == {"digest": "sha256:" + "c" * 64}
    assert parameters["dockerfile"]["digest"].startswith("sha256:")
    assert predicate["buildDefinition"]["resolvedDependencies"] == [
        {
            "name": "parent",
            "uri": f"pkg:docker/registry.example/team/base@{PARENT.replace(':', '%3A')}"
            "?platform=linux%2Famd64",
            "digest": {"sha256": PARENT.removeprefix("sha256:")},
        }
    ]
    metadata = predicate["runDetails"]["metadata"]
    assert metadata == {
        "invocationId": "job-uid",
        "startedOn": "2026-12-01T11:59:00Z",
        "finishedOn": "2026-12-01T12:00:00Z",
    }
    assert predicate["buildDefinition"]["internalParameters"]["builderImage"] == "buildah:1"


def test_an_sbom_of_too_many_json_values_is_refused_before_it_is_parsed() -> None:
    """12 MiB of ``[[],[],…]`` would be four million Python lists in the operator."""
    hostile = b'{"spdxVersion": "SPDX-2.3", "x": [' + b"[]," * 700_000 + b"[]]}"
    with pytest.raises(ScanResultInvalid, match="JSON values, more than the 600,000"):
        parse_sbom(hostile, SCANNED)
    parse_sbom(SYFT_DOCUMENT, SCANNED)  # a real syft document is far under the bound
