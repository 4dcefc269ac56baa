"""Carrying out the build actions a reconcile pass decided: I/O only, no decisions.

:func:`lamina.domain.reconcile.decide` says, per Image, which one thing to do this pass;
this module does it (resolve a parent ref in the registry, start a build Job, rebase in the
registry, read a finished Job's result back, delete an orphaned Job) and reports what came of
it as typed outcomes, which the pass folds into its state before deciding the statuses to
write.  Any error while acting for one Image becomes that Image's outcome (its condition says
why, with the API's reason and message) and never stops the actions for the others; nor
does any one Image's slowness: registry-bound actions run concurrently under a deadline
each, and a pass does not wait for the slow ones (see :meth:`BuildExecutor.execute`).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from lamina import __version__
from lamina.api.durations import duration_seconds
from lamina.api.image import BuildStatus, ImageStatus
from lamina.domain.api_failures import failure_verdicts
from lamina.domain.attestation_index import platform_of
from lamina.domain.attestations import RebaseOrigin, rebase_provenance
from lamina.domain.build_job import (
    LABEL_IMAGE_NAMESPACE,
    LABEL_PURPOSE,
    MANAGED_BY,
    BuildSettings,
    DockerfileError,
    build_job,
    buildkitd_toml,
    cache_args,
    check_engine,
    context_config_map,
    context_digest,
    context_size_problem,
    dockerfile_for,
    git_secret,
    job_name,
)
from lamina.domain.build_outcome import judge_build
from lamina.domain.build_status import (
    build_failed,
    build_started,
    build_waiting,
    new_digest,
    rebase_build,
    refused_build,
    resolved,
    source_resolved,
)
from lamina.domain.commit_job import CommitSettings, push_secret_copy
from lamina.domain.conditions import (
    BUILD_JOB_REFUSED,
    CONTEXT_TOO_LARGE,
    GIT_CREDENTIALS_NOT_FOUND,
    RECONCILE_FAILED,
    REGISTRY_TIMEOUT,
)
from lamina.domain.git_refs import GitRefsError, authorization_from_secret
from lamina.domain.image_annotations import base_name
from lamina.domain.manifest_facts import layer_facts
from lamina.domain.rebase import RebaseRefused as RebaseNotSafe
from lamina.domain.rebase import canonical, config_digest, own_layers, rebase
from lamina.domain.reconcile import (
    Action,
    ActionFailed,
    ClusterState,
    CollectBuild,
    DeleteJob,
    DeleteLayer,
    ImageChanged,
    JobCreated,
    JobDeleted,
    LayerChanged,
    LayerDeleted,
    Outcome,
    RebaseImage,
    RebaseRefused,
    ResolveParent,
    ResolveSource,
    StartBuild,
    source_key,
)
from lamina.domain.sbom_scan import ScanImage, ScanSettings
from lamina.domain.snapshot import BuildJobRecord, Failure, ImageRecord
from lamina.handlers.api_errors import api_error
from lamina.handlers.failures import report_failure
from lamina.handlers.job_pods import build_pod_state
from lamina.handlers.jobs import job_outcome
from lamina.handlers.parent_resolver import ParentResolver
from lamina.handlers.provenance import attach_buildah_provenance, is_buildah
from lamina.handlers.recording import ensure_layers
from lamina.handlers.registry_access import PushSecretError, docker_config_of, output_registry
from lamina.handlers.scans import ScanExecutor
from lamina.handlers.signing import SigningError, SigningKeys
from lamina.handlers.source_resolver import SourceRequest, SourceResolver
from lamina.kube import Kube
from lamina.kube.client import describe_error
from lamina.oci.attach import push_attested
from lamina.oci.client import Manifest, sha256_digest
from lamina.oci.errors import RegistryError
from lamina.oci.hosts import RegistryHosts
from lamina.oci.reference import InvalidReference, Reference, parse_reference

__all__ = ["BuildExecutor", "api_error", "buildkitd_settings", "duration_seconds"]

# An action that failed for one object is retried after this long (not on every pass).
RETRY_FAILED = timedelta(seconds=30)
# A registry action that keeps running past its deadline is tried again at most this late.
MAX_TIMEOUT_RETRY = timedelta(minutes=30)
_REGISTRY_ERRORS = (
    RegistryError,
    InvalidReference,
    OSError,
    ValueError,
    KeyError,
    aiohttp.ClientError,
    TimeoutError,
    PushSecretError,
)


def buildkitd_settings(hosts: RegistryHosts) -> str:
    return buildkitd_toml(dict(hosts.mirrors), hosts.insecure)


# What each action asks of the API, as a failure's message names it.
# Actions that talk to a registry: each runs beside the others under its own deadline.
RegistryAction = CollectBuild | RebaseImage | ScanImage

_STEPS: dict[type, str] = {
    StartBuild: "create the build Job (in the operator's namespace)",
    CollectBuild: "collect the finished build",
    RebaseImage: "rebase",
    ScanImage: "attach the SBOM scan",
    DeleteLayer: "delete the unused Layer",
}


@dataclass
class BuildExecutor:
    kube: Kube
    settings: BuildSettings
    hosts: RegistryHosts
    # The operator's default signing Secret (in its namespace), for Images without output.sign.
    signing_secret: str | None = None
    # The SBOM scans of images without one (None or no scanner image: none).
    scan_settings: ScanSettings | None = None
    # HEAD-first parent polling, one request per ref per pass, backoff per registry; it
    # remembers across passes what it verified and when it asked.
    resolver: ParentResolver = field(init=False)
    signing: SigningKeys = field(init=False)
    # git contexts' revisions; when each was last asked goes on the parent resolver's poll
    # clock (``resolver.checked``, keyed by :func:`source_key`, which no ref text can be).
    sources: SourceResolver = field(init=False)
    scans: ScanExecutor = field(init=False)

    # One registry-bound action's deadline (collect, rebase, sign), and how long a pass waits
    # for such actions before going on without them (they finish in the background).
    action_seconds: float = 300.0
    pass_wait_seconds: float = 10.0
    max_registry_actions: int = 16
    max_registry_actions_per_namespace: int = 4
    # Called with an Image's namespace when an action that outlived its pass finishes.
    on_finished: Callable[[str], None] | None = None
    _in_flight: dict[tuple[str, str], asyncio.Task[list[Outcome]]] = field(
        init=False, default_factory=dict
    )
    # Those whose pass went on without them, with their Image's uid and status then.
    _outliving: dict[tuple[str, str], tuple[str, ImageStatus]] = field(
        init=False, default_factory=dict
    )
    _timeouts: dict[tuple[str, str], int] = field(init=False, default_factory=dict)
    # The Image whose scan is among those in flight (one at a time), if any.
    _scan_keys: set[tuple[str, str]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.resolver = ParentResolver(self.hosts)
        self.signing = SigningKeys(self.kube, self.settings.namespace, self.signing_secret)
        self.sources = SourceResolver()
        scan = self.scan_settings or ScanSettings(namespace=self.settings.namespace)
        self.scans = ScanExecutor(self.kube, scan, self.hosts, self.signing)

    async def execute(
        self, actions: Sequence[Action], state: ClusterState, logger: Any
    ) -> list[Outcome]:
        """Carry out the pass's actions (but Layer deletions, see :meth:`delete_layers`).

        Registry-bound actions (collecting a build, rebasing: each reads the Image's own
        registry, and signs there) run concurrently, each under its own deadline
        (:attr:`action_seconds`); the pass waits for them at most :attr:`pass_wait_seconds`
        and goes on, so one tenant's registry that answers every read just under the
        request timeout holds up no other Image.  What those still running bring is folded
        into a later pass (:attr:`on_finished` wakes one).  Parent and git polling, which
        have their own budgets, run beside them; the API-only actions meanwhile.
        """
        outcomes = self._late_outcomes(state)
        # Builds' actions first; of the scans only those that would act now (one collect at
        # a time: an SBOM is parsed whole), so waiting scans hold no place.
        scans = self.scans.actionable(
            [a for a in actions if isinstance(a, ScanImage)], state.images, state.now
        )
        self._scan_keys &= self._in_flight.keys()
        wanted: list[RegistryAction] = [
            a for a in actions if isinstance(a, CollectBuild | RebaseImage)
        ]
        if not self._scan_keys:
            wanted += scans[:1]
        registry_bound = self._admitted(wanted)
        tasks = [self._launch(action, state, logger) for action in registry_bound]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            polled = asyncio.gather(
                self._resolve_all(
                    session, [a for a in actions if isinstance(a, ResolveParent)], state, logger
                ),
                self._resolve_sources(
                    [a for a in actions if isinstance(a, ResolveSource)], state, logger
                ),
            )
            for action in actions:
                # Not for an Image whose registry action outlived its pass: its late outcome
                # would overwrite the new build's record (one action per Image at a time).
                if isinstance(action, StartBuild) and (action.namespace, action.name) in (
                    self._in_flight
                ):
                    continue
                if isinstance(action, StartBuild | DeleteJob):
                    try:
                        outcomes += await self._one(session, action, state, logger)
                    except Exception as error:  # one object's failure never stops the others
                        outcomes.append(self._failed(action, error, state.now, logger))
            parents, sources = await polled
            outcomes += parents + sources
        if tasks:
            await asyncio.wait(tasks, timeout=self.pass_wait_seconds)
        for action, task in zip(registry_bound, tasks, strict=True):
            key = (action.namespace, action.name)
            if task.done():
                del self._in_flight[key], self._outliving[key]
                outcomes += task.result()
            else:  # a later pass takes its outcomes; its end wakes one
                task.add_done_callback(functools.partial(self._wake, action.namespace))
        return outcomes

    def _admitted(self, actions: Sequence[RegistryAction]) -> list[RegistryAction]:
        """The registry actions to start now: not one already running for that Image, at
        most :attr:`max_registry_actions` running in all and
        :attr:`max_registry_actions_per_namespace` for one namespace (a tenant's cascade of
        rebases cannot open a thousand connections, nor take every place).  The others are
        decided again by a later pass."""
        running: dict[str, int] = {}
        for namespace, _ in self._in_flight:
            running[namespace] = running.get(namespace, 0) + 1
        admitted: list[RegistryAction] = []
        for action in actions:
            if (action.namespace, action.name) in self._in_flight:
                continue
            if sum(running.values()) >= self.max_registry_actions:
                break  # builds' actions come first: what is left out is a scan's, or waits
            if running.get(action.namespace, 0) >= self.max_registry_actions_per_namespace:
                continue
            running[action.namespace] = running.get(action.namespace, 0) + 1
            admitted.append(action)
        return admitted

    def _launch(
        self, action: RegistryAction, state: ClusterState, logger: Any
    ) -> asyncio.Task[list[Outcome]]:
        key = (action.namespace, action.name)
        task = asyncio.create_task(self._bounded(action, state, logger))
        if isinstance(action, ScanImage):
            self._scan_keys.add(key)
        # Until this pass takes its outcomes, a later one does (should this one fail).
        self._in_flight[key] = task
        started = state.images[action.namespace][action.name]
        self._outliving[key] = (started.uid, started.status)
        return task

    def _wake(self, namespace: str, _: object = None) -> None:
        if self.on_finished is not None:
            self.on_finished(namespace)

    def _late_outcomes(self, state: ClusterState) -> list[Outcome]:
        """Outcomes of registry actions that outlived their pass, for Images still there
        (the same object: a deleted and re-created Image's old build says nothing)."""
        outcomes: list[Outcome] = []
        for key, (uid, before) in list(self._outliving.items()):
            task = self._in_flight[key]
            if not task.done():
                continue
            del self._outliving[key], self._in_flight[key]
            record = state.images.get(key[0], {}).get(key[1])
            if record is None or record.uid != uid or task.cancelled():
                continue
            outcomes += [_with_newer_polls(o, key, record.status, before) for o in task.result()]
        return outcomes

    async def _bounded(
        self, action: RegistryAction, state: ClusterState, logger: Any
    ) -> list[Outcome]:
        """One registry-bound action under its deadline; any failure is its Image's."""
        key = (action.namespace, action.name)
        try:
            async with asyncio.timeout(self.action_seconds) as deadline:
                async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=120)
                ) as session:
                    outcomes = await self._one(session, action, state, logger)
        except TimeoutError as error:
            if not deadline.expired():
                return [self._failed(action, error, _now(), logger)]
            return [self._timed_out(action, state, logger)]
        except Exception as error:  # one object's failure never stops the others
            return [self._failed(action, error, _now(), logger)]
        self._timeouts.pop(key, None)
        return outcomes

    def _timed_out(self, action: RegistryAction, state: ClusterState, logger: Any) -> Outcome:
        """The action ran past its deadline: that Image's condition names the registry and
        when it is tried again (30 s, doubling while it keeps timing out, up to 30 min)."""
        key = (action.namespace, action.name)
        count = self._timeouts[key] = self._timeouts.get(key, 0) + 1
        wait = min(RETRY_FAILED * 2 ** min(count - 1, 10), MAX_TIMEOUT_RETRY)
        hosts = _registry_hosts(state.images[action.namespace][action.name], action)
        step = _STEPS.get(type(action), type(action).__name__)
        message = (
            f"{step} did not finish within {self.action_seconds:g} s: the registry "
            f"{' or '.join(hosts)} answers too slowly (other Images went on; retried in "
            f"{int(wait.total_seconds())}s)"
        )
        logger.warning(f"{action.namespace}/{action.name}: {REGISTRY_TIMEOUT}: {message}")
        if isinstance(action, ScanImage):  # a scan's failure is its SBOM condition's, not Ready's
            record = state.images[action.namespace][action.name]
            why = f"{step} did not finish within {self.action_seconds:g} s ({' or '.join(hosts)})"
            return self.scans.failed(record, action.digest, why, _now())
        failure = Failure(REGISTRY_TIMEOUT, message, _now() + wait)
        return ActionFailed("images", action.namespace, action.name, failure)

    async def pods_that_cannot_start(
        self, state: ClusterState, actions: Sequence[Action], logger: Any
    ) -> list[Outcome]:
        """A running build whose pod cannot start (ImagePullBackOff, ...) says so in its
        status within seconds (the build pods' watch wakes the loop), and stops saying so
        when it starts: one LIST of pods per running build, at most the build limit."""
        collected = {(a.namespace, a.name) for a in actions if isinstance(a, CollectBuild)}
        outcomes: list[Outcome] = []
        for namespace, images in state.images.items():
            for name, record in images.items():
                build = record.build_record  # not .status: parsed on each read
                if build is None or build.phase != "Running" or (namespace, name) in collected:
                    continue
                job = state.jobs.get(build.job or "")
                if job is None or job.finished:
                    continue
                try:
                    problem, started = await build_pod_state(
                        self.kube,
                        {"metadata": {"name": job.name, "namespace": self.settings.namespace}},
                    )
                except Exception as error:  # a failed read says nothing new; the next pass asks
                    logger.warning(f"{namespace}/{name}: reading build pods: {error!r}")
                    continue
                if problem is None and not started and build.waiting is not None:
                    continue  # between the kubelet's retries: the problem stands
                said = (problem.reason, problem.message) if problem else None
                if (changed := build_waiting(record.status, said)) is not None:
                    outcomes.append(ImageChanged(namespace, name, changed))
        return outcomes

    def _failed(self, action: Action, error: Exception, now: datetime, logger: Any) -> Outcome:
        """One object's failure: a log line and a metric with the API's words, and that
        object's condition (the API's reason when the API refused it); retried later."""
        if isinstance(action, DeleteJob):
            report_failure("builds", f"delete build Job {action.name}", error, logger)
            detail = describe_error(error)
            return ActionFailed("jobs", "", action.name, Failure(RECONCILE_FAILED, detail))
        namespace, name = action.namespace, action.name
        step = f"{_STEPS.get(type(action), type(action).__name__)} for {namespace}/{name}"
        said = report_failure("builds", step, error, logger)
        retry = f"retried in {RETRY_FAILED.seconds}s"
        if said is not None:
            verdict = failure_verdicts(step, said)[0]
            failure = Failure(verdict.reason, f"{verdict.message} ({retry})", now + RETRY_FAILED)
        else:
            failure = Failure(
                RECONCILE_FAILED,
                f"{step} failed ({retry}): {describe_error(error)}",
                retry_at=now + RETRY_FAILED,
            )
        plural = "layers" if isinstance(action, DeleteLayer) else "images"
        return ActionFailed(plural, namespace, name, failure)

    async def _one(
        self, session: aiohttp.ClientSession, action: Action, state: ClusterState, logger: Any
    ) -> list[Outcome]:
        if isinstance(action, DeleteJob):
            await self.kube.delete_job(self.settings.namespace, action.name)
            logger.info(f"deleted build Job {action.name}: {action.why}")
            return [JobDeleted(action.name)]
        record = state.images[action.namespace][action.name]
        if isinstance(action, CollectBuild):
            return await self._collect(session, record, action, state, logger)
        if isinstance(action, StartBuild):
            return await self._start(record, action, state.now, logger)
        if isinstance(action, RebaseImage):
            return await self._rebase(session, record, action, state, logger)
        if isinstance(action, ScanImage):
            return await self.scans.act(session, [action], state.images, state.now, logger)
        return []

    async def delete_layers(
        self, actions: Sequence[Action], now: datetime, logger: Any
    ) -> list[Outcome]:
        """Collect unused Layers (decided after this pass's recordings, so none is in use)."""
        outcomes: list[Outcome] = []
        for action in actions:
            if not isinstance(action, DeleteLayer):
                continue
            try:
                await self.kube.delete_object("layers", action.namespace, action.name)
            except Exception as error:
                outcomes.append(self._failed(action, error, now, logger))
                continue
            logger.info(f"{action.namespace}: collected Layer {action.name}: no Image uses it")
            outcomes.append(LayerDeleted(action.namespace, action.name))
        return outcomes

    # -- external parents ------------------------------------------------------------------

    async def _resolve_all(
        self,
        session: aiohttp.ClientSession,
        actions: Sequence[ResolveParent],
        state: ClusterState,
        logger: Any,
    ) -> list[Outcome]:
        """Resolve each distinct ref once per pass, however many Images name it; write only
        what changed (a poll that finds the same digest writes nothing)."""
        del session  # the resolver keeps its own, with its own deadlines
        known: dict[str, str | None] = {}
        for action in actions:
            current = state.images[action.namespace][action.name].status.resolved
            digest = current.digest if current is not None and current.ref == action.ref else None
            known[action.ref] = known.get(action.ref) or digest
        answers = await self.resolver.resolve_refs(known) if known else {}
        outcomes: list[Outcome] = []
        for action in actions:
            answer = answers.get(action.ref)
            if answer is None:  # not reached within the pass's budget: still due
                continue
            record = state.images[action.namespace][action.name]
            before = record.status.resolved
            if before is not None and (before.ref, before.digest, before.message) == (
                action.ref,
                answer.digest,
                answer.message,
            ):
                continue
            status = resolved(record.status, action.ref, answer.digest, answer.message, state.now)
            if before is None or before.digest != answer.digest:
                logger.info(
                    f"{action.namespace}/{action.name}: {action.ref} is "
                    f"{answer.digest or answer.message}"
                )
            outcomes.append(ImageChanged(action.namespace, action.name, status))
        return outcomes

    # -- git sources -----------------------------------------------------------------------

    async def _git_authorization(self, namespace: str, secret: str | None) -> str | None:
        """The Authorization value from the Image's own credentials Secret (None without
        one); a missing or malformed Secret is a GitRefsError with its reason."""
        if secret is None:
            return None
        found = await self.kube.get_secret(namespace, secret)
        return authorization_from_secret(found, namespace, secret)

    async def _resolve_sources(
        self, actions: Sequence[ResolveSource], state: ClusterState, logger: Any
    ) -> list[Outcome]:
        """Resolve each distinct (URL, credentials) once per pass; write only what changed."""
        requests: dict[tuple[str, str], SourceRequest] = {}
        answers: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        for action in actions:
            key = (action.namespace, action.name)
            try:
                authorization = await self._git_authorization(action.namespace, action.secret)
            except GitRefsError as error:
                answers[key] = (None, f"{error.reason}: {error}")
                continue
            except ApiException as error:  # one Secret that cannot be read stops no other
                answers[key] = (
                    None,
                    f"{GIT_CREDENTIALS_NOT_FOUND}: reading Secret "
                    f'"{action.secret}": {api_error(error)}',
                )
                continue
            credentials = f"{action.namespace}/{action.secret}" if action.secret else None
            requests[key] = SourceRequest(action.url, action.revision, credentials, authorization)
        resolved_now = await self.sources.resolve(requests) if requests else {}
        for action in actions:
            key = (action.namespace, action.name)
            answer = resolved_now.get(key)
            if answer is None:
                continue
            answers[key] = (answer.commit, answer.message)
            if answer.asked:  # each Image that got the answer is polled anew
                self.resolver.checked[
                    source_key(action.url, action.revision, action.namespace, action.name)
                ] = state.now
        outcomes: list[Outcome] = []
        for action in actions:
            if (action.namespace, action.name) not in answers:
                continue  # not reached within the pass's budget: still due
            commit, message = answers[(action.namespace, action.name)]
            record = state.images[action.namespace][action.name]
            status = source_resolved(
                record.status,
                url=action.url,
                revision=action.revision,
                commit=commit,
                message=message,
                now=state.now,
            )
            before = record.status.source
            if before is not None and (
                before.url,
                before.revision,
                before.commit,
                before.message,
            ) == (
                action.url,
                action.revision,
                status.source.commit if status.source else None,
                message,
            ):
                continue
            if before is None or status.source is None or before.commit != status.source.commit:
                logger.info(
                    f"{action.namespace}/{action.name}: {action.url} {action.revision} is "
                    f"{commit or message}"
                )
            outcomes.append(ImageChanged(action.namespace, action.name, status))
        return outcomes

    # -- starting builds -------------------------------------------------------------------

    async def _docker_config(self, record: ImageRecord) -> str | None:
        assert record.spec is not None
        secret = record.spec.output.push_secret
        if not secret:
            return None
        return docker_config_of(
            await self.kube.get_secret(record.namespace, secret), record.namespace, secret
        )

    async def _context_files(self, record: ImageRecord) -> tuple[dict[str, str], dict[str, str]]:
        """The context ConfigMap's text files and binary files (base64, as the API has them):
        both are the tenant's context, and a ConfigMap volume shows both as files."""
        assert record.spec is not None
        context = record.spec.build.context if record.spec.build else None
        if context is None or context.config_map is None:
            return {}, {}
        found = await self.kube.get_config_map(record.namespace, context.config_map.name)
        if found is None:
            raise LookupError(
                f'context ConfigMap "{context.config_map.name}" not found '
                f'in namespace "{record.namespace}"'
            )
        return dict(found.get("data") or {}), dict(found.get("binaryData") or {})

    async def _start(
        self, record: ImageRecord, action: StartBuild, now: datetime, logger: Any
    ) -> list[Outcome]:
        plan, spec = action.plan, record.spec
        assert plan.inputs is not None and spec is not None
        name = job_name(plan.inputs)

        def refuse(reason: str, message: str) -> list[Outcome]:
            logger.warning(f"{record.namespace}/{record.name}: build refused: {reason}: {message}")
            status = refused_build(
                record.status,
                plan,
                job=name,
                reason=reason,
                message=message,
                now=now,
                note=action.note,
            )
            return [ImageChanged(record.namespace, record.name, status)]

        assert plan.wanted is not None
        git = spec.build.context.git if spec.build and spec.build.context else None
        source_commit = plan.wanted.source_commit
        try:
            dockerfile = dockerfile_for(spec, action.parent, source_commit)
            cache_args(spec, self.settings.cache)  # an Image pushing a cache repository: refused
            check_engine(spec, self.settings)  # Buildah only where the administrator enabled it
            docker_config = await self._docker_config(record)
            files, binary_files = await self._context_files(record)
            authorization = (
                await self._git_authorization(record.namespace, git.secret) if git else None
            )
            # A key that cannot sign is found before the build, not after the push.
            if (source := self.signing.source(record.namespace, spec.output.sign)) is not None:
                await self.signing.key(source)
        except DockerfileError as error:
            return refuse(error.reason, str(error))
        except GitRefsError as error:
            return refuse(error.reason, str(error))
        except (PushSecretError, SigningError) as error:
            return refuse(error.reason, str(error))
        except LookupError as error:
            return refuse("ContextNotFound", str(error))
        if problem := context_size_problem(
            settings=self.settings, dockerfile=dockerfile, files=files, binary_files=binary_files
        ):
            return refuse(CONTEXT_TOO_LARGE, problem)
        secret_name = f"{name}-push" if docker_config is not None else None
        git_secret_name = f"{name}-git" if authorization is not None else None
        try:
            job = await self.kube.create_job(
                build_job(
                    namespace=record.namespace,
                    name=record.name,
                    uid=record.uid,
                    inputs=plan.inputs,
                    spec=spec,
                    parent=action.parent,
                    settings=self.settings,
                    context_config_map=name,
                    push_secret_copy=secret_name,
                    context=context_digest(files, binary_files),
                    source_commit=source_commit,
                    git_secret_copy=git_secret_name,
                )
            )
        except ApiException as error:
            if error.status in (400, 403, 422):  # the same inputs would be refused again
                return refuse(
                    BUILD_JOB_REFUSED, f"the API server refused the build Job: {api_error(error)}"
                )
            raise
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": job["metadata"]["uid"],
        }
        try:
            await self.kube.create_config_map(
                context_config_map(
                    name=name,
                    settings=self.settings,
                    dockerfile=dockerfile,
                    files=files,
                    binary_files=binary_files,
                    owner=owner,
                )
            )
        except ApiException as error:
            if error.status not in (400, 403, 422):
                raise
            # The Job would wait for its context for ever, and the same context is refused
            # again on every retry: the Job goes, and the Image says why.
            await self.kube.delete_job(self.settings.namespace, name)
            return refuse(
                BUILD_JOB_REFUSED, f"the API server refused the build context: {api_error(error)}"
            )
        if docker_config is not None:
            copy = push_secret_copy(
                uid=record.uid,
                settings=CommitSettings(namespace=self.settings.namespace, image=""),
                docker_config_json=docker_config,
                owner=owner,
            )
            copy["metadata"]["name"] = secret_name
            await self.kube.create_secret(copy)
        if authorization is not None and git_secret_name is not None:
            await self.kube.create_secret(
                git_secret(
                    name=git_secret_name,
                    settings=self.settings,
                    authorization=authorization,
                    owner=owner,
                )
            )
        reasons = "; ".join(str(reason) for reason in plan.reasons)
        logger.info(f"{record.namespace}/{record.name}: build {name} started ({reasons})")
        started = build_started(record.status, plan, name, now, action.note)
        created = BuildJobRecord(
            name, record.namespace, record.name, record.uid, plan.inputs, finished=False
        )
        return [ImageChanged(record.namespace, record.name, started), JobCreated(created)]

    # -- rebase ----------------------------------------------------------------------------

    def _parent_repository(self, action: RebaseImage) -> Reference:
        """Where the parent's digests are read from (mirrors applied for external parents)."""
        parsed = parse_reference(action.parent_repository)
        return parsed if action.parent_is_image else self.hosts.pull_from(parsed)

    async def _rebase(
        self,
        session: aiohttp.ClientSession,
        record: ImageRecord,
        action: RebaseImage,
        state: ClusterState,
        logger: Any,
    ) -> list[Outcome]:
        """Rebase in the registry; when not possible, say why (the next pass builds)."""
        plan = action.plan
        spec, status = record.spec, record.status
        assert spec is not None and plan.wanted is not None and plan.inputs is not None
        assert status.built_from is not None and status.digest
        old, new = status.built_from.parent_digest, plan.wanted.parent_digest

        def refused(note: str) -> list[Outcome]:
            logger.info(f"{record.namespace}/{record.name}: not rebased, rebuilding: {note}")
            return [RebaseRefused(record.namespace, record.name, plan.inputs or "", note)]

        if old is None or new is None:
            return refused("the old parent digest is unknown")
        target = parse_reference(f"{spec.output.repository}@{status.digest}")
        parent_repo = self._parent_repository(action)
        try:
            client = output_registry(record, self.hosts, await self._docker_config(record), session)
            # An index when the build attached attestations: its image is what is rebased.
            image_manifest, _ = await client.resolve_image(target)
            image_config = json.loads(
                await client.get_blob(target, config_digest(image_manifest.json(), "image"))
            )
            old_parent, _ = await client.resolve_image(parent_repo.with_digest(old))
            new_parent, _ = await client.resolve_image(parent_repo.with_digest(new))
            new_parent_config = json.loads(
                await client.get_blob(parent_repo, config_digest(new_parent.json(), "new parent"))
            )
            result = rebase(
                image_manifest=image_manifest.json(),
                image_config=image_config,
                old_parent_manifest=old_parent.json(),
                new_parent_manifest=new_parent.json(),
                new_parent_config=new_parent_config,
                new_parent_digest=new,
                new_parent_name=base_name(spec, f"{action.parent_repository}@{new}"),
            )
            if isinstance(result, RebaseNotSafe):
                return refused(result.reason)
            manifest, config = result
            config_bytes = canonical(config)
            pushed_config = await client.push_blob(target, config_bytes)
            manifest["config"] = {
                **manifest["config"],
                "digest": pushed_config,
                "size": len(config_bytes),
            }
            for layer in new_parent.json().get("layers", []):
                await client.ensure_blob(target, layer["digest"], parent_repo)
            data = canonical(manifest)
            pushed = Manifest(data, image_manifest.media_type, sha256_digest(data))
            await client.put_manifest(target, pushed, pushed.digest)
            origin = RebaseOrigin(
                namespace=record.namespace,
                image=record.name,
                repository=target.name,
                previous_digest=image_manifest.digest,
                previous_parent_digest=old,
                parent_name=base_name(spec, f"{action.parent_repository}@{new}"),
                parent_repository=action.parent_repository,
                parent_digest=new,
                kept_layers=own_layers(manifest, new_parent.json()),
                invocation=f"{record.uid}/{plan.inputs}",
                started=state.now,
                finished=datetime.now(UTC).replace(microsecond=0),
            )
            # The build's attestations described the old image: the tags move to an index of
            # the rebased image and the rebase's own provenance, nothing else.
            index = await push_attested(
                client,
                target,
                pushed,
                platform_of(config),
                rebase_provenance(origin, pushed.digest, __version__),
            )
            digest = index.digest
            for tag in spec.output.tags:
                digest = await client.put_manifest(target, index, tag)
            build = rebase_build(plan, state.now)
            recorded, layers = await self._record(
                session,
                record,
                state,
                digest=digest,
                build=build,
                message=f"rebased onto {new} without a build",
            )
        except SigningError as error:
            logger.warning(f"{record.namespace}/{record.name}: rebased, not signed: {error}")
            failed = build_failed(
                record.status,
                error.reason,
                str(error),
                state.now,
                build=rebase_build(plan, state.now),
            )
            return [ImageChanged(record.namespace, record.name, failed)]
        except _REGISTRY_ERRORS as error:
            return refused(f"the registry could not be read or written: {error}")
        logger.info(f"{record.namespace}/{record.name}: rebased onto {new}: {digest}")
        return [*layers, ImageChanged(record.namespace, record.name, recorded)]

    # -- finished builds -------------------------------------------------------------------

    async def _collect(
        self,
        session: aiohttp.ClientSession,
        record: ImageRecord,
        action: CollectBuild,
        state: ClusterState,
        logger: Any,
    ) -> list[Outcome]:
        """Record the result of this Image's finished build Job, once."""
        build = record.status.build
        assert build is not None
        job = await self.kube.get_job(self.settings.namespace, action.job)
        if job is None:
            return []  # gone meanwhile: the next pass says BuildJobLost
        result = judge_build(await job_outcome(self.kube, job))
        if _mounts_secret(job, f"{action.job}-git"):
            # The git credentials' copy is needed no longer: gone now, not with its Job a day
            # later (the garbage collector's, should this delete fail).  Asked of the Job, not
            # the spec: the spec may have dropped its git context since the build started.
            try:
                await self.kube.delete_secret(self.settings.namespace, f"{action.job}-git")
            except ApiException as error:
                logger.warning(f"deleting {action.job}-git: {api_error(error)}")
        if result.digest is None:
            logger.warning(f"{record.namespace}/{record.name}: build failed: {result.reason}")
            failed = build_failed(
                record.status, result.reason or "BuildFailed", result.message, state.now
            )
            return [ImageChanged(record.namespace, record.name, failed)]
        try:
            pushed = result.digest
            if is_buildah(job):  # Buildah writes no provenance: the operator does
                client = output_registry(
                    record, self.hosts, await self._docker_config(record), session
                )
                pushed = await attach_buildah_provenance(
                    client, record, job, result.digest, state.now
                )
            recorded, layers = await self._record(
                session,
                record,
                state,
                digest=pushed,
                build=build,
                message=f"pushed {result.digest}",
            )
        except SigningError as error:
            logger.warning(f"{record.namespace}/{record.name}: built, not signed: {error}")
            failed = build_failed(record.status, error.reason, str(error), state.now)
            return [ImageChanged(record.namespace, record.name, failed)]
        except _REGISTRY_ERRORS as error:
            failed = build_failed(
                record.status,
                "VerificationFailed",
                f"could not read {result.digest} back: {error}",
                state.now,
            )
            return [ImageChanged(record.namespace, record.name, failed)]
        logger.info(f"{record.namespace}/{record.name}: built {result.digest}")
        return [*layers, ImageChanged(record.namespace, record.name, recorded)]

    async def _record(
        self,
        session: aiohttp.ClientSession,
        record: ImageRecord,
        state: ClusterState,
        *,
        digest: str,
        build: BuildStatus,
        message: str,
    ) -> tuple[ImageStatus, list[Outcome]]:
        """The status for a verified new digest, after signing it (when asked to: raises
        SigningError when it cannot) and recording its Layer objects.

        ``digest`` is what was pushed: with attestations, an index holding the image
        manifest and its attestation manifests.  The status's digest is the image
        manifest's (the image itself: what children pin and pods run); the attestation
        manifests are recorded as attestations, never as an image or its layers.
        """
        spec = record.spec
        assert spec is not None and build.wanted is not None
        target = parse_reference(f"{spec.output.repository}@{digest}")
        reader = output_registry(record, self.hosts, await self._docker_config(record), session)
        image, index = await reader.resolve_image(target)
        attestations = await reader.attestations(target, index, image.digest)
        manifest = image.json()
        config = json.loads(await reader.get_blob(target, config_digest(manifest, "built image")))
        parent_digest = build.wanted.parent_digest
        images: Mapping[str, ImageRecord] = state.images[record.namespace]
        if spec.parent.image is not None:
            parent = images.get(spec.parent.image)
            parent_layers = {
                layer.digest for layer in (parent.status.layers if parent else None) or []
            }
        else:
            parent_ref = self.hosts.pull_from(
                parse_reference(f"{parse_reference(spec.parent.ref or '').name}@{parent_digest}")
            )
            parent_manifest, _ = await reader.resolve_image(parent_ref)
            parent_layers = {layer["digest"] for layer in parent_manifest.json().get("layers", [])}
        inherited = sum(
            1 for layer in manifest.get("layers", []) if layer["digest"] in parent_layers
        )
        facts = layer_facts(manifest, config, inherited)
        signature = None
        if (source := self.signing.source(record.namespace, spec.output.sign)) is not None:
            signature = await self.signing.sign(
                reader, source, spec.output.repository, digest, state.now, image_digest=image.digest
            )
        layers = await ensure_layers(
            self.kube, record.namespace, None, facts, state.layers.get(record.namespace, {})
        )
        status = new_digest(
            record.status,
            spec,
            build,
            digest=image.digest,
            facts=facts,
            message=message,
            now=state.now,
            attestations=attestations,
            index_digest=index.digest if index is not None else None,
        ).model_copy(update={"signature": signature})
        return status, [LayerChanged(layer) for layer in layers]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _with_newer_polls(
    outcome: Outcome, key: tuple[str, str], current: ImageStatus, before: ImageStatus
) -> Outcome:
    """A late outcome for ``key``, keeping what polls wrote while its action ran (they are
    newer than the status the action started from)."""
    if not isinstance(outcome, ImageChanged) or (outcome.namespace, outcome.name) != key:
        return outcome
    newer = {
        polled: getattr(current, polled)
        for polled in ("resolved", "source")
        if getattr(current, polled) != getattr(before, polled)
    }
    if not newer:
        return outcome
    return replace(outcome, status=outcome.status.model_copy(update=newer))


