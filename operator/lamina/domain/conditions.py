"""kstatus conditions: Ready, Reconciling and Stalled, plus domain conditions.

``lastTransitionTime`` must only move when a condition's status flips; otherwise every
reconcile would rewrite status and wake every watcher.  So the new conditions are merged with
the old ones here, with the clock passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from lamina.api.meta import Condition, ConditionStatus

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
PARENT_CURRENT = "ParentCurrent"
VULNERABLE = "Vulnerable"
# Whether the image Lamina scanned itself (rebased, committed, Buildah-built) carries its SBOM.
SBOM = "SBOM"

# Every condition type the operator writes.
CONDITION_TYPES = frozenset({READY, RECONCILING, STALLED, PARENT_CURRENT, VULNERABLE, SBOM})

# The catalogue of condition reasons: the words users grep and alert on, and the rows of the
# README's reason table (tests/unit/test_reason_catalogue.py keeps the two equal).  One reason
# per line, each with the condition it explains, so parallel additions merge cleanly.
REASONS: dict[str, str] = {
    # Image: tree and builds
    "UpToDate": READY,
    "BuildPending": RECONCILING,
    "WaitingForParent": RECONCILING,
    "WaitingForSource": RECONCILING,
    "BuildQueued": RECONCILING,
    "Building": RECONCILING,
    "BuildFailed": STALLED,
    "PushDenied": STALLED,
    "OOMKilled": STALLED,
    "Evicted": STALLED,
    "DeadlineExceeded": STALLED,
    "DockerfileInvalid": STALLED,
    "BuildNotSupported": STALLED,
    "ContextNotFound": STALLED,
    "ContextTooLarge": STALLED,
    "PushSecretNotFound": STALLED,
    "PushSecretInvalid": STALLED,
    "VerificationFailed": STALLED,
    "InvalidResult": STALLED,
    "BuildJobLost": STALLED,
    "BuildJobRefused": STALLED,
    "ReconcileFailed": STALLED,
    "RegistryTimeout": STALLED,
    "SpecInvalid": STALLED,
    "ParentUpdateHeld": PARENT_CURRENT,
    "ParentChanged": PARENT_CURRENT,
    "Committed": READY,
    "CommitPending": RECONCILING,
    "CommitQueued": RECONCILING,
    "ParentNotFound": STALLED,
    "ParentCycle": STALLED,
    "AncestorStalled": STALLED,
    "VulnerableLayer": VULNERABLE,
    "NoKnownAdvisory": VULNERABLE,
    # ContainerCommit
    "PodNotFound": STALLED,
    "PodNotScheduled": STALLED,
    "ContainerNotFound": STALLED,
    "ContainerNotRunning": STALLED,
    "TargetReady": RECONCILING,
    "Committing": RECONCILING,
    "CommitFailed": STALLED,
    "CommitterKilled": STALLED,
    "CommitJobLost": STALLED,
    # Signing of pushed images (spec.output.sign or the operator's default key)
    "SigningSecretNotFound": STALLED,
    "SigningKeyInvalid": STALLED,
    "SigningPasswordIncorrect": STALLED,
    "SigningFailed": STALLED,
    "AttestationRefused": STALLED,
    # A Job's pod that cannot start (lamina.domain.pod_problems), on Images and commits
    "ImagePullBackOff": RECONCILING,
    "ErrImagePull": RECONCILING,
    "InvalidImageName": RECONCILING,
    "Unschedulable": RECONCILING,
    "CreateContainerConfigError": RECONCILING,
    "CreateContainerError": RECONCILING,
    "RunContainerError": RECONCILING,
    # The API server refused or failed a request (lamina.domain.api_failures)
    "NamespaceNotFound": STALLED,
    "Forbidden": STALLED,
    "Refused": STALLED,
    "ApiUnavailable": RECONCILING,
    # A registry's answer that an object's status reports (lamina.oci.errors)
    "ManifestTooLarge": RECONCILING,
    "RegistryResponseTooLarge": RECONCILING,
    "RegistryResponseInvalid": RECONCILING,
    "RegistryRefused": RECONCILING,
    "RegistryUnavailable": RECONCILING,
    "RegistryRateLimited": RECONCILING,
    "RegistryRedirectRefused": RECONCILING,
    "TokenRealmRefused": RECONCILING,
    "DigestMismatch": RECONCILING,
    # A git context's revision could not be resolved (lamina.domain.git_refs, lamina.git)
    "GitRevisionNotFound": STALLED,
    "GitRepositoryNotFound": STALLED,
    "GitAuthenticationFailed": STALLED,
    "GitCredentialsNotFound": STALLED,
    "GitCredentialsInvalid": STALLED,
    "GitProtocolError": STALLED,
    "GitSourceUnavailable": RECONCILING,
    # The SBOM of an image without one of its own (lamina.domain.sbom_scan); Ready stays
    "Scanning": SBOM,
    "ScanFailed": SBOM,
    "Scanned": SBOM,
}

# The registry reasons by name, for lamina.oci.errors.  The message names the registry and
# the limit, never what the registry sent.
MANIFEST_TOO_LARGE = "ManifestTooLarge"
REGISTRY_RESPONSE_TOO_LARGE = "RegistryResponseTooLarge"
REGISTRY_RESPONSE_INVALID = "RegistryResponseInvalid"
REGISTRY_REFUSED = "RegistryRefused"
REGISTRY_UNAVAILABLE = "RegistryUnavailable"
REGISTRY_RATE_LIMITED = "RegistryRateLimited"
REGISTRY_REDIRECT_REFUSED = "RegistryRedirectRefused"
TOKEN_REALM_REFUSED = "TokenRealmRefused"
DIGEST_MISMATCH = "DigestMismatch"

# The git reasons by name (status.source.message starts with one).
GIT_REVISION_NOT_FOUND = "GitRevisionNotFound"
GIT_REPOSITORY_NOT_FOUND = "GitRepositoryNotFound"
GIT_AUTHENTICATION_FAILED = "GitAuthenticationFailed"
GIT_CREDENTIALS_NOT_FOUND = "GitCredentialsNotFound"
GIT_CREDENTIALS_INVALID = "GitCredentialsInvalid"
GIT_PROTOCOL_ERROR = "GitProtocolError"
GIT_SOURCE_UNAVAILABLE = "GitSourceUnavailable"

# Reasons for a failure while handling one object (it is Stalled with the reason; the others
# go on).  The message carries the error, or the API server's reason and message.
RECONCILE_FAILED = "ReconcileFailed"
# One registry-bound action (collecting a build, rebasing, signing) ran past its deadline.
REGISTRY_TIMEOUT = "RegistryTimeout"
SPEC_INVALID = "SpecInvalid"
BUILD_JOB_REFUSED = "BuildJobRefused"
# The build context (Dockerfile and files) does not fit in the one ConfigMap that carries it.
CONTEXT_TOO_LARGE = "ContextTooLarge"

# Why an image that was to be signed was not (lamina.oci.cosign_keys, lamina.handlers.signing).
SIGNING_SECRET_NOT_FOUND = "SigningSecretNotFound"
SIGNING_KEY_INVALID = "SigningKeyInvalid"
SIGNING_PASSWORD_INCORRECT = "SigningPasswordIncorrect"
SIGNING_FAILED = "SigningFailed"
ATTESTATION_REFUSED = "AttestationRefused"

# The scan that gives an image without an SBOM its own (the SBOM condition).
SCANNING = "Scanning"
SCAN_FAILED = "ScanFailed"
SCANNED = "Scanned"


@dataclass(frozen=True)
class Verdict:
    """A condition as decided, before it is stamped with times and generations."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def kstatus(
    *, ready: bool, progressing: bool, reason: str, message: str
) -> tuple[Verdict, Verdict, Verdict]:
    """The three kstatus conditions for one summary state.

    Exactly one of Ready / Reconciling / Stalled is True: ready, still working, or stuck until
    someone changes something.
    """
    stalled = not ready and not progressing
    return (
        Verdict(READY, "True" if ready else "False", reason, message),
        Verdict(RECONCILING, "True" if progressing else "False", reason, message),
        Verdict(STALLED, "True" if stalled else "False", reason, message),
    )


def merge_conditions(
    old: Sequence[Condition] | None,
    verdicts: Iterable[Verdict],
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """The new condition list: one entry per verdict, transition times kept where unchanged.

    Conditions of other types found in ``old`` are kept as they are: other parts of the
    operator own them.
    """
    previous = {c.type: c for c in old or []}
    decided: dict[str, Condition] = {}
    for verdict in verdicts:
        before = previous.get(verdict.type)
        unchanged = before is not None and before.status == verdict.status
        decided[verdict.type] = Condition(
            type=verdict.type,
            status=verdict.status,
            reason=verdict.reason,
            message=verdict.message,
            last_transition_time=before.last_transition_time if unchanged and before else now,
            observed_generation=generation,
        )
    kept = [c for c in old or [] if c.type not in decided]
    return [*decided.values(), *kept]


def same_conditions(a: Sequence[Condition] | None, b: Sequence[Condition] | None) -> bool:
    """Equal in everything but transition times (which only follow the rest)."""

    def essence(conditions: Sequence[Condition] | None) -> set[tuple[object, ...]]:
        return {
            (c.type, c.status, c.reason, c.message, c.observed_generation) for c in conditions or []
        }

    return essence(a) == essence(b)
