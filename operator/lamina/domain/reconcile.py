"""One reconcile pass as one pure decision: the cluster's state in, typed actions out.

The operator keeps the state (from kopf's indexes, plus its own writes the watches have not
echoed yet) and calls :func:`decide`.  The answer says, per Image, at most ONE thing to do this
pass (resolve its parent ref, collect its finished build, rebase it, or start its build), which
build Jobs to delete, which unused Layers to collect, and the status every object of the dirty
namespaces should have, as merge patches against what it has now (empty when it already says
so).  The handler carries the actions out, folds their outcomes back in with :func:`apply`, and
decides again to get the statuses to write: so each object is written at most once per pass,
and a pass over an unchanged cluster writes nothing.

Because an Image gets one action per pass, and whatever the action started (a Job, a rebase's
refusal, a failure) is part of the state the next pass decides on, a rebase and a build for the
same parent change cannot both start: the race is impossible by construction, not by timing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from lamina.api.durations import duration_seconds
from lamina.api.image import ImageStatus
from lamina.api.layer import LayerStatus
from lamina.domain.build_status import build_failed, build_started
from lamina.domain.builds import BuildPlan, Candidate, choose_builds, depth_of, plan_namespace
from lamina.domain.changes import Changes, ChangeSet, Dirty, affected, image_changes
from lamina.domain.conditions import RECONCILE_FAILED
from lamina.domain.parent_polling import poll_due
from lamina.domain.rebuild import PARENT_CHANGED
from lamina.domain.sbom_scan import ScanImage, scan_due
from lamina.domain.snapshot import (
    BuildJobRecord,
    Failure,
    ImageRecord,
    LayerRecord,
    NamespaceSnapshot,
)
from lamina.domain.status_diff import model_patch

# An external ref that could not be resolved is retried this often (not every pollInterval).
RETRY_UNRESOLVED = timedelta(seconds=30)
# A Layer the operator created is collected once unused, but not in its first seconds: a
# commit records its Layers just before the Image that lists them.
LAYER_GRACE = timedelta(seconds=10)
BUILD_JOB_LOST = "BuildJobLost"

ImageKey = tuple[str, str]  # (namespace, name)
ObjectKey = tuple[str, str, str]  # (plural, namespace, name)


# -- the state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterState:
    """Everything one pass decides on.

    ``rebase_refused`` and ``failures`` are what earlier passes learnt and the objects do not
    say: a rebase that was refused for these inputs (so the next decision builds instead), and
    errors while handling an object (shown as its condition; its action waits ``retry_at``).
    """

    now: datetime
    images: Mapping[str, Mapping[str, ImageRecord]]
    layers: Mapping[str, Mapping[str, LayerRecord]] = field(default_factory=dict)
    jobs: Mapping[str, BuildJobRecord] = field(default_factory=dict)
    limit: int = 2
    # At most this many builds of one namespace at once (None: only the global limit).
    namespace_limit: int | None = None
    rebase_refused: Mapping[ImageKey, tuple[str, str]] = field(default_factory=dict)
    failures: Mapping[ObjectKey, Failure] = field(default_factory=dict)
    # When each parent ref was last asked of its registry.  ``status.resolved`` is written
    # only when the answer changes (a poll that finds nothing new writes nothing), so the
    # poll clock is the later of its ``resolvedAt`` and this.
    polled: Mapping[str, datetime] = field(default_factory=dict)
    # What the cluster holds of an Image whose status an action of this pass changed in
    # memory (the write that follows is the difference).
    written: Mapping[ImageKey, ImageStatus] = field(default_factory=dict)
    # Whether the operator has a scanner (LAMINA_SBOM_SCANNER_IMAGE): only then does an
    # Image whose digest has no SBOM get a ScanImage action.
    scanning: bool = False

    @property
    def namespaces(self) -> list[str]:
        return sorted(set(self.images) | set(self.layers))


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolveParent:
    namespace: str
    name: str
    ref: str


@dataclass(frozen=True)
class ResolveSource:
    """Resolve a git context's revision to a commit (credentials from ``secret``)."""

    namespace: str
    name: str
    url: str
    revision: str
    secret: str | None = None


def source_key(url: str, revision: str, namespace: str, name: str) -> str:
    """The poll-clock key of one Image's git source (``+`` is in no image reference, so it
    never collides with a parent ref's key).

    Per Image, not per URL: the answer goes only to the Images that asked (each with its own
    credentials), so a shared clock would let another Image's short ``pollInterval`` (any
    tenant's, naming the same public URL) keep this one from ever being due.  Requests for
    one URL in one pass are still made once (``SourceResolver``)."""
    return f"git+{url}#{revision}@{namespace}/{name}"


