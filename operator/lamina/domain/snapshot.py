"""One namespace as the operator sees it, and the status each of its objects should have.

The records are what the operator keeps of each object (from kopf's indexes, a resync LIST, or
its own last write); :class:`NamespaceSnapshot` derives from them, purely, the status every
Image and Layer of the namespace should have.  The same snapshot always yields the same
statuses, and a snapshot that already matches yields nothing to write.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, overload

from pydantic import ValidationError

from lamina.api.image import (
    BuildStatus,
    BuiltFromStatus,
    ImageSpec,
    ImageStatus,
    ResolvedParent,
    ResolvedSource,
)
from lamina.api.layer import USED_BY_SAMPLE, LayerStatus
from lamina.domain.builds import BuildPlan, BuildState, plan_namespace
from lamina.domain.conditions import (
    SPEC_INVALID,
    Verdict,
    kstatus,
    merge_conditions,
    same_conditions,
)
from lamina.domain.graph import ImageGraph, ImageNode
from lamina.domain.image_status import decide_tree_status
from lamina.domain.layers import (
    Advisory,
    ImageLayers,
    LayerUsage,
    decide_vulnerable,
    layer_digest,
)
from lamina.domain.rebuild import REBUILD_ANNOTATION, BuiltFrom


@dataclass(frozen=True)
class Failure:
    """Why handling one object failed: shown as its Stalled condition until ``retry_at``."""

    reason: str
    message: str
    retry_at: datetime | None = None


class _PackedStatus:
    """An Image's status kept as its JSON, parsed again only when read.

    The operator holds every Image of the cluster in memory, and a parsed ImageStatus (its
    conditions, layers, lineage, build record: some 170 pydantic objects) is about 18 KB
    where its JSON is about 4 KB: at 5,000 Images the parsed models were most of the peak
    memory.  A pass reads the whole status only of the Images it renders or acts on; what it
    reads of every Image (the tree and build facts, the layer list) is taken out once, when
    the status is set (see :class:`_StatusFacts`).
    """

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._packed = f"_{name}_json"
        self._facts = f"_{name}_facts"

    @overload
    def __get__(self, record: None, owner: type[Any] | None = None) -> None: ...
    @overload
    def __get__(self, record: object, owner: type[Any] | None = None) -> ImageStatus: ...
    def __get__(self, record: object, owner: type[Any] | None = None) -> ImageStatus | None:
        if record is None:
            return None  # the dataclass field's default: an empty status
        return ImageStatus.model_validate_json(record.__dict__[self._packed])

    def __set__(self, record: object, status: ImageStatus | None) -> None:
        # A frozen dataclass sets its fields once, in __init__ (and replace() makes a new one).
        status = status if status is not None else _EMPTY_STATUS
        record.__dict__[self._packed] = status.model_dump_json(by_alias=True)
        record.__dict__[self._facts] = _StatusFacts.of(status)


@dataclass(frozen=True, slots=True)
class _StatusFacts:
    """What a pass reads of every Image's status, small enough to keep parsed."""

    digest: str | None
    resolved: ResolvedParent | None
    source: ResolvedSource | None
    built_from: BuiltFromStatus | None
    build: BuildStatus | None
    layers: tuple[tuple[str, bool], ...]

    @classmethod
    def of(cls, status: ImageStatus) -> _StatusFacts:
        return cls(
            digest=status.digest,
            resolved=status.resolved,
            source=status.source,
            built_from=status.built_from,
            build=status.build,
            # Layers are shared by many Images: one string per digest, not one per listing.
            layers=tuple((sys.intern(layer.digest), layer.own) for layer in status.layers or []),
        )


_EMPTY_STATUS = ImageStatus()


