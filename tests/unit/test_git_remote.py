"""Asking git servers for their refs: real ones (git's http-backend, git daemon) and hostile ones.

The real servers are git's own (``git http-backend`` behind e2e/harness/git_server.py, and
``git daemon``) on 127.0.0.1, so the advertisement is what git sends, parsed by code that shares
nothing with it.  The hostile ones (:mod:`tests.hostile_registry`, real sockets) answer with
a web page, a redirect to another origin, 503 with Retry-After, a flood, a stall, garbage; each
test asserts the reason and message a user sees and where credentials did not go.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from harness.git_server import bare_repository, commit_files, git, serving
from lamina.domain.git_refs import GitRefsError, basic_authorization, resolve_revision
from lamina.git.remote import ADVERTISEMENT_TYPE, advertised_refs
from lamina.handlers.source_resolver import SourceRequest, SourceResolver
from tests.hostile_registry import (
    Hostiles,
    MiB,
    Reply,
    ServerThread,
    endless,
    hostile,
    hostile_ca,
    hostile_thread,
    redirect,
)

__all__ = ["hostile", "hostile_ca", "hostile_thread"]

PASSWORD = "s3cret-pw"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Bare repositories app.git and private.git: main, an annotated tag, a branch."""
    base = tmp_path_factory.mktemp("git")
    root = base / "root"
    root.mkdir()
    work = bare_repository(root, "app", base / "work")
    git("-C", work, "remote", "add", "private", root / "private.git")
    git("init", "-q", "--bare", "-b", "main", root / "private.git")
    main = commit_files(work, {"f": "1\n"}, "one")
    git("-C", work, "tag", "-a", "v1", "-m", "v1")
    git("-C", work, "checkout", "-qb", "dev")
    dev = commit_files(work, {"f": "2\n"}, "two")
    for remote in ("origin", "private"):
        git("-C", work, "push", "-q", remote, "main", "dev", "v1")
    return root, {"main": main, "v1": main, "dev": dev}


@pytest.fixture(scope="module")
def http_server(repos: tuple[Path, dict[str, str]]) -> Iterator[str]:
    root, _ = repos
    with serving(root, private={"private.git": f"robot:{PASSWORD}"}) as url:
        yield url


@pytest.fixture(scope="module")
def daemon(repos: tuple[Path, dict[str, str]]) -> Iterator[str]:
    root, _ = repos
    port = free_port()
    server = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            f"--base-path={root}",
            "--listen=127.0.0.1",
            f"--port={port}",
            "--reuseaddr",
            str(root),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "git daemon did not start"
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as opened:
        yield opened


# -- real servers -------------------------------------------------------------------------------


async def test_smart_http_refs_of_a_real_server(
    http_server: str, repos: tuple[Path, dict[str, str]], session: aiohttp.ClientSession
) -> None:
    _, commits = repos
    refs = await advertised_refs(session, f"{http_server}/app.git")
    assert resolve_revision(refs, "main") == commits["main"]
    assert resolve_revision(refs, "v1") == commits["v1"]  # peeled: the commit, not the tag
    assert resolve_revision(refs, "dev") == commits["dev"]
    assert resolve_revision(refs, "HEAD") == commits["main"]


async def test_git_protocol_refs_of_a_real_daemon(
    daemon: str, repos: tuple[Path, dict[str, str]], session: aiohttp.ClientSession
) -> None:
    _, commits = repos
    refs = await advertised_refs(session, f"{daemon}/app.git")
    assert resolve_revision(refs, "dev") == commits["dev"]
    with pytest.raises(GitRefsError, match="the server said") as refused:
        await advertised_refs(session, f"{daemon}/missing.git")
    assert refused.value.reason == "GitProtocolError"


async def test_a_private_repository_needs_its_credentials(
    http_server: str, repos: tuple[Path, dict[str, str]], session: aiohttp.ClientSession
) -> None:
    _, commits = repos
    url = f"{http_server}/private.git"
    with pytest.raises(GitRefsError) as missing:
        await advertised_refs(session, url)
    assert missing.value.reason == "GitAuthenticationFailed"
    assert str(missing.value) == (
        f"{url} needs credentials: HTTP 401 (set spec.build.context.git.secret)"
    )
    with pytest.raises(GitRefsError) as wrong:
        await advertised_refs(session, url, basic_authorization("robot", "nope"))
    assert str(wrong.value) == f"{url} refused the credentials: HTTP 401"
    refs = await advertised_refs(session, url, basic_authorization("robot", PASSWORD))
    assert resolve_revision(refs, "main") == commits["main"]
    with pytest.raises(GitRefsError) as gone:
        await advertised_refs(session, f"{http_server}/nope.git")
    assert gone.value.reason == "GitRepositoryNotFound"


