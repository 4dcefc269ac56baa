"""git contexts' revisions resolved to commits, polled the way parent refs are.

The build pass hands over every git context that is due (see
:func:`lamina.domain.reconcile._source_due`: ``pollInterval`` plus the stable jitter of
:mod:`lamina.domain.parent_polling`) and gets one :class:`SourceResolution` per request:

- **Once per pass**: requests are grouped by (URL, credentials), so a hundred Images building
  from one repository cost one ``info/refs`` request, whatever revisions they name.
- **Per-server backoff**: a 429, a 5xx, no answer within :attr:`SourceResolver.timeout` or a
  refused connection pause that server, by (scheme, host, port) (Retry-After honoured,
  bounded; else 30 s doubling, up to 30 minutes:
  :func:`lamina.domain.parent_polling.pause_after_failure`); its Images keep their last
  commit with the pause as their message.  The Image whose request failed is told its URL
  and what happened; every other Image on that server (maybe another tenant's) is told only
  ``scheme://host:port`` and until when: never another tenant's repository path.
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
from lamina.domain.git_refs import (
    Advertisement,
    GitRefsError,
    GitTarget,
    git_target,
    resolve_revision,
)
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
    # (scheme, host, port) -> its pause; ``answer`` never holds a URL.
    pauses: dict[tuple[str, str, int], RegistryPause] = field(default_factory=dict)

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
            target = git_target(url)
        except GitRefsError as error:
            return SourceResolution(None, f"{error.reason}: {error}", asked=False)
        pause = active_pause(self.pauses.get(target.endpoint), self.clock())
        if pause is not None:
            return SourceResolution(None, paused_message(pause), asked=False)
        try:
            advertisement = await asyncio.wait_for(
                advertised_refs(session, url, authorization), self.timeout
            )
        except GitUnavailable as error:
            return SourceResolution(None, self._pause(target, url, error.detail, error.retry_after))
        except TimeoutError:
            detail = f"did not answer within {self.timeout:g} s"
            return SourceResolution(None, self._pause(target, url, detail, None))
        except GitRefsError as error:
            return SourceResolution(None, f"{error.reason}: {error}")
        self.pauses.pop(target.endpoint, None)
        return advertisement

    def _pause(self, target: GitTarget, url: str, detail: str, retry_after: str | None) -> str:
        """Pause the server; the message for the Image whose request failed."""
        pause = pause_after_failure(
            self.pauses.get(target.endpoint),
            registry=target.origin,
            answer=detail,
            reason=GIT_SOURCE_UNAVAILABLE,
            retry_after=retry_after_seconds(retry_after, self.clock()),
            now=self.clock(),
        )
        self.pauses[target.endpoint] = pause
        said = (
            f"{pause.reason}: {_bounded(url)}: {detail}; the git host {pause.registry} is not "
            f"asked again before {_until(pause)} ({_polls(pause)})"
        )
        log.warning("%s", said)
        return said


def paused_message(pause: RegistryPause) -> str:
    """A paused git server as the message of every Image that would have asked it: the
    server (scheme://host:port) and until when, nothing of the request that failed."""
    return (
        f"{pause.reason}: the git host {pause.registry} is paused after failures until "
        f"{_until(pause)} ({_polls(pause)}); not asked meanwhile"
    )


def _until(pause: RegistryPause) -> str:
    return pause.until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _polls(pause: RegistryPause) -> str:
    return f"{pause.failures} failed poll{'s' if pause.failures != 1 else ''} in a row"


def _bounded(url: str) -> str:
    return url if len(url) <= 300 else url[:300] + "..."
