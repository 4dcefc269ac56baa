"""The commit flow: layer stream -> blob upload -> parent layers -> config -> manifest.

It lives under ``cli`` because it is the one place that needs both siblings:
:mod:`lamina.snapshot` makes the layer (an async iterable of compressed bytes plus its digests)
and knows nothing about registries; :mod:`lamina.oci` talks to registries and assembles images
and knows nothing about overlays.  The interface between them is plain Python (``async for``
over bytes, then a result object), so neither imports the other.

The layer upload starts at once; the parent's manifest and config are fetched meanwhile, and
its layers are HEAD-checked (and mounted or copied when the target repository lacks them)
after the layer is pushed, so the work is proportional to the change, not to the image.

With a ``source`` (the operator always passes one), the image gets a provenance of its own
(:func:`lamina.domain.attestations.commit_provenance`: which pod, container and
ContainerCommit, not reproducible), attached the way BuildKit attaches a build's: the
manifest is pushed by digest, the tag names an index of it and its attestation manifest.  The
result's ``digest`` is still the image manifest's; ``indexDigest`` is what the tag names.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from lamina import __version__
from lamina.domain.attestation_index import platform_of
from lamina.domain.attestations import CommitSource, commit_provenance
from lamina.oci.attach import push_attested
from lamina.oci.client import Manifest, RegistryClient
from lamina.oci.image import (
    CommitInfo,
    ConfigChanges,
    NewLayer,
    commit_config,
    commit_manifest,
)
from lamina.oci.mediatypes import layer_media_type
from lamina.oci.reference import Reference
from lamina.snapshot.stream import Compression, LayerStream
from lamina.snapshot.upper import UpperWalk

PARENT_BLOB_CONCURRENCY = 4


@dataclass
class CommitRequest:
    walk: UpperWalk
    parent: Reference
    target: Reference
    # The parent as the container named it, when it was read from a mirror (``parent``).
    parent_name: Reference | None = None
    insecure: frozenset[str] = frozenset()
    docker_config: Mapping[str, Any] | None = None
    compression: Compression = "gzip"
    threads: int = 2
    created_by: str = "lamina snapshot"
    message: str | None = None
    author: str | None = None
    changes: ConfigChanges = field(default_factory=ConfigChanges)
    retries: int = 4
    # Entered around the layer read (the container is frozen inside it); returns seconds frozen.
    freeze: Callable[[], contextlib.AbstractContextManager[Callable[[], float]]] | None = None
    # Who asked for the commit, of which container: the provenance's subject matter.
    source: CommitSource | None = None


async def commit(request: CommitRequest) -> dict[str, Any]:
    """Push the committed image; returns the JSON-able result ``lamina snapshot`` prints."""
    started = time.monotonic()
    started_at = datetime.now(UTC).replace(microsecond=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = RegistryClient(
            session,
            insecure=request.insecure,
            docker_config=request.docker_config,
            retries=request.retries,
        )
        parent_task = asyncio.create_task(_read_parent(client, request.parent))
        try:
            stream = LayerStream(
                request.walk, compression=request.compression, threads=request.threads
            )
            with _frozen(request) as frozen_seconds:
                await client.upload_blob(request.target, stream, lambda: stream.result.digest)
                frozen = frozen_seconds()
            layer_done = time.monotonic()
            result = stream.result
            parent_index, parent_manifest, parent_config = await parent_task
        finally:
            if not parent_task.done():
                parent_task.cancel()
                await asyncio.gather(parent_task, return_exceptions=True)
        parent_layers = await _ensure_parent_layers(client, request, parent_manifest.json())
        layer = NewLayer(result.digest, result.diff_id, result.size, result.compression)
        info = CommitInfo(
            created_by=request.created_by,
            created=datetime.now(UTC).replace(microsecond=0),
            comment=request.message,
            author=request.author,
            changes=request.changes,
        )
        config = commit_config(parent_config, layer, info)
        await client.push_blob(request.target, config.data)
        parent_digest = (parent_index or parent_manifest).digest
        manifest_blob = commit_manifest(
            parent_manifest.json(),
            config,
            layer,
            base_name=str((request.parent_name or request.parent).with_digest(parent_digest)),
            base_digest=parent_digest,
        )
        manifest = Manifest(manifest_blob.data, manifest_blob.media_type, manifest_blob.digest)
        tag = request.target.tag or "latest"
        index_digest: str | None = None
        if request.source is None:
            digest = await client.put_manifest(request.target, manifest, tag)
        else:
            digest = await client.put_manifest(request.target, manifest, manifest.digest)
            container_image = str(request.parent_name or request.parent)
            statement = commit_provenance(
                request.source,
                container_image=container_image,
                container_image_digest=parent_digest,
                repository=request.target.name,
                subject_digest=digest,
                started=started_at,
                finished=datetime.now(UTC).replace(microsecond=0),
                operator_version=__version__,
            )
            index = await push_attested(
                client, request.target, manifest, platform_of(parent_config), statement
            )
            index_digest = await client.put_manifest(request.target, index, tag)
    finished = time.monotonic()
    return {
        "image": f"{request.target.name}@{digest}",
        "tag": str(request.target),
        "digest": digest,
        "mediaType": manifest.media_type,
        "indexDigest": index_digest,
        "config": {"digest": config.digest, "size": config.size},
        "parent": {
            "ref": str(request.parent_name or request.parent),
            "digest": parent_digest,
            "manifestDigest": parent_manifest.digest,
        },
        "layer": {
            "digest": result.digest,
            "diffID": result.diff_id,
            "size": result.size,
            "uncompressedSize": result.uncompressed_size,
            "entries": result.entries,
            "mediaType": layer_media_type(result.compression),
        },
        "parentLayers": parent_layers,
        "timings": {
            "frozenSeconds": round(frozen, 3) if request.freeze else None,
            "diffSeconds": round(layer_done - started, 3),
            "pushSeconds": round(finished - layer_done, 3),
            "totalSeconds": round(finished - started, 3),
        },
    }


@contextlib.contextmanager
def _frozen(request: CommitRequest) -> Iterator[Callable[[], float]]:
    if request.freeze is None:
        yield lambda: 0.0
        return
    with request.freeze() as seconds:
        yield seconds


async def _read_parent(
    client: RegistryClient, parent: Reference
) -> tuple[Manifest | None, Manifest, dict[str, Any]]:
    manifest, index = await client.resolve_image(parent)
    config_digest = manifest.json()["config"]["digest"]
    config: dict[str, Any] = Manifest(
        await client.get_blob(parent, config_digest), "", config_digest
    ).json()
    return index, manifest, config


async def _ensure_parent_layers(
    client: RegistryClient, request: CommitRequest, manifest: Mapping[str, Any]
) -> dict[str, int]:
    """HEAD each parent layer in the target; mount (same registry) or copy what is missing."""
    limit = asyncio.Semaphore(PARENT_BLOB_CONCURRENCY)

    async def one(digest: str) -> str:
        async with limit:
            return await client.ensure_blob(request.target, digest, request.parent)

    outcomes = await asyncio.gather(*(one(d["digest"]) for d in manifest.get("layers", [])))
    return {how: outcomes.count(how) for how in ("present", "mounted", "copied")}