async def test_the_resolver_asks_once_per_url_and_credentials(
    http_server: str, repos: tuple[Path, dict[str, str]]
) -> None:
    _, commits = repos
    url = f"{http_server}/private.git"
    good = basic_authorization("robot", PASSWORD)
    resolver = SourceResolver()
    answers = await resolver.resolve(
        {
            "a/one": SourceRequest(url, "main", "a/creds", good),
            "a/two": SourceRequest(url, "dev", "a/creds", good),
            "b/three": SourceRequest(url, "main", "b/creds", basic_authorization("robot", "x")),
            "c/four": SourceRequest(url, "nope"),
        }
    )
    assert answers["a/one"].commit == commits["main"] and answers["a/one"].message is None
    assert answers["a/two"].commit == commits["dev"]
    # Another tenant's wrong password is not helped by the first tenant's right one.
    assert answers["b/three"].commit is None
    assert (answers["b/three"].message or "").startswith("GitAuthenticationFailed: ")
    assert (answers["c/four"].message or "").startswith("GitAuthenticationFailed: ")


# -- hostile servers ----------------------------------------------------------------------------

REFS = r"/team/app\.git/info/refs"


def url_on(server_origin: str) -> str:
    return f"{server_origin}/team/app.git"


def advert(body: bytes) -> Reply:
    return Reply(200, {"Content-Type": ADVERTISEMENT_TYPE}, body)


@pytest.mark.parametrize(
    ("reply", "reason", "message"),
    [
        (
            Reply(200, {"Content-Type": "text/html"}, b"<html>login</html>"),
            "GitProtocolError",
            "is not a smart HTTP git server (Content-Type 'text/html'); dumb HTTP is not supported",
        ),
        (
            Reply(200, {"Content-Type": "text/plain"}, b"a" * 40 + b"\trefs/heads/main\n"),
            "GitProtocolError",
            "dumb HTTP is not supported",
        ),
        (advert(b"001e# service=git-upload-pack\n0000zzzz"), "GitProtocolError", "is not hex"),
        (
            advert(b"001e# service=git-upload-pack\n0000" + b"0040" + b"a" * 10),
            "GitProtocolError",
            "remain",
        ),
        (Reply(418, {}, b"SECRET-BODY"), "GitProtocolError", "unexpected HTTP 418"),
        (
            Reply(403, {}, b"SECRET-BODY"),
            "GitAuthenticationFailed",
            "refused the credentials: HTTP 403",
        ),
        (Reply(404, {}, b"SECRET-BODY"), "GitRepositoryNotFound", "HTTP 404, no such repository"),
    ],
)
async def test_hostile_answers_are_refused_by_name(
    hostile: Hostiles, session: aiohttp.ClientSession, reply: Reply, reason: str, message: str
) -> None:
    hostile.plain.on("GET", REFS, reply)
    with pytest.raises(GitRefsError) as refused:
        await advertised_refs(session, url_on(hostile.plain.origin), "Basic eA==")
    assert refused.value.reason == reason
    assert message in str(refused.value)
    assert "SECRET-BODY" not in str(refused.value)


async def test_a_redirect_is_not_followed_so_credentials_stay_with_the_host(
    hostile: Hostiles, session: aiohttp.ClientSession
) -> None:
    hostile.plain.on("GET", REFS, redirect(f"{hostile.other.origin}/steal", 302))
    with pytest.raises(GitRefsError, match="HTTP 302, redirects are not followed") as refused:
        await advertised_refs(session, url_on(hostile.plain.origin), "Basic c2VjcmV0")
    assert refused.value.reason == "GitProtocolError"
    assert hostile.other.requests() == []
    (asked,) = hostile.plain.requests()
    assert asked.query == "service=git-upload-pack" and asked.authorization == "Basic c2VjcmV0"


async def test_a_flood_is_refused_after_the_cap_not_read_to_the_end(
    hostile: Hostiles, session: aiohttp.ClientSession
) -> None:
    flood = Reply(200, {"Content-Type": ADVERTISEMENT_TYPE}, endless(64 * MiB, prefix=b""))
    hostile.plain.on("GET", REFS, flood)
    with pytest.raises(GitRefsError, match="larger than 4194304 bytes"):
        await advertised_refs(session, url_on(hostile.plain.origin))
    declared = Reply(
        200,
        {"Content-Type": ADVERTISEMENT_TYPE, "Content-Length": str(64 * MiB)},
        endless(64 * MiB, prefix=b""),
    )
    hostile.plain.on("GET", REFS, declared)
    with pytest.raises(GitRefsError, match="larger than 4194304 bytes"):
        await advertised_refs(session, url_on(hostile.plain.origin))
    assert max(hostile.plain.log.sent.values()) < 32 * MiB


