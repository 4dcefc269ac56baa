"""External parents (``spec.parent.ref``) resolved the way registries want to be polled.

The build pass hands over every ref that is due (see
:func:`lamina.domain.parent_polling.poll_due`) with the digest its Images last resolved it
to, and gets one :class:`Resolution` per ref text back:

- **Once per pass**: refs are grouped by what is actually asked for (normalised, mirrors
  applied), so ``busybox`` and ``docker.io/library/busybox:latest`` named by a thousand Images
  cost one request.
- **Pinned to the image manifest**: a tag naming an index (an image Lamina or BuildKit built
  with attestations, or a multi-platform image) pins the parent to the index's
  ``linux/amd64`` image manifest, never to the index or an attestation manifest in it: the
  index digest moves with every attestation's timestamp, the image manifest only when the
  image does, so a reproducible rebuild of a parent is no parent change for its children
  (see :mod:`lamina.domain.parent_polling`).
- **HEAD first**: the ``Docker-Content-Digest`` from a HEAD (which Docker Hub does not count
  as a pull) is compared with what the last GET found and with the digests already pinned
  (:func:`~lamina.domain.parent_polling.pin_from_head`); the manifest or index is fetched (a
  GET, bounded to 4 MiB, media type checked, an index's ``linux/amd64`` entry read from it)
  only when the digest moved or the registry's HEAD did not give one.  What each GET found is
  remembered, so after the first pass an unchanged tag costs one HEAD, an index tag too.
- **Per-registry backoff**: a 429 or 5xx pauses that registry (its Retry-After honoured,
  bounded; see :mod:`lamina.domain.parent_polling`); refs on it are not requested until the
  pause ends and their Images keep their last digest with the registry's answer as message.
  Refs on one registry are asked one after the other (a registry that pushes back stops being
  asked within the pass), different registries concurrently.
- Every failure is that ref's message (``Reason: text``, never a response body); the others
  go on.

How the build pass uses it: a ref is due when ``resolver.due(ref, pollInterval,
status.resolved, now)`` holds for any Image naming it; call ``resolve_refs`` once with
``{ref: last digest}`` for the due refs, and patch ``status.resolved`` of every Image naming
a resolved ref with ``resolved_status(ref, status.resolved, resolution, now)`` when that is
not None (only a changed answer is written: an unchanged poll costs one HEAD and no write).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from lamina.api.image import ResolvedParent
from lamina.domain.conditions import REGISTRY_UNAVAILABLE
from lamina.domain.parent_polling import (
    RegistryPause,
    TagAnswer,
    active_pause,
    pause_after_failure,
    pin_from_head,
    poll_due,
    retry_after_seconds,
)
from lamina.oci.client import RegistryClient, platform_descriptor
from lamina.oci.errors import (
    RegistryError,
    RegistryRateLimited,
    RegistryUnavailable,
    condition_message,
    status_text,
)
from lamina.oci.hosts import RegistryHosts
from lamina.oci.mediatypes import INDEXES
from lamina.oci.reference import InvalidReference, Reference, parse_reference

log = logging.getLogger(__name__)

# Statuses for which a HEAD is retried as a GET (registries that do not implement HEAD).
_HEAD_UNSUPPORTED = frozenset({400, 405, 501})


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Resolution:
    """What one ref resolved to in this pass."""

    # The digest the parent is pinned to now (the linux/amd64 image manifest's, also when the
    # reference names an index); the last known one when the registry could not say.
    digest: str | None
    # Why it is not freshly resolved ("Reason: text", quoted in WaitingForParent); None if it is.
    message: str | None = None
    # A manifest GET was made (the digest moved, or HEAD gave none).
    fetched: bool = False
    # The registry was asked at all (False while it backs off).
    asked: bool = True


def resolved_status(
    ref: str, current: ResolvedParent | None, resolution: Resolution, now: datetime
) -> dict[str, Any] | None:
    """``status.resolved`` for an Image naming ``ref`` as a merge patch (nulls clear), or None
    when it already says this: a poll that found nothing new writes nothing, so
    ``resolvedAt`` is when the answer last changed (when it was last asked is the resolver's
    to remember, see :meth:`ParentResolver.due`)."""
    if current is not None and (current.ref, current.digest, current.message) == (
        ref,
        resolution.digest,
        resolution.message,
    ):
        return None
    model = ResolvedParent(
        ref=ref, digest=resolution.digest, resolved_at=now, message=resolution.message
    )
    return model.model_dump(by_alias=True, mode="json")


@dataclass
class ParentResolver:
    """Resolves refs for the build loop; keeps backoff and verified digests across passes."""

    hosts: RegistryHosts
    concurrency: int = 8
    # Seconds for one ref (HEAD, and GET when needed); a registry that takes longer is paused
    # like one that answered 503, so a slow registry cannot hold up the pass ref after ref.
    timeout: float = 10.0
    # Seconds for the whole pass: refs not reached by then stay due and go first next time.
    budget: float = 60.0
    clock: Callable[[], datetime] = _now
    ssl_context: ssl.SSLContext | None = None
    pauses: dict[str, RegistryPause] = field(default_factory=dict)
    # What this resolver's last GET of each asked-for reference found (the digest a HEAD
    # reports, and the image manifest pinned): an unchanged index then costs one HEAD.
    fetched: dict[Reference, TagAnswer] = field(default_factory=dict)
    # When each ref text was last asked for (status.resolved is written only on a change).
    checked: dict[str, datetime] = field(default_factory=dict)

    def due(
        self, ref: str, interval: timedelta, resolved: ResolvedParent | None, now: datetime
    ) -> bool:
        """Whether an Image naming ``ref`` with this ``status.resolved`` wants a poll now."""
        same = resolved is not None and resolved.ref == ref
        last = [resolved.resolved_at] if same and resolved and resolved.resolved_at else []
        if same and ref in self.checked:
            last.append(self.checked[ref])
        return poll_due(
            ref,
            interval,
            resolved_ref=resolved.ref if resolved else None,
            resolved_digest=resolved.digest if resolved else None,
            resolved_at=max(last) if last else None,
            now=now,
        )

    async def resolve_refs(self, refs: Mapping[str, str | None]) -> dict[str, Resolution]:
        """``{ref text: last known digest}`` -> ``{ref text: Resolution}``."""
        results: dict[str, Resolution] = {}
        groups: dict[Reference, list[str]] = defaultdict(list)
        for text in refs:
            try:
                groups[self.hosts.pull_from(parse_reference(text))].append(text)
            except InvalidReference as error:
                results[text] = Resolution(None, f"InvalidReference: {error}", asked=False)
        by_registry: dict[str, list[Reference]] = defaultdict(list)
        for key in groups:
            by_registry[key.registry].append(key)
        limit = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(ssl=self.ssl_context) if self.ssl_context else None
        async with aiohttp.ClientSession(
            # A safety net only: each ref's own deadline (below) is what times polls out.
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=2 * self.timeout),
        ) as session:
            client = RegistryClient(session, insecure=self.hosts.insecure, retries=0)

            async def one_registry(keys: list[Reference]) -> None:
                async with limit:
                    for key in keys:
                        known = {refs[t] for t in groups[key] if refs[t]}
                        outcome = await self._resolve(client, key, known)
                        for text in groups[key]:
                            results[text] = (
                                outcome
                                if outcome.message is None
                                else Resolution(refs[text], outcome.message, False, outcome.asked)
                            )

            tasks = [asyncio.create_task(one_registry(k)) for k in by_registry.values()]
            _, late = await asyncio.wait(tasks, timeout=self.budget) if tasks else (set(), set())
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if missing := [text for text in refs if text not in results]:
                log.warning(
                    "parent polling ran out of its %gs budget; %d ref(s) wait for the next pass",
                    self.budget,
                    len(missing),
                )
        now = self.clock()
        self.checked.update((text, now) for text, result in results.items() if result.asked)
        return results

    async def _resolve(
        self, client: RegistryClient, key: Reference, known: set[str | None]
    ) -> Resolution:
        registry = key.registry
        pause = active_pause(self.pauses.get(registry), self.clock())
        if pause is not None:
            return Resolution(None, pause.message(), asked=False)
        try:
            resolution = await asyncio.wait_for(
                self._head_then_get(client, key, known), self.timeout
            )
        except RegistryError as error:
            if isinstance(error, RegistryRateLimited) or (
                isinstance(error, RegistryUnavailable) and error.status is not None
            ):
                return Resolution(None, self._pause(registry, error).message())
            return Resolution(None, condition_message(error))
        except TimeoutError:
            pause = self._pause_for(
                registry,
                answer=f"did not answer within {self.timeout:g} s",
                reason=REGISTRY_UNAVAILABLE,
                retry_after=None,
            )
            return Resolution(None, pause.message())
        except (OSError, aiohttp.ClientError) as error:
            return Resolution(
                None, f"{REGISTRY_UNAVAILABLE}: registry {registry}: {type(error).__name__}"
            )
        self.pauses.pop(registry, None)
        return resolution

    async def _head_then_get(
        self, client: RegistryClient, key: Reference, known: set[str | None]
    ) -> Resolution:
        try:
            head = await client.head_manifest(key)
        except RegistryError as error:
            if error.status not in _HEAD_UNSUPPORTED:
                raise
            head = None
        pinned = {digest for digest in known if digest is not None}
        if (pin := pin_from_head(head, pinned, self.fetched.get(key))) is not None:
            return Resolution(pin)
        top = await client.get_manifest(key)
        # An index: its linux/amd64 image manifest (attestation entries are never chosen; an
        # index without that platform cannot be built on and is this ref's error).
        image = platform_descriptor(key, top) if top.media_type in INDEXES else top.digest
        self.fetched[key] = TagAnswer(named=top.digest, image=image)
        return Resolution(image, fetched=True)

    def _pause(self, registry: str, error: RegistryError) -> RegistryPause:
        retry_after = (
            retry_after_seconds(error.retry_after, self.clock())
            if isinstance(error, RegistryRateLimited)
            else None
        )
        answer = f"answered {status_text(error.status)}" if error.status else "gave no answer"
        return self._pause_for(
            registry, answer=answer, reason=error.reason, retry_after=retry_after
        )

    def _pause_for(
        self, registry: str, *, answer: str, reason: str, retry_after: float | None
    ) -> RegistryPause:
        pause = pause_after_failure(
            self.pauses.get(registry),
            registry=registry,
            answer=answer,
            reason=reason,
            retry_after=retry_after,
            now=self.clock(),
        )
        self.pauses[registry] = pause
        log.warning("%s", pause.message())
        return pause
