"""Lamina's signatures in a real registry, checked by cosign itself (and cosign's by Lamina).

The registry is Debian's docker-registry (e2e/registry); cosign is the binary e2e/setup
builds from its Go module.  No transparency log exists here (no network), so cosign verifies
offline: ``--insecure-ignore-tlog=true``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from lamina.domain.signatures import signature_tag, simple_signing_payload
from lamina.oci.client import Manifest, RegistryClient, sha256_digest
from lamina.oci.cosign_keys import public_key, signing_key
from lamina.oci.mediatypes import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from lamina.oci.reference import parse_reference
from lamina.oci.signatures import (
    PushedSignature,
    SignedAttestations,
    find_signature,
    sign_attestations,
    sign_image,
)
from tests.cosign_tool import cosign, generate_key_pair, verify
from tests.integration.conftest import Registry, push_parent

pytestmark = pytest.mark.integration
PASSWORD = "integration-pw"


def pushed_image(registry: Registry, tmp_path: Path) -> tuple[str, str]:
    """A one-layer image pushed by umoci + skopeo: (repository, digest)."""
    rootfs = tmp_path / f"rootfs-{uuid.uuid4().hex[:6]}"
    rootfs.mkdir()
    (rootfs / "marker").write_text(uuid.uuid4().hex)
    repository = f"{registry.address}/signed/{uuid.uuid4().hex[:8]}"
    push_parent(rootfs, f"{repository}:latest", tmp_path / uuid.uuid4().hex[:6])
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{repository}:latest"],
        capture_output=True,
        text=True,
        check=True,
    )
    return repository, json.loads(inspected.stdout)["Digest"]


def sign(repository: str, digest: str, key_file: Path, password: str) -> PushedSignature:
    key = signing_key(key_file.read_bytes(), password.encode())

    async def go() -> PushedSignature:
        async with aiohttp.ClientSession() as session:
            ref = parse_reference(repository)
            client = RegistryClient(session, insecure=[ref.registry])
            return await sign_image(client, ref, digest, key)

    return asyncio.run(go())


def lamina_verify(image: str, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina.cli.main", "verify", image, "--key", str(key), "--insecure"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cosign_verifies_what_lamina_signed_and_refuses_another_key(
    registry: Registry, tmp_path: Path
) -> None:
    key, pub = generate_key_pair(tmp_path / "ours", PASSWORD)
    _, other_pub = generate_key_pair(tmp_path / "other", "x")
    repository, digest = pushed_image(registry, tmp_path)

    signed = sign(repository, digest, key, PASSWORD)
    assert signed.tag == signature_tag(digest) and not signed.reused

    ok = verify(f"{repository}@{digest}", pub)
    assert ok.returncode == 0, ok.stderr
    claims = json.loads(ok.stdout)
    assert claims[0]["critical"]["image"]["docker-manifest-digest"] == digest
    assert claims[0]["critical"]["identity"]["docker-reference"] == repository
    assert "The signatures were verified against the specified public key" in ok.stderr

    refused = verify(f"{repository}@{digest}", other_pub)
    assert refused.returncode != 0
    assert "no matching signatures" in refused.stderr

    # A tag resolves to the same digest: cosign verifies the tag too.
    assert verify(f"{repository}:latest", pub).returncode == 0


def test_signing_again_pushes_nothing_and_cosigns_own_signatures_are_kept(
    registry: Registry, tmp_path: Path
) -> None:
    key, pub = generate_key_pair(tmp_path / "ours", PASSWORD)
    their_key, their_pub = generate_key_pair(tmp_path / "theirs", "theirs")
    repository, digest = pushed_image(registry, tmp_path)

    # cosign signs first (the old tag layout, offline), then Lamina adds its own signature.
    theirs = cosign(
        "sign",
        "--key",
        str(their_key),
        "--tlog-upload=false",
        "--new-bundle-format=false",
        "--use-signing-config=false",
        "--allow-http-registry=true",
        "--allow-insecure-registry=true",
        f"{repository}@{digest}",
        password="theirs",
        cwd=tmp_path,
    )
    assert theirs.returncode == 0, theirs.stderr
    first = sign(repository, digest, key, PASSWORD)
    again = sign(repository, digest, key, PASSWORD)
    assert again.reused and again.manifest_digest == first.manifest_digest

    assert verify(f"{repository}@{digest}", pub).returncode == 0
    assert verify(f"{repository}@{digest}", their_pub).returncode == 0  # theirs is kept

    # Lamina's verifier reads cosign's signature as cosign does.
    found = lamina_verify(f"{repository}@{digest}", their_pub)
    assert found.returncode == 0, found.stdout
    assert "Verified OK" in found.stdout


def test_our_payload_is_cosigns_payload(registry: Registry, tmp_path: Path) -> None:
    repository, digest = pushed_image(registry, tmp_path)
    generated = cosign(
        "generate",
        "--allow-http-registry=true",
        "--allow-insecure-registry=true",
        f"{repository}@{digest}",
        cwd=tmp_path,
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.strip().encode() == simple_signing_payload(repository, digest)


def test_lamina_verify_says_what_it_found_both_ways(registry: Registry, tmp_path: Path) -> None:
    key, pub = generate_key_pair(tmp_path / "ours", PASSWORD)
    _, other_pub = generate_key_pair(tmp_path / "other", "x")
    repository, digest = pushed_image(registry, tmp_path)

    unsigned = lamina_verify(f"{repository}@{digest}", pub)
    assert unsigned.returncode == 1
    assert f"NOT VERIFIED: {repository}@{digest} has no signature" in unsigned.stdout

    sign(repository, digest, key, PASSWORD)
    ok = lamina_verify(f"{repository}:latest", pub)
    assert ok.returncode == 0, ok.stdout
    assert f"Verified OK: {repository}@{digest}" in ok.stdout
    assert signing_key(key.read_bytes(), PASSWORD.encode()).fingerprint in ok.stdout

    wrong = lamina_verify(f"{repository}@{digest}", other_pub)
    assert wrong.returncode == 1
    assert "none of the 1 signature(s)" in wrong.stdout

    async def found_with(pem: bytes) -> int:
        async with aiohttp.ClientSession() as session:
            ref = parse_reference(repository)
            client = RegistryClient(session, insecure=[ref.registry])
            return (await find_signature(client, ref, digest, public_key(pem))).verified

    assert asyncio.run(found_with(pub.read_bytes())) == 1
    assert asyncio.run(found_with(other_pub.read_bytes())) == 0


def raw(ref: str, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", *extra, f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_our_signature_image_is_laid_out_as_cosigns(registry: Registry, tmp_path: Path) -> None:
    key, _ = generate_key_pair(tmp_path / "k", PASSWORD)
    theirs_repo, theirs_digest = pushed_image(registry, tmp_path)
    ours_repo, ours_digest = pushed_image(registry, tmp_path)
    signed = cosign(
        "sign", "--key", str(key), "--tlog-upload=false", "--new-bundle-format=false",
        "--use-signing-config=false", "--allow-http-registry=true",
        "--allow-insecure-registry=true", f"{theirs_repo}@{theirs_digest}",
        password=PASSWORD, cwd=tmp_path,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    sign(ours_repo, ours_digest, key, PASSWORD)

    def shape(repository: str, digest: str) -> tuple[object, object]:
        tag = f"{repository}:{signature_tag(digest)}"
        text = json.dumps([raw(tag), raw(tag, "--config")])
        # Digests and signatures differ by nature (another payload, a random ECDSA nonce).
        text = re.sub(r"sha256:[0-9a-f]{64}", "sha256:D", text)
        text = re.sub(r'("dev.cosignproject.cosign/signature": )"[^"]+"', r'\1"SIG"', text)
        manifest, config = json.loads(text)
        return manifest, config

    theirs, ours = shape(theirs_repo, theirs_digest), shape(ours_repo, ours_digest)
    assert ours == theirs


PROVENANCE = "https://slsa.dev/provenance/v1"


async def push_attested_index(repository: str, digest: str) -> str:
    """An index in BuildKit's layout: the image and an attestation manifest whose in-toto
    statement (SLSA v1 provenance) is about it; returns the index digest."""
    ref = parse_reference(repository)
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": repository, "digest": {"sha256": digest.split(":")[1]}}],
            "predicateType": PROVENANCE,
            "predicate": {
                "buildDefinition": {
                    "buildType": "https://lamina.dev/test",
                    "externalParameters": {},
                },
                "runDetails": {"builder": {"id": "https://lamina.dev/test"}},
            },
        }
    ).encode()
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(session, insecure=[ref.registry])
        image = await client.get_manifest(ref, digest)
        statement_digest = await client.push_blob(ref, statement)
        config = json.dumps(
            {"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {"type": "layers"}}
        ).encode()
        config_digest = await client.push_blob(ref, config)
        attestation = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [
                    {
                        "mediaType": "application/vnd.in-toto+json",
                        "digest": statement_digest,
                        "size": len(statement),
                        "annotations": {"in-toto.io/predicate-type": PROVENANCE},
                    }
                ],
            }
        ).encode()
        attestation_digest = sha256_digest(attestation)
        await client.put_manifest(
            ref, Manifest(attestation, OCI_MANIFEST, attestation_digest), attestation_digest
        )
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": image.media_type,
                        "digest": digest,
                        "size": len(image.data),
                        "platform": {"os": "linux", "architecture": "amd64"},
                    },
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": attestation_digest,
                        "size": len(attestation),
                        "annotations": {
                            "vnd.docker.reference.type": "attestation-manifest",
                            "vnd.docker.reference.digest": digest,
                        },
                        "platform": {"os": "unknown", "architecture": "unknown"},
                    },
                ],
            }
        ).encode()
        return await client.put_manifest(
            ref, Manifest(index, OCI_INDEX, sha256_digest(index)), "attested"
        )


def test_attestations_in_buildkits_layout_are_signed_for_cosign_verify_attestation(
    registry: Registry, tmp_path: Path
) -> None:
    key_file, pub = generate_key_pair(tmp_path / "ours", PASSWORD)
    _, other_pub = generate_key_pair(tmp_path / "other", "x")
    repository, digest = pushed_image(registry, tmp_path)
    index = asyncio.run(push_attested_index(repository, digest))
    key = signing_key(key_file.read_bytes(), PASSWORD.encode())

    async def sign_all() -> list[SignedAttestations]:
        async with aiohttp.ClientSession() as session:
            ref = parse_reference(repository)
            client = RegistryClient(session, insecure=[ref.registry])
            await sign_image(client, ref, index, key)
            return await sign_attestations(client, ref, index, key)

    first = asyncio.run(sign_all())
    assert [(a.subject_digest, a.tag, a.predicate_types) for a in first] == [
        (digest, digest.replace(":", "-") + ".att", (PROVENANCE,))
    ]
    assert asyncio.run(sign_all()) == first  # signing again pushes nothing new

    def verify_attestation(public: Path) -> subprocess.CompletedProcess[str]:
        return cosign(
            "verify-attestation", "--key", str(public), "--type", "slsaprovenance1",
            "--insecure-ignore-tlog=true", "--allow-http-registry=true",
            "--allow-insecure-registry=true", f"{repository}@{digest}", cwd=tmp_path,
        )  # fmt: skip

    ok = verify_attestation(pub)
    assert ok.returncode == 0, ok.stderr
    envelope = json.loads(ok.stdout.splitlines()[0])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == PROVENANCE
    assert statement["subject"][0]["digest"]["sha256"] == digest.split(":")[1]
    assert verify_attestation(other_pub).returncode != 0
    assert verify(f"{repository}@{index}", pub).returncode == 0  # the index itself is signed
