"""The provenance of a Buildah build, written by the operator when it collects the build.

BuildKit writes its own provenance; Buildah writes none, and the build pod (which runs the
tenant's steps, in a chroot) could write anything.  So the operator writes it from its own
Job (:mod:`lamina.domain.build_job` annotates what it put in: the pinned parent, the
Dockerfile's digest, the context's digest, the git source; the build args are its own
``--build-arg=`` arguments) and the digest it read back from the registry, attaches it the
way it attaches a rebase's provenance (:func:`lamina.oci.attach.push_attested`) and moves the
tags from the pushed manifest to the index.  Signing follows as for every build.  The SBOM
comes later, from the scan every image without one gets (:mod:`lamina.handlers.scans`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from lamina import __version__
from lamina.domain.attestation_index import platform_of
from lamina.domain.attestations import BuildahBuild, buildah_provenance
from lamina.domain.build_job import (
    ANNOTATION_CONTEXT_DIGEST,
    ANNOTATION_DOCKERFILE_DIGEST,
    ANNOTATION_ENGINE,
    ANNOTATION_GIT_REVISION,
    ANNOTATION_GIT_URL,
    ANNOTATION_PARENT,
    ANNOTATION_SOURCE_COMMIT,
)
from lamina.domain.image_annotations import base_name, split_pinned
from lamina.domain.snapshot import ImageRecord
from lamina.oci.attach import push_attested
from lamina.oci.client import RegistryClient
from lamina.oci.errors import RegistryError
from lamina.oci.reference import parse_reference

__all__ = ["attach_buildah_provenance", "buildah_build", "is_buildah"]

_BUILD_ARG = "--build-arg="


def is_buildah(job: Mapping[str, Any]) -> bool:
    return ((job.get("metadata") or {}).get("annotations") or {}).get(
        ANNOTATION_ENGINE
    ) == "buildah"


def _time(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(microsecond=0)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(microsecond=0)
        except ValueError:
            return fallback
    return fallback


def buildah_build(record: ImageRecord, job: Mapping[str, Any], now: datetime) -> BuildahBuild:
    """What the operator's own Buildah Job says it was given (raises ValueError / KeyError /
    InvalidLineage when the Job is not one the operator made)."""
    assert record.spec is not None
    meta = job["metadata"]
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    parent = annotations[ANNOTATION_PARENT]
    parent_repository, parent_digest = split_pinned(parent)
    pod = job["spec"]["template"]["spec"]
    (builder,) = [c for c in pod["containers"] if c["name"] == "build"]
    args: dict[str, str] = {}
    for arg in builder.get("args") or []:
        if isinstance(arg, str) and arg.startswith(_BUILD_ARG):
            key, _, value = arg.removeprefix(_BUILD_ARG).partition("=")
            args[key] = value
    status = job.get("status") or {}
    return BuildahBuild(
        namespace=record.namespace,
        image=record.name,
        repository=parse_reference(record.spec.output.repository).name,
        parent_name=base_name(record.spec, parent),
        parent_repository=parent_repository,
        parent_digest=parent_digest,
        dockerfile_digest=annotations[ANNOTATION_DOCKERFILE_DIGEST],
        build_args=args,
        context_digest=annotations.get(ANNOTATION_CONTEXT_DIGEST),
        git_url=annotations.get(ANNOTATION_GIT_URL),
        git_revision=annotations.get(ANNOTATION_GIT_REVISION),
        source_commit=annotations.get(ANNOTATION_SOURCE_COMMIT),
        builder_image=str(builder.get("image", "")),
        job=str(meta["name"]),
        invocation=str(meta.get("uid") or meta["name"]),
        started=_time(status.get("startTime") or status.get("start_time"), now),
        finished=_time(status.get("completionTime") or status.get("completion_time"), now),
    )


async def attach_buildah_provenance(
    client: RegistryClient,
    record: ImageRecord,
    job: Mapping[str, Any],
    pushed_digest: str,
    now: datetime,
) -> str:
    """Attach the provenance to the manifest a Buildah Job pushed (``pushed_digest``) and
    move the Image's tags that still name it to the new index; the index's digest."""
    assert record.spec is not None
    build = buildah_build(record, job, now)
    target = parse_reference(f"{record.spec.output.repository}@{pushed_digest}")
    image, index = await client.resolve_image(target)
    if index is not None or image.digest != pushed_digest:
        return pushed_digest  # already an index: not a Buildah push as this Job makes it
    config = json.loads(await client.get_blob(target, image.json()["config"]["digest"]))
    attested = await push_attested(
        client,
        target,
        image,
        platform_of(config),
        buildah_provenance(build, image.digest, __version__),
    )
    await client.put_manifest(target, attested, attested.digest)
    for tag in record.spec.output.tags:
        try:
            now_at = await client.head_manifest(target, tag)
        except RegistryError as error:
            if error.status != 404:
                raise
            now_at = pushed_digest
        if now_at in (pushed_digest, attested.digest):
            await client.put_manifest(target, attested, tag)
    return attested.digest