def _registry_hosts(record: ImageRecord, action: RegistryAction) -> list[str]:
    """The registries an action talks to, by host (the output's; a rebase's parent's too)."""
    hosts: list[str] = []
    named = [record.spec.output.repository] if record.spec is not None else []
    if isinstance(action, RebaseImage):
        named.append(action.parent_repository)
    for repository in named:
        try:
            host = parse_reference(repository).registry
        except InvalidReference:
            continue
        if host not in hosts:
            hosts.append(host)
    return hosts or ["of the output repository"]


def _in_operator_namespace(namespace: str | None, memo: Any, **_: Any) -> bool:
    # Pods with a build Job's labels elsewhere are a tenant's, never the operator's.
    return bool(namespace == memo.config.namespace)


@kopf.on.event(
    "",
    "v1",
    "pods",
    labels={"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_PURPOSE: "build"},
    when=_in_operator_namespace,
)
async def build_pod_event(*, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    """A build pod changed (e.g. into ImagePullBackOff; its Job does not change): a pass for
    its Image's namespace."""
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is not None:
        reconciler.touch(labels.get(LABEL_IMAGE_NAMESPACE))


def _mounts_secret(job: Mapping[str, Any], name: str) -> bool:
    """Whether the Job's pod takes environment from the Secret ``name``."""
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        for variable in container.get("env") or []:
            ref = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") == name:
                return True
    return False
