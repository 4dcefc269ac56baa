"""The cosign signature layout, byte for byte, and what a hostile signature tag cannot do."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from lamina.domain.signatures import (
    MAX_SIGNATURES,
    OPERATOR_DEFAULT,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    AttestationRef,
    KeySource,
    attestation_layer,
    attestation_layers,
    attestation_refs,
    attestation_tag,
    dsse_envelope,
    envelope_parts,
    key_source,
    new_layer,
    pae,
    signature_image,
    signature_layers,
    signature_tag,
    signed_digest,
    simple_signing_payload,
    statement_about,
    with_signature,
)

DIGEST = "sha256:" + "ab" * 32


def test_the_signature_tag_is_cosigns() -> None:
    assert signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"


def test_the_payload_is_the_exact_json_cosign_signs() -> None:
    # `cosign generate REGISTRY/REPO@DIGEST` prints these bytes (checked against the binary in
    # tests/api/test_signing_registry.py::test_our_payload_is_cosigns_payload).
    assert simple_signing_payload("10.0.0.1:5000/team/app", DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"10.0.0.1:5000/team/app"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    assert signed_digest(simple_signing_payload("r/x", DIGEST)) == DIGEST


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[]",
        b'{"critical": 1}',
        b'{"critical":{"type":"something else","image":{"docker-manifest-digest":"x"}}}',
        b'{"critical":{"type":"cosign container image signature","image":{}}}',
        b'{"critical":{"type":"cosign container image signature",'
        b'"image":{"docker-manifest-digest":7}}}',
        b"\xff\xfe",
    ],
)
def test_a_payload_that_is_not_a_signature_claims_nothing(payload: bytes) -> None:
    assert signed_digest(payload) is None


def test_the_signature_image_is_consistent_and_oci() -> None:
    payload = simple_signing_payload("r/x", DIGEST)
    layer = new_layer(payload, b"\x30\x06signature")
    manifest_bytes, config_bytes = signature_image([layer])
    manifest, config = json.loads(manifest_bytes), json.loads(config_bytes)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "size": len(config_bytes),
        "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
    }
    assert manifest["layers"] == [
        {
            "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
            "size": len(payload),
            "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
            "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(b"\x30\x06signature").decode()},
        }
    ]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.digest]}
    assert len(config["history"]) == 1


def _layer(**overrides: object) -> dict[str, object]:
    layer: dict[str, object] = {
        "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
        "size": 200,
        "digest": "sha256:" + "cd" * 32,
        "annotations": {SIGNATURE_ANNOTATION: "TUVVQ0lR"},
    }
    layer.update(overrides)
    return layer


@pytest.mark.parametrize(
    "layer",
    [
        "not a layer",
        _layer(mediaType="application/vnd.oci.image.layer.v1.tar+gzip"),
        _layer(digest="sha256:../../etc/passwd"),
        _layer(digest="sha512:" + "cd" * 64),
        _layer(digest="sha256:" + "CD" * 32),
        _layer(size=-1),
        _layer(size=0),
        _layer(size=10**12),
        _layer(size="200"),
        _layer(size=True),
        _layer(annotations=None),
        _layer(annotations={SIGNATURE_ANNOTATION: 7}),
        _layer(annotations={"other": "x"}),
        _layer(annotations={SIGNATURE_ANNOTATION: ""}),
    ],
)
def test_malformed_signature_layers_are_dropped(layer: object) -> None:
    assert signature_layers({"layers": [layer, _layer()]}) == signature_layers(
        {"layers": [_layer()]}
    )
    assert len(signature_layers({"layers": [layer]})) == 0


@pytest.mark.parametrize("manifest", [{}, {"layers": None}, {"layers": "x"}, {"layers": {}}])
def test_a_manifest_without_layers_holds_no_signature(manifest: dict[str, object]) -> None:
    assert signature_layers(manifest) == []


def test_other_signatures_are_kept_up_to_a_bound_and_ours_comes_last() -> None:
    others = [new_layer(f"payload {i}".encode(), b"sig") for i in range(MAX_SIGNATURES + 10)]
    ours = new_layer(b"ours", b"oursig")
    merged = with_signature(others, ours)
    assert len(merged) == MAX_SIGNATURES
    assert merged[-1] == ours
    assert merged[:-1] == others[-(MAX_SIGNATURES - 1) :]
    assert with_signature([ours], ours) == [ours]  # never twice


def test_the_key_comes_from_the_objects_namespace_or_the_operators_default() -> None:
    assert key_source("team", "k", operator_namespace="ops", default_secret="d") == KeySource(
        "team", "k", "k"
    )
    assert key_source("team", None, operator_namespace="ops", default_secret="d") == KeySource(
        "ops", "d", OPERATOR_DEFAULT
    )
    assert key_source("team", None, operator_namespace="ops", default_secret=None) is None
    assert "team" in KeySource("team", "k", "k").describe()
    assert "default" in KeySource("ops", "d", OPERATOR_DEFAULT).describe()


def test_pae_is_dsses_encoding() -> None:
    # The DSSE specification's own example.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_an_envelope_round_trips_and_hostile_ones_are_refused() -> None:
    envelope = dsse_envelope(b'{"subject":[]}', b"sig")
    assert envelope_parts(envelope) == (b'{"subject":[]}', [b"sig"])
    assert attestation_tag(DIGEST) == "sha256-" + "ab" * 32 + ".att"
    for hostile in (
        b"",
        b"[]",
        b'{"payloadType":"text/plain","payload":"","signatures":[]}',
        b'{"payloadType":"application/vnd.in-toto+json","payload":"%%","signatures":[]}',
        b'{"payloadType":"application/vnd.in-toto+json","payload":"","signatures":[{}]}',
        b'{"payloadType":"application/vnd.in-toto+json","payload":"","signatures":7}',
    ):
        assert envelope_parts(hostile) is None, hostile


def test_statements_are_about_a_digest_only_when_a_subject_names_it() -> None:
    hex_digest = DIGEST.split(":")[1]
    about = json.dumps({"subject": [{"digest": {"sha256": hex_digest}}]}).encode()
    assert statement_about(about, DIGEST)
    for other in (
        json.dumps({"subject": [{"digest": {"sha256": "00" * 32}}]}).encode(),
        json.dumps({"subject": [{"digest": {"sha512": hex_digest}}]}).encode(),
        json.dumps({"subject": "x"}).encode(),
        b"not json",
        b"[]",
    ):
        assert not statement_about(other, DIGEST), other


IMAGE = "sha256:" + "11" * 32
ATTESTATION = "sha256:" + "22" * 32


def _index(*entries: object) -> dict[str, object]:
    return {"manifests": [{"digest": IMAGE}, *entries]}


def _attestation(**annotations: object) -> dict[str, object]:
    return {
        "digest": ATTESTATION,
        "annotations": {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": IMAGE,
            **annotations,
        },
    }


def test_attestation_manifests_are_found_in_buildkits_layout_and_nothing_else() -> None:
    assert attestation_refs(_index(_attestation())) == [AttestationRef(ATTESTATION, IMAGE)]
    for hostile in (
        _attestation(**{"vnd.docker.reference.type": "something"}),
        _attestation(**{"vnd.docker.reference.digest": "sha256:" + "33" * 32}),  # not in index
        _attestation(**{"vnd.docker.reference.digest": "../../x"}),
        {"digest": "sha256:../x", "annotations": _attestation()["annotations"]},
        {"digest": ATTESTATION, "annotations": "x"},
        "not an entry",
    ):
        assert attestation_refs(_index(hostile)) == [], hostile
    assert attestation_refs({"manifests": "x"}) == []
    many = _index(*[_attestation() for _ in range(MAX_SIGNATURES + 5)])
    assert len(attestation_refs(many)) == MAX_SIGNATURES


def test_attestation_layers_are_dsse_and_bounded() -> None:
    layer = attestation_layer(b"envelope", "https://slsa.dev/provenance/v1")
    descriptor = layer.descriptor()
    assert descriptor["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert descriptor["annotations"] == {
        SIGNATURE_ANNOTATION: "",
        "predicateType": "https://slsa.dev/provenance/v1",
    }
    assert attestation_layers({"layers": [descriptor, _layer()]}) == [layer]
    assert attestation_layers({"layers": [{**descriptor, "size": 10**12}]}) == []


def test_only_a_statement_about_the_image_alone_is_signed() -> None:
    """A statement naming the image among other subjects would vouch for those too, with
    the operator's key: refused, saying why; one about another image is just not ours; the
    same digest under several names (BuildKit: one subject per tag) is the image alone."""
    from lamina.domain.signatures import StatementRefused  # noqa: PLC0415

    mine, other = DIGEST.split(":")[1], "00" * 32

    def statement(*subjects: object) -> bytes:
        return json.dumps(
            {"_type": "https://in-toto.io/Statement/v1", "subject": [
                {"name": f"pkg:docker/x@{n}", "digest": digest} for n, digest in enumerate(subjects)
            ]}
        ).encode()  # fmt: skip

    assert statement_about(statement({"sha256": mine}), DIGEST)
    assert statement_about(statement({"sha256": mine}, {"sha256": mine}), DIGEST)
    assert not statement_about(statement({"sha256": other}), DIGEST)
    assert not statement_about(statement({"sha256": other}, {"sha256": "11" * 32}), DIGEST)
    for refused, said in (
        (statement({"sha256": mine}, {"sha256": other}), "names 2 subjects, 1 of them"),
        (statement({"sha256": other}, {"sha256": mine}), "names 2 subjects, 1 of them"),
        (statement({"sha256": mine, "sha512": "ab" * 64}), "names 1 subjects, 1 of them"),
        (statement({"sha256": mine}, "not-a-digest"), "names 2 subjects, 1 of them"),
        # A malformed second subject does not hide the first from the rule.
        (
            json.dumps({"subject": [{"digest": {"sha256": mine}}, {"name": "y"}]}).encode(),
            "names 2 subjects",
        ),
        (json.dumps({"subject": [{"digest": {"sha256": mine}}, "x"]}).encode(), "names 2"),
    ):
        with pytest.raises(StatementRefused, match=said) as caught:
            statement_about(refused, DIGEST)
        assert "only a statement about this image alone is signed" in str(caught.value)
        assert other not in str(caught.value)  # the other subjects are not echoed
