"""ContainerCommit handlers: check the target, run the commit Job, record the result.

Level-triggered: every event (on the commit, its target Pod, or its Job) re-derives the next
step from what exists.  A Job name derived from the commit's UID makes "create the Job"
idempotent, so an operator restarted mid-commit adopts the running Job.  No kopf timers: kopf
puts a finalizer on every object with a timer, and a commit must stay deletable while the
operator is down.

Nothing that goes wrong is silent: a refused or failed API request becomes a condition on the
commit (with the API's reason and message), a log line and a metric, and is retried with a
back-off; a commit Job pod that cannot start (image pull back-off, unschedulable, a container
create error) shows its reason in the commit's status until it starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, Protocol

import aiohttp
import kopf

from lamina.api.commit import ContainerCommitSpec, ContainerCommitStatus
from lamina.api.meta import GROUP, VERSION
from lamina.api.signing import SignatureStatus
from lamina.domain.api_failures import failure_verdicts
from lamina.domain.commit_job import (
    LABEL_PURPOSE,
    MANAGED_BY,
    CommitSettings,
    CommitTarget,
    commit_job,
    commit_job_name,
    commit_of,
    push_secret_copy,
    thaw_job,
)
from lamina.domain.commit_outcome import (
    CommitResult,
    CommitVerdict,
    judge_commit_job,
    verification_failed,
)
from lamina.domain.commit_preflight import preflight
from lamina.domain.commit_slots import COMMIT_QUEUED, CommitSlots, commit_slot_refusal
from lamina.domain.conditions import Verdict, kstatus, merge_conditions, same_conditions
from lamina.domain.signatures import KeySource
from lamina.handlers.commit_queue import QUEUE as COMMIT_QUEUE
from lamina.handlers.commit_record import record_committed_image
from lamina.handlers.failures import report_failure
from lamina.handlers.job_pods import job_pod_problem
from lamina.handlers.jobs import finished, job_outcome
from lamina.handlers.metrics import EVENTS, STATUS_PATCHES
from lamina.handlers.registry_access import PushSecretError, docker_config_of, read_pushed_image
from lamina.handlers.signing import SigningError, SigningKeys
from lamina.kube import Kube
from lamina.kube.client import api_failure
from lamina.oci.client import RegistryClient
from lamina.oci.errors import RegistryError
from lamina.oci.reference import parse_reference

TERMINAL_PHASES = {"Succeeded", "Failed"}
OWN_COMMIT_JOBS = f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_PURPOSE}=commit"
# A commit waiting for a slot looks again this often (a finished commit Job frees one).
QUEUED_RECHECK_SECONDS = 5.0
_SLOTS = asyncio.Lock()
HANDLER = "commits"
# Back-off of a retried reconcile after an API failure: 5 s, doubling, at most 5 minutes.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0


_log = logging.getLogger("lamina.commits")


class Retry(Protocol):
    """Schedules another reconcile of a commit after a failure (``succeeded``: reset), or
    ``after`` seconds from now (a commit waiting for a slot)."""

    def __call__(self, uid: str, succeeded: bool = False, after: float | None = None) -> None: ...


def _waiting(status: Mapping[str, Any]) -> bool:
    return status.get("phase") not in TERMINAL_PHASES


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _signing(memo: Any) -> SigningKeys | None:
    """The operator's signing keys (with its default Secret), made once per process."""
    found = getattr(memo, "signing", None)
    if found is None and getattr(memo, "kube", None) is not None:
        config = memo.config
        found = memo.signing = SigningKeys(
            memo.kube, config.namespace, getattr(config, "signing_secret", None)
        )
    return found


def _settings(memo: Any) -> CommitSettings:
    config = memo.config
    return CommitSettings(
        namespace=config.namespace,
        image=config.committer_image,
        deadline_seconds=config.commit_deadline_seconds,
        registry_config=config.registry_config,
        containerd_root=config.containerd_root,
        containerd_state=config.containerd_state,
        slots=CommitSlots(config.max_concurrent_commits, config.max_commits_per_namespace),
        resources=config.commit_resources,
    )


