"""The build controller: resolves external parents, starts build Jobs, records their results.

One loop for the whole operator, woken by Image and build-Job events (and every
``build_poll_seconds`` for parent refs that are due).  Being one loop is the point: the global
limit on concurrent builds and the parents-first order are decided over the whole cluster at
once, never by per-object handlers racing each other.  Each pass lists what it needs, decides
with the pure functions of :mod:`lamina.domain.builds`, and writes only build fields of status
(``build``, ``builtFrom``, ``resolved``, ``digest``, ``layers``, ...); the tree handler turns
those into conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from lamina.api.image import BuildStatus, ImageSpec, ImageStatus
from lamina.domain.build_job import (
    LABEL_IMAGE_NAME,
    LABEL_IMAGE_NAMESPACE,
    LABEL_IMAGE_UID,
    LABEL_PURPOSE,
    BuildSettings,
    DockerfileError,
    build_job,
    buildkitd_toml,
    context_config_map,
    dockerfile_for,
    job_name,
)
from lamina.domain.build_outcome import judge_build
from lamina.domain.builds import BuildPlan, Candidate, choose_builds, depth_of, plan_namespace
from lamina.domain.commit_job import CommitSettings, push_secret_copy
from lamina.domain.image_annotations import base_name
from lamina.domain.manifest_facts import layer_facts
from lamina.domain.rebase import RebaseRefused, canonical, rebase
from lamina.domain.rebuild import PARENT_CHANGED
from lamina.domain.snapshot import ImageRecord
from lamina.handlers.indexes import image_record
from lamina.handlers.jobs import finished, job_outcome
from lamina.handlers.metrics import EVENTS
from lamina.handlers.parent_resolver import ParentResolver, resolved_status
from lamina.handlers.recording import ensure_layers
from lamina.handlers.registry_access import PushSecretError, docker_config_of
from lamina.kube import Kube
from lamina.oci.client import Manifest, RegistryClient, sha256_digest
from lamina.oci.errors import RegistryError
from lamina.oci.hosts import RegistryHosts
from lamina.oci.reference import Reference, parse_reference

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def duration_seconds(text: str) -> float:
    """``10m``, ``1h30m``, ``45s``, ``500ms`` -> seconds (the CRD pattern admits only these)."""
    total, number, index = 0.0, "", 0
    while index < len(text):
        if text[index].isdigit() or text[index] == ".":
            number += text[index]
            index += 1
            continue
        unit = "ms" if text.startswith("ms", index) else text[index]
        total += float(number or 0) * _UNITS[unit]
        number, index = "", index + len(unit)
    return total


@dataclass
class _Image:
    """One Image object with its parsed parts."""

    obj: Mapping[str, Any]
    record: ImageRecord

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def status(self) -> ImageStatus:
        return self.record.status

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec.model_validate(self.obj["spec"])


@dataclass
class BuildController:
    kube: Kube
    settings: BuildSettings
    hosts: RegistryHosts
    namespaces: list[str]
    limit: int
    poll_seconds: float
    parents: ParentResolver
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def run_forever(self, logger: Any) -> None:
        while True:
            try:
                await self.run_once(logger)
            except Exception as error:  # the loop must outlive any one failure
                logger.warning(f"build pass failed, retrying: {error!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_seconds)
            self.wake.clear()
            await asyncio.sleep(0.2)  # fold a burst of events into one pass

    async def _list_images(self) -> dict[str, dict[str, _Image]]:
        found: dict[str, dict[str, _Image]] = defaultdict(dict)
        scopes: list[str | None] = [*self.namespaces] or [None]
        for scope in scopes:
            for obj in await self.kube.list_objects("images", scope):
                meta = obj["metadata"]
                record = image_record(
                    meta["name"], obj.get("spec") or {}, obj.get("status") or {}, meta
                )
                found[meta["namespace"]][meta["name"]] = _Image(obj, record)
        return found

    async def run_once(self, logger: Any) -> None:
        jobs = {
            job["metadata"]["name"]: job
            for job in await self.kube.list_jobs(self.settings.namespace, f"{LABEL_PURPOSE}=build")
        }
        listed = await self._list_images()
        await self._resolve_parents(listed, logger)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for images in listed.values():
                for image in images.values():
                    await self._collect(session, image, images, jobs, logger)
        # Decide on fresh state: the steps above changed status.
        namespaces = await self._list_images()
        await self._delete_orphans(namespaces, jobs, logger)
        running = sum(1 for job in jobs.values() if not finished(job))
        candidates: list[Candidate] = []
        for namespace, images in namespaces.items():
            plans = plan_namespace(i.record.build for i in images.values() if i.record.build)
            parents = {name: i.record.node.parent_image for name, i in images.items()}
            candidates += [
                Candidate(
                    namespace,
                    plan,
                    depth_of(name, parents),
                    images[name].obj["metadata"].get("creationTimestamp", ""),
                )
                for name, plan in plans.items()
                if plan.action == "queued"
            ]
        waiting: list[Candidate] = []
        notes: dict[tuple[str, str], str] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            for candidate in candidates:
                images = namespaces[candidate.namespace]
                image = images[candidate.plan.name]
                if not _rebase_wanted(image, candidate.plan):
                    waiting.append(candidate)
                    continue
                refused = await self._rebase(session, image, images, candidate.plan, logger)
                if refused is not None:
                    notes[(candidate.namespace, candidate.plan.name)] = refused
                    waiting.append(candidate)
        for chosen in choose_builds(waiting, running, self.limit):
            images = namespaces[chosen.namespace]
            note = notes.get((chosen.namespace, chosen.plan.name))
            await self._start(images[chosen.plan.name], chosen.plan, images, logger, note)

    async def _delete_orphans(
        self,
        namespaces: Mapping[str, Mapping[str, _Image]],
        jobs: dict[str, dict[str, Any]],
        logger: Any,
    ) -> None:
        """A deleted Image's running build would hold a slot for nothing: stop it."""
        alive = {
            i.obj["metadata"]["uid"] for images in namespaces.values() for i in images.values()
        }
        for name, job in list(jobs.items()):
            uid = (job["metadata"].get("labels") or {}).get(LABEL_IMAGE_UID)
            if uid and uid not in alive and not finished(job):
                await self.kube.delete_job(self.settings.namespace, name)
                del jobs[name]
                logger.info(f"deleted build Job {name}: its Image is gone")

    # -- external parents ------------------------------------------------------------------

    async def _resolve_parents(
        self, namespaces: Mapping[str, Mapping[str, _Image]], logger: Any
    ) -> None:
        """Resolve the due external parents, each ref once (see ``ParentResolver``)."""
        now = _now()
        naming: dict[str, list[_Image]] = defaultdict(list)
        for images in namespaces.values():
            for image in images.values():
                if image.spec.parent.ref is not None:
                    naming[image.spec.parent.ref].append(image)
        wanted = {
            ref: next(filter(None, (_known_digest(i, ref) for i in images)), None)
            for ref, images in naming.items()
            if any(
                self.parents.due(
                    ref,
                    timedelta(seconds=duration_seconds(i.spec.parent.poll_interval)),
                    i.status.resolved,
                    now,
                )
                for i in images
            )
        }
        if not wanted:
            return
        for ref, resolution in (await self.parents.resolve_refs(wanted)).items():
            for image in naming[ref]:  # every Image naming the ref takes the one answer
                resolved = image.status.resolved
                patch = resolved_status(ref, resolved, resolution, now)
                if patch is None:
                    continue  # nothing new: no write
                await self.kube.patch_status(
                    "images", image.namespace, image.name, {"resolved": patch}
                )
                if resolved is None or resolved.digest != resolution.digest:
                    logger.info(
                        f"{image.namespace}/{image.name}: {ref} is "
                        f"{resolution.digest or resolution.message}"
                    )

    # -- starting builds -------------------------------------------------------------------

    async def _docker_config(self, image: _Image) -> str | None:
        secret = image.spec.output.push_secret
        if not secret:
            return None
        return docker_config_of(
            await self.kube.get_secret(image.namespace, secret), image.namespace, secret
        )

    def _parent_reference(
        self, image: _Image, images: Mapping[str, _Image], plan: BuildPlan
    ) -> str:
        parent = image.spec.parent
        digest = plan.wanted.parent_digest if plan.wanted else None
        if parent.image is not None:
            repository = images[parent.image].spec.output.repository
        else:
            reference = parse_reference(parent.ref or "")
            repository = reference.name
        return f"{repository}@{digest}"

    async def _start(
        self,
        image: _Image,
        plan: BuildPlan,
        images: Mapping[str, _Image],
        logger: Any,
        note: str | None = None,
    ) -> None:
        assert plan.inputs is not None and plan.wanted is not None
        spec = image.spec
        build_status: dict[str, Any] = {
            "job": job_name(plan.inputs),
            "reasons": [str(reason) for reason in plan.reasons]
            + ([f"RebaseNotPossible: {note}"] if note else []),
            "inputs": plan.inputs,
            "wanted": {
                "generation": plan.wanted.generation,
                "parentDigest": plan.wanted.parent_digest,
                "trigger": plan.wanted.trigger,
            },
            "startedAt": _now().isoformat(),
            "completedAt": None,
            "failure": None,
            "message": None,
        }

        async def refuse(reason: str, message: str) -> None:
            await self._build_failed(image, reason, message, build_status)

        try:
            parent = self._parent_reference(image, images, plan)
            dockerfile = dockerfile_for(spec, parent)
            docker_config = await self._docker_config(image)
            files = await self._context_files(image)
        except DockerfileError as error:
            await refuse("DockerfileInvalid", str(error))
            return
        except PushSecretError as error:
            await refuse(error.reason, str(error))
            return
        except LookupError as error:
            await refuse("ContextNotFound", str(error))
            return
        meta = image.obj["metadata"]
        name = job_name(plan.inputs)
        secret_name = f"{name}-push" if docker_config is not None else None
        job = await self.kube.create_job(
            build_job(
                namespace=image.namespace,
                name=image.name,
                uid=meta["uid"],
                inputs=plan.inputs,
                spec=spec,
                parent=parent,
                settings=self.settings,
                context_config_map=name,
                push_secret_copy=secret_name,
            )
        )
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": job["metadata"]["uid"],
        }
        await self.kube.create_config_map(
            context_config_map(
                name=name, settings=self.settings, dockerfile=dockerfile, files=files, owner=owner
            )
        )
        if docker_config is not None:
            copy = push_secret_copy(
                uid=meta["uid"],
                settings=CommitSettings(namespace=self.settings.namespace, image=""),
                docker_config_json=docker_config,
                owner=owner,
            )
            copy["metadata"]["name"] = secret_name
            await self.kube.create_secret(copy)
        await self.kube.patch_status(
            "images", image.namespace, image.name, {"build": {**build_status, "phase": "Running"}}
        )
        reasons = "; ".join(build_status["reasons"])
        logger.info(f"{image.namespace}/{image.name}: build {name} started ({reasons})")

    async def _context_files(self, image: _Image) -> dict[str, str]:
        context = image.spec.build.context if image.spec.build else None
        if context is None or context.config_map is None:
            return {}
        found = await self.kube.get_config_map(image.namespace, context.config_map.name)
        if found is None:
            raise LookupError(
                f'context ConfigMap "{context.config_map.name}" not found '
                f'in namespace "{image.namespace}"'
            )
        return dict(found.get("data") or {})

    # -- rebase ----------------------------------------------------------------------------

    def _parent_repository(self, image: _Image, images: Mapping[str, _Image]) -> Reference:
        """Where the parent's digests are read from (mirrors applied for external parents)."""
        parent = image.spec.parent
        if parent.image is not None:
            return parse_reference(images[parent.image].spec.output.repository)
        return self.hosts.pull_from(parse_reference(parse_reference(parent.ref or "").name))

    async def _rebase(
        self,
        session: aiohttp.ClientSession,
        image: _Image,
        images: Mapping[str, _Image],
        plan: BuildPlan,
        logger: Any,
    ) -> str | None:
        """Rebase in the registry; None when done, else why not (then the Image is rebuilt)."""
        spec, status = image.spec, image.status
        assert plan.wanted is not None and status.built_from is not None and status.digest
        old, new = status.built_from.parent_digest, plan.wanted.parent_digest
        if old is None or new is None:
            return "the old parent digest is unknown"
        target = parse_reference(f"{spec.output.repository}@{status.digest}")
        parent_repo = self._parent_repository(image, images)
        try:
            docker_config = await self._docker_config(image)
            client = RegistryClient(
                session,
                insecure=self.hosts.insecure
                | ({target.registry} if spec.output.insecure else set()),
                docker_config=json.loads(docker_config) if docker_config else None,
                retries=2,
            )
            image_manifest = await client.get_manifest(target)
            image_config = json.loads(
                await client.get_blob(target, image_manifest.json()["config"]["digest"])
            )
            old_parent, _ = await client.resolve_image(parent_repo.with_digest(old))
            new_parent, _ = await client.resolve_image(parent_repo.with_digest(new))
            new_parent_config = json.loads(
                await client.get_blob(parent_repo, new_parent.json()["config"]["digest"])
            )
            result = rebase(
                image_manifest=image_manifest.json(),
                image_config=image_config,
                old_parent_manifest=old_parent.json(),
                new_parent_manifest=new_parent.json(),
                new_parent_config=new_parent_config,
                new_parent_digest=new,
                new_parent_name=base_name(spec, self._parent_reference(image, images, plan)),
            )
            if isinstance(result, RebaseRefused):
                return result.reason
            manifest, config = result
            config_bytes = canonical(config)
            config_digest = await client.push_blob(target, config_bytes)
            manifest["config"] = {
                **manifest["config"],
                "digest": config_digest,
                "size": len(config_bytes),
            }
            for layer in new_parent.json().get("layers", []):
                await client.ensure_blob(target, layer["digest"], parent_repo)
            data = canonical(manifest)
            pushed = Manifest(data, image_manifest.media_type, sha256_digest(data))
            for tag in spec.output.tags:
                digest = await client.put_manifest(target, pushed, tag)
        except (
            RegistryError,
            OSError,
            ValueError,
            KeyError,
            aiohttp.ClientError,
            PushSecretError,
        ) as error:
            return f"the registry could not be read or written: {error}"
        reasons = [str(reason) for reason in plan.reasons]
        wanted = {
            "generation": plan.wanted.generation,
            "parentDigest": new,
            "trigger": plan.wanted.trigger,
        }
        rebased = {
            "job": None,
            "phase": "Succeeded",
            "reasons": reasons,
            "inputs": plan.inputs,
            "wanted": wanted,
            "startedAt": _now().isoformat(),
            "completedAt": _now().isoformat(),
            "failure": None,
            "message": f"rebased onto {new} without a build",
        }
        recorded = await self._record(session, image, images, digest, rebased)
        await self.kube.patch_status("images", image.namespace, image.name, recorded)
        logger.info(f"{image.namespace}/{image.name}: rebased onto {new}: {digest}")
        return None

    # -- finished builds -------------------------------------------------------------------

    async def _build_failed(
        self, image: _Image, reason: str, message: str, build: Mapping[str, Any] | None = None
    ) -> None:
        """Record a failed build: ``build`` (default: the recorded one) with the reason."""
        if build is None:
            assert image.status.build is not None
            build = image.status.build.wire()
        failed = {
            **build,
            "phase": "Failed",
            "failure": reason,
            "message": message,
            "completedAt": _now().isoformat(),
        }
        await self.kube.patch_status("images", image.namespace, image.name, {"build": failed})

    async def _collect(
        self,
        session: aiohttp.ClientSession,
        image: _Image,
        images: Mapping[str, _Image],
        jobs: Mapping[str, Mapping[str, Any]],
        logger: Any,
    ) -> None:
        """Record the result of this Image's finished build Job, once."""
        build = image.status.build
        if build is None or build.phase != "Running" or build.job is None:
            return
        job = jobs.get(build.job)
        if job is None:
            await self._build_failed(
                image, "BuildJobLost", f"the build Job {build.job} was deleted before it finished"
            )
            return
        if not finished(job):
            return
        result = judge_build(await job_outcome(self.kube, job))
        if result.digest is None:
            await self._build_failed(image, result.reason or "BuildFailed", result.message)
            logger.warning(f"{image.namespace}/{image.name}: build failed: {result.reason}")
            return
        done = {
            **build.wire(),
            "phase": "Succeeded",
            "completedAt": _now().isoformat(),
            "message": f"pushed {result.digest}",
        }
        try:
            recorded = await self._record(session, image, images, result.digest, done)
        except (
            RegistryError,
            OSError,
            ValueError,
            KeyError,
            aiohttp.ClientError,
            PushSecretError,
        ) as error:
            await self._build_failed(
                image, "VerificationFailed", f"could not read {result.digest} back: {error}"
            )
            return
        await self.kube.patch_status("images", image.namespace, image.name, recorded)
        logger.info(f"{image.namespace}/{image.name}: built {result.digest}")

    async def _record(
        self,
        session: aiohttp.ClientSession,
        image: _Image,
        images: Mapping[str, _Image],
        digest: str,
        done: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Status fields for a verified new digest, after creating its Layer objects.

        ``done`` is the finished ``status.build`` (a build Job's, or a rebase's).
        """
        spec, status = image.spec, image.status
        build = BuildStatus.model_validate(dict(done))
        assert build.wanted is not None
        target = parse_reference(f"{spec.output.repository}@{digest}")
        docker_config = await self._docker_config(image)
        reader = RegistryClient(
            session,
            insecure=self.hosts.insecure | ({target.registry} if spec.output.insecure else set()),
            docker_config=json.loads(docker_config) if docker_config else None,
            retries=2,
        )
        manifest = (await reader.get_manifest(target)).json()
        config = json.loads(await reader.get_blob(target, manifest["config"]["digest"]))
        parent_digest = build.wanted.parent_digest
        if spec.parent.image is not None:
            parent_layers = {
                layer.digest for layer in images[spec.parent.image].status.layers or []
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
        await ensure_layers(self.kube, image.namespace, image.obj["metadata"], facts)
        entry = {
            "digest": digest,
            "parentDigest": parent_digest,
            "reason": "; ".join(build.reasons or []),
            "builtAt": _now().isoformat(),
        }
        history = [entry, *[h.wire() for h in status.history or []]][: spec.history_limit]
        parent_key = {"image": spec.parent.image} if spec.parent.image else {"ref": spec.parent.ref}
        return {
            "digest": digest,
            "imageRef": f"{spec.output.repository}@{digest}",
            "parent": {**parent_key, "digest": parent_digest},
            "builtFrom": build.wanted.wire(),
            "layers": [fact.image_layer() for fact in facts],
            "history": history,
            "build": dict(done),
        }


def _known_digest(image: _Image, ref: str) -> str | None:
    resolved = image.status.resolved
    return resolved.digest if resolved is not None and resolved.ref == ref else None


def _rebase_wanted(image: _Image, plan: BuildPlan) -> bool:
    """Rebase only when asked for, and only when nothing but the parent changed."""
    return (
        image.spec.rebuild.strategy == "Rebase"
        and image.status.digest is not None
        and image.status.built_from is not None
        and bool(plan.reasons)
        and all(reason.kind == PARENT_CHANGED for reason in plan.reasons)
    )


def start(memo: Any, logger: Any) -> None:
    """Start the build loop as a task kept in ``memo``."""
    config = memo.config
    hosts = (
        RegistryHosts.parse(config.registry_config) if config.registry_config else RegistryHosts()
    )
    controller = BuildController(
        kube=memo.kube,
        settings=BuildSettings(
            namespace=config.namespace,
            builder_image=config.builder_image,
            deadline_seconds=config.build_deadline_seconds,
            buildkitd_toml=buildkitd_settings(hosts),
        ),
        hosts=hosts,
        namespaces=config.namespaces,
        limit=config.max_concurrent_builds,
        poll_seconds=config.build_poll_seconds,
        parents=ParentResolver(hosts),
    )
    memo.builds = controller
    memo.builds_task = asyncio.create_task(controller.run_forever(logger))


def buildkitd_settings(hosts: RegistryHosts) -> str:
    return buildkitd_toml(dict(hosts.mirrors), hosts.insecure)


async def stop(memo: Any) -> None:
    task: asyncio.Task[None] | None = getattr(memo, "builds_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def poke(memo: Any) -> None:
    controller: BuildController | None = getattr(memo, "builds", None)
    if controller is not None:
        controller.wake.set()


# Called by the operator's own Job watch (handlers/setup.py), which sees only its namespace.
async def build_job_event(*, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
    EVENTS.labels("jobs").inc()
    if labels.get(LABEL_IMAGE_NAMESPACE) and labels.get(LABEL_IMAGE_NAME):
        poke(memo)