@dataclass(frozen=True)
class CollectBuild:
    """Read the finished build Job's result (and verify it in the registry)."""

    namespace: str
    name: str
    job: str


@dataclass(frozen=True)
class StartBuild:
    namespace: str
    name: str
    plan: BuildPlan
    # ``<parent repository>@<digest>``: the FROM of the generated Dockerfile.
    parent: str
    # Why a Rebase was not possible, when this build replaces one.
    note: str | None = None


@dataclass(frozen=True)
class RebaseImage:
    namespace: str
    name: str
    plan: BuildPlan
    # The repository the parent's digests are read from (mirrors not applied yet).
    parent_repository: str
    parent_is_image: bool


@dataclass(frozen=True)
class DeleteJob:
    name: str
    why: str


@dataclass(frozen=True)
class DeleteLayer:
    namespace: str
    name: str


@dataclass(frozen=True)
class WriteStatus:
    plural: str
    namespace: str
    name: str
    patch: dict[str, Any]
    # The whole status the patch makes (the writer keeps it as what the object now says).
    desired: ImageStatus | LayerStatus | None = field(default=None, compare=False, repr=False)


ImageAction = ResolveParent | ResolveSource | CollectBuild | StartBuild | RebaseImage | ScanImage
Action = ImageAction | DeleteJob | DeleteLayer


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    writes: tuple[WriteStatus, ...]
    # The objects whose status was rendered (a write or not): a write queued for one of
    # them in an earlier pass is superseded by this pass's answer.
    rendered: frozenset[ObjectKey] = frozenset()
    # Images whose handling raised while deciding: their condition says why.
    failed: Mapping[ImageKey, Failure] = field(default_factory=dict)
    # (Kubernetes Events for what users must see would be one more tuple here, decided with
    # the rest; a build pod's waiting reason would come in through BuildJobRecord.)


# -- outcomes of carrying actions out ----------------------------------------------------------


@dataclass(frozen=True)
class ImageChanged:
    """An action changed the build fields of an Image's status (to be written this pass)."""

    namespace: str
    name: str
    status: ImageStatus


@dataclass(frozen=True)
class LayerChanged:
    """A Layer was created or its facts written (by recording an image)."""

    record: LayerRecord


@dataclass(frozen=True)
class JobCreated:
    job: BuildJobRecord


@dataclass(frozen=True)
class JobDeleted:
    name: str


@dataclass(frozen=True)
class LayerDeleted:
    namespace: str
    name: str


@dataclass(frozen=True)
class RebaseRefused:
    namespace: str
    name: str
    inputs: str
    note: str


@dataclass(frozen=True)
class ActionFailed:
    """Carrying out an action for one object failed; it is retried at ``failure.retry_at``."""

    plural: str
    namespace: str
    name: str
    failure: Failure


Outcome = (
    ImageChanged
    | LayerChanged
    | JobCreated
    | JobDeleted
    | LayerDeleted
    | RebaseRefused
    | ActionFailed
)


# -- the decision ------------------------------------------------------------------------------


# A resolution this recent is good enough to start a build on; a re-poll due then waits for
# the build (the next pass or the build's own end re-resolves, and a moved tag folds into the
# next build).
FRESH_ENOUGH_TO_BUILD_ON = timedelta(seconds=60)


def _resolve_due(record: ImageRecord, now: datetime, polled: Mapping[str, datetime]) -> str | None:
    """The parent ref to resolve now, if it is due."""
    spec = record.spec
    if spec is None or spec.parent.ref is None or spec.commit is not None:
        return None
    resolved = record.resolved
    if resolved is None or resolved.ref != spec.parent.ref or resolved.resolved_at is None:
        return spec.parent.ref
    every = timedelta(seconds=duration_seconds(spec.parent.poll_interval))
    wait = every if resolved.digest else RETRY_UNRESOLVED
    last = max(resolved.resolved_at, polled.get(spec.parent.ref, resolved.resolved_at))
    return spec.parent.ref if now - last >= wait else None