@dataclass
class _Commit:
    """One ContainerCommit being reconciled, and the writes that can follow."""

    kube: Kube
    settings: CommitSettings
    namespace: str
    name: str
    body: Mapping[str, Any]
    # What the reconcile is doing now, for the condition when the API refuses it.
    step: str = field(default="read the commit's Job")
    # Set when the commit waits for a slot: look again this many seconds from now.
    again_after: float | None = None
    # Keys for output.sign (and the operator's default); without, only output.sign signs.
    signing_keys: SigningKeys | None = None

    @property
    def signing(self) -> SigningKeys:
        if self.signing_keys is None:
            self.signing_keys = SigningKeys(self.kube, self.settings.namespace, None)
        return self.signing_keys

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.body["metadata"]  # type: ignore[no-any-return]

    @property
    def status(self) -> Mapping[str, Any]:
        return self.body.get("status") or {}

    @property
    def uid(self) -> str:
        return str(self.meta["uid"])

    @cached_property
    def spec(self) -> ContainerCommitSpec:
        return ContainerCommitSpec.model_validate(dict(self.body["spec"]))

    async def write(
        self, phase: str, verdicts: Iterable[Verdict], fields: Mapping[str, Any] | None = None
    ) -> None:
        """Patch status to say ``phase``/``verdicts``/``fields`` unless it already does."""
        status = self.status
        generation = self.meta.get("generation")
        current = ContainerCommitStatus.model_validate(dict(status))
        conditions = merge_conditions(
            current.conditions, verdicts, generation=generation, now=_now()
        )
        fields = dict(fields or {})
        if (
            current.phase == phase
            and current.observed_generation == generation
            and same_conditions(current.conditions, conditions)
            and all(status.get(key) == value for key, value in fields.items())
        ):
            return
        STATUS_PATCHES.labels("containercommits").inc()
        await self.kube.patch_status(
            "containercommits",
            self.namespace,
            self.name,
            {
                "phase": phase,
                "observedGeneration": generation,
                "conditions": [c.wire() for c in conditions],
                **fields,
            },
        )

    async def fail(
        self, reason: str, message: str, fields: Mapping[str, Any] | None = None
    ) -> None:
        verdicts = kstatus(ready=False, progressing=False, reason=reason, message=message)
        await self.write("Failed", verdicts, {**(fields or {}), "completedAt": _now().isoformat()})

    async def docker_config(self) -> str | None:
        """The push Secret's dockerconfigjson text; raises PushSecretError when unusable."""
        secret = self.spec.output.push_secret
        if not secret:
            return None
        found = await self.kube.get_secret(self.namespace, secret)
        return docker_config_of(found, self.namespace, secret)


async def reconcile_commit(
    kube: Kube,
    settings: CommitSettings,
    *,
    namespace: str,
    name: str,
    body: Mapping[str, Any],
    logger: Any = None,
    retry: Retry | None = None,
    signing: SigningKeys | None = None,
) -> None:
    """Take the next step of one commit; an API failure becomes its condition and a retry."""
    commit = _Commit(kube, settings, namespace, name, body, signing_keys=signing)
    if not _waiting(commit.status):
        return
    try:
        await _reconcile(commit)
    except Exception as error:
        log = logger or _log
        failure = report_failure(HANDLER, f"{namespace}/{name}: {commit.step}", error, log)
        if failure is None:
            raise  # a bug, not the API: kopf logs it with its traceback
        phase = str(commit.status.get("phase") or "Pending")
        try:
            await commit.write(phase, failure_verdicts(commit.step, failure))
        except Exception as again:
            report_failure(HANDLER, f"{namespace}/{name}: write status", again, log)
        if retry is not None:
            retry(commit.uid)
        return
    if retry is not None:
        retry(commit.uid, succeeded=True, after=commit.again_after)


