"""git contexts' revisions resolved to commits, polled the way parent refs are.

The build pass hands over every git context that is due (see
:func:`lamina.domain.reconcile._source_due`: ``pollInterval`` plus the stable jitter of
:mod:`lamina.domain.parent_polling`) and gets one :class:`SourceResolution` per request:

- **Once per pass**: requests are grouped by (URL, credentials), so a hundred Images building
  from one repository cost one ``info/refs`` request, whatever revisions they name.
- **Per-host backoff**: a 429, a 5xx, no answer within :attr:`SourceResolver.timeout` or a
  refused connection pause that host (Retry-After honoured, bounded; else 30 s doubling, up to
  30 minutes: :func:`lamina.domain.parent_polling.pause_after_failure`); its Images keep
  their last commit with the pause as their message.
- Every failure is that request's message (``Reason: text``: wrong credentials, a missing
  revision, a hostile answer), never a crash and never the server's body.

Credentials are read from the Image's own namespace by the caller, which passes the
``Authorization`` value; it is sent to the URL's host only (no redirects) and never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp

from lamina.domain.conditions import GIT_SOURCE_UNAVAILABLE
from lamina.domain.git_refs import Advertisement, GitRefsError, git_target, resolve_revision
from lamina.domain.parent_polling import (
    RegistryPause,
    active_pause,
    pause_after_failure,
    retry_after_seconds,
)
from lamina.git.remote import GitUnavailable, advertised_refs

log = logging.getLogger(__name__)
# Whatever the caller names its requests by (the build pass: (namespace, Image name)).
Key = TypeVar("Key", bound=Hashable)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class SourceRequest:
    """One git context to resolve: ``credentials`` names who holds the ``authorization``
    (``namespace/secret``), so two tenants' credentials never share an answer."""

    url: str
    revision: str
    credentials: str | None = None
    authorization: str | None = None


@dataclass(frozen=True)
class SourceResolution:
    commit: str | None
    # "Reason: text" when not freshly resolved; None when it is.
    message: str | None = None
    # The server was asked at all (False while its host backs off).
    asked: bool = True


@dataclass
class SourceResolver:
    """Resolves git revisions for the build loop; keeps per-host backoff across passes."""

    timeout: float = 10.0
    budget: float = 60.0
    clock: Callable[[], datetime] = _now
    pauses: dict[str, RegistryPause] = field(default_factory=dict)

    async def resolve(self, requests: Mapping[Key, SourceRequest]) -> dict[Key, SourceResolution]:
        """``{key: request}`` -> ``{key: resolution}``; keys not answered in the budget are
        left out (still due)."""
        groups: dict[tuple[str, str | None], list[Key]] = defaultdict(list)
        for key, request in requests.items():
            groups[(request.url, request.credentials)].append(key)
        results: dict[Key, SourceResolution] = {}
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=2 * self.timeout)
        ) as session:

            async def one(url: str, keys: list[Key]) -> None:
                authorization = requests[keys[0]].authorization
                advertisement = await self._advertisement(session, url, authorization)
                for key in keys:
                    if isinstance(advertisement, SourceResolution):
                        results[key] = advertisement
                        continue
                    try:
                        commit = resolve_revision(advertisement, requests[key].revision)
                    except GitRefsError as error:
                        results[key] = SourceResolution(None, f"{error.reason}: {error}")
                        continue
                    results[key] = SourceResolution(commit)

            tasks = [asyncio.create_task(one(url, keys)) for (url, _), keys in groups.items()]
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=self.budget)
                for task in late:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return results

    async def _advertisement(
        self, session: aiohttp.ClientSession, url: str, authorization: str | None
    ) -> Advertisement | SourceResolution:
        try:
            host = git_target(url).host
        except GitRefsError as error:
            return SourceResolution(None, f"{error.reason}: {error}", asked=False)
        pause = active_pause(self.pauses.get(host), self.clock())
        if pause is not None:
            return SourceResolution(None, _said(pause), asked=False)
        try:
            advertisement = await asyncio.wait_for(
                advertised_refs(session, url, authorization), self.timeout
            )
        except GitUnavailable as error:
            return SourceResolution(None, self._pause(host, str(error), error.retry_after))
        except TimeoutError:
            return SourceResolution(
                None, self._pause(host, f"{url} did not answer within {self.timeout:g} s", None)
            )
        except GitRefsError as error:
            return SourceResolution(None, f"{error.reason}: {error}")
        self.pauses.pop(host, None)
        return advertisement

    def _pause(self, host: str, answer: str, retry_after: str | None) -> str:
        pause = pause_after_failure(
            self.pauses.get(host),
            registry=host,
            answer=answer,
            reason=GIT_SOURCE_UNAVAILABLE,
            retry_after=retry_after_seconds(retry_after, self.clock()),
            now=self.clock(),
        )
        self.pauses[host] = pause
        log.warning("%s", _said(pause))
        return _said(pause)


def _said(pause: RegistryPause) -> str:
    """A paused git host as the affected Images' message (the pause is the registry kind's)."""
    until = pause.until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    polls = f"{pause.failures} failed poll{'s' if pause.failures != 1 else ''} in a row"
    return (
        f"{pause.reason}: {pause.answer}; {pause.registry} is not asked again before "
        f"{until} ({polls})"
    )