@dataclass(frozen=True)
class ImageRecord:
    """An Image as last seen: identity, parsed spec (None when unreadable) and status.

    ``status`` is kept packed (see :class:`_PackedStatus`): each read parses it, so code
    that reads one field of every Image uses the facts (``digest``, ``resolved``,
    ``build_record`` ...) instead, and a renderer reads the status once.
    """

    namespace: str
    name: str
    uid: str = ""
    generation: int | None = None
    resource_version: str = ""
    created: str = ""
    trigger: str | None = None
    spec: ImageSpec | None = None
    spec_error: str | None = None
    status: _PackedStatus = _PackedStatus()
    # The stored status could not be read (someone mangled it): its layers are unknown.
    status_unreadable: bool = False

    @classmethod
    def parse(
        cls,
        namespace: str,
        name: str,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        meta: Mapping[str, Any],
    ) -> ImageRecord:
        """From an object's parts as the API server sends them; never raises."""
        parsed_spec: ImageSpec | None = None
        spec_error: str | None = None
        try:
            parsed_spec = ImageSpec.model_validate(dict(spec))
        except ValidationError as error:
            spec_error = f"spec cannot be read: {error.error_count()} error(s), first: " + str(
                error.errors()[0].get("msg", "")
            )
        try:
            parsed_status: ImageStatus | None = ImageStatus.model_validate(dict(status))
        except ValidationError:
            parsed_status = None
        return cls(
            namespace=namespace,
            name=name,
            uid=str(meta.get("uid", "")),
            generation=meta.get("generation"),
            resource_version=str(meta.get("resourceVersion", "")),
            created=str(meta.get("creationTimestamp", "")),
            trigger=(meta.get("annotations") or {}).get(REBUILD_ANNOTATION),
            spec=parsed_spec,
            spec_error=spec_error,
            status=parsed_status or ImageStatus(),
            status_unreadable=parsed_status is None,
        )

    @property
    def _facts(self) -> _StatusFacts:
        facts: _StatusFacts = self.__dict__["_status_facts"]
        return facts

    @property
    def status_json(self) -> str:
        """The status as packed: equal statuses pack to equal text."""
        packed: str = self.__dict__["_status_json"]
        return packed

    @property
    def digest(self) -> str | None:
        return self._facts.digest

    @property
    def resolved(self) -> ResolvedParent | None:
        return self._facts.resolved

    @property
    def source(self) -> ResolvedSource | None:
        return self._facts.source

    @property
    def built_from(self) -> BuiltFromStatus | None:
        return self._facts.built_from

    @property
    def build_record(self) -> BuildStatus | None:
        return self._facts.build

    @cached_property
    def current_ref_digest(self) -> str | None:
        """What the parent ref resolved to; a resolution of an earlier ref says nothing."""
        resolved = self.resolved
        ref = self.spec.parent.ref if self.spec else None
        return resolved.digest if resolved is not None and resolved.ref == ref else None

    @cached_property
    def current_source_commit(self) -> str | None:
        """What the git context's revision resolved to; one of an earlier URL or revision
        says nothing."""
        git = (
            self.spec.build.context.git
            if self.spec and self.spec.build and self.spec.build.context
            else None
        )
        source = self.source
        if git is None or source is None:
            return None
        return source.commit if (source.url, source.revision) == (git.url, git.revision) else None

    @cached_property
    def node(self) -> ImageNode:
        spec = self.spec
        return ImageNode(
            name=self.name,
            parent_image=spec.parent.image if spec else None,
            parent_ref=spec.parent.ref if spec else None,
            digest=self.digest,
            parent_ref_digest=self.current_ref_digest,
            committed_by=spec.commit.name if spec and spec.commit else None,
        )

    @cached_property
    def build(self) -> BuildState | None:
        """What the build planner reads; None when the spec is unreadable."""
        spec = self.spec
        if spec is None:
            return None
        built = self.built_from
        build = self.build_record
        git = spec.build.context.git if spec.build and spec.build.context else None
        return BuildState(
            name=self.name,
            uid=self.uid,
            generation=self.generation,
            parent_image=spec.parent.image,
            parent_ref=spec.parent.ref,
            policy=spec.rebuild.policy,
            strategy=spec.rebuild.strategy,
            trigger=self.trigger,
            committed=spec.commit is not None,
            digest=self.digest,
            built_from=BuiltFrom(
                built.generation, built.parent_digest, built.trigger, built.source_commit
            )
            if built is not None
            else None,
            resolved_digest=self.current_ref_digest,
            build_phase=build.phase if build else None,
            build_inputs=build.inputs if build else None,
            created=self.created,
            source_url=git.url if git is not None else None,
            source_commit=self.current_source_commit,
        )

    @cached_property
    def layers(self) -> ImageLayers:
        return ImageLayers(self.name, self._facts.layers)


@dataclass(frozen=True)
class LayerRecord:
    """A Layer as last seen.  ``managed``: the operator created it (so it may collect it)."""

    namespace: str
    name: str
    generation: int | None = None
    resource_version: str = ""
    created: datetime | None = None
    managed: bool = False
    advisory: Advisory | None = None
    status: LayerStatus = field(default_factory=LayerStatus)

    @cached_property
    def digest(self) -> str:
        return layer_digest(self.name)


@dataclass(frozen=True)
class BuildJobRecord:
    """A build Job in the operator's namespace, as its labels and status say."""

    name: str
    image_namespace: str | None
    image_name: str | None
    image_uid: str | None
    inputs: str | None
    finished: bool


def parse_status(model: type[Any], body: Mapping[str, Any]) -> Any:
    """A status as the model reads it; a status someone mangled by hand reads as empty."""
    try:
        return model.model_validate(dict(body))
    except ValidationError:
        return model()


def failure_verdicts(failure: Failure) -> tuple[Verdict, Verdict, Verdict]:
    return kstatus(ready=False, progressing=False, reason=failure.reason, message=failure.message)