def _too_old_to_build_on(record: ImageRecord, state: ClusterState) -> bool:
    """The parent's digest was resolved too long ago (or never) to start a build on it."""
    resolved = record.resolved
    spec = record.spec
    if spec is None or resolved is None or resolved.ref != spec.parent.ref:
        return True
    if resolved.resolved_at is None or resolved.digest is None or spec.parent.ref is None:
        return True
    last = max(resolved.resolved_at, state.polled.get(spec.parent.ref, resolved.resolved_at))
    return state.now - last > FRESH_ENOUGH_TO_BUILD_ON


def _source_too_old_to_build_on(record: ImageRecord, state: ClusterState) -> bool:
    """The git context's commit was resolved too long ago (or never) to build on it: the same
    rule as the parent's (:func:`_too_old_to_build_on`), so a short ``pollInterval`` cannot
    starve the build either."""
    spec = record.spec
    git = spec.build.context.git if spec and spec.build and spec.build.context else None
    source = record.source
    if git is None or source is None or (source.url, source.revision) != (git.url, git.revision):
        return True
    if source.resolved_at is None or source.commit is None:
        return True
    key = source_key(git.url, git.revision, record.namespace, record.name)
    last = max(source.resolved_at, state.polled.get(key, source.resolved_at))
    return state.now - last > FRESH_ENOUGH_TO_BUILD_ON


def _source_due(
    record: ImageRecord, now: datetime, polled: Mapping[str, datetime]
) -> ResolveSource | None:
    """The git context to resolve now, if it is due: every ``pollInterval`` (plus a stable
    jitter, see :mod:`lamina.domain.parent_polling`) after the last answer, every 30 s while
    it has none, at once when the URL or revision changed."""
    spec = record.spec
    if spec is None or spec.commit is not None or spec.build is None:
        return None
    git = spec.build.context.git if spec.build.context else None
    if git is None:
        return None
    key = source_key(git.url, git.revision, record.namespace, record.name)
    source = record.source
    same = source is not None and (source.url, source.revision) == (git.url, git.revision)
    last = [source.resolved_at] if same and source and source.resolved_at else []
    if same and key in polled:
        last.append(polled[key])
    due = poll_due(
        key,
        timedelta(seconds=duration_seconds(git.poll_interval)),
        resolved_ref=key if same else None,
        resolved_digest=source.commit if same and source else None,
        resolved_at=max(last) if last else None,
        now=now,
    )
    if not due:
        return None
    return ResolveSource(record.namespace, record.name, git.url, git.revision, git.secret)


def _rebase_wanted(record: ImageRecord, plan: BuildPlan) -> bool:
    """Rebase only when asked for, and only when nothing but the parent changed."""
    return (
        record.spec is not None
        and record.spec.rebuild.strategy == "Rebase"
        and record.digest is not None
        and record.built_from is not None
        and bool(plan.reasons)
        and all(reason.kind == PARENT_CHANGED for reason in plan.reasons)
    )


def _parent_repository(record: ImageRecord, images: Mapping[str, ImageRecord]) -> str:
    assert record.spec is not None
    parent = record.spec.parent
    if parent.image is not None:
        parent_spec = images[parent.image].spec
        if parent_spec is None:
            raise ValueError(f"the spec of parent Image {parent.image} cannot be read")
        return parent_spec.output.repository
    ref = parent.ref or ""
    # The repository part of the reference: drop a digest, then a tag after the last '/'.
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _with_job_facts(
    record: ImageRecord,
    plan: BuildPlan | None,
    jobs: Mapping[str, BuildJobRecord],
    by_inputs: Mapping[tuple[str, str], BuildJobRecord],
    now: datetime,
) -> ImageRecord:
    """The record with what the Jobs say and status does not: a lost Job, an adopted one."""
    build = record.build_record
    if build is not None and build.phase == "Running" and build.job is not None:
        if build.job not in jobs:
            lost = build_failed(
                record.status,
                BUILD_JOB_LOST,
                f"the build Job {build.job} was deleted before it finished",
                now,
            )
            return replace(record, status=lost)
        return record
    if plan is not None and plan.action == "queued" and plan.inputs is not None:
        job = by_inputs.get((record.uid, plan.inputs))
        if job is not None and (build is None or build.inputs != plan.inputs):
            # A Job for exactly these inputs exists (a restart lost the status write): adopt it.
            return replace(record, status=build_started(record.status, plan, job.name, now))
    return record


