"""An SBOM for every image that has none of its own: when to scan, the scan Job, its result.

BuildKit builds carry the SPDX SBOM its generator made.  A rebased image (its parent's layers
changed: the old SBOM would list the old parent's packages), a committed image and a Buildah
build carry none, so the operator scans the image *as pushed*: a Job in its own namespace runs
syft against ``registry:<repository>@<digest>`` (the image manifest, by digest: what is
scanned is exactly what the statement will be about) and prints the SPDX JSON document.  The
operator reads it back from the pod's log, bounded, and treats it as hostile (syft parsed the
tenant's files, and a crafted file may own the scan pod): at most :data:`SBOM_MAX_BYTES`,
strict UTF-8 JSON, an SPDX 2 document that describes a package whose version or SHA-256 is
that digest (:func:`parse_sbom`).  Only then does it attach the document, in its own process,
next to the statements the image already carries, and sign it with the image.

The scan pod gets nothing it could misuse: no service account token, no privilege, a
read-only root filesystem, non-root, every capability dropped (the "restricted" profile), the
Image's own push credentials only (as a build Job gets them: it can read what the tenant may
read), a bounded scratch volume and a deadline.  No spec value reaches a shell: the
scanner's arguments are an argv list of the checked repository and digest.

A scan that fails loses nothing: the Image stays Ready on its digest; its ``SBOM`` condition
says why and when it is tried again (back-off from :data:`RETRY_FIRST` doubling to
:data:`RETRY_MAX`).  Pure: values in, documents and verdicts out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lamina.api.attestation import AttestationStatus
from lamina.api.image import ImageStatus
from lamina.api.meta import REPOSITORY_PATTERN
from lamina.api.text import pattern_matches
from lamina.domain.attestations import SPDX_DOCUMENT
from lamina.domain.conditions import (
    SBOM,
    SCAN_FAILED,
    SCANNED,
    SCANNING,
    Verdict,
    merge_conditions,
    same_conditions,
)
from lamina.domain.job_resources import JobResources
from lamina.domain.labels import label_value
from lamina.domain.snapshot import ImageRecord

__all__ = [
    "RETRY_FIRST",
    "RETRY_MAX",
    "SBOM_MAX_BYTES",
    "SCAN_CONTAINER",
    "SCAN_PURPOSE",
    "ScanImage",
    "ScanResultInvalid",
    "ScanSettings",
    "has_sbom",
    "parse_sbom",
    "retry_delay",
    "scan_due",
    "scan_failed",
    "scan_job",
    "scan_job_name",
    "scan_of",
    "scanned",
    "scanning",
    "with_sbom_condition",
]

SCAN_PURPOSE = "scan"
SCAN_CONTAINER = "scan"
MANAGED_BY = "lamina"
LABEL_PURPOSE = "lamina.dev/purpose"
LABEL_SCANNED_UID = "lamina.dev/scanned-image-uid"
ANNOTATION_IMAGE_NAME = "lamina.dev/image-name"
ANNOTATION_IMAGE_NAMESPACE = "lamina.dev/image-namespace"
ANNOTATION_DIGEST = "lamina.dev/scanned-digest"
DOCKER_CONFIG_DIR = "/var/run/lamina/docker"
SCRATCH_DIR = "/tmp"
# The SPDX document as syft prints it: a large Debian image's is a few MiB.  The statement
# that wraps it must stay under what signing reads back (lamina.domain.signatures: 16 MiB).
SBOM_MAX_BYTES = 12 * 1024 * 1024
# JSON values in those bytes (a count of the separators and brackets, which a string's own
# characters can only raise): what parsing makes Python objects of. 12 MiB of ``[[],[],…]``
# would otherwise be four million lists, some 300 MiB in the operator; syft's documents have
# one separator per 30 bytes or so, so real SBOMs up to the byte limit pass.
SBOM_MAX_VALUES = 600_000
RETRY_FIRST = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_UNPRIVILEGED_USER = 65532


@dataclass(frozen=True)
class ScanSettings:
    """The operator's scan settings: ``image`` empty turns scanning off."""

    namespace: str
    # An image whose entrypoint is syft (docker.io/anchore/syft is one).
    image: str = ""
    deadline_seconds: int = 600
    # Scan Jobs running at once, over every namespace.
    limit: int = 2
    # Registries that speak plain HTTP (the operator's registry settings).
    insecure: frozenset[str] = frozenset()
    resources: JobResources = field(default_factory=JobResources)
    # The scratch volume syft unpacks the image into (unset: the node's own bound).
    scratch_size_limit: str | None = None