class NamespaceSnapshot:
    """The Images and Layers of one namespace, and the statuses that follow from them."""

    def __init__(
        self,
        namespace: str,
        images: Iterable[ImageRecord],
        layers: Iterable[LayerRecord],
        plans: Mapping[str, BuildPlan] | None = None,
    ) -> None:
        self.namespace = namespace
        self.images = {record.name: record for record in images}
        self.layers = {record.name: record for record in layers}
        self.graph = ImageGraph(record.node for record in self.images.values())
        if plans is not None:
            self.__dict__["build_plans"] = dict(plans)  # decided already: fill the cache

    @cached_property
    def _users(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Per layer digest, the Images that list it, and the one that introduced it.

        One walk over the Images' layer lists, per pass; samples are cut only for the layers
        asked about (sorting every user list of a 5,000-Image namespace was most of a pass).
        """
        users: dict[str, list[str]] = {}
        introducers: dict[str, str] = {}
        for record in self.images.values():
            name = record.name
            for digest, own in record.layers.layers:
                found = users.get(digest)
                if found is None:
                    users[digest] = [name]
                else:
                    found.append(name)
                # Two Images may build identical bytes; the first by name is the introducer,
                # so the answer never flips between passes.
                if own and (digest not in introducers or name < introducers[digest]):
                    introducers[digest] = name
        return users, introducers

    def users(self, digest: str) -> list[str]:
        """Every Image of the namespace that lists the layer."""
        return self._users[0].get(digest, [])

    def usage(self, digest: str) -> LayerUsage:
        names = self._users[0].get(digest)
        if not names:
            return LayerUsage((), 0, None)
        sample = heapq.nsmallest(USED_BY_SAMPLE, names)
        return LayerUsage(tuple(sample), len(names), self._users[1].get(digest))

    @cached_property
    def _advisories(self) -> dict[str, Advisory]:
        return {
            record.digest: record.advisory
            for record in self.layers.values()
            if record.advisory is not None
        }

    @property
    def _introducers(self) -> Mapping[str, str | None]:
        return self._users[1]

    @cached_property
    def build_plans(self) -> dict[str, BuildPlan]:
        """The build decision of every Image whose spec could be read."""
        return plan_namespace(
            record.build for record in self.images.values() if record.build is not None
        )

    def image_status(
        self,
        name: str,
        now: datetime,
        failure: Failure | None = None,
        *,
        current: ImageStatus | None = None,
    ) -> ImageStatus:
        """The status ``name`` should have: its recorded build fields, with conditions,
        lineage and observedGeneration decided from the tree, the build plan and the layers.

        A failure while handling the Image (an unreadable spec, an error the API returned for
        it) replaces the kstatus summary with Stalled and that reason.  ``current``: the
        record's status, when the caller has it parsed already.
        """
        record = self.images[name]
        current = current if current is not None else record.status
        verdicts: list[Verdict]
        tree = decide_tree_status(
            name, self.graph, self.namespace, self.build_plans.get(name), current
        )
        if record.spec_error is not None:
            failure = Failure(SPEC_INVALID, record.spec_error)
        verdicts = list(failure_verdicts(failure) if failure else tree.conditions)
        vulnerable = decide_vulnerable(record.layers, self._advisories, self._introducers)
        if vulnerable is not None:
            verdicts.append(vulnerable)
        conditions = merge_conditions(
            current.conditions, verdicts, generation=record.generation, now=now
        )
        return current.model_copy(
            update={
                "observed_generation": record.generation,
                "conditions": current.conditions
                if same_conditions(current.conditions, conditions)
                else conditions,
                "lineage": tree.lineage,
            }
        )

    def failed_image_status(
        self, name: str, now: datetime, failure: Failure, *, current: ImageStatus | None = None
    ) -> ImageStatus:
        """Only the failure, for an Image whose status could not be decided at all."""
        record = self.images[name]
        current = current if current is not None else record.status
        conditions = merge_conditions(
            current.conditions, failure_verdicts(failure), generation=record.generation, now=now
        )
        return current.model_copy(
            update={
                "observed_generation": record.generation,
                "conditions": current.conditions
                if same_conditions(current.conditions, conditions)
                else conditions,
            }
        )

    def layer_status_holds(self, name: str) -> bool:
        """Whether the Layer's status already says what :meth:`layer_status` would (the
        common case, decided without building a model)."""
        record = self.layers[name]
        status, usage = record.status, self.usage(record.digest)
        return (
            status.observed_generation == record.generation
            and status.digest == record.digest
            and status.used_by_count == usage.used_by_count
            and status.introduced_by == usage.introduced_by
            and status.used_by == list(usage.used_by)
        )

    def layer_status(self, name: str) -> LayerStatus:
        """The status ``name`` should have: usage decided from the Images' layers."""
        record = self.layers[name]
        usage = self.usage(record.digest)
        return record.status.model_copy(
            update={
                "observed_generation": record.generation,
                "digest": record.digest,
                "used_by": list(usage.used_by),
                "used_by_count": usage.used_by_count,
                "introduced_by": usage.introduced_by,
            }
        )

    def unused_layers(self) -> list[LayerRecord]:
        """Layers no Image of the namespace contains."""
        users = self._users[0]
        return [record for record in self.layers.values() if record.digest not in users]