def _image_action(
    record: ImageRecord,
    plan: BuildPlan | None,
    images: Mapping[str, ImageRecord],
    state: ClusterState,
) -> ImageAction | Candidate | None:
    """The one thing to do for this Image this pass (or a Candidate for a build slot)."""
    if record.spec is None:
        return None
    build = record.build_record
    running = build is not None and build.phase == "Running"
    if running and build is not None:
        job = state.jobs.get(build.job or "")
        if job is not None and job.finished:
            return CollectBuild(record.namespace, record.name, job.name)
    # Re-resolving is only an observation: it goes on while a build runs (a moved tag folds
    # into the next build).  A due resolution comes before a new build when the digest to
    # build on is old (never a build on a digest about to be replaced), but not when it was
    # just resolved: with a poll interval shorter than a pass, a re-poll is due on every
    # pass, and putting it first would starve the build for good.
    ref = _resolve_due(record, state.now, state.polled)
    wanted = not running and plan is not None and plan.action == "queued"
    if ref is not None and (not wanted or _too_old_to_build_on(record, state)):
        return ResolveParent(record.namespace, record.name, ref)
    source = _source_due(record, state.now, state.polled)
    if source is not None and (not wanted or _source_too_old_to_build_on(record, state)):
        return source
    if not wanted or plan is None:
        # Nothing else to do: a digest without an SBOM of its own gets one (the executor
        # starts, follows or collects its scan Job; with no scanner configured, nothing).
        return None if running or not state.scanning else scan_due(record)
    refused = state.rebase_refused.get((record.namespace, record.name))
    note = refused[1] if refused is not None and refused[0] == plan.inputs else None
    if note is None and _rebase_wanted(record, plan):
        return RebaseImage(
            record.namespace,
            record.name,
            plan,
            _parent_repository(record, images),
            record.spec.parent.image is not None,
        )
    return Candidate(record.namespace, plan, -1, record.created, note, resolve=ref)


def _failure_of(state: ClusterState, key: ObjectKey) -> Failure | None:
    return state.failures.get(key)


def _blocked(failure: Failure | None, now: datetime) -> bool:
    return failure is not None and (failure.retry_at is None or failure.retry_at > now)


def _namespace_view(
    state: ClusterState,
    namespace: str,
    by_inputs: Mapping[tuple[str, str], BuildJobRecord],
    failed: dict[ImageKey, Failure],
) -> tuple[NamespaceSnapshot, dict[str, BuildPlan]]:
    """The namespace with what the Jobs say applied, and its build plans."""
    raw = state.images.get(namespace, {})
    try:
        plans = plan_namespace(record.build for record in raw.values() if record.build)
    except Exception as error:  # a namespace whose tree cannot be planned builds nothing
        plans = {}
        for name in raw:
            failed[(namespace, name)] = _failure(error)
    records = {
        name: _with_job_facts(record, plans.get(name), state.jobs, by_inputs, state.now)
        for name, record in raw.items()
    }
    if any(records[name] is not record for name, record in raw.items()):
        # A lost or adopted Job changed a build phase: plan again on what is true now.
        plans = plan_namespace(r.build for r in records.values() if r.build)
    layers = state.layers.get(namespace, {})
    return NamespaceSnapshot(namespace, records.values(), layers.values(), plans=plans), plans


def _collectable(view: NamespaceSnapshot, state: ClusterState) -> list[DeleteLayer]:
    """Unused Layers the operator made, past their grace, not failing to delete.

    Never a Layer someone put an advisory on (that is a person's data), and nothing in a
    namespace where an Image's status cannot be read (its layers are unknown).
    """
    if any(record.status_unreadable for record in view.images.values()):
        return []
    return [
        DeleteLayer(view.namespace, layer.name)
        for layer in view.unused_layers()
        if layer.managed
        and layer.advisory is None
        and layer.created is not None
        and state.now - layer.created >= LAYER_GRACE
        and not _blocked(_failure_of(state, ("layers", view.namespace, layer.name)), state.now)
    ]


