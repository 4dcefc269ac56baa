"""Parent polling against a real (hostile) registry, counted by its request log (issue 10, 6).

HEAD first and a GET only when the digest moved; one request per reference however many ref
texts (Images) name it; a registry answering 429/5xx is left alone for its Retry-After or an
exponential pause, with its answer (status and standard phrase, never the body) in the
message the affected Images show.  The clock is the resolver's, moved by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lamina.api.image import ResolvedParent
from lamina.domain.attestation_index import attested_image
from lamina.domain.parent_polling import poll_jitter
from lamina.handlers.parent_resolver import ParentResolver, resolved_status
from lamina.oci.hosts import RegistryHosts
from tests.hostile_registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    SECRET_BODY,
    Hostiles,
    MiB,
    Reply,
    endless,
    hostile,
    hostile_ca,
    hostile_thread,
    json_error,
    manifest,
    sha,
    small_image_manifest,
)

__all__ = ["hostile", "hostile_ca", "hostile_thread"]

PATH = "/v2/library/busybox/manifests/latest"
# Four spellings of one reference, all mirrored to the hostile registry: four Images, one ask.
SPELLINGS = (
    "busybox",
    "docker.io/library/busybox",
    "library/busybox:latest",
    "index.docker.io/library/busybox:latest",
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def resolver_for(hostile: Hostiles, clock: Clock) -> ParentResolver:
    hosts = RegistryHosts(
        mirrors={"docker.io": (hostile.plain.address,)},
        insecure=frozenset({hostile.plain.address}),
    )
    return ParentResolver(hosts, clock=clock, ssl_context=hostile.client_tls(), timeout=10)


def serve(hostile: Hostiles, body: bytes, *, head_digest: bool = True) -> None:
    hostile.plain.on("GET", PATH, manifest(body, OCI_MANIFEST))
    headers = {"Content-Type": OCI_MANIFEST}
    if head_digest:
        headers["Docker-Content-Digest"] = sha(body)
    hostile.plain.on("HEAD", PATH, Reply(200, headers, body))


def asked(hostile: Hostiles) -> list[str]:
    return [r.method for r in hostile.plain.requests()]


async def test_one_head_per_pass_and_a_get_only_when_the_digest_moved(
    hostile: Hostiles, clock: Clock
) -> None:
    resolver = resolver_for(hostile, clock)
    first = small_image_manifest("one")
    serve(hostile, first)

    results = await resolver.resolve_refs(dict.fromkeys(SPELLINGS))
    assert {text: r.digest for text, r in results.items()} == dict.fromkeys(SPELLINGS, sha(first))
    assert all(r.message is None for r in results.values())
    assert asked(hostile) == ["HEAD", "GET"]  # nothing known yet: the manifest is checked once

    for _ in range(3):  # unchanged: one HEAD per pass, no GET
        hostile.log.clear()
        results = await resolver.resolve_refs(dict.fromkeys(SPELLINGS, sha(first)))
        assert asked(hostile) == ["HEAD"]
        assert {r.digest for r in results.values()} == {sha(first)}
        assert not any(r.fetched for r in results.values())

    moved = small_image_manifest("two")
    serve(hostile, moved)
    hostile.log.clear()
    results = await resolver.resolve_refs(dict.fromkeys(SPELLINGS, sha(first)))
    assert asked(hostile) == ["HEAD", "GET"]
    assert {r.digest for r in results.values()} == {sha(moved)}


async def test_a_restarted_operator_trusts_the_digest_in_status(
    hostile: Hostiles, clock: Clock
) -> None:
    """A fresh resolver (operator restart) given the digests Images already have: HEAD only."""
    body = small_image_manifest()
    serve(hostile, body)
    results = await resolver_for(hostile, clock).resolve_refs({"busybox": sha(body)})
    assert results["busybox"].digest == sha(body)
    assert asked(hostile) == ["HEAD"]


async def test_without_a_digest_in_the_head_answer_it_gets(hostile: Hostiles, clock: Clock) -> None:
    body = small_image_manifest()
    serve(hostile, body, head_digest=False)
    resolver = resolver_for(hostile, clock)
    for _ in range(2):
        hostile.log.clear()
        results = await resolver.resolve_refs({"busybox": sha(body)})
        assert results["busybox"].digest == sha(body)
        assert asked(hostile) == ["HEAD", "GET"]


async def test_a_registry_without_head_is_read_with_get(hostile: Hostiles, clock: Clock) -> None:
    body = small_image_manifest()
    hostile.plain.on("GET", PATH, manifest(body, OCI_MANIFEST))
    hostile.plain.on("HEAD", PATH, Reply(405))
    results = await resolver_for(hostile, clock).resolve_refs({"busybox": None})
    assert results["busybox"].digest == sha(body)
    assert asked(hostile) == ["HEAD", "GET"]


async def test_a_nested_index_named_for_the_platform_is_never_pinned(
    hostile: Hostiles, clock: Clock
) -> None:
    nested = {
        "mediaType": OCI_INDEX,
        "digest": sha(b"nested"),
        "size": 6,
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [nested]}
    hostile.plain.on("*", PATH, manifest(index, OCI_INDEX))
    results = await resolver_for(hostile, clock).resolve_refs({"busybox": None})
    assert results["busybox"].digest is None
    assert results["busybox"].message == (
        f"RegistryResponseInvalid: {hostile.plain.address}: library/busybox: no linux/amd64 "
        "manifest in the index; it has [] (1 other entries are not image manifests)"
    )


async def test_an_index_is_checked_for_the_platform_without_another_pull(
    hostile: Hostiles, clock: Clock
) -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha(b"arm"),
                "platform": {"os": "linux", "architecture": "arm64"},
            }
        ],
    }
    hostile.plain.on("*", PATH, manifest(index, OCI_INDEX))
    results = await resolver_for(hostile, clock).resolve_refs({"busybox": None})
    assert results["busybox"].message == (
        f"RegistryResponseInvalid: {hostile.plain.address}: library/busybox: no linux/amd64 "
        "manifest in the index; it has ['linux/arm64']"
    )
    assert asked(hostile) == ["HEAD", "GET"]


def lamina_index(image: bytes, built_at: str) -> bytes:
    """The index Lamina pushes under a tag: the image manifest and an attestation manifest
    about it whose statement has a timestamp, so each rebuild gives another index digest."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "x", "digest": {"sha256": sha(image)[7:]}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"runDetails": {"metadata": {"startedOn": built_at}}},
    }
    return attested_image(
        manifest_digest=sha(image),
        manifest_size=len(image),
        manifest_media_type=OCI_MANIFEST,
        platform={"architecture": "amd64", "os": "linux"},
        statement=statement,
    ).index


