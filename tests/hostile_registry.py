"""A hostile registry for tests: an HTTP/1.1 server on 127.0.0.1 that answers what a test says.

It is written on raw asyncio streams, not a web framework, so it can do what a well-behaved
server library refuses to: announce a Content-Length and send something else, stream a 2 GiB
"manifest" from a generator (never held in memory), send a forged reason phrase, leave out
every header.  It records every request with its headers (and how many bytes it managed to
send back), so tests assert where credentials did NOT go.

Each :class:`HostileRegistry` is one origin (``http://`` or ``https://127.0.0.1:<port>``); all
servers of a test share one :class:`RequestLog` so a test sees the order across origins.  The
servers run on an event loop in a background thread, so the client under test (in the test's
own loop, or a ``lamina operator`` subprocess) talks to them over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MiB = 1 << 20
SECRET_BODY = "SECRET-BODY-4f1c: internal admin token is hunter2"


@dataclass(frozen=True)
class Request:
    origin: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class Reply:
    """What to send back.  ``body`` may be bytes or an iterable of byte chunks (streamed, and
    then sent without Content-Length unless ``headers`` names one, ending with the connection
    closed)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    reason: str | None = None  # the status line's phrase; None: the standard one
    delay: float = 0.0  # seconds to wait before answering at all (a registry that stalls)
    # Slow drip: the whole answer, status line and headers included, goes out ``drip_bytes``
    # at a time every ``drip`` seconds (a registry that answers each read just in time).
    drip: float = 0.0
    drip_bytes: int = 1


Responder = Callable[[Request], Reply]


@dataclass
class RequestLog:
    requests: list[Request] = field(default_factory=list)
    sent: dict[int, int] = field(default_factory=dict)  # request index -> body bytes sent
    finished: set[int] = field(default_factory=set)  # request indexes answered in full
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Requests before the last clear(): indexes never repeat, so an answer an earlier test's
    # connection is still sending never counts as this test's.
    cleared: int = 0

    def add(self, request: Request) -> int:
        with self.lock:
            self.requests.append(request)
            return self.cleared + len(self.requests) - 1

    def to(self, origin: str) -> list[Request]:
        return [r for r in self.requests if r.origin == origin]

    def clear(self) -> None:
        with self.lock:
            self.cleared += len(self.requests)
            self.requests.clear()
            self.sent.clear()
            self.finished.clear()

    def unfinished(self, origin: str) -> list[Request]:
        """Requests to ``origin`` whose answer is still being sent (or never was)."""
        with self.lock:
            return [
                r
                for i, r in enumerate(self.requests, start=self.cleared)
                if r.origin == origin and i not in self.finished
            ]