def decide(state: ClusterState, dirty: Dirty | Iterable[str] | None = None) -> Decision:
    """Actions and status writes for one pass.  ``dirty``: what changed per namespace (see
    :mod:`lamina.domain.changes`), whose statuses to render; a plain collection of namespaces
    (or None: all) renders those namespaces whole.  Actions are decided over every namespace,
    since the build limit is global."""
    render = _render_scope(state, dirty)
    rendered: set[ObjectKey] = set()
    by_inputs = {
        (job.image_uid, job.inputs): job
        for job in state.jobs.values()
        if job.image_uid and job.inputs and not job.finished
    }
    actions: list[Action] = []
    writes: list[WriteStatus] = []
    failed: dict[ImageKey, Failure] = {}
    candidates: list[Candidate] = []
    for namespace in state.namespaces:
        view, plans = _namespace_view(state, namespace, by_inputs, failed)
        records = view.images
        parents = {name: record.node.parent_image for name, record in records.items()}
        for name, record in records.items():
            key = (namespace, name)
            if _blocked(_failure_of(state, ("images", namespace, name)), state.now):
                continue
            if key in failed:
                continue
            try:
                action = _image_action(record, plans.get(name), records, state)
            except Exception as error:  # one Image's error must not stop the others
                failed[key] = _failure(error)
                continue
            if isinstance(action, Candidate):
                candidates.append(replace(action, depth=depth_of(name, parents)))
            elif action is not None:
                actions.append(action)
        actions += _collectable(view, state)
        if namespace in render:
            writes += _render(view, records, state, failed, render[namespace], rendered=rendered)
    alive = {record.uid for records in state.images.values() for record in records.values()}
    for name, job in sorted(state.jobs.items()):
        if job.image_uid and job.image_uid not in alive and not job.finished:
            actions.append(DeleteJob(name, "its Image is gone"))
    running: dict[str, int] = {}
    for job in state.jobs.values():
        if not job.finished:
            # A Job without an Image namespace label still takes a global slot.
            owner = job.image_namespace or ""
            running[owner] = running.get(owner, 0) + 1
    chosen_builds = choose_builds(candidates, running, state.limit, state.namespace_limit)
    for chosen in chosen_builds:
        start = _start(chosen, state, failed)
        if start is not None:
            actions.append(start)
    for waiting in candidates:
        # Queued behind the limit: the due re-poll goes on, so a moved tag is seen while queued.
        if waiting.resolve is not None and waiting not in chosen_builds:
            actions.append(ResolveParent(waiting.namespace, waiting.plan.name, waiting.resolve))
    return Decision(tuple(actions), tuple(writes), failed=failed, rendered=frozenset(rendered))


def decide_again(first: Decision, state: ClusterState, changed: Dirty) -> Decision:
    """The decision after this pass's outcomes (``state``, with ``changed`` what they
    changed), given ``first``, the decision before them.

    Only what the outcomes changed is rendered again: every other status depends on nothing
    they touched (see :mod:`lamina.domain.changes`), so ``first``'s writes for it stand.  A
    first pass renders every object; rendering them all again because one Image's build
    started doubled a restart's decision time.  Actions are decided again over everything
    (the build limit is global).
    """
    again = decide(state, changed)
    kept = tuple(
        write
        for write in first.writes
        if (write.plural, write.namespace, write.name) not in again.rendered
    )
    return replace(again, writes=kept + again.writes, rendered=first.rendered | again.rendered)


def _render_scope(
    state: ClusterState, dirty: Dirty | Iterable[str] | None
) -> dict[str, Changes | None]:
    if dirty is None:
        return dict.fromkeys(state.namespaces)
    if isinstance(dirty, Mapping):
        return dict(dirty)
    return dict.fromkeys(dirty)


def _start(
    chosen: Candidate, state: ClusterState, failed: dict[ImageKey, Failure]
) -> StartBuild | None:
    namespace, name = chosen.namespace, chosen.plan.name
    images = state.images[namespace]
    assert chosen.plan.wanted is not None
    try:
        repository = _parent_repository(images[name], images)
    except Exception as error:
        failed[(namespace, name)] = _failure(error)
        return None
    parent = f"{repository}@{chosen.plan.wanted.parent_digest}"
    return StartBuild(namespace, name, chosen.plan, parent, chosen.note)


def _failure(error: Exception) -> Failure:
    return Failure(RECONCILE_FAILED, f"{type(error).__name__}: {error}"[:1024])