def serve_index(hostile: Hostiles, index: bytes) -> None:
    hostile.plain.on("*", PATH, manifest(index, OCI_INDEX))


async def test_an_index_tag_pins_its_image_manifest_not_the_index(
    hostile: Hostiles, clock: Clock
) -> None:
    """Issue 9, 6: a rebuild that gives the same image manifest (a reproducible build) moves
    the tag to a new index (new attestation timestamps) and is no parent change."""
    image = small_image_manifest("image")
    first = lamina_index(image, "2026-12-01T09:00:00Z")
    serve_index(hostile, first)
    resolver = resolver_for(hostile, clock)
    (answer,) = (await resolver.resolve_refs({"busybox": None})).values()
    assert answer.digest == sha(image) != sha(first)
    assert answer.message is None and answer.fetched
    assert asked(hostile) == ["HEAD", "GET"]  # the index's entry is read, the image not pulled
    status = ResolvedParent.model_validate(resolved_status("busybox", None, answer, clock.now))

    hostile.log.clear()  # unchanged index: one HEAD, the pin from the last GET
    (answer,) = (await resolver.resolve_refs({"busybox": sha(image)})).values()
    assert (answer.digest, answer.fetched, asked(hostile)) == (sha(image), False, ["HEAD"])

    rebuilt = lamina_index(image, "2026-12-01T10:00:00Z")
    assert sha(rebuilt) != sha(first)
    serve_index(hostile, rebuilt)
    hostile.log.clear()  # the index moved: fetched, and the same image manifest found
    (answer,) = (await resolver.resolve_refs({"busybox": sha(image)})).values()
    assert (answer.digest, answer.fetched, asked(hostile)) == (sha(image), True, ["HEAD", "GET"])
    assert resolved_status("busybox", status, answer, clock.now) is None  # nothing to write

    hostile.log.clear()  # and the new index is remembered: one HEAD again
    (answer,) = (await resolver.resolve_refs({"busybox": sha(image)})).values()
    assert (answer.digest, asked(hostile)) == (sha(image), ["HEAD"])

    changed = small_image_manifest("changed")
    serve_index(hostile, lamina_index(changed, "2026-12-01T11:00:00Z"))
    hostile.log.clear()  # a new image manifest: that is a parent change
    (answer,) = (await resolver.resolve_refs({"busybox": sha(image)})).values()
    assert (answer.digest, asked(hostile)) == (sha(changed), ["HEAD", "GET"])
    assert resolved_status("busybox", status, answer, clock.now) is not None