_PHRASES = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class HostileRegistry:
    """One origin; routes are ``(method, path regex) -> responder``, first match wins."""

    def __init__(self, log: RequestLog, tls: ssl.SSLContext | None = None) -> None:
        self.log = log
        self.tls = tls
        self.port = 0
        self.routes: list[tuple[str, re.Pattern[str], Responder]] = []
        self._server: asyncio.base_events.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def on(self, method: str, path: str, responder: Responder | Reply) -> None:
        """Answer ``method`` (``*``: any) on paths matching ``path`` (a full-match regex)."""
        answer: Responder = (
            responder if callable(responder) else (lambda _r, fixed=responder: fixed)
        )
        self.routes.insert(0, (method, re.compile(path), answer))

    def reset(self) -> None:
        self.routes.clear()

    def requests(self) -> list[Request]:
        return self.log.to(self.origin)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _dispatch(self, request: Request) -> Reply:
        for method, pattern, responder in self.routes:
            if method in ("*", request.method) and pattern.fullmatch(request.path):
                return responder(request)
        return json_error(404, "NAME_UNKNOWN", f"no route for {request.path}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                path, _, query = target.partition("?")
                request = Request(self.origin, method, path, query, headers, body)
                index = self.log.add(request)
                reply = self._dispatch(request)
                keep_open = await self._write(writer, method, reply, index)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _write(
        self, writer: asyncio.StreamWriter, method: str, reply: Reply, index: int
    ) -> bool:
        """Send ``reply``; False when the connection must close (a streamed body's end)."""
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = {k.lower(): v for k, v in reply.headers.items()}
        streamed = not isinstance(reply.body, bytes | bytearray)
        if not streamed and "content-length" not in headers:
            headers["content-length"] = str(len(reply.body))  # type: ignore[arg-type]
        if streamed:
            headers["connection"] = "close"
        phrase = reply.reason if reply.reason is not None else _PHRASES.get(reply.status, "")
        head = f"HTTP/1.1 {reply.status} {phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        if reply.drip:
            return await self._drip(writer, method, reply, head.encode("latin-1") + b"\r\n", index)
        writer.write(head.encode("latin-1") + b"\r\n")
        sent = 0
        if method != "HEAD":
            chunks = [reply.body] if not streamed else reply.body
            for chunk in chunks:  # type: ignore[union-attr]
                writer.write(chunk)  # type: ignore[arg-type]
                sent += len(chunk)  # type: ignore[arg-type]
                self.log.sent[index] = sent
                await writer.drain()
        await writer.drain()
        self.log.finished.add(index)
        return not streamed

    async def _drip(
        self, writer: asyncio.StreamWriter, method: str, reply: Reply, head: bytes, index: int
    ) -> bool:
        body = (
            b""
            if method == "HEAD"
            else b"".join([reply.body] if isinstance(reply.body, bytes | bytearray) else reply.body)
        )
        data = head + body
        for start in range(0, len(data), reply.drip_bytes):
            writer.write(data[start : start + reply.drip_bytes])
            await writer.drain()
            self.log.sent[index] = max(0, start + reply.drip_bytes - len(head))
            await asyncio.sleep(reply.drip)
        self.log.finished.add(index)
        return isinstance(reply.body, bytes | bytearray)


class ServerThread:
    """Runs hostile registries on an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[HostileRegistry] = []

    def start(self, log: RequestLog, tls: ssl.SSLContext | None = None) -> HostileRegistry:
        server = HostileRegistry(log, tls)
        asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(10)
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            asyncio.run_coroutine_threadsafe(server.stop(), self.loop).result(10)

        async def cancel_the_rest() -> None:
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_the_rest(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# -- answers ----------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def json_error(status: int, code: str, message: str, **headers: str) -> Reply:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": message}]})
    return Reply(status, {"Content-Type": "application/json", **headers}, body.encode())


def manifest(document: dict[str, Any] | bytes, media_type: str, head_digest: bool = True) -> Reply:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    headers = {"Content-Type": media_type}
    if head_digest:
        headers["Docker-Content-Digest"] = sha(data)
    return Reply(200, headers, data)


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def small_image_manifest(marker: str = "a") -> bytes:
    config = sha(marker.encode())
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": 1,
            },
            "layers": [],
        }
    ).encode()


def endless(total: int, piece: bytes = b"a" * MiB, prefix: bytes = b'{"x":"') -> Iterator[bytes]:
    """``total`` bytes from a generator: a huge body that is never in memory."""
    yield prefix
    sent = len(prefix)
    while sent < total:
        chunk = piece[: total - sent]
        sent += len(chunk)
        yield chunk


def bearer_challenge(realm: str, service: str = "hostile") -> Reply:
    challenge = f'Bearer realm="{realm}",service="{service}"'
    return json_error(401, "UNAUTHORIZED", SECRET_BODY, **{"WWW-Authenticate": challenge})


def redirect(location: str, status: int = 307) -> Reply:
    return Reply(status, {"Location": location})


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestCA:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""

    __test__ = False  # not a test class, whatever its name

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_ca(directory: Path) -> TestCA:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=lamina hostile-registry test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "server.ext",
    )  # fmt: skip
    return TestCA(directory / "ca.pem", directory / "server.pem", directory / "server.key")


# -- fixtures (import them into a test module, as tests/api/conftest.py does) -----------------


@dataclass
class Hostiles:
    """Three origins sharing one request log: ``registry`` and ``other`` speak TLS (signed by
    ``ca``), ``plain`` speaks plain HTTP."""

    log: RequestLog
    ca: TestCA
    registry: HostileRegistry
    other: HostileRegistry
    plain: HostileRegistry

    def client_tls(self) -> ssl.SSLContext:
        return self.ca.client_context()


@pytest.fixture(scope="session")
def hostile_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_ca(tmp_path_factory.mktemp("hostile-ca"))


@pytest.fixture(scope="session")
def hostile_thread() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.stop()


@pytest.fixture
def hostile(hostile_ca: TestCA, hostile_thread: ServerThread) -> Iterator[Hostiles]:
    log = RequestLog()
    servers = Hostiles(
        log,
        hostile_ca,
        hostile_thread.start(log, hostile_ca.server_context()),
        hostile_thread.start(log, hostile_ca.server_context()),
        hostile_thread.start(log),
    )
    yield servers
    for server in (servers.registry, servers.other, servers.plain):
        asyncio.run_coroutine_threadsafe(server.stop(), hostile_thread.loop).result(10)
        hostile_thread.servers.remove(server)
