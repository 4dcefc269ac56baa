"""Lamina's own provenance statements and BuildKit's attestation layout in an image index.

Pure generators (lamina.domain.attestations, lamina.domain.attestation_index), the platform
selection that must never take an attestation manifest for an image, and the registry
client's reading and writing of the layout against the in-process registry of
``test_oci_client``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from lamina.api.attestation import AttestationStatus
from lamina.api.image import ImageSpec
from lamina.domain.attestation_index import (
    ATTESTATION_MANIFEST,
    IN_TOTO_LAYER,
    MAX_STATEMENTS,
    attestation_descriptors,
    attestation_facts,
    attested_image,
    is_attestation,
    platform_of,
)
from lamina.domain.attestations import (
    COMMIT_BUILD_TYPE,
    COMMIT_BUILDER,
    IN_TOTO_STATEMENT,
    REBASE_BUILD_TYPE,
    REBASE_BUILDER,
    SLSA_PROVENANCE,
    CommitSource,
    RebaseOrigin,
    commit_provenance,
    docker_purl,
    rebase_provenance,
)
from lamina.domain.build_job import (
    CONTEXT_DIGEST_ARG,
    BuildSettings,
    attestation_options,
    buildctl_args,
    context_digest,
)
from lamina.domain.commit_outcome import parse_result
from lamina.domain.rebase import own_layers
from lamina.oci.attach import push_attested
from lamina.oci.client import Manifest, RegistryClient
from lamina.oci.image import select_platform
from lamina.oci.reference import Reference
from tests.unit.test_oci_client import PASSWORD, USER, FakeRegistry, sha

OLD_PARENT = "sha256:" + "a" * 64
NEW_PARENT = "sha256:" + "b" * 64
PREVIOUS = "sha256:" + "c" * 64
REBASED = "sha256:" + "d" * 64
RAN = "sha256:" + "e" * 64
COMMITTED = "sha256:" + "f" * 64
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)


def origin(**changes: Any) -> RebaseOrigin:
    values: dict[str, Any] = {
        "namespace": "team",
        "image": "app",
        "repository": "registry.local/team/app",
        "previous_digest": PREVIOUS,
        "previous_parent_digest": OLD_PARENT,
        "parent_name": "registry.local/team/base",
        "parent_repository": "registry.local/team/base",
        "parent_digest": NEW_PARENT,
        "kept_layers": ["sha256:" + "1" * 64],
        "invocation": "uid-1/abc",
        "started": T0,
        "finished": T1,
    }
    return RebaseOrigin(**{**values, **changes})


def dependencies(statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    return {entry["name"]: entry for entry in found}


def test_a_rebase_has_a_provenance_of_its_own() -> None:
    statement = rebase_provenance(origin(), REBASED, "0.1.0")
    assert statement["_type"] == IN_TOTO_STATEMENT
    assert statement["predicateType"] == SLSA_PROVENANCE
    # About the rebased manifest, by digest.
    assert statement["subject"] == [
        {
            "name": "pkg:docker/registry.local/team/app?platform=linux%2Famd64",
            "digest": {"sha256": "d" * 64},
        }
    ]
    predicate = statement["predicate"]
    assert predicate["buildDefinition"]["buildType"] == REBASE_BUILD_TYPE
    assert predicate["runDetails"]["builder"]["id"] == REBASE_BUILDER
    # The new parent and the previous image are what it was made of.
    deps = dependencies(statement)
    assert deps["parent"]["digest"] == {"sha256": "b" * 64}
    assert deps["parent"]["uri"].startswith("pkg:docker/registry.local/team/base@sha256%3Abbbb")
    assert deps["previous"]["digest"] == {"sha256": "c" * 64}
    assert deps["previous"]["uri"].startswith("pkg:docker/registry.local/team/app@sha256%3Acccc")
    external = predicate["buildDefinition"]["externalParameters"]
    assert external["previous"] == {"digest": PREVIOUS, "parentDigest": OLD_PARENT}
    assert predicate["runDetails"]["metadata"] == {
        "invocationId": "uid-1/abc",
        "startedOn": "2026-12-01T12:00:00Z",
        "finishedOn": "2026-12-01T12:00:05Z",
    }
    # Pure: the same inputs, the same statement.
    assert rebase_provenance(origin(), REBASED, "0.1.0") == statement


def test_statements_refuse_what_is_not_a_sha256_digest() -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        rebase_provenance(origin(parent_digest="sha512:" + "0" * 128), REBASED, "0.1.0")
    with pytest.raises(ValueError, match="not a sha256 digest"):
        rebase_provenance(origin(), "sha256:short", "0.1.0")


SOURCE = CommitSource(
    namespace="team",
    name="snap-1",
    uid="0b9d-uid",
    pod="web-0",
    container="app",
    container_id="containerd://" + "9" * 64,
    node="node-1",
)


def test_a_commit_names_its_pod_container_image_and_commit_and_is_not_reproducible() -> None:
    statement = commit_provenance(
        SOURCE,
        container_image="registry.local/team/web:v1",
        container_image_digest=RAN,
        repository="registry.local/team/snap",
        subject_digest=COMMITTED,
        started=T0,
        finished=T1,
        operator_version="0.1.0",
    )
    assert statement["predicateType"] == SLSA_PROVENANCE
    assert statement["subject"][0]["digest"] == {"sha256": "f" * 64}
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == COMMIT_BUILD_TYPE
    assert statement["predicate"]["runDetails"]["builder"]["id"] == COMMIT_BUILDER
    assert definition["externalParameters"] == {
        "containerCommit": {"namespace": "team", "name": "snap-1", "uid": "0b9d-uid"},
        "source": {
            "namespace": "team",
            "pod": "web-0",
            "container": "app",
            "image": "registry.local/team/web:v1",
            "imageDigest": RAN,
        },
    }
    assert definition["internalParameters"]["reproducible"] is False
    assert definition["internalParameters"]["containerID"] == SOURCE.container_id
    # The image the container ran is the parent, by its repository (the tag dropped).
    assert dependencies(statement)["parent"] == {
        "name": "parent",
        "uri": docker_purl("registry.local/team/web", RAN),
        "digest": {"sha256": "e" * 64},
    }


@pytest.mark.parametrize(
    "document",
    [
        {},
        {**SOURCE.json(), "extra": "x"},
        {**SOURCE.json(), "pod": ""},
        {**SOURCE.json(), "pod": 3},
        {k: v for k, v in SOURCE.json().items() if k != "node"},
    ],
    ids=["empty", "unknown-key", "empty-value", "not-a-string", "missing-key"],
)
def test_a_commit_source_is_read_back_exactly(document: dict[str, Any]) -> None:
    assert CommitSource.from_json(SOURCE.json()) == SOURCE
    with pytest.raises(ValueError, match="commit source"):
        CommitSource.from_json(document)


def _image_descriptor(digest: str) -> dict[str, Any]:
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": 500,
        "platform": {"architecture": "amd64", "os": "linux"},
    }


def test_the_attested_index_is_buildkits_layout() -> None:
    statement = rebase_provenance(origin(), REBASED, "0.1.0")
    attested = attested_image(
        manifest_digest=REBASED,
        manifest_size=500,
        manifest_media_type="application/vnd.oci.image.manifest.v1+json",
        platform={"architecture": "amd64", "os": "linux"},
        statement=statement,
    )
    assert json.loads(attested.statement.data) == statement
    index = json.loads(attested.index)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    image, attestation = index["manifests"]
    assert image == _image_descriptor(REBASED)
    assert attestation["digest"] == attested.attestation_digest
    assert attestation["size"] == len(attested.attestation_manifest)
    assert attestation["annotations"] == {
        "vnd.docker.reference.digest": REBASED,
        "vnd.docker.reference.type": ATTESTATION_MANIFEST,
    }
    assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}
    manifest = json.loads(attested.attestation_manifest)
    assert manifest["config"]["digest"] == sha(attested.attestation_config)
    assert json.loads(attested.attestation_config)["os"] == "unknown"
    assert manifest["layers"] == [
        {
            "mediaType": IN_TOTO_LAYER,
            "digest": attested.statement.digest,
            "size": len(attested.statement.data),
            "annotations": {"in-toto.io/predicate-type": SLSA_PROVENANCE},
        }
    ]
    # Read back as status records it.
    facts = attestation_facts(attested.attestation_digest, manifest, REBASED)
    assert [f.status() for f in facts] == [
        {
            "predicateType": SLSA_PROVENANCE,
            "digest": attested.statement.digest,
            "manifestDigest": attested.attestation_digest,
            "subject": REBASED,
        }
    ]
    AttestationStatus.model_validate(facts[0].status())  # the CRD's schema admits it
    assert attestation_descriptors(index, REBASED) == [attested.attestation_digest]
    # Deterministic bytes: the same statement, the same index digest.
    again = attested_image(
        manifest_digest=REBASED,
        manifest_size=500,
        manifest_media_type="application/vnd.oci.image.manifest.v1+json",
        platform={"architecture": "amd64", "os": "linux"},
        statement=statement,
    )
    assert again.index_digest == attested.index_digest


def buildkit_index(image: str, attestation: str, **claims: Any) -> dict[str, Any]:
    """An index as BuildKit pushes it (the attestation entry first, to be sure order does
    not decide), with whatever the attestation entry claims about its platform."""
    return {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": attestation,
                "size": 800,
                "annotations": {
                    "vnd.docker.reference.digest": image,
                    "vnd.docker.reference.type": "attestation-manifest",
                },
                "platform": claims.get("platform", {"architecture": "unknown", "os": "unknown"}),
            },
            _image_descriptor(image),
        ],
    }


def test_an_attestation_manifest_is_never_a_platform_image() -> None:
    index = buildkit_index(REBASED, PREVIOUS)
    assert select_platform(index)["digest"] == REBASED
    # Even one that claims to be linux/amd64 is not taken for the image.
    hostile = buildkit_index(REBASED, PREVIOUS, platform={"architecture": "amd64", "os": "linux"})
    assert select_platform(hostile)["digest"] == REBASED
    only_attestations = {"manifests": [hostile["manifests"][0]]}
    with pytest.raises(LookupError, match="no linux/amd64 manifest"):
        select_platform(only_attestations)
    assert is_attestation(hostile["manifests"][0])
    assert not is_attestation(hostile["manifests"][1])


def test_hostile_attestation_entries_are_left_out() -> None:
    index = buildkit_index(REBASED, PREVIOUS)
    about_another = buildkit_index(COMMITTED, RAN)["manifests"][0]
    bad_digest = {**index["manifests"][0], "digest": "sha256:../../etc"}
    many = [{**index["manifests"][0], "digest": "sha256:" + f"{n:064x}"} for n in range(40)]
    index["manifests"] += [about_another, bad_digest, "junk", *many]
    found = attestation_descriptors(index, REBASED)
    assert found[0] == PREVIOUS
    assert RAN not in found and "sha256:../../etc" not in found
    assert len(found) == MAX_STATEMENTS
    assert attestation_descriptors({"manifests": "x"}, REBASED) == []
    manifest = {
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": RAN},
            {
                "mediaType": IN_TOTO_LAYER,
                "digest": RAN,
                "annotations": {"in-toto.io/predicate-type": "javascript:alert(1)"},
            },
            {"mediaType": IN_TOTO_LAYER, "digest": "md5:x", "annotations": {}},
            {
                "mediaType": IN_TOTO_LAYER,
                "digest": RAN,
                "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"},
            },
        ]
    }
    facts = attestation_facts(PREVIOUS, manifest, REBASED)
    assert [(f.predicate_type, f.digest) for f in facts] == [("https://spdx.dev/Document", RAN)]


def test_platform_of_reads_only_platform_words() -> None:
    assert platform_of({"architecture": "arm64", "os": "linux", "variant": "v8"}) == {
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
    }
    assert platform_of({"architecture": "../x", "os": 3}) == {
        "architecture": "amd64",
        "os": "linux",
    }


def test_own_layers_are_those_after_the_parents() -> None:
    manifest = {"layers": [{"digest": d} for d in ("p1", "p2", "o1")]}
    assert own_layers(manifest, {"layers": [{"digest": "n1"}, {"digest": "n2"}]}) == ["o1"]


def test_every_build_asks_for_provenance_and_an_sbom_when_a_generator_is_set() -> None:
    bare = BuildSettings(namespace="lamina-system", builder_image="bk", deadline_seconds=60)
    provenance = (
        "--opt=attest:provenance=mode=max,version=v1,"
        "builder-id=https://lamina.dev/builders/buildkit"
    )
    assert attestation_options(bare) == [provenance]
    scanner = BuildSettings(
        namespace="lamina-system",
        builder_image="bk",
        deadline_seconds=60,
        sbom_generator_image="docker.io/docker/buildkit-syft-scanner:stable-1",
    )
    assert attestation_options(scanner) == [
        provenance,
        "--opt=attest:sbom=generator=docker.io/docker/buildkit-syft-scanner:stable-1",
    ]
    for hostile in ("x,mode=min", 'x"', "a b", "x=y"):
        with pytest.raises(ValueError, match="not a reference"):
            attestation_options(
                BuildSettings(
                    namespace="n",
                    builder_image="b",
                    deadline_seconds=60,
                    sbom_generator_image=hostile,
                )
            )


def test_the_context_identity_is_a_build_arg_and_depends_on_every_byte() -> None:
    spec = ImageSpec.model_validate(
        {
            "parent": {"ref": "r/base:1"},
            "build": {"steps": ["COPY a /a"]},
            "output": {"repository": "r/app"},
        }
    )
    files = {"a": "one", "b": "two"}
    digest = context_digest(files)
    assert digest == context_digest(dict(reversed(list(files.items()))))
    assert digest != context_digest({"a": "one", "b": "two!"})
    # Bytes moved between a name and its content make another context.
    assert context_digest({"ab": "c"}) != context_digest({"a": "bc"})
    assert digest == "sha256:" + _expected(files)
    args = buildctl_args(spec, "r/base@" + OLD_PARENT, context=digest)
    assert f"--opt=build-arg:{CONTEXT_DIGEST_ARG}={digest}" in args


def _expected(files: dict[str, str]) -> str:
    sha256 = hashlib.sha256()
    for name in sorted(files):
        for part in (name.encode(), files[name].encode()):
            sha256.update(len(part).to_bytes(8, "big") + part)
    return sha256.hexdigest()


@pytest.fixture
async def registry() -> AsyncIterator[tuple[RegistryClient, Reference]]:
    server = TestServer(FakeRegistry().app(), host="127.0.0.1")
    await server.start_server()
    host = f"127.0.0.1:{server.port}"
    config = {"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(session, insecure=[host], docker_config=config, backoff=0.01)
        yield client, Reference(host, "team/snap", "v1")
    await server.close()


async def test_attach_then_read_back_through_the_registry(
    registry: tuple[RegistryClient, Reference],
) -> None:
    client, ref = registry
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    await client.push_blob(ref, config)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    image = Manifest(body, "application/vnd.oci.image.manifest.v1+json", sha(body))
    await client.put_manifest(ref, image, image.digest)
    statement = commit_provenance(
        SOURCE,
        container_image="registry.local/team/web:v1",
        container_image_digest=RAN,
        repository=ref.name,
        subject_digest=image.digest,
        started=T0,
        finished=T1,
        operator_version="0.1.0",
    )
    index = await push_attested(client, ref, image, platform_of({}), statement)
    await client.put_manifest(ref, index, "v1")
    # What a reader of the tag finds: the image, and the statement about it.
    found, top = await client.resolve_image(ref)
    assert found.digest == image.digest
    assert top is not None and top.digest == index.digest
    facts = await client.attestations(ref, top, found.digest)
    assert [f.predicate_type for f in facts] == [SLSA_PROVENANCE]
    assert facts[0].subject == image.digest
    stored = json.loads(await client.get_blob(ref, facts[0].digest))
    assert stored == statement
    # No index, nothing attached.
    assert await client.attestations(ref, None, image.digest) == []


def test_the_committers_index_digest_is_read_only_when_it_is_a_digest() -> None:
    result = {
        "image": "registry.local/team/snap@" + COMMITTED,
        "digest": COMMITTED,
        "layer": {"digest": RAN},
    }
    assert parse_result(json.dumps(result)) is not None
    assert parse_result(json.dumps(result)).index_digest is None  # type: ignore[union-attr]
    parsed = parse_result(json.dumps({**result, "indexDigest": PREVIOUS}))
    assert parsed is not None and parsed.index_digest == PREVIOUS
    # A committer that says anything else there left no readable result.
    for hostile in ("sha256:../../v2/x", "latest", 7):
        assert parse_result(json.dumps({**result, "indexDigest": hostile})) is None