async def _reconcile(commit: _Commit) -> None:
    kube, settings = commit.kube, commit.settings
    namespace, name = commit.namespace, commit.name
    job_name = commit_job_name(commit.uid)
    job = await kube.get_job(settings.namespace, job_name)
    if job is None:
        if commit.status.get("phase") == "Running":
            await commit.fail(
                "CommitJobLost",
                f"the commit Job {settings.namespace}/{job_name} was deleted before it finished",
            )
        else:
            await _start(commit)
        return

    commit.step = f"read the commit Job {settings.namespace}/{job_name}"
    verdict = judge_commit_job(await job_outcome(kube, job))
    if verdict.phase == "Running":
        problem = await job_pod_problem(kube, job)
        if problem is not None:
            doing = f"the commit Job {settings.namespace}/{job_name}"
            await commit.write("Running", problem.verdicts(doing))
            return
        await commit.write("Running", verdict.conditions)
        return
    if verdict.phase == "Succeeded":
        verdict = await _verify_and_record(commit, verdict)
    if verdict.phase == "Failed" and commit.spec.pause:
        # The committer may have died with the container frozen: a thaw Job on that node makes
        # sure it runs again.  Thawing a running container is harmless.
        target = _target_of(commit.status)
        if target is not None:
            commit.step = f"create the thaw Job for {namespace}/{name}"
            await kube.create_job(
                thaw_job(
                    namespace=namespace,
                    name=name,
                    uid=commit.uid,
                    target=target,
                    settings=settings,
                )
            )
    await commit.write(
        verdict.phase, verdict.conditions, {**verdict.fields, "completedAt": _now().isoformat()}
    )


async def _running_commits(kube: Kube, namespace: str) -> dict[str, int]:
    """The unfinished commit Jobs in the operator's namespace, by their commit's namespace."""
    running: dict[str, int] = {}
    for job in await kube.list_jobs(namespace, OWN_COMMIT_JOBS):
        if finished(job):
            continue
        metadata = job["metadata"]
        target = commit_of(metadata.get("labels") or {}, metadata.get("annotations") or {})
        owner = target[0] if target else ""
        running[owner] = running.get(owner, 0) + 1
    return running


def _target_of(status: Mapping[str, Any]) -> CommitTarget | None:
    node, container = status.get("node"), status.get("containerID")
    parent = status.get("parent") or {}
    if not node or not container:
        return None
    return CommitTarget(node, container, parent.get("ref") or "", parent.get("digest"))


async def _start(commit: _Commit) -> None:
    spec = commit.spec
    commit.step = f'read the target pod "{spec.pod}"'
    pod = await commit.kube.get_pod(commit.namespace, spec.pod)
    check = preflight(spec.pod, spec.container, commit.namespace, pod)
    if not check.ready_to_commit:
        await commit.write("Pending", check.conditions, check.fields)
        return
    commit.step = f'read the push Secret "{spec.output.push_secret}"'
    try:
        docker_config = await commit.docker_config()
    except PushSecretError as error:
        await commit.fail(error.reason, str(error), check.fields)
        return
    source = commit.signing.source(commit.namespace, spec.output.sign)
    if source is not None:  # a key that cannot sign fails the commit before it freezes anything
        commit.step = f"read the {source.describe()}"
        try:
            await commit.signing.key(source)
        except SigningError as error:
            await commit.fail(error.reason, str(error), check.fields)
            return
    target = _target_of(check.fields)
    assert target is not None  # a ready target has a node and a container
    settings = commit.settings
    # One decision at a time: two commits must not both take the last slot.
    async with _SLOTS:
        commit.step = f"list the commit Jobs in {settings.namespace}"
        running = await _running_commits(commit.kube, settings.namespace)
        now = _now()
        refusal = commit_slot_refusal(
            running,
            commit.namespace,
            settings.slots,
            asking=COMMIT_QUEUE.asking(commit.namespace, commit.name, commit.uid, now),
            queued=COMMIT_QUEUE.others(commit.namespace, commit.name, now),
            served=COMMIT_QUEUE.served,
        )
        if refusal is not None:
            commit.again_after = QUEUED_RECHECK_SECONDS
            queued = kstatus(ready=False, progressing=True, reason=COMMIT_QUEUED, message=refusal)
            await commit.write("Pending", queued, check.fields)
            return
        commit.step = (
            f"create the commit Job {settings.namespace}/{commit_job_name(commit.uid)} "
            f"(LAMINA_NAMESPACE={settings.namespace})"
        )
        try:
            job = await commit.kube.create_job(
                commit_job(
                    namespace=commit.namespace,
                    name=commit.name,
                    uid=commit.uid,
                    spec=spec,
                    target=target,
                    settings=settings,
                    container=check.container,
                )
            )
        except BaseException:
            COMMIT_QUEUE.forget(commit.namespace, commit.name)
            raise
        COMMIT_QUEUE.started(commit.namespace, commit.name, now)
    if docker_config is not None:
        commit.step = f"copy the push Secret next to the commit Job in {settings.namespace}"
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"],
        }
        await commit.kube.create_secret(
            push_secret_copy(
                uid=commit.uid, settings=settings, docker_config_json=docker_config, owner=owner
            )
        )
    message = (
        f"commit Job {settings.namespace}/{job['metadata']['name']} started on node {target.node}"
    )
    await commit.write(
        "Running",
        kstatus(ready=False, progressing=True, reason="Committing", message=message),
        {**check.fields, "startedAt": _now().isoformat()},
    )