async def test_a_restarted_operator_reads_an_index_once_to_confirm_the_pin(
    hostile: Hostiles, clock: Clock
) -> None:
    """A HEAD of an index tag reports the index's digest, not the image manifest Images are
    pinned to: a fresh resolver fetches the index once, then HEADs."""
    image = small_image_manifest("image")
    serve_index(hostile, lamina_index(image, "2026-12-01T09:00:00Z"))
    resolver = resolver_for(hostile, clock)
    for expected in (["HEAD", "GET"], ["HEAD"]):
        hostile.log.clear()
        (answer,) = (await resolver.resolve_refs({"busybox": sha(image)})).values()
        assert (answer.digest, asked(hostile)) == (sha(image), expected)


async def test_attestation_entries_are_never_the_pin_whatever_platform_they_claim(
    hostile: Hostiles, clock: Clock
) -> None:
    """Registry input: an attestation manifest listed first and claiming linux/amd64 is still
    not an image; an index of attestations only is refused, naming no platform it lacks."""
    image = small_image_manifest("image")
    attestation = {
        "mediaType": OCI_MANIFEST,
        "digest": sha(b"attestation"),
        "size": 1,
        "platform": {"os": "linux", "architecture": "amd64"},
        "annotations": {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": sha(image),
        },
    }
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": sha(image),
        "size": len(image),
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [attestation, entry]}
    hostile.plain.on("*", PATH, manifest(index, OCI_INDEX))
    (answer,) = (await resolver_for(hostile, clock).resolve_refs({"busybox": None})).values()
    assert answer.digest == sha(image)

    only = {**index, "manifests": [attestation]}
    hostile.plain.on("*", PATH, manifest(only, OCI_INDEX))
    (answer,) = (await resolver_for(hostile, clock).resolve_refs({"busybox": None})).values()
    assert answer.digest is None
    assert answer.message == (
        f"RegistryResponseInvalid: {hostile.plain.address}: library/busybox: no linux/amd64 "
        "manifest in the index; it has []"
    )


async def test_429_pauses_the_registry_for_its_retry_after_and_says_so(
    hostile: Hostiles, clock: Clock
) -> None:
    body = small_image_manifest()
    serve(hostile, body)
    resolver = resolver_for(hostile, clock)
    await resolver.resolve_refs({"busybox": None})
    limited = json_error(429, "TOOMANYREQUESTS", SECRET_BODY, **{"Retry-After": "120"})
    limited.reason = SECRET_BODY  # a forged status line: never quoted
    hostile.plain.on("*", PATH, limited)
    # Another registry (TLS, other origin) is resolved in the same pass as if nothing happened.
    other_body = small_image_manifest("other")
    hostile.registry.on("*", "/v2/team/app/manifests/v1", manifest(other_body, OCI_MANIFEST))
    other = f"{hostile.registry.address}/team/app:v1"

    hostile.log.clear()
    results = await resolver.resolve_refs({"busybox": sha(body), other: None})
    expected = (
        f"RegistryRateLimited: registry {hostile.plain.address} answered HTTP 429 Too Many "
        "Requests; it is not asked again before 2026-12-01T10:02:00Z (1 failed poll in a row)"
    )
    assert results["busybox"].message == expected
    assert results["busybox"].digest == sha(body)  # the last good digest stays
    assert results[other].digest == sha(other_body) and results[other].message is None
    assert asked(hostile) == ["HEAD"]

    clock.advance(60)  # within Retry-After: the registry is not asked at all
    hostile.log.clear()
    results = await resolver.resolve_refs({"busybox": sha(body), other: sha(other_body)})
    assert asked(hostile) == []
    assert results["busybox"].message == expected and not results["busybox"].asked
    assert results[other].message is None

    clock.advance(61)  # after it: asked again, and back to normal
    serve(hostile, body)
    results = await resolver.resolve_refs({"busybox": sha(body)})
    assert asked(hostile) == ["HEAD"]
    assert results["busybox"].message is None