@dataclass(frozen=True)
class ScanImage:
    """The action: give the Image's current digest an SBOM (start, follow or collect its
    scan Job)."""

    namespace: str
    name: str
    digest: str


def has_sbom(attestations: Sequence[AttestationStatus] | None, digest: str) -> bool:
    """Whether an SPDX statement about ``digest`` is attached."""
    return any(
        entry.predicate_type == SPDX_DOCUMENT and entry.subject == digest
        for entry in attestations or []
    )


def scan_due(record: ImageRecord) -> ScanImage | None:
    """The Image's digest has no SBOM: scan it.  Asked only of an Image with nothing else to
    do (no build running or wanted), so the digest is the one that stays."""
    status = record.status
    if record.spec is None or record.status_unreadable or status.digest is None:
        return None
    if has_sbom(status.attestations, status.digest):
        return None
    return ScanImage(record.namespace, record.name, status.digest)


def scan_job_name(image_uid: str, digest: str) -> str:
    """Derived from the Image and the digest alone: a restarted operator finds its Job, and a
    new digest gets a new Job."""
    return "lamina-scan-" + hashlib.sha256(f"{image_uid}/{digest}".encode()).hexdigest()[:20]


def _registry(repository: str) -> str:
    first, slash, _ = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def scan_job(
    *,
    namespace: str,
    name: str,
    uid: str,
    repository: str,
    digest: str,
    output_insecure: bool,
    push_secret_copy: str | None,
    settings: ScanSettings,
) -> dict[str, Any]:
    """The scan Job for ``repository@digest`` (an Image's output repository and digest)."""
    if not pattern_matches(REPOSITORY_PATTERN, repository):
        raise ValueError(f"{repository[:200]!r} is not a repository")
    if not _DIGEST.match(digest):
        raise ValueError(f"{digest[:80]!r} is not a sha256 digest")
    # Not the build Jobs' image-name/-namespace/-uid labels: whoever selects an Image's build
    # Jobs by them must not get its scans too.
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_PURPOSE: SCAN_PURPOSE,
        LABEL_SCANNED_UID: label_value(uid),
    }
    annotations = {
        ANNOTATION_IMAGE_NAME: name,
        ANNOTATION_IMAGE_NAMESPACE: namespace,
        ANNOTATION_DIGEST: digest,
    }
    env = [
        {"name": "SYFT_CHECK_FOR_APP_UPDATE", "value": "false"},
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "TMPDIR", "value": SCRATCH_DIR},
        {"name": "XDG_CACHE_HOME", "value": f"{SCRATCH_DIR}/cache"},
        {"name": "XDG_CONFIG_HOME", "value": f"{SCRATCH_DIR}/config"},
    ]
    if output_insecure or _registry(repository) in settings.insecure:
        # The only registry the scan talks to is the output's.
        env.append({"name": "SYFT_REGISTRY_INSECURE_USE_HTTP", "value": "true"})
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH_DIR}]
    scratch: dict[str, Any] = (
        {"sizeLimit": settings.scratch_size_limit} if settings.scratch_size_limit else {}
    )
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": scratch}]
    if push_secret_copy is not None:
        env.append({"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG_DIR})
        mounts.append({"name": "push-secret", "mountPath": DOCKER_CONFIG_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "push-secret",
                "secret": {
                    "secretName": push_secret_copy,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    resources = settings.resources.wire()
    container: dict[str, Any] = {
        "name": SCAN_CONTAINER,
        "image": settings.image,
        # The image's entrypoint is syft; the document alone goes to stdout.
        "args": ["scan", f"registry:{repository}@{digest}", "--output", "spdx-json", "--quiet"],
        "env": env,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": _UNPRIVILEGED_USER,
            "runAsGroup": _UNPRIVILEGED_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
        **({"resources": resources} if resources else {}),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": scan_job_name(uid, digest),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def scan_of(
    labels: Mapping[str, str], annotations: Mapping[str, str]
) -> tuple[str, str, str] | None:
    """(namespace, name, digest) of the Image a scan Job is for (its annotations hold the full
    names; the labels only say it is a scan)."""
    if labels.get(LABEL_PURPOSE) != SCAN_PURPOSE:
        return None
    namespace = annotations.get(ANNOTATION_IMAGE_NAMESPACE)
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    digest = annotations.get(ANNOTATION_DIGEST)
    if not namespace or not name or not digest or not _DIGEST.match(digest):
        return None
    return namespace, name, digest


class ScanResultInvalid(Exception):
    """The scan's output is not an SBOM of the scanned image; the message says which check
    failed, never what the output held."""


def _described(document: Mapping[str, Any]) -> set[str]:
    ids: set[str] = set()
    listed = document.get("documentDescribes")
    if isinstance(listed, list):
        ids |= {item for item in listed if isinstance(item, str)}
    relationships = document.get("relationships")
    for relation in relationships if isinstance(relationships, list) else []:
        if (
            isinstance(relation, Mapping)
            and relation.get("spdxElementId") == "SPDXRef-DOCUMENT"
            and relation.get("relationshipType") == "DESCRIBES"
            and isinstance(relation.get("relatedSpdxElement"), str)
        ):
            ids.add(relation["relatedSpdxElement"])
    return ids


def _is_the_image(package: Mapping[str, Any], digest: str) -> bool:
    if package.get("versionInfo") == digest:
        return True
    checksums = package.get("checksums")
    return any(
        isinstance(checksum, Mapping)
        and checksum.get("algorithm") == "SHA256"
        and checksum.get("checksumValue") == digest.removeprefix("sha256:")
        for checksum in (checksums if isinstance(checksums, list) else [])
    )


def parse_sbom(data: bytes, digest: str) -> dict[str, Any]:
    """The SPDX document the scan printed, checked to be one about the image ``digest``.

    Raises ScanResultInvalid: larger than :data:`SBOM_MAX_BYTES`, not UTF-8 JSON, not an
    object, not an SPDX 2 document, or describing no package that is this image (syft's
    document describes the scanned image as a package whose version is its manifest digest).
    """
    if len(data) > SBOM_MAX_BYTES:
        raise ScanResultInvalid(f"the scan printed more than {SBOM_MAX_BYTES} bytes")
    if not data.strip():
        raise ScanResultInvalid("the scan printed nothing")
    values = sum(data.count(separator) for separator in (b",", b":", b"[", b"{"))
    if values > SBOM_MAX_VALUES:
        raise ScanResultInvalid(
            f"the scan printed {values:,} JSON values, more than the {SBOM_MAX_VALUES:,} an "
            "SBOM is read with"
        )
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        kind = "UTF-8" if isinstance(error, UnicodeDecodeError) else "JSON"
        raise ScanResultInvalid(f"the scan's output is not {kind}") from None
    if not isinstance(document, dict):
        raise ScanResultInvalid("the scan's output is not a JSON object")
    version = document.get("spdxVersion")
    if not isinstance(version, str) or not version.startswith("SPDX-2."):
        raise ScanResultInvalid("the scan's output is not an SPDX 2 document")
    if document.get("SPDXID") != "SPDXRef-DOCUMENT":
        raise ScanResultInvalid("the scan's output has no SPDXRef-DOCUMENT")
    packages = document.get("packages")
    if not isinstance(packages, list):
        raise ScanResultInvalid("the SPDX document has no package list")
    described = _described(document)
    if not any(
        isinstance(package, Mapping)
        and package.get("SPDXID") in described
        and _is_the_image(package, digest)
        for package in packages
    ):
        raise ScanResultInvalid(f"the SPDX document does not describe the image {digest}")
    return document


def retry_delay(attempt: int) -> timedelta:
    """How long after failed attempt number ``attempt`` (1, 2, ...) the scan runs again."""
    seconds = RETRY_FIRST.total_seconds() * 2.0 ** max(0, attempt - 1)
    return timedelta(seconds=min(seconds, RETRY_MAX.total_seconds()))


def scanning(digest: str, job: str) -> Verdict:
    return Verdict(SBOM, "False", SCANNING, f"scanning {digest} for its SBOM (Job {job})")


def scan_failed(digest: str, why: str, attempt: int, retry_in: timedelta) -> Verdict:
    seconds = int(retry_in.total_seconds())
    return Verdict(
        SBOM,
        "False",
        SCAN_FAILED,
        f"{digest} has no SBOM: {why[:600]}; scanned again in {seconds}s (attempt {attempt})",
    )


def scanned(digest: str, statement_digest: str) -> Verdict:
    return Verdict(SBOM, "True", SCANNED, f"SPDX SBOM of {digest} attached: {statement_digest}")


def with_sbom_condition(
    status: ImageStatus, verdict: Verdict, generation: int | None, now: datetime
) -> ImageStatus:
    """``status`` saying ``verdict`` (the other conditions kept as they are: the loop decides
    them, and keeps this one, whose type it does not decide)."""
    conditions = merge_conditions(status.conditions, [verdict], generation=generation, now=now)
    if same_conditions(status.conditions, conditions):
        return status
    return status.model_copy(update={"conditions": conditions})