async def _verify_and_record(commit: _Commit, verdict: CommitVerdict) -> CommitVerdict:
    """Trust but verify: the registry must hold the digest the Job reported."""
    result = verdict.result
    if result is None:
        return verdict
    commit.step = f"verify {result.image} and record it"
    try:
        docker_config = await commit.docker_config()
        pushed = await read_pushed_image(
            result.image,
            insecure=commit.spec.output.insecure,
            docker_config=docker_config,
            index=result.index_digest,
        )
    except PushSecretError as error:
        return verification_failed(str(error))
    except (RegistryError, OSError, ValueError) as error:
        return verification_failed(f"could not read {result.image} back: {error}")
    signature = None
    source = commit.signing.source(commit.namespace, commit.spec.output.sign)
    if source is not None:
        commit.step = f"sign {result.image}"
        try:
            signature = await _sign(commit, source, result, docker_config)
        except SigningError as error:
            return CommitVerdict(
                "Failed",
                kstatus(ready=False, progressing=False, reason=error.reason, message=str(error)),
                result,
                verdict.fields,
            )
        verdict = replace(verdict, fields={**verdict.fields, "signature": signature.wire()})
    await record_committed_image(
        commit.kube,
        namespace=commit.namespace,
        commit=commit.name,
        spec=commit.spec,
        result=result,
        pushed=pushed,
        signature=signature,
    )
    # What the registry holds, not what the committer said: the index and its statements.
    attested = {
        "indexDigest": result.index_digest,
        "attestations": [fact.status() for fact in pushed.attestations] or None,
    }
    return dataclasses.replace(verdict, fields={**verdict.fields, **attested})


async def _sign(
    commit: _Commit, source: KeySource, result: CommitResult, docker_config: str | None
) -> SignatureStatus:
    """Sign what the tag points at (the index, when the commit pushed its provenance) and the
    image manifest itself."""
    ref = parse_reference(result.image)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        client = RegistryClient(
            session,
            insecure=[ref.registry] if commit.spec.output.insecure else [],
            docker_config=json.loads(docker_config) if docker_config else None,
            retries=2,
        )
        return await commit.signing.sign(
            client,
            source,
            commit.spec.output.repository,
            result.index_digest or result.digest,
            _now(),
            image_digest=result.digest,
        )


@kopf.index(GROUP, VERSION, "containercommits")
def commit_targets(
    *, namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str | None, str], str] | None:
    """(namespace, pod) -> the waiting commits that target it."""
    return {(namespace, spec["pod"]): name} if _waiting(status) else None