async def test_5xx_backs_off_exponentially_without_quoting_the_body(
    hostile: Hostiles, clock: Clock
) -> None:
    failing = Reply(503, {"Content-Type": "text/plain"}, SECRET_BODY.encode(), reason=SECRET_BODY)
    hostile.plain.on("*", PATH, failing)
    resolver = resolver_for(hostile, clock)
    pauses = []
    for _ in range(3):
        results = await resolver.resolve_refs({"busybox": None})
        message = results["busybox"].message or ""
        assert "SECRET" not in message and "hunter2" not in message
        assert f"registry {hostile.plain.address} answered HTTP 503 Service Unavailable" in message
        pauses.append(resolver.pauses[hostile.plain.address].until - clock.now)
        clock.now = resolver.pauses[hostile.plain.address].until
    assert pauses == [timedelta(seconds=30), timedelta(seconds=60), timedelta(seconds=120)]
    assert asked(hostile) == ["HEAD", "HEAD", "HEAD"]


async def test_an_oversized_manifest_is_that_refs_message_only(
    hostile: Hostiles, clock: Clock
) -> None:
    hostile.plain.on("HEAD", PATH, Reply(200, {"Content-Type": OCI_MANIFEST}))
    hostile.plain.on("GET", PATH, Reply(200, {"Content-Type": OCI_MANIFEST}, endless(2 << 30)))
    good = small_image_manifest()
    hostile.plain.on("*", "/v2/team/app/manifests/v1", manifest(good, OCI_MANIFEST))
    fine = f"{hostile.plain.address}/team/app:v1"
    resolver = resolver_for(hostile, clock)
    results = await resolver.resolve_refs({"busybox": "sha256:" + "0" * 64, fine: None})
    assert results["busybox"].message == (
        f"ManifestTooLarge: registry {hostile.plain.address} served a manifest for "
        "library/busybox:latest larger than the 4 MiB (4194304 bytes) limit of the "
        "distribution spec"
    )
    assert results["busybox"].digest == "sha256:" + "0" * 64
    assert results[fine].digest == sha(good)
    assert max(hostile.log.sent.values()) < 64 * MiB
    # Not a registry pushing back: no pause, the next poll asks again.
    assert resolver.pauses == {}


async def test_an_invalid_reference_is_refused_without_a_request(
    hostile: Hostiles, clock: Clock
) -> None:
    results = await resolver_for(hostile, clock).resolve_refs({"UPPER/Case:x": None})
    assert results["UPPER/Case:x"].message is not None
    assert results["UPPER/Case:x"].message.startswith("InvalidReference: ")
    assert hostile.log.requests == []


async def test_an_unchanged_answer_writes_nothing_and_the_resolver_remembers_the_poll(
    hostile: Hostiles, clock: Clock
) -> None:
    body = small_image_manifest()
    serve(hostile, body)
    resolver = resolver_for(hostile, clock)
    (first,) = (await resolver.resolve_refs({"busybox": None})).values()
    patch = resolved_status("busybox", None, first, clock.now)
    assert patch == {
        "ref": "busybox",
        "digest": sha(body),
        "resolvedAt": "2026-12-01T10:00:00Z",
        "message": None,
    }
    status = ResolvedParent.model_validate(patch)
    clock.advance(600)
    (again,) = (await resolver.resolve_refs({"busybox": sha(body)})).values()
    assert resolved_status("busybox", status, again, clock.now) is None
    # status.resolvedAt stays at 10:00, but the poll at 10:10 counts: not due again before
    # 10:20 (plus the ref's jitter).
    interval = timedelta(minutes=10)
    assert not resolver.due("busybox", interval, status, clock.now + timedelta(seconds=599))
    assert resolver.due(
        "busybox", interval, status, clock.now + interval + poll_jitter("busybox", interval)
    )
    # A fresh resolver (an operator restart) goes by status alone: due 10 minutes after 10:00.
    restarted = resolver_for(hostile, clock)
    assert restarted.due("busybox", interval, status, clock.now + poll_jitter("busybox", interval))


async def test_a_registry_that_stalls_is_paused_after_one_timeout(
    hostile: Hostiles, clock: Clock
) -> None:
    """A tenant's slow registry must not hold the pass up ref after ref."""
    stalled = Reply(200, {"Content-Type": OCI_MANIFEST}, b"{}", delay=5)
    hostile.plain.on("*", r"/v2/team/(a|b|c)/manifests/1", stalled)
    refs = {f"{hostile.plain.address}/team/{name}:1": None for name in "abc"}
    resolver = resolver_for(hostile, clock)
    resolver.timeout = 0.5
    results = await resolver.resolve_refs(refs)
    assert len(hostile.plain.requests()) == 1  # the first timed out; the others were not asked
    expected = (
        f"RegistryUnavailable: registry {hostile.plain.address} did not answer within 0.5 s; "
        "it is not asked again before 2026-12-01T10:00:30Z (1 failed poll in a row)"
    )
    assert {r.message for r in results.values()} == {expected}
