"""Carrying out ScanImage: the scan Job of an image without an SBOM, and attaching its result.

The decision (:func:`lamina.domain.reconcile.decide`) asks for a scan of every Image whose
digest has no SBOM and nothing else to do; this executor starts the scan Job (at most
``settings.limit`` at once), leaves a running one alone (the Job watch wakes the loop when it
finishes: :meth:`ScanExecutor.saw_jobs`), and collects a finished one: its pod's log read
bounded, checked (:func:`lamina.domain.sbom_scan.parse_sbom`), the document attached in this
process beside the statements the image already has, the new index signed (when signing is
on) and only then put under the Image's tags.  Every outcome is an ``ImageChanged`` the loop
writes: the ``SBOM`` condition, and on success the new ``indexDigest``, ``attestations`` and
``signature``.  ``status.digest`` never moves: the image is the same.

A failed scan is that Image's ``SBOM=False ScanFailed`` condition, with a back-off kept in
memory (a restarted operator tries again at once); its Ready condition and digest stay.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from lamina.api.attestation import AttestationStatus
from lamina.api.image import ImageStatus
from lamina.domain.attestation_index import (
    attestation_descriptors,
    kept_statements,
    platform_of,
    reattested_image,
)
from lamina.domain.attestations import SPDX_DOCUMENT, sbom_statement
from lamina.domain.commit_job import CommitSettings, push_secret_copy
from lamina.domain.reconcile import ImageChanged, Outcome
from lamina.domain.sbom_scan import (
    SBOM_MAX_BYTES,
    SCAN_CONTAINER,
    SCAN_PURPOSE,
    ScanImage,
    ScanResultInvalid,
    ScanSettings,
    parse_sbom,
    retry_delay,
    scan_failed,
    scan_job,
    scan_job_name,
    scan_of,
    scanned,
    scanning,
    with_sbom_condition,
)
from lamina.domain.signatures import STATEMENT_MAX_BYTES
from lamina.domain.snapshot import ImageRecord
from lamina.handlers.api_errors import api_error
from lamina.handlers.jobs import finished, job_outcome
from lamina.handlers.registry_access import PushSecretError, docker_config_of, output_registry
from lamina.handlers.signing import SigningError, SigningKeys
from lamina.kube import Kube
from lamina.oci.attach import push_documents
from lamina.oci.errors import RegistryError
from lamina.oci.hosts import RegistryHosts
from lamina.oci.reference import InvalidReference, parse_reference

__all__ = ["ScanExecutor"]

LABEL_PURPOSE = "lamina.dev/purpose"
# Failing scans remembered at once (the oldest is forgotten first: it is then tried at once).
_ATTEMPTS_KEPT = 4096


class ScanJobFailed(Exception):
    """The scan Job ended without an SBOM (the message has its reason and last words)."""


_FAILURES = (
    ScanJobFailed,
    ScanResultInvalid,
    SigningError,
    PushSecretError,
    RegistryError,
    InvalidReference,
    ApiException,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ValueError,
    KeyError,
)


@dataclass
class _Attempts:
    count: int
    retry_at: datetime


@dataclass
class ScanExecutor:
    kube: Kube
    settings: ScanSettings
    hosts: RegistryHosts
    signing: SigningKeys
    # The scan Jobs in the operator's namespace, by name, as its Job watch shows them.
    jobs: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    # Failed scans, by (Image uid, digest): how often, and not again before when.
    attempts: dict[tuple[str, str], _Attempts] = field(default_factory=dict)
    # Scans being started now: Images' scans run side by side (each is one registry-bound
    # action of the build pass), so a place is taken before the Job's create is awaited.
    _starting: int = field(default=0, init=False)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.image)

    def saw_jobs(self, event: str, jobs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
        """Keep the watch's scan Jobs; the Images whose scan changed (to wake the loop)."""
        scans = [
            job
            for job in jobs
            if (job["metadata"].get("labels") or {}).get(LABEL_PURPOSE) == SCAN_PURPOSE
        ]
        if event == "LISTED":
            self.jobs = {job["metadata"]["name"]: job for job in scans}
        for job in scans:
            if event == "DELETED":
                self.jobs.pop(job["metadata"]["name"], None)
            elif event != "LISTED":
                self.jobs[job["metadata"]["name"]] = job
        touched = []
        for job in scans:
            meta = job["metadata"]
            target = scan_of(meta.get("labels") or {}, meta.get("annotations") or {})
            if target is not None:
                touched.append((target[0], target[1]))
        return touched

    def _running(self) -> int:
        return self._starting + sum(1 for job in self.jobs.values() if not finished(job))

    async def act(
        self,
        session: aiohttp.ClientSession,
        actions: Sequence[ScanImage],
        images: Mapping[str, Mapping[str, ImageRecord]],
        now: datetime,
        logger: Any,
    ) -> list[Outcome]:
        """Start, leave or collect the scan of each Image; one Image's failure is its own."""
        if not self.enabled:
            return []
        outcomes: list[Outcome] = []
        for action in actions:
            record = images.get(action.namespace, {}).get(action.name)
            if record is None or record.spec is None:
                continue
            try:
                outcome = await self._one(session, record, action.digest, now, logger)
            except Exception as error:  # never stop the others' scans (nor the loop)
                logger.warning(f"{action.namespace}/{action.name}: scan: {error!r}")
                outcome = self.failed(record, action.digest, f"{type(error).__name__}", now)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def actionable(
        self,
        actions: Sequence[ScanImage],
        images: Mapping[str, Mapping[str, ImageRecord]],
        now: datetime,
    ) -> list[ScanImage]:
        """The scans that would do something now: a finished Job to collect, or a Job to
        start with a slot free, neither in back-off.  The build pass admits only these (and
        collects first), so scans that wait take no registry place from anyone's build."""
        if not self.enabled:
            return []
        collect: list[ScanImage] = []
        start: list[ScanImage] = []
        for action in actions:
            record = images.get(action.namespace, {}).get(action.name)
            if record is None or record.spec is None:
                continue
            attempt = self.attempts.get((record.uid, action.digest))
            if attempt is not None and attempt.retry_at > now:
                continue
            job = self.jobs.get(scan_job_name(record.uid, action.digest))
            if job is None:
                start.append(action)
            elif finished(job):
                collect.append(action)
        free = max(self.settings.limit - self._running(), 0)
        return collect + start[:free]

    async def _one(
        self,
        session: aiohttp.ClientSession,
        record: ImageRecord,
        digest: str,
        now: datetime,
        logger: Any,
    ) -> Outcome | None:
        name = scan_job_name(record.uid, digest)
        job = self.jobs.get(name)
        attempt = self.attempts.get((record.uid, digest))
        if attempt is not None and attempt.retry_at > now:
            return None  # a failed collect waits its back-off too
        if job is None:
            if self._running() >= self.settings.limit:
                return None  # a slot frees when a scan finishes (its Job event wakes the loop)
            self._starting += 1
            try:
                return await self._start(record, digest, now, logger)
            finally:
                self._starting -= 1
        if not finished(job):
            return None
        return await self._collect(session, record, digest, job, now=now, logger=logger)

    def _changed(
        self, record: ImageRecord, status: ImageStatus, verdict: Any, now: datetime
    ) -> Outcome:
        return ImageChanged(
            record.namespace,
            record.name,
            with_sbom_condition(status, verdict, record.generation, now),
        )

    def failed(self, record: ImageRecord, digest: str, why: str, now: datetime) -> Outcome:
        key = (record.uid, digest)
        count = (self.attempts[key].count if key in self.attempts else 0) + 1
        delay = retry_delay(count)
        self.attempts[key] = _Attempts(count, now + delay)
        while len(self.attempts) > _ATTEMPTS_KEPT:  # Images deleted while failing
            del self.attempts[next(iter(self.attempts))]
        return self._changed(record, record.status, scan_failed(digest, why, count, delay), now)

    async def _docker_config(self, record: ImageRecord) -> str | None:
        assert record.spec is not None
        secret = record.spec.output.push_secret
        if not secret:
            return None
        found = await self.kube.get_secret(record.namespace, secret)
        return docker_config_of(found, record.namespace, secret)

    async def _start(self, record: ImageRecord, digest: str, now: datetime, logger: Any) -> Outcome:
        spec = record.spec
        assert spec is not None
        try:
            docker_config = await self._docker_config(record)
        except PushSecretError as error:
            return self.failed(record, digest, str(error), now)
        name = scan_job_name(record.uid, digest)
        secret = f"{name}-push" if docker_config is not None else None
        body = scan_job(
            namespace=record.namespace,
            name=record.name,
            uid=record.uid,
            repository=spec.output.repository,
            digest=digest,
            output_insecure=spec.output.insecure,
            push_secret_copy=secret,
            settings=self.settings,
        )
        try:
            job = await self.kube.create_job(body)
        except ApiException as error:
            return self.failed(record, digest, f"the scan Job was refused: {api_error(error)}", now)
        self.jobs[name] = job  # until the watch says so: not started twice
        if docker_config is not None and secret is not None:
            copy = push_secret_copy(
                uid=record.uid,
                settings=CommitSettings(namespace=self.settings.namespace, image=""),
                docker_config_json=docker_config,
                owner={
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job["metadata"]["uid"],
                },
            )
            copy["metadata"]["name"] = secret
            await self.kube.create_secret(copy)
        logger.info(f"{record.namespace}/{record.name}: scanning {digest} (Job {name})")
        job_ref = f"{self.settings.namespace}/{name}"
        return self._changed(record, record.status, scanning(digest, job_ref), now)

    async def _collect(
        self,
        session: aiohttp.ClientSession,
        record: ImageRecord,
        digest: str,
        job: Mapping[str, Any],
        *,
        now: datetime,
        logger: Any,
    ) -> Outcome:
        name = job["metadata"]["name"]
        try:
            document = await self._result(job, digest)
            status, statement_digest = await self._attach(session, record, digest, document, now)
        except _FAILURES as error:
            why = api_error(error) if isinstance(error, ApiException) else str(error)
            logger.warning(f"{record.namespace}/{record.name}: no SBOM for {digest}: {why}")
            outcome = self.failed(record, digest, why, now)
        else:
            self.attempts.pop((record.uid, digest), None)
            logger.info(f"{record.namespace}/{record.name}: SBOM of {digest} attached")
            outcome = self._changed(record, status, scanned(digest, statement_digest), now)
        # Read (or failed): the next scan of this digest is a new Job.
        try:
            await self.kube.delete_job(self.settings.namespace, name)
        except ApiException as error:  # its TTL removes it; a retry would find it finished
            logger.warning(f"deleting the scan Job {name}: {api_error(error)}")
        self.jobs.pop(name, None)
        return outcome

    async def _result(self, job: Mapping[str, Any], digest: str) -> dict[str, Any]:
        """The scan's SPDX document, checked; raises ScanJobFailed / ScanResultInvalid."""
        meta = job["metadata"]
        outcome = await job_outcome(self.kube, job)
        if outcome.state != "succeeded":
            # The Job's and the kubelet's words only: the pod's own termination message is
            # whatever the scanned image made syft write.
            reason = outcome.exit_reason or outcome.job_reason or "Failed"
            raise ScanJobFailed(f"the scan Job failed ({reason})")
        pods = await self.kube.list_pods(meta["namespace"], f"job-name={meta['name']}")
        done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        if not done:
            raise ScanJobFailed("the scan Job's pod is gone")
        data = await self.kube.read_pod_log(
            meta["namespace"], done[0]["metadata"]["name"], SCAN_CONTAINER, SBOM_MAX_BYTES
        )
        # A few MiB of hostile JSON: parsed off the event loop.
        return await asyncio.to_thread(parse_sbom, data, digest)

    async def _attach(
        self,
        session: aiohttp.ClientSession,
        record: ImageRecord,
        digest: str,
        document: Mapping[str, Any],
        now: datetime,
    ) -> tuple[ImageStatus, str]:
        """Attach the SBOM beside the image's statements; sign; move the tags.  The status
        the registry now backs, and the statement's digest."""
        spec, status = record.spec, record.status
        assert spec is not None
        client = output_registry(record, self.hosts, await self._docker_config(record), session)
        top = status.index_digest or digest
        target = parse_reference(f"{spec.output.repository}@{top}")
        image, index = await client.resolve_image(target)
        if image.digest != digest:
            raise ValueError(f"{spec.output.repository}@{top} no longer holds {digest}")
        kept: list[dict[str, Any]] = []
        for attestation in attestation_descriptors(index.json(), digest) if index else []:
            manifest = await client.get_manifest(target, attestation)
            kept += kept_statements(manifest.json(), SPDX_DOCUMENT)
        config = json.loads(await client.get_blob(target, image.json()["config"]["digest"]))
        statement = sbom_statement(target.name, digest, document)
        attested = reattested_image(
            index=index.json() if index else None,
            image={
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.data),
                "platform": platform_of(config),
            },
            kept=kept,
            statement=statement,
        )
        if len(attested.statement.data) > STATEMENT_MAX_BYTES:
            raise ScanResultInvalid(
                f"the SBOM statement is larger than {STATEMENT_MAX_BYTES} bytes"
            )
        pushed = await push_documents(client, target, attested)
        await client.put_manifest(target, pushed, pushed.digest)
        signature = status.signature
        if (source := self.signing.source(record.namespace, spec.output.sign)) is not None:
            # Signed before any tag names it: a tag never points at an unsigned index.
            signature = await self.signing.sign(
                client, source, spec.output.repository, pushed.digest, now, image_digest=digest
            )
        for tag in spec.output.tags:
            try:
                now_at = await client.head_manifest(target, tag)
            except RegistryError as error:
                if error.status != 404:
                    raise
                now_at = top  # the tag is gone: it names the image again
            if now_at not in (top, pushed.digest):
                continue  # moved meanwhile (a new build): that push wins
            await client.put_manifest(target, pushed, tag)
        facts = await client.attestations(target, pushed, digest)
        updated = status.model_copy(
            update={
                "index_digest": pushed.digest,
                "attestations": [AttestationStatus.model_validate(f.status()) for f in facts]
                or None,
                "signature": signature,
            }
        )
        return updated, attested.statement.digest