def _render(
    view: NamespaceSnapshot,
    records: Mapping[str, ImageRecord],
    state: ClusterState,
    failed: Mapping[ImageKey, Failure],
    changes: Changes | None,
    *,
    rendered: set[ObjectKey],
) -> list[WriteStatus]:
    """The status writes of the objects ``changes`` can affect (all: None) in one namespace:
    only what differs from what the objects have now."""
    writes: list[WriteStatus] = []
    namespace = view.namespace
    images, layers = affected(view, changes)
    # An Image that failed (or whose failure is remembered) always shows it.
    images.update(name for (ns, name) in failed if ns == namespace and name in records)
    images.update(
        name
        for (plural, ns, name) in state.failures
        if plural == "images" and ns == namespace and name in records
    )
    for name in records:
        if name not in images:
            continue
        rendered.add(("images", namespace, name))
        failure = failed.get((namespace, name)) or _failure_of(state, ("images", namespace, name))
        # What the cluster holds (the patch is against it), and what the render starts from:
        # the same record unless the Jobs changed it in memory (a lost build, an adopted Job).
        # Parsed once each (records keep their status packed).
        record, stored = records[name], state.images[namespace][name]
        current = record.status
        observed = state.written.get((namespace, name)) or (
            current if record is stored else stored.status
        )
        try:
            desired = view.image_status(name, state.now, failure, current=current)
        except Exception as error:  # render the failure instead of what could not be decided
            desired = view.failed_image_status(name, state.now, _failure(error), current=current)
        patch = model_patch(observed, desired)
        if patch is not None:
            writes.append(WriteStatus("images", namespace, name, patch, desired))
    for name, layer in view.layers.items():
        if name not in layers:
            continue
        rendered.add(("layers", namespace, name))
        if view.layer_status_holds(name):
            continue
        wanted = view.layer_status(name)
        patch = model_patch(layer.status, wanted)
        if patch is not None:
            writes.append(WriteStatus("layers", namespace, name, patch, wanted))
    return writes


# -- folding outcomes back in ------------------------------------------------------------------


def apply(state: ClusterState, outcomes: Sequence[Outcome]) -> ClusterState:
    """The state after the outcomes of this pass's actions: what the next decision sees."""
    images = {namespace: dict(records) for namespace, records in state.images.items()}
    layers = {namespace: dict(records) for namespace, records in state.layers.items()}
    jobs = dict(state.jobs)
    refused = dict(state.rebase_refused)
    failures = dict(state.failures)
    written = dict(state.written)
    for outcome in outcomes:
        if isinstance(outcome, ImageChanged):
            record = images.get(outcome.namespace, {}).get(outcome.name)
            if record is not None:
                written.setdefault((outcome.namespace, outcome.name), record.status)
                images[outcome.namespace][outcome.name] = replace(record, status=outcome.status)
            failures.pop(("images", outcome.namespace, outcome.name), None)
        elif isinstance(outcome, LayerChanged):
            layers.setdefault(outcome.record.namespace, {})[outcome.record.name] = outcome.record
        elif isinstance(outcome, JobCreated):
            jobs[outcome.job.name] = outcome.job
        elif isinstance(outcome, JobDeleted):
            jobs.pop(outcome.name, None)
        elif isinstance(outcome, LayerDeleted):
            layers.get(outcome.namespace, {}).pop(outcome.name, None)
        elif isinstance(outcome, RebaseRefused):
            refused[(outcome.namespace, outcome.name)] = (outcome.inputs, outcome.note)
        else:
            failures[(outcome.plural, outcome.namespace, outcome.name)] = outcome.failure
    return replace(
        state,
        images=images,
        layers=layers,
        jobs=jobs,
        rebase_refused=refused,
        failures=failures,
        written=written,
    )


def outcome_changes(
    before: ClusterState, after: ClusterState, outcomes: Sequence[Outcome]
) -> dict[str, Changes | None]:
    """What this pass's outcomes changed (``before``/``after``: the state they were applied
    to, and the result), for the decision that renders the statuses."""
    gathered = ChangeSet()

    def image(namespace: str | None, name: str | None) -> None:
        if namespace and name:
            was = before.images.get(namespace, {}).get(name)
            now_ = after.images.get(namespace, {}).get(name)
            one = frozenset({name})
            gathered.add(namespace, image_changes(was, now_) | Changes(one, one))

    for outcome in outcomes:
        if isinstance(outcome, LayerChanged):
            layer = frozenset({outcome.record.name})
            gathered.add(outcome.record.namespace, Changes(layers=layer))
        elif isinstance(outcome, LayerDeleted):
            gathered.add(outcome.namespace, Changes(layers=frozenset({outcome.name})))
        elif isinstance(outcome, JobCreated):
            image(outcome.job.image_namespace, outcome.job.image_name)
        elif isinstance(outcome, JobDeleted):
            job = before.jobs.get(outcome.name)
            if job is not None:
                image(job.image_namespace, job.image_name)
        elif isinstance(outcome, ActionFailed) and outcome.plural == "layers":
            gathered.add(outcome.namespace, Changes(layers=frozenset({outcome.name})))
        else:  # ImageChanged, RebaseRefused, an Image's ActionFailed
            image(outcome.namespace, outcome.name)
    return gathered.frozen()
