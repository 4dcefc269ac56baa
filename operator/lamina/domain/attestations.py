"""The provenance Lamina writes itself: in-toto statements with a SLSA v1 predicate.

BuildKit writes the SBOM and the provenance of a build.  Three images are made without it,
and each says so instead of carrying a build's provenance that no longer describes it (or
none at all):

- a **rebase** splices an Image's own layers onto its parent's new layers in the registry:
  its provenance names Lamina's rebase as the builder and, as resolved dependencies, the new
  parent digest and the previous image digest whose layers were kept;
- a **commit** snapshots a running container's writable layer: its provenance names the pod,
  the container, the container's image digest and the ContainerCommit, and says it is not
  reproducible (the layer is whatever the container wrote);
- a **Buildah** build: its provenance names Buildah run by Lamina's build Job as the builder,
  and what the operator itself put into the Job (never what the build pod says): the pinned
  parent, the Dockerfile's digest, the build args, the context's digest or the git commit.

Every image without an SBOM of its own (these three, and a BuildKit build made without an SBOM
generator) gets one from Lamina's scan Job (:mod:`lamina.domain.sbom_scan`), wrapped here as a
statement about the image manifest: :func:`sbom_statement`.

Pure: values in, JSON-able dicts out, so the same inputs always give the same statement.
Statement layout: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md;
predicate: https://slsa.dev/spec/v1.0/provenance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
SPDX_DOCUMENT = "https://spdx.dev/Document"
REBASE_BUILD_TYPE = "https://lamina.dev/rebase/v1"
REBASE_BUILDER = "https://lamina.dev/builders/rebase"
COMMIT_BUILD_TYPE = "https://lamina.dev/container-commit/v1"
COMMIT_BUILDER = "https://lamina.dev/builders/container-commit"
BUILDAH_BUILD_TYPE = "https://lamina.dev/buildah/v1"
BUILDAH_BUILDER = "https://lamina.dev/builders/buildah"
PLATFORM = "linux/amd64"

__all__ = [
    "BUILDAH_BUILDER",
    "BUILDAH_BUILD_TYPE",
    "COMMIT_BUILDER",
    "COMMIT_BUILD_TYPE",
    "IN_TOTO_STATEMENT",
    "REBASE_BUILDER",
    "REBASE_BUILD_TYPE",
    "SLSA_PROVENANCE",
    "SPDX_DOCUMENT",
    "BuildahBuild",
    "CommitSource",
    "RebaseOrigin",
    "buildah_provenance",
    "commit_provenance",
    "docker_purl",
    "rebase_provenance",
    "sbom_statement",
]


def docker_purl(repository: str, digest: str | None = None, platform: str = PLATFORM) -> str:
    """``pkg:docker/REPOSITORY@VERSION?platform=...``, the form BuildKit's statements use.

    The version is the digest when known (percent-encoded, as purl requires of ``:``).
    """
    version = f"@{quote(digest, safe='')}" if digest else ""
    return f"pkg:docker/{repository}{version}?platform={quote(platform, safe='')}"


def _hex(digest: str) -> dict[str, str]:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64:
        raise ValueError(f"{digest[:80]!r} is not a sha256 digest")
    return {"sha256": value}


def _time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _statement(
    subject_repository: str,
    subject_digest: str,
    predicate: Mapping[str, Any],
    predicate_type: str = SLSA_PROVENANCE,
) -> dict[str, Any]:
    return {
        "_type": IN_TOTO_STATEMENT,
        "subject": [{"name": docker_purl(subject_repository), "digest": _hex(subject_digest)}],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def sbom_statement(
    repository: str, subject_digest: str, document: Mapping[str, Any]
) -> dict[str, Any]:
    """The statement of an SPDX document about ``repository@subject_digest``: what BuildKit's
    SBOM statement is (predicate type ``https://spdx.dev/Document``, the document itself as
    the predicate), so ``cosign verify-attestation --type spdxjson`` and every reader of
    BuildKit's layout take it.  ``document`` has passed :func:`lamina.domain.sbom_scan.
    parse_sbom` (an SPDX document describing exactly this digest)."""
    return _statement(repository, subject_digest, document, SPDX_DOCUMENT)


def _dependency(name: str, repository: str, digest: str) -> dict[str, Any]:
    return {"name": name, "uri": docker_purl(repository, digest), "digest": _hex(digest)}


@dataclass(frozen=True)
class RebaseOrigin:
    """What a rebase started from and what it put the image on."""

    namespace: str
    image: str
    repository: str
    previous_digest: str
    previous_parent_digest: str
    parent_name: str
    parent_repository: str
    parent_digest: str
    kept_layers: Sequence[str]
    invocation: str
    started: datetime
    finished: datetime


def rebase_provenance(
    origin: RebaseOrigin, subject_digest: str, operator_version: str
) -> dict[str, Any]:
    """The statement for a rebased image manifest (``subject_digest``).

    The image's own layers (``kept_layers``) are the previous image's; nothing was run, so
    the only inputs are the two images: the new parent and the previous image.
    """
    return _statement(
        origin.repository,
        subject_digest,
        {
            "buildDefinition": {
                "buildType": REBASE_BUILD_TYPE,
                "externalParameters": {
                    "image": {"namespace": origin.namespace, "name": origin.image},
                    "parent": {"name": origin.parent_name, "digest": origin.parent_digest},
                    "previous": {
                        "digest": origin.previous_digest,
                        "parentDigest": origin.previous_parent_digest,
                    },
                },
                "internalParameters": {"keptLayers": list(origin.kept_layers)},
                "resolvedDependencies": [
                    _dependency("parent", origin.parent_repository, origin.parent_digest),
                    _dependency("previous", origin.repository, origin.previous_digest),
                ],
            },
            "runDetails": {
                "builder": {"id": REBASE_BUILDER, "version": {"lamina": operator_version}},
                "metadata": {
                    "invocationId": origin.invocation,
                    "startedOn": _time(origin.started),
                    "finishedOn": _time(origin.finished),
                },
            },
        },
    )


@dataclass(frozen=True)
class CommitSource:
    """Who asked for a commit and of which container (the operator knows it from the Pod)."""

    namespace: str
    name: str
    uid: str
    pod: str
    container: str
    container_id: str
    node: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommitSource:
        fields = ("namespace", "name", "uid", "pod", "container", "containerID", "node")
        if not isinstance(data, Mapping) or set(data) != set(fields):
            raise ValueError(f"a commit source has exactly the keys {sorted(fields)}")
        values = [data[key] for key in fields]
        if not all(isinstance(value, str) and 0 < len(value) <= 512 for value in values):
            raise ValueError("a commit source's values are non-empty strings")
        return cls(*values)

    def json(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "pod": self.pod,
            "container": self.container,
            "containerID": self.container_id,
            "node": self.node,
        }


def commit_provenance(
    source: CommitSource,
    *,
    container_image: str,
    container_image_digest: str,
    repository: str,
    subject_digest: str,
    started: datetime,
    finished: datetime,
    operator_version: str,
) -> dict[str, Any]:
    """The statement for a committed image manifest (``subject_digest``, in ``repository``).

    ``container_image`` is the container's image as the pod names it (its repository is the
    parent's), ``container_image_digest`` the digest the container ran.  The run is not
    reproducible: the layer is a snapshot of what the container wrote, which no input here
    determines (``internalParameters.reproducible`` says so, as BuildKit's metadata does).
    """
    parent_repository = container_image.split("@", 1)[0]
    last = parent_repository.rsplit("/", 1)[-1]
    if ":" in last:  # a tag: the digest says which image exactly
        parent_repository = parent_repository[: parent_repository.rfind(":")]
    return _statement(
        repository,
        subject_digest,
        {
            "buildDefinition": {
                "buildType": COMMIT_BUILD_TYPE,
                "externalParameters": {
                    "containerCommit": {
                        "namespace": source.namespace,
                        "name": source.name,
                        "uid": source.uid,
                    },
                    "source": {
                        "namespace": source.namespace,
                        "pod": source.pod,
                        "container": source.container,
                        "image": container_image,
                        "imageDigest": container_image_digest,
                    },
                },
                "internalParameters": {
                    "containerID": source.container_id,
                    "node": source.node,
                    "reproducible": False,
                },
                "resolvedDependencies": [
                    _dependency("parent", parent_repository, container_image_digest),
                ],
            },
            "runDetails": {
                "builder": {"id": COMMIT_BUILDER, "version": {"lamina": operator_version}},
                "metadata": {
                    "invocationId": source.uid,
                    "startedOn": _time(started),
                    "finishedOn": _time(finished),
                },
            },
        },
    )


@dataclass(frozen=True)
class BuildahBuild:
    """What the operator put into a Buildah build Job (its own annotations and arguments),
    and when the Job ran: never anything the build pod reported but the pushed digest."""

    namespace: str
    image: str
    repository: str
    parent_name: str
    parent_repository: str
    parent_digest: str
    dockerfile_digest: str
    build_args: Mapping[str, str]
    context_digest: str | None
    git_url: str | None
    git_revision: str | None
    source_commit: str | None
    builder_image: str
    job: str
    invocation: str
    started: datetime
    finished: datetime


def buildah_provenance(
    build: BuildahBuild, subject_digest: str, operator_version: str
) -> dict[str, Any]:
    """The statement for an image manifest (``subject_digest``) a Buildah build Job pushed.

    Written by the operator, like the rebase's: the build pod runs the tenant's steps (with
    Buildah's chroot isolation, weaker than BuildKit's), so nothing it could forge is in here
    but the subject, which the operator has read back from the registry.
    """
    parameters: dict[str, Any] = {
        "image": {"namespace": build.namespace, "name": build.image},
        "parent": {"name": build.parent_name, "digest": build.parent_digest},
        "dockerfile": {"digest": build.dockerfile_digest},
        "args": dict(sorted(build.build_args.items())),
    }
    dependencies = [_dependency("parent", build.parent_repository, build.parent_digest)]
    if build.context_digest is not None:
        parameters["context"] = {"digest": build.context_digest}
    if build.git_url is not None:
        parameters["git"] = {
            "url": build.git_url,
            "revision": build.git_revision,
            "commit": build.source_commit,
        }
        if build.source_commit is not None:
            dependencies.append(
                {
                    "name": "source",
                    "uri": f"git+{build.git_url}",
                    "digest": {"gitCommit": build.source_commit},
                }
            )
    return _statement(
        build.repository,
        subject_digest,
        {
            "buildDefinition": {
                "buildType": BUILDAH_BUILD_TYPE,
                "externalParameters": parameters,
                "internalParameters": {"builderImage": build.builder_image, "job": build.job},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDAH_BUILDER, "version": {"lamina": operator_version}},
                "metadata": {
                    "invocationId": build.invocation,
                    "startedOn": _time(build.started),
                    "finishedOn": _time(build.finished),
                },
            },
        },
    )