async def test_a_host_that_pushes_back_is_paused_with_its_retry_after(
    hostile: Hostiles,
) -> None:
    hostile.plain.on("GET", REFS, Reply(503, {"Retry-After": "120"}, b"SECRET-BODY"))
    clock = [datetime(2026, 6, 1, 12, 0, tzinfo=UTC)]
    resolver = SourceResolver(clock=lambda: clock[0])
    url = url_on(hostile.plain.origin)
    first = (await resolver.resolve({"ns/a": SourceRequest(url, "main")}))["ns/a"]
    assert first.commit is None and first.asked
    origin = f"http://{hostile.plain.address}"
    assert first.message == (
        f"GitSourceUnavailable: {url}: HTTP 503; the git host {origin} is not asked again "
        "before 2026-06-01T12:02:00Z (1 failed poll in a row)"
    )
    clock[0] += timedelta(seconds=60)
    paused = (await resolver.resolve({"ns/a": SourceRequest(url, "main")}))["ns/a"]
    assert not paused.asked and paused.message == (
        f"GitSourceUnavailable: the git host {origin} is paused after failures until "
        "2026-06-01T12:02:00Z (1 failed poll in a row); not asked meanwhile"
    )
    assert len(hostile.plain.requests()) == 1  # not asked while paused
    clock[0] += timedelta(seconds=61)
    line = b"a" * 40 + b" refs/heads/main\0\n"
    body = b"001e# service=git-upload-pack\n0000" + b"%04x" % (len(line) + 4) + line + b"0000"
    hostile.plain.on("GET", REFS, advert(body))
    recovered = (await resolver.resolve({"ns/a": SourceRequest(url, "main")}))["ns/a"]
    assert recovered.commit == "a" * 40 and recovered.message is None
    assert resolver.pauses == {}


async def test_a_server_that_stalls_is_timed_out_and_paused(hostile: Hostiles) -> None:
    hostile.plain.on("GET", REFS, Reply(200, {}, b"", delay=5))
    resolver = SourceResolver(timeout=0.3)
    url = url_on(hostile.plain.origin)
    started = time.monotonic()
    answer = (await resolver.resolve({"ns/a": SourceRequest(url, "main")}))["ns/a"]
    assert time.monotonic() - started < 3
    assert (answer.message or "").startswith(
        f"GitSourceUnavailable: {url}: did not answer within 0.3 s; the git host "
        f"http://{hostile.plain.address} is not asked again"
    )


async def test_a_failing_git_server_pauses_only_itself_and_names_no_other_tenants_url(
    hostile: Hostiles, hostile_thread: ServerThread
) -> None:
    """One tenant's repository on a failing server pauses that server (scheme, host, port),
    not the host's other ports; the other tenants on that server are told it is paused,
    never the failing tenant's repository path or what the server said."""
    hostile.plain.on("GET", r"/.*/info/refs", Reply(503, {"Retry-After": "120"}, b"SECRET-BODY"))
    line = b"a" * 40 + b" refs/heads/main\0\n"
    body = b"001e# service=git-upload-pack\n0000" + b"%04x" % (len(line) + 4) + line + b"0000"
    neighbour = hostile_thread.start(hostile.log)  # the same host, another port
    neighbour.on("GET", r"/.*/info/refs", advert(body))
    clock = [datetime(2026, 6, 1, 12, 0, tzinfo=UTC)]
    resolver = SourceResolver(clock=lambda: clock[0])
    secret_path = f"{hostile.plain.origin}/team-a/secret-project-x.git"
    failing = (await resolver.resolve({"a/img": SourceRequest(secret_path, "main")}))["a/img"]
    assert "secret-project-x" in (failing.message or "")  # its own URL: its own message
    assert list(resolver.pauses) == [("http", "127.0.0.1", hostile.plain.port)]

    clock[0] += timedelta(seconds=10)
    others = await resolver.resolve(
        {
            "b/img": SourceRequest(f"{hostile.plain.origin}/team-b/app.git", "main"),
            "c/img": SourceRequest(f"{neighbour.origin}/team-c/app.git", "main"),
        }
    )
    paused = others["b/img"]
    assert not paused.asked and paused.commit is None
    assert paused.message == (
        f"GitSourceUnavailable: the git host http://{hostile.plain.address} is paused after "
        "failures until 2026-06-01T12:02:00Z (1 failed poll in a row); not asked meanwhile"
    )
    for leaked in ("team-a", "secret-project-x", "SECRET-BODY", "503"):
        assert leaked not in (paused.message or "")
    # The same host on another port (another server) is not paused.
    assert others["c/img"].commit == "a" * 40 and others["c/img"].message is None
    assert [r.path for r in hostile.plain.requests()] == ["/team-a/secret-project-x.git/info/refs"]


async def test_a_refused_connection_is_unavailable_not_a_crash(
    session: aiohttp.ClientSession,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/a.git"
    with pytest.raises(GitRefsError) as refused:
        await advertised_refs(session, url)
    assert refused.value.reason == "GitSourceUnavailable"


async def test_a_hostile_git_daemon_flood_is_refused() -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        try:
            for _ in range(200):
                writer.write(b"fff0" + b"a" * (0xFFF0 - 4))
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(GitRefsError, match="larger than 4194304 bytes"):
                await advertised_refs(session, f"git://127.0.0.1:{port}/a.git")
            with pytest.raises(GitRefsError, match="git:// has no authentication"):
                await advertised_refs(session, f"git://127.0.0.1:{port}/a.git", "Basic eA==")
    finally:
        server.close()
        await server.wait_closed()


def test_basic_header_of_the_test_password() -> None:
    assert (
        basic_authorization("robot", PASSWORD)
        == "Basic " + base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
    )
