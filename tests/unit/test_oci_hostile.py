"""The real registry client against a hostile registry (issue 8, classes 3 and 5).

Each test makes the server misbehave in one way and asserts what the client refused (the
typed error and the message a user would see), that nothing leaked (the server's request log
shows no credentials where they must not go) and that no body reached a message.  The servers
are real sockets on 127.0.0.1 (see :mod:`tests.hostile_registry`); two of them speak TLS with
a throwaway CA, so "another origin" and "a downgrade to plain HTTP" are real.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest

from lamina.oci.client import RegistryClient
from lamina.oci.errors import (
    DigestMismatch,
    ManifestTooLarge,
    RedirectRefused,
    RegistryError,
    RegistryResponseInvalid,
    RegistryUnavailable,
    ResponseTooLarge,
    TokenRealmRefused,
)
from lamina.oci.reference import Reference
from tests.hostile_registry import (
    OCI_MANIFEST,
    SECRET_BODY,
    Hostiles,
    MiB,
    Reply,
    bearer_challenge,
    endless,
    hostile,
    hostile_ca,
    hostile_thread,
    json_error,
    manifest,
    redirect,
    sha,
    small_image_manifest,
)

__all__ = ["hostile", "hostile_ca", "hostile_thread"]

USER, PASSWORD, TOKEN = "alice", "pa55word", "tok-abc.def"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TWO_GIB = 2 << 30
MANIFEST_PATH = r"/v2/team/app/manifests/v1"


@pytest.fixture
async def client(hostile: Hostiles) -> AsyncIterator[RegistryClient]:
    auths = {
        server.address: {"username": USER, "password": PASSWORD}
        for server in (hostile.registry, hostile.plain)
    }
    connector = aiohttp.TCPConnector(ssl=hostile.client_tls())
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=20)
    ) as session:
        yield RegistryClient(
            session,
            insecure=[hostile.plain.address],
            docker_config={"auths": auths},
            retries=0,
            backoff=0.01,
        )


def ref_on(server_address: str) -> Reference:
    return Reference(server_address, "team/app", "v1")


def assert_no_body_in(message: str) -> None:
    assert "SECRET" not in message
    assert "hunter2" not in message
    assert "aaaa" not in message


def sent_by(hostile: Hostiles) -> int:
    return max(hostile.log.sent.values(), default=0)


# -- class 3: bounded reads -----------------------------------------------------------------


async def test_a_2gib_manifest_is_cut_off_at_4mib(
    hostile: Hostiles, client: RegistryClient
) -> None:
    # No Content-Length: the body runs until the connection closes, 2 GiB of it.
    hostile.registry.on(
        "GET", MANIFEST_PATH, Reply(200, {"Content-Type": OCI_MANIFEST}, endless(TWO_GIB))
    )
    tracemalloc.start()
    try:
        with pytest.raises(ManifestTooLarge) as caught:
            await client.get_manifest(ref_on(hostile.registry.address))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message == (
        f"registry {hostile.registry.address} served a manifest for team/app:v1 larger than "
        "the 4 MiB (4194304 bytes) limit of the distribution spec"
    )
    assert caught.value.reason == "ManifestTooLarge"
    assert_no_body_in(message)
    # The read stopped at the limit: the server got rid of a few MiB (socket buffers), not 2 GiB,
    # and the process never held much more than the limit.
    assert sent_by(hostile) < 64 * MiB
    assert peak < 24 * MiB


async def test_an_announced_oversized_manifest_is_refused_before_reading(
    hostile: Hostiles, client: RegistryClient
) -> None:
    hostile.registry.on(
        "GET",
        MANIFEST_PATH,
        Reply(
            200, {"Content-Type": OCI_MANIFEST, "Content-Length": str(TWO_GIB)}, endless(TWO_GIB)
        ),
    )
    with pytest.raises(ManifestTooLarge, match=r"4 MiB"):
        await client.get_manifest(ref_on(hostile.registry.address))
    assert sent_by(hostile) < 64 * MiB


async def test_a_content_length_that_lies_small_does_not_get_a_manifest_through(
    hostile: Hostiles, client: RegistryClient
) -> None:
    # Says 20 bytes, sends a valid manifest and 4 MiB more: the 20 bytes are not a manifest,
    # and what follows them is not HTTP (aiohttp may see either first).
    body = small_image_manifest()
    hostile.registry.on(
        "GET",
        MANIFEST_PATH,
        Reply(200, {"Content-Type": OCI_MANIFEST, "Content-Length": "20"}, [body, b" " * 4 * MiB]),
    )
    with pytest.raises(
        RegistryResponseInvalid, match=r"not a JSON object|not valid HTTP"
    ) as caught:
        await client.get_manifest(ref_on(hostile.registry.address))
    assert_no_body_in(str(caught.value))


async def test_a_content_length_that_lies_large_is_a_cut_short_answer(
    hostile: Hostiles, client: RegistryClient
) -> None:
    hostile.registry.on(
        "GET",
        MANIFEST_PATH,
        Reply(200, {"Content-Type": OCI_MANIFEST, "Content-Length": "1000"}, [b'{"a":1}']),
    )
    with pytest.raises(RegistryResponseInvalid, match="cut short or malformed"):
        await client.get_manifest(ref_on(hostile.registry.address))


async def test_a_huge_token_answer_is_cut_off_at_1mib(
    hostile: Hostiles, client: RegistryClient
) -> None:
    realm = f"{hostile.registry.origin}/token"
    hostile.registry.on("GET", MANIFEST_PATH, bearer_challenge(realm))
    hostile.registry.on(
        "GET", "/token", Reply(200, {"Content-Type": "application/json"}, endless(TWO_GIB))
    )
    with pytest.raises(ResponseTooLarge) as caught:
        await client.get_manifest(ref_on(hostile.registry.address))
    assert str(caught.value) == (
        f"{hostile.registry.address}: the answer to the token request to 127.0.0.1 is larger "
        "than the 1 MiB (1048576 bytes) limit for token answers"
    )
    assert sent_by(hostile) < 64 * MiB


async def test_a_token_that_would_inject_a_header_is_refused(
    hostile: Hostiles, client: RegistryClient
) -> None:
    realm = f"{hostile.registry.origin}/token"
    hostile.registry.on("GET", MANIFEST_PATH, bearer_challenge(realm))
    hostile.registry.on(
        "GET", "/token", Reply(200, {}, json.dumps({"token": "x\r\nX-Evil: 1"}).encode())
    )
    with pytest.raises(RegistryResponseInvalid, match="without a usable token"):
        await client.get_manifest(ref_on(hostile.registry.address))


async def test_a_huge_config_is_cut_off_at_8mib(hostile: Hostiles, client: RegistryClient) -> None:
    digest = sha(b"config")
    hostile.registry.on("GET", f"/v2/team/app/blobs/{digest}", Reply(200, {}, endless(TWO_GIB)))
    with pytest.raises(ResponseTooLarge, match=r"larger than the 8 MiB \(8388608 bytes\) limit"):
        await client.get_blob(ref_on(hostile.registry.address), digest)
    assert sent_by(hostile) < 64 * MiB


async def test_a_streamed_blob_is_cut_off_at_its_descriptor_size(
    hostile: Hostiles, client: RegistryClient
) -> None:
    digest = sha(b"layer")
    hostile.registry.on("GET", f"/v2/team/app/blobs/{digest}", Reply(200, {}, endless(TWO_GIB)))
    received = 0
    with pytest.raises(DigestMismatch, match="longer than its 5 bytes"):
        async for piece in client.stream_blob(ref_on(hostile.registry.address), digest, size=5):
            received += len(piece)
    assert received <= 5
    assert sent_by(hostile) < 64 * MiB


@pytest.mark.parametrize(
    ("content_type", "body", "why"),
    [
        ("text/html", small_image_manifest(), "not one of the manifest media types"),
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            small_image_manifest(),
            "not one of the manifest media types",
        ),
        (OCI_MANIFEST, b"<html>" + SECRET_BODY.encode(), "not a JSON object"),
        (OCI_MANIFEST, b"[1, 2]", "not a JSON object"),
        ("application/json", b'{"schemaVersion": 2}', "not one of the manifest media types"),
    ],
)
async def test_a_manifest_of_the_wrong_kind_is_refused(
    hostile: Hostiles, client: RegistryClient, content_type: str, body: bytes, why: str
) -> None:
    hostile.registry.on("GET", MANIFEST_PATH, Reply(200, {"Content-Type": content_type}, body))
    with pytest.raises(RegistryResponseInvalid, match=why) as caught:
        await client.get_manifest(ref_on(hostile.registry.address))
    assert caught.value.reason == "RegistryResponseInvalid"
    assert_no_body_in(str(caught.value))


async def test_an_index_digest_that_is_a_path_is_refused(
    hostile: Hostiles, client: RegistryClient
) -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "../../../etc",
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    hostile.registry.on("GET", MANIFEST_PATH, manifest(index, index["mediaType"]))  # type: ignore[arg-type]
    with pytest.raises(RegistryResponseInvalid, match="no valid sha256 digest"):
        await client.resolve_image(ref_on(hostile.registry.address))
    assert [r.path for r in hostile.registry.requests()] == [MANIFEST_PATH]


# -- class 5: where credentials go ----------------------------------------------------------


async def test_basic_credentials_go_to_the_registry_and_its_https_realm_only(
    hostile: Hostiles, client: RegistryClient
) -> None:
    """The realm is on another origin, over https (as Docker Hub's is): it gets them."""
    body = small_image_manifest()
    hostile.registry.on(
        "GET",
        MANIFEST_PATH,
        lambda r: (
            manifest(body, OCI_MANIFEST)
            if r.authorization == f"Bearer {TOKEN}"
            else bearer_challenge(f"{hostile.other.origin}/token")
        ),
    )
    hostile.other.on("GET", "/token", Reply(200, {}, json.dumps({"token": TOKEN}).encode()))
    got = await client.get_manifest(ref_on(hostile.registry.address))
    assert got.digest == sha(body)
    token_requests = [r for r in hostile.other.requests() if r.path == "/token"]
    assert [r.authorization for r in token_requests] == [BASIC]
    assert "scope=repository:team/app:pull" in token_requests[0].query
    # The bearer token went to the registry only.
    assert all(r.authorization != f"Bearer {TOKEN}" for r in hostile.other.requests())


async def test_a_realm_redirect_to_another_origin_carries_no_credentials(
    hostile: Hostiles, client: RegistryClient
) -> None:
    body = small_image_manifest()
    hostile.registry.on(
        "GET",
        MANIFEST_PATH,
        lambda r: (
            manifest(body, OCI_MANIFEST)
            if r.authorization == f"Bearer {TOKEN}"
            else bearer_challenge(f"{hostile.registry.origin}/token")
        ),
    )
    hostile.registry.on("GET", "/token", redirect(f"{hostile.other.origin}/steal"))
    hostile.other.on("GET", "/steal", Reply(200, {}, json.dumps({"token": TOKEN}).encode()))
    await client.get_manifest(ref_on(hostile.registry.address))
    (stolen,) = hostile.other.requests()
    assert stolen.path == "/steal"
    assert stolen.authorization is None
    assert [r.authorization for r in hostile.registry.requests() if r.path == "/token"] == [BASIC]


async def test_a_challenge_from_another_origin_after_a_redirect_is_not_answered(
    hostile: Hostiles, client: RegistryClient
) -> None:
    hostile.registry.on("GET", MANIFEST_PATH, redirect(f"{hostile.other.origin}/v2/evil"))
    hostile.other.on("*", "/v2/evil", bearer_challenge(f"{hostile.other.origin}/token"))
    hostile.other.on("GET", "/token", Reply(200, {}, json.dumps({"token": TOKEN}).encode()))
    with pytest.raises(TokenRealmRefused) as caught:
        await client.get_manifest(ref_on(hostile.registry.address))
    assert str(caught.value) == (
        f"{hostile.registry.address}: GET manifest team/app:v1 was redirected to another "
        "origin (127.0.0.1) that asks for credentials; credentials are only sent to "
        f"{hostile.registry.address} and its token realm"
    )
    assert [r.path for r in hostile.other.requests()] == ["/v2/evil"]
    assert all(r.authorization is None for r in hostile.other.requests())


async def test_a_plain_http_realm_for_a_tls_registry_is_refused(
    hostile: Hostiles, client: RegistryClient
) -> None:
    hostile.registry.on("GET", MANIFEST_PATH, bearer_challenge(f"{hostile.plain.origin}/token"))
    with pytest.raises(TokenRealmRefused) as caught:
        await client.get_manifest(ref_on(hostile.registry.address))
    assert str(caught.value) == (
        f"{hostile.registry.address} names a plain-HTTP token realm (127.0.0.1); refused: only "
        "a registry configured insecure may use one, and no credentials are sent over plain "
        "HTTP for a TLS registry"
    )
    assert hostile.plain.requests() == []


async def test_a_registry_configured_insecure_may_use_a_plain_http_realm(
    hostile: Hostiles, client: RegistryClient
) -> None:
    body = small_image_manifest()
    hostile.plain.on(
        "GET",
        MANIFEST_PATH,
        lambda r: (
            manifest(body, OCI_MANIFEST)
            if r.authorization == f"Bearer {TOKEN}"
            else bearer_challenge(f"{hostile.plain.origin}/token")
        ),
    )
    hostile.plain.on("GET", "/token", Reply(200, {}, json.dumps({"token": TOKEN}).encode()))
    assert (await client.get_manifest(ref_on(hostile.plain.address))).digest == sha(body)
    assert [r.authorization for r in hostile.plain.requests() if r.path == "/token"] == [BASIC]


async def test_a_redirect_from_https_to_http_is_refused(
    hostile: Hostiles, client: RegistryClient
) -> None:
    hostile.registry.on("GET", MANIFEST_PATH, redirect(f"{hostile.plain.origin}{MANIFEST_PATH}"))
    with pytest.raises(RedirectRefused) as caught:
        await client.get_manifest(ref_on(hostile.registry.address))
    assert str(caught.value) == (
        f"{hostile.registry.address}: the manifest team/app:v1 was redirected from https to "
        "plain http (127.0.0.1); refused"
    )
    assert caught.value.reason == "RegistryRedirectRefused"
    assert hostile.plain.requests() == []


async def test_a_realm_redirect_from_https_to_http_is_refused(
    hostile: Hostiles, client: RegistryClient
) -> None:
    hostile.registry.on("GET", MANIFEST_PATH, bearer_challenge(f"{hostile.registry.origin}/token"))
    hostile.registry.on("GET", "/token", redirect(f"{hostile.plain.origin}/token"))
    with pytest.raises(RedirectRefused, match="from https to plain http"):
        await client.get_manifest(ref_on(hostile.registry.address))
    assert hostile.plain.requests() == []


async def test_a_blob_redirect_to_another_origin_gets_no_bearer_token(
    hostile: Hostiles, client: RegistryClient
) -> None:
    """What registries backed by object storage do: fine, but the token stays home."""
    data = b"config bytes"
    digest = sha(data)
    path = f"/v2/team/app/blobs/{digest}"
    hostile.registry.on(
        "GET",
        path,
        lambda r: (
            redirect(f"{hostile.other.origin}/cdn/{digest}")
            if r.authorization == f"Bearer {TOKEN}"
            else bearer_challenge(f"{hostile.registry.origin}/token")
        ),
    )
    hostile.registry.on("GET", "/token", Reply(200, {}, json.dumps({"token": TOKEN}).encode()))
    hostile.other.on("GET", f"/cdn/{digest}", Reply(200, {}, data))
    assert await client.get_blob(ref_on(hostile.registry.address), digest) == data
    (cdn,) = hostile.other.requests()
    assert cdn.authorization is None
    assert [r.authorization for r in hostile.registry.requests() if r.path == path] == [
        None,
        f"Bearer {TOKEN}",
    ]


async def test_an_upload_location_on_another_origin_gets_no_bearer_token(
    hostile: Hostiles, client: RegistryClient
) -> None:
    def gated(reply: Reply) -> object:
        return lambda r: (
            reply
            if r.authorization == f"Bearer {TOKEN}"
            else bearer_challenge(f"{hostile.registry.origin}/token")
        )

    hostile.registry.on("GET", "/token", Reply(200, {}, json.dumps({"token": TOKEN}).encode()))
    hostile.registry.on(
        "POST",
        "/v2/team/app/blobs/uploads/",
        gated(Reply(202, {"Location": f"{hostile.other.origin}/upload/1?state=x"})),  # type: ignore[arg-type]
    )
    hostile.other.on("PUT", "/upload/1", Reply(201))
    hostile.other.on("DELETE", "/upload/1", Reply(204))

    async def once() -> AsyncIterator[bytes]:
        yield b"layer"

    await client.upload_blob(ref_on(hostile.registry.address), once(), lambda: sha(b"layer"))
    (put,) = hostile.other.requests()
    assert put.method == "PUT" and put.body == b"layer"
    assert put.authorization is None
    assert "digest=sha256" in put.query


async def test_an_upload_location_that_downgrades_to_http_is_refused(
    hostile: Hostiles, client: RegistryClient
) -> None:
    hostile.registry.on(
        "POST", "/v2/team/app/blobs/uploads/", Reply(202, {"Location": f"{hostile.plain.origin}/u"})
    )

    async def once() -> AsyncIterator[bytes]:
        yield b"layer"

    with pytest.raises(RedirectRefused, match="upload to team/app was redirected from https"):
        await client.upload_blob(ref_on(hostile.registry.address), once(), lambda: sha(b"layer"))
    assert hostile.plain.requests() == []


# -- class 5: no response body in any message -----------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            json_error(403, "DENIED", SECRET_BODY),
            "HTTP 403 Forbidden (DENIED)",
        ),
        (
            Reply(500, {"Content-Type": "text/plain"}, SECRET_BODY.encode(), reason=SECRET_BODY),
            "HTTP 500 Internal Server Error",
        ),
        (
            Reply(
                400,
                {},
                json.dumps(
                    {"errors": [{"code": SECRET_BODY, "message": "x"}, {"code": "NAME_INVALID"}]}
                ).encode(),
            ),
            "HTTP 400 Bad Request (NAME_INVALID)",
        ),
        (Reply(404, {}, endless(TWO_GIB, prefix=b"SECRET")), "HTTP 404 Not Found"),
    ],
)
async def test_error_messages_carry_status_and_codes_never_the_body(
    hostile: Hostiles, client: RegistryClient, reply: Reply, expected: str
) -> None:
    hostile.registry.on("GET", MANIFEST_PATH, reply)
    with pytest.raises(RegistryError) as caught:
        await client.get_manifest(ref_on(hostile.registry.address))
    assert str(caught.value) == (
        f"{hostile.registry.address} refused GET manifest team/app:v1: {expected}"
    )
    assert_no_body_in(str(caught.value))


async def test_a_failed_token_request_names_status_and_code_only(
    hostile: Hostiles, client: RegistryClient
) -> None:
    hostile.registry.on("GET", MANIFEST_PATH, bearer_challenge(f"{hostile.registry.origin}/token"))
    hostile.registry.on("GET", "/token", json_error(401, "UNAUTHORIZED", SECRET_BODY))
    with pytest.raises(RegistryError) as caught:
        await client.get_manifest(ref_on(hostile.registry.address))
    assert str(caught.value) == (
        f"{hostile.registry.address}: token request to 127.0.0.1 failed: "
        "HTTP 401 Unauthorized (UNAUTHORIZED)"
    )


async def test_an_unreachable_registry_is_named(hostile: Hostiles, client: RegistryClient) -> None:
    hostile.registry.on("GET", MANIFEST_PATH, redirect("https://127.0.0.1:1/v2/x"))
    with pytest.raises(RegistryUnavailable, match=r"cannot reach registry .*Connect"):
        await client.get_manifest(ref_on(hostile.registry.address))
