"""The registry client against a small in-process registry that demands bearer tokens.

The fake speaks just enough of the distribution API (token realm, blobs, chunked uploads,
mounts, manifests) to check the client's side of each exchange; the integration tier checks
the same client against Debian's real docker-registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from lamina.oci.client import Manifest, RegistryClient
from lamina.oci.errors import DigestMismatch, RegistryError, RegistryUnavailable
from lamina.oci.reference import Reference

USER, PASSWORD, TOKEN = "alice", "s3cret", "tok-123"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    patches: int = 0
    fail_next: int = 0
    token_scopes: list[list[str]] = field(default_factory=list)
    allow_mount: bool = True
    lie_about_digest: bool = False

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth])
        app.router.add_get("/token", self.token)
        app.router.add_route("*", "/v2/{repo:.+}/blobs/uploads/", self.start_upload)
        app.router.add_route("*", "/v2/{repo:.+}/blobs/uploads/{id}", self.upload)
        app.router.add_route("*", "/v2/{repo:.+}/blobs/{digest}", self.blob)
        app.router.add_route("*", "/v2/{repo:.+}/manifests/{ref}", self.manifest)
        return app

    @web.middleware
    async def auth(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path == "/token":
            return await handler(request)
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, text="busy")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"{request.scheme}://{request.host}/token"
            challenge = f'Bearer realm="{realm}",service="fake",scope="x"'
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        return await handler(request)

    async def token(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response(
                {"errors": [{"code": "DENIED", "message": "bad creds"}]}, status=401
            )
        self.token_scopes.append(request.query.getall("scope"))
        return web.json_response({"token": TOKEN})

    async def start_upload(self, request: web.Request) -> web.Response:
        repo = request.match_info["repo"]
        if "mount" in request.query and self.allow_mount:
            key = (request.query["from"], request.query["mount"])
            if key in self.blobs:
                self.blobs[(repo, request.query["mount"])] = self.blobs[key]
                return web.Response(status=201)
        upload = uuid.uuid4().hex
        self.uploads[upload] = bytearray()
        return web.Response(
            status=202, headers={"Location": f"/v2/{repo}/blobs/uploads/{upload}?_state=a%3Db"}
        )

    async def upload(self, request: web.Request) -> web.Response:
        repo, upload = request.match_info["repo"], request.match_info["id"]
        assert request.query["_state"] == "a=b"
        body = await request.read()
        data = self.uploads[upload]
        if request.method == "DELETE":
            del self.uploads[upload]
            return web.Response(status=204)
        if body:
            start, end = map(int, request.headers["Content-Range"].split("-"))
            assert (start, end) == (len(data), len(data) + len(body) - 1)
            data += body
        if request.method == "PATCH":
            self.patches += 1
            return web.Response(
                status=202, headers={"Location": f"/v2/{repo}/blobs/uploads/{upload}?_state=a%3Db"}
            )
        digest = request.query["digest"]
        if sha(bytes(data)) != digest:
            return web.json_response(
                {"errors": [{"code": "DIGEST_INVALID", "message": "digest did not match"}]},
                status=400,
            )
        self.blobs[(repo, digest)] = bytes(data)
        del self.uploads[upload]
        return web.Response(status=201)

    async def blob(self, request: web.Request) -> web.Response:
        key = (request.match_info["repo"], request.match_info["digest"])
        if key not in self.blobs:
            return web.json_response(
                {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}, status=404
            )
        return web.Response(body=b"" if request.method == "HEAD" else self.blobs[key])

    async def manifest(self, request: web.Request) -> web.Response:
        key = (request.match_info["repo"], request.match_info["ref"])
        if request.method == "PUT":
            body = await request.read()
            self.manifests[key] = (body, request.content_type)
            self.manifests[(key[0], sha(body))] = (body, request.content_type)
            digest = sha(b"lie") if self.lie_about_digest else sha(body)
            return web.Response(status=201, headers={"Docker-Content-Digest": digest})
        if key not in self.manifests:
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                status=404,
            )
        body, media_type = self.manifests[key]
        return web.Response(body=body, headers={"Content-Type": media_type})


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeRegistry, RegistryClient, Reference]]:
    fake = FakeRegistry()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    host = f"127.0.0.1:{server.port}"
    config = {"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(
            session, insecure=[host], docker_config=config, backoff=0.01, chunk_size=1000
        )
        yield fake, client, Reference(host, "team/app", "v1")
    await server.close()


async def pieces(data: bytes, size: int = 300) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_chunked_upload_with_bearer_token_from_dockerconfig(served) -> None:  # type: ignore[no-untyped-def]
    fake, client, ref = served
    data = bytes(range(256)) * 20  # 5120 bytes -> 4 PATCHes of 1200 + the rest with the PUT
    size = await client.upload_blob(ref, pieces(data), lambda: sha(data))
    assert size == len(data)
    assert fake.blobs[(ref.repository, sha(data))] == data
    assert fake.patches == 4
    assert fake.token_scopes == [["repository:team/app:pull,push"]]
    assert await client.blob_exists(ref, sha(data))


async def test_mount_then_fallback_to_copy(served) -> None:  # type: ignore[no-untyped-def]
    fake, client, ref = served
    source = Reference(ref.registry, "team/base", "1")
    fake.blobs[("team/base", sha(b"layer"))] = b"layer"
    assert await client.ensure_blob(ref, sha(b"layer"), source) == "mounted"
    assert await client.ensure_blob(ref, sha(b"layer"), source) == "present"
    fake.allow_mount = False
    other = Reference(ref.registry, "team/other", "1")
    assert await client.ensure_blob(other, sha(b"layer"), source) == "copied"
    assert fake.blobs[("team/other", sha(b"layer"))] == b"layer"
    assert fake.uploads == {}  # the upload the declined mount opened was cancelled


async def test_retries_5xx_then_gives_up_with_a_clear_error(served) -> None:  # type: ignore[no-untyped-def]
    fake, client, ref = served
    fake.fail_next = 2
    assert not await client.blob_exists(ref, sha(b"x"))
    fake.fail_next = 10
    with pytest.raises(RegistryUnavailable, match=r"GET blob .* HTTP 503 Service Unavailable$"):
        await client.get_blob(ref, sha(b"x"))


async def test_registry_errors_carry_the_registry_code_not_its_text(served) -> None:  # type: ignore[no-untyped-def]
    _, client, ref = served
    with pytest.raises(RegistryError) as caught:
        await client.get_manifest(ref)
    assert str(caught.value) == (
        f"{ref.registry} refused GET manifest team/app:v1: HTTP 404 Not Found (MANIFEST_UNKNOWN)"
    )
    assert caught.value.status == 404
    assert caught.value.code == "MANIFEST_UNKNOWN"
    with pytest.raises(RegistryError, match="DIGEST_INVALID"):
        await client.upload_blob(ref, pieces(b"abc"), lambda: sha(b"not abc"))


async def test_manifest_put_exact_bytes_and_index_resolution(served) -> None:  # type: ignore[no-untyped-def]
    fake, client, ref = served
    image = Manifest(
        b'{"schemaVersion":2,"layers":[]}',
        "application/vnd.oci.image.manifest.v1+json",
        sha(b'{"schemaVersion":2,"layers":[]}'),
    )
    assert await client.put_manifest(ref, image, "v1") == image.digest
    index = json.dumps(
        {
            "manifests": [
                {
                    "mediaType": image.media_type,
                    "digest": image.digest,
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ]
        }
    ).encode()
    fake.manifests[(ref.repository, "multi")] = (index, "application/vnd.oci.image.index.v1+json")
    manifest, top = await client.resolve_image(Reference(ref.registry, ref.repository, "multi"))
    assert manifest.data == image.data
    assert top is not None and top.digest == sha(index)
    fake.lie_about_digest = True
    with pytest.raises(DigestMismatch):
        await client.put_manifest(ref, image, "v2")


async def test_wrong_credentials_fail_at_the_token_service(served) -> None:  # type: ignore[no-untyped-def]
    _, client, ref = served
    client.docker_config = {"auths": {ref.registry: {"username": "alice", "password": "nope"}}}
    with pytest.raises(RegistryError, match=r"token request .* HTTP 401 Unauthorized \(DENIED\)$"):
        await client.blob_exists(ref, sha(b"x"))


async def test_a_failing_stream_cancels_the_upload_and_raises_its_error(served) -> None:  # type: ignore[no-untyped-def]
    fake, client, ref = served

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 2500
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        await client.upload_blob(ref, broken(), lambda: "sha256:unused")
    assert fake.uploads == {}
