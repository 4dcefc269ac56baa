"""A git server for the tests: git's own smart-HTTP backend behind a small stdlib HTTP server.

    python3 e2e/harness/git_server.py --listen ADDRESS --port PORT --root DIR \
        [--private REPO=USER:PASSWORD ...] [--ready-file FILE]

Serves every repository under ``DIR`` (``GIT_HTTP_EXPORT_ALL``) at
``http://ADDRESS:PORT/<repo>``, fetch only (``git http-backend`` refuses pushes without a
user; the tests commit in ``DIR`` directly).  A repository named with ``--private`` answers 401
unless the request carries HTTP Basic credentials equal to ``USER:PASSWORD``.  The client's
``Git-Protocol`` header is passed on (``GIT_PROTOCOL``), so protocol v2 works and a client may
fetch a commit by its id.  Every request is one line on stderr (method, path, status, whether
it was authenticated; never the credentials).  When ready it writes its port to
``--ready-file`` (port 0 picks a free one).  The tests start it and stop it by its PID.

Imported (``harness.git_server``), it is the tests' one way to make and serve repositories:
:func:`serving` runs this file as a child process and yields its URL; :func:`bare_repository`,
:func:`commit_files` and :func:`git` make the repositories it serves.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

MAX_BODY = 16 * 1024 * 1024
# The tests' commits name this identity: no global git configuration is assumed.
GIT = ("git", "-c", "user.name=lamina-test", "-c", "user.email=test@lamina.invalid")


def git(*args: str | Path) -> str:
    """``git ARGS`` with the tests' identity; its output, stripped (a failure raises)."""
    done = subprocess.run([*GIT, *map(str, args)], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit_files(work: Path, files: Mapping[str, str], message: str) -> str:
    """Write ``files`` (paths relative to the work tree) and commit everything; the commit."""
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git("-C", work, "add", "-A")
    git("-C", work, "commit", "-qm", message)
    return git("-C", work, "rev-parse", "HEAD")


def bare_repository(root: Path, name: str, work: Path) -> Path:
    """An empty ``root/NAME.git`` on branch main, and a work tree at ``work`` whose
    ``origin`` it is (commit there, then ``git push -q origin main``); the work tree."""
    git("init", "-q", "--bare", "-b", "main", root / f"{name}.git")
    git("init", "-q", "-b", "main", work)
    git("-C", work, "remote", "add", "origin", root / f"{name}.git")
    return work


@contextmanager
def serving(
    root: Path,
    *,
    listen: str = "127.0.0.1",
    private: Mapping[str, str] | None = None,
    log: IO[str] | int = subprocess.DEVNULL,
    timeout: float = 20.0,
) -> Iterator[str]:
    """This server on ``listen`` (a free port) for the repositories under ``root``, as a
    child process; yields ``http://ADDRESS:PORT``, stops it by its PID.  ``private``:
    ``{"private.git": "USER:PASSWORD"}``; ``log``: where its request lines go."""
    with tempfile.TemporaryDirectory(prefix="git-server-") as scratch:
        ready = Path(scratch) / "port"
        argv = [sys.executable, __file__, "--listen", listen, "--root", str(root)]
        for repository, credentials in (private or {}).items():
            argv += ["--private", f"{repository}={credentials}"]
        server = subprocess.Popen(
            [*argv, "--ready-file", str(ready)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while not (ready.exists() and ready.read_text()):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"git_server.py did not start on {listen}")
                time.sleep(0.05)
            yield f"http://{listen}:{ready.read_text()}"
        finally:
            server.terminate()
            server.wait(10)


class GitHandler(BaseHTTPRequestHandler):
    server_version = "lamina-test-git/1"
    root: Path
    private: dict[str, str]

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"git-server: {format % args}\n")

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _repository(self, path: str) -> str:
        return path.strip("/").split("/", 1)[0]

    def _authorised(self, repo: str) -> bool:
        wanted = self.private.get(repo)
        if wanted is None:
            return True
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given, wanted)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if ".." in path.split("/"):
            self.send_error(400)
            return
        repo = self._repository(path)
        if not self._authorised(repo):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="lamina-test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": self.client_address[0],
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if repo in self.private:
            env["REMOTE_USER"] = self.private[repo].split(":", 1)[0]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        done = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split(" ", 1)[0])
            elif name:
                headers.append((name.strip(), value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--private", action="append", default=[], metavar="REPO=USER:PASSWORD")
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()
    GitHandler.root = args.root.resolve()
    GitHandler.private = dict(item.split("=", 1) for item in args.private)
    server = ThreadingHTTPServer((args.listen, args.port), GitHandler)
    if args.ready_file is not None:
        args.ready_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