@kopf.on.event(GROUP, VERSION, "containercommits")
async def commit_event(
    *,
    type: str,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    EVENTS.labels("containercommits").inc()
    if type == "DELETED":
        return
    status = body.get("status") or {}
    if not _waiting(status):
        _expire_later(memo, namespace or "", name, body)
        return
    await reconcile_commit(
        memo.kube,
        _settings(memo),
        namespace=namespace or "",
        name=name,
        body=body,
        logger=logger,
        retry=_retrier(memo, namespace or "", name),
        signing=_signing(memo),
    )


def retry_delay(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...) of a failed reconcile."""
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2.0 ** max(0, attempt - 1))


def _retrier(memo: Any, namespace: str, name: str) -> Retry:
    """Schedules one delayed reconcile per commit after an API failure (level-triggered:
    nothing else would wake a commit whose pod and Job do not change)."""
    attempts: dict[str, int] = memo.setdefault("commit_attempts", {})
    tasks: dict[str, asyncio.Task[None]] = memo.setdefault("commit_retries", {})

    def schedule(uid: str, succeeded: bool = False, after: float | None = None) -> None:
        if succeeded:
            attempts.pop(uid, None)
            if after is None:
                return
        if uid in tasks and not tasks[uid].done():
            return
        if after is None:
            attempts[uid] = attempts.get(uid, 0) + 1
        delay = retry_delay(attempts[uid]) if after is None else after

        async def again() -> None:
            await asyncio.sleep(delay)
            tasks.pop(uid, None)
            try:
                await _reconcile_by_name(memo, namespace, name)
            except Exception as error:  # e.g. the client closed at shutdown: nothing to do
                report_failure(HANDLER, f"{namespace}/{name}: retry", error, _log)

        tasks[uid] = asyncio.create_task(again())

    return schedule


def _expire_later(memo: Any, namespace: str, name: str, body: Mapping[str, Any]) -> None:
    """Delete a finished commit ``ttlSecondsAfterFinished`` after it completed."""
    ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
    completed = (body.get("status") or {}).get("completedAt")
    if ttl is None or not completed:
        return
    due = datetime.fromisoformat(completed.replace("Z", "+00:00")) + timedelta(seconds=ttl)
    tasks: dict[str, asyncio.Task[None]] = memo.setdefault("expiry", {})
    uid = body["metadata"]["uid"]
    if uid in tasks:
        return

    async def expire() -> None:
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        await memo.kube.delete_object("containercommits", namespace, name)
        tasks.pop(uid, None)

    tasks[uid] = asyncio.create_task(expire())


def _targeted(namespace: str | None, name: str, commit_targets: Any, **_: Any) -> bool:
    return (namespace, name) in commit_targets


async def _reconcile_by_name(memo: Any, namespace: str, name: str) -> None:
    try:
        found = await memo.kube.get_object("containercommits", namespace, name)
    except Exception as error:
        report_failure(HANDLER, f"{namespace}/{name}: read the commit", error, _log)
        if api_failure(error) is None:
            raise
        return
    if found is not None:
        await reconcile_commit(
            memo.kube,
            _settings(memo),
            namespace=namespace,
            name=name,
            body=found,
            logger=_log,
            retry=_retrier(memo, namespace, name),
            signing=_signing(memo),
        )


@kopf.on.event("", "v1", "pods", when=_targeted)  # type: ignore[arg-type]
async def target_pod_event(
    *, namespace: str | None, name: str, memo: Any, commit_targets: Any, **_: Any
) -> None:
    EVENTS.labels("pods").inc()
    for commit in list(commit_targets.get((namespace, name), ())):
        await _reconcile_by_name(memo, namespace or "", commit)


# Called by the operator's own Job watch (handlers/setup.py), which sees only its namespace.
async def commit_job_event(
    *, labels: Mapping[str, str], annotations: Mapping[str, str], memo: Any, **_: Any
) -> None:
    EVENTS.labels("jobs").inc()
    if target := commit_of(labels, annotations):
        await _reconcile_by_name(memo, *target)


def _in_operator_namespace(namespace: str | None, memo: Any, **_: Any) -> bool:
    # Pods carrying a commit Job's labels elsewhere are a tenant's, never the operator's.
    return bool(namespace == memo.config.namespace)


@kopf.on.event(
    "",
    "v1",
    "pods",
    labels={"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_PURPOSE: "commit"},
    when=_in_operator_namespace,
)
async def commit_job_pod_event(
    *, labels: kopf.Labels, annotations: kopf.Annotations, memo: Any, **_: Any
) -> None:
    """A commit Job's pod changed (e.g. into ImagePullBackOff): the Job itself does not."""
    EVENTS.labels("pods").inc()
    if target := commit_of(labels, annotations):
        await _reconcile_by_name(memo, *target)
