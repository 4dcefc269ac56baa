"""What a container can write that must not fool the layer writer, on real overlay mounts.

Each case is made through a real ``mount -t overlay`` merged view, as a container would make
it, and committed by the real ``lamina snapshot`` to the real local registry.  What was pushed is
checked by skopeo + umoci (and, for paths no unpacker can create, by GNU tar and Python's
tarfile reading the layer blob); what was refused is checked by its message on stderr (the
commit Job's termination message, hence the ContainerCommit's status) and by the registry not
having the image.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Registry,
    lamina_snapshot,
    pull_and_unpack,
    push_parent,
    run,
)

pytestmark = pytest.mark.integration

WHITEOUT = 0o020000  # S_IFCHR; with device 0/0 an overlay whiteout


@dataclass(frozen=True)
class Overlay:
    lower: Path
    upper: Path
    merged: Path


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, emptied with ``rm -rf`` after any mount under it is gone: the trees made
    here are deeper than pytest's own cleanup (shutil.rmtree, one call level per level) goes."""
    yield tmp_path
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        mount_point = line.split()[4]
        if mount_point.startswith(f"{tmp_path}/"):
            subprocess.run(["umount", mount_point], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(tmp_path)], check=True)


def mount_overlay(work: Path, lower: Path) -> Overlay:
    upper, workdir, merged = work / "upper", work / "workdir", work / "merged"
    for directory in (upper, workdir, merged):
        directory.mkdir()
    run(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={lower},upperdir={upper},workdir={workdir}",
        merged,
    )
    return Overlay(lower, upper, merged)


def small_parent(work: Path, registry: Registry, repository: str, rootfs: Path) -> str:
    ref = registry.ref(f"{repository}/parent", "1")
    push_parent(rootfs, ref, work)
    return ref


def snapshot(overlay: Overlay, parent: str, target: str, *extra: str) -> tuple[int, str, str]:
    result = lamina_snapshot(
        "--upper",
        overlay.upper,
        "--lower",
        overlay.lower,
        "--parent",
        parent,
        "--to",
        target,
        "--insecure",
        *extra,
    )
    return result.returncode, result.stdout, result.stderr


def assert_not_pushed(target: str) -> None:
    """The registry has no image under ``target`` (its tag was never written)."""
    result = run(
        "skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{target}", check=False
    )
    assert result.returncode != 0, f"{target} was pushed: {result.stdout[:200]}"
    assert "manifest unknown" in result.stderr.lower() or "name unknown" in result.stderr.lower()


def layer_tar(target: str, work: Path) -> bytes:
    """The committed (topmost) layer of ``target``, uncompressed, as skopeo fetched it."""
    layout = work / "layer-oci"
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{layout}:x")
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest).read_text())
    digest = manifest["layers"][-1]["digest"].split(":")[1]
    return gzip.decompress((layout / "blobs" / "sha256" / digest).read_bytes())


# -- forged whiteouts ---------------------------------------------------------------------


def distro(work: Path) -> Path:
    lower = work / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (lower / "etc" / "hostname").write_text("base\n")
    (lower / "srv" / "data").mkdir(parents=True)
    (lower / "srv" / "data" / "x").write_text("x")
    return lower


def forge_file(merged: Path, name: str) -> None:
    (merged / name).write_text("written by the container")


@pytest.mark.parametrize(
    ("forged", "make", "effect"),
    [
        ("etc/.wh.passwd", forge_file, 'deleting "/etc/passwd"'),
        ("srv/data/.wh..wh..opq", forge_file, 'hiding everything the image has in "/srv/data"'),
        (".wh.etc", lambda merged, name: (merged / name).mkdir(), 'deleting "/etc"'),
    ],
)
def test_a_file_named_like_a_whiteout_is_refused_and_nothing_is_pushed(
    work: Path,
    registry: Registry,
    repository: str,
    forged: str,
    make: Callable[[Path, str], None],
    effect: str,
) -> None:
    lower = distro(work)
    parent = small_parent(work, registry, repository, lower)
    overlay = mount_overlay(work, lower)
    (overlay.merged / "etc" / "motd").write_text("the container's own change\n")
    make(overlay.merged, forged)
    # A runtime unpacking this layer would delete (or hide) what the container still has:
    assert (overlay.merged / forged.replace(".wh..wh..opq", "x").replace(".wh.", "")).exists()
    run("umount", overlay.merged)

    target = registry.ref(f"{repository}/forged", "1")
    code, stdout, stderr = snapshot(overlay, parent, target)

    assert code == 1 and stdout == ""
    kind = "directory" if forged == ".wh.etc" else "file"
    assert stderr.startswith(
        f'lamina snapshot: "/{forged}" is a {kind} named like a whiteout (prefix .wh.): a runtime '
        f"would read it as {effect}; Lamina refuses to write it (rename it, or exclude the path)"
    ), stderr
    assert "written by the container" not in stderr
    assert len(stderr.splitlines()) == 1  # one line, no traceback
    assert_not_pushed(target)


def test_an_excluded_forged_name_commits_without_it(
    work: Path, registry: Registry, repository: str
) -> None:
    lower = distro(work)
    parent = small_parent(work, registry, repository, lower)
    overlay = mount_overlay(work, lower)
    forge_file(overlay.merged, "etc/.wh.passwd")
    (overlay.merged / "etc" / "motd").write_text("kept\n")
    run("umount", overlay.merged)
    target = registry.ref(f"{repository}/excluded", "1")
    code, _, stderr = snapshot(overlay, parent, target, "--exclude", "/etc/.wh.passwd")
    assert code == 0, stderr
    rootfs = pull_and_unpack(target, work)
    assert (rootfs / "etc" / "passwd").read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert (rootfs / "etc" / "motd").read_text() == "kept\n"
    assert not (rootfs / "etc" / ".wh.passwd").exists()


# -- depth and length -----------------------------------------------------------------------


def tree_of(root: Path) -> dict[bytes, tuple[object, ...]]:
    """path -> (kind, mode, uid, gid, content digest | link target, mtime), walked with an
    explicit stack (``os.walk`` recurses once per level on Python 3.11).  Directory mtimes
    are left out: unpacking a directory's children changes them."""
    tree: dict[bytes, tuple[object, ...]] = {}
    base = os.fsencode(root)
    pending = [b""]
    while pending:
        relative = pending.pop()
        with os.scandir(os.path.join(base, relative) if relative else base) as scan:
            entries = [(os.fsencode(e.name), e.stat(follow_symlinks=False)) for e in scan]
        for name, st in entries:
            path = os.path.join(relative, name) if relative else name
            common = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            full = os.path.join(base, path)
            if stat.S_ISDIR(st.st_mode):
                tree[path] = ("dir", *common, None, None)
                pending.append(path)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as file:
                    digest = hashlib.sha256(file.read()).hexdigest()
                tree[path] = ("file", *common, digest, int(st.st_mtime))
            elif stat.S_ISLNK(st.st_mode):
                tree[path] = ("symlink", *common, os.readlink(full), None)
            else:
                tree[path] = ("other", *common, st.st_rdev, None)
    return tree


def test_a_thousand_level_tree_commits_and_unpacks_identically(
    work: Path, registry: Registry, repository: str
) -> None:
    lower = work / "lower"
    (lower / "base").mkdir(parents=True)
    (lower / "base" / "file").write_text("from the parent")
    # Whole seconds: image tools round a lower file's sub-second mtime differently.
    os.utime(lower / "base" / "file", (1_700_000_000, 1_700_000_000))
    parent = small_parent(work, registry, repository, lower)
    overlay = mount_overlay(work, lower)
    fd = os.open(overlay.merged, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(1, 1001):  # a RecursionError at ~330 levels before
            os.mkdir(b"d", dir_fd=fd)
            child = os.open(b"d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            if level % 100 == 0:
                file = os.open(b"f%d" % level, os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd)
                os.write(file, b"level %d\n" % level)
                os.close(file)
        os.symlink(b"../../../../../../etc/shadow", b"link", dir_fd=fd)
    finally:
        os.close(fd)
    expected = tree_of(overlay.merged)
    run("umount", overlay.merged)

    target = registry.ref(f"{repository}/deep", "1")
    code, stdout, stderr = snapshot(overlay, parent, target)
    assert code == 0, stderr
    assert json.loads(stdout)["layer"]["entries"] == 1000 + 10 + 1

    actual = tree_of(pull_and_unpack(target, work))
    assert len(actual) == len(expected) == 2 + 1000 + 10 + 1
    assert actual == expected


def descend(root: Path, names: list[bytes]) -> int:
    """A descriptor of ``root/names...``, opened one name at a time (no long path)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def write_at(dir_fd: int, name: bytes, data: bytes) -> None:
    file = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    os.write(file, data)
    os.close(file)


def test_paths_longer_than_path_max_that_exist_below_commit(
    work: Path, registry: Registry, repository: str
) -> None:
    chain = [b"%02d" % i + b"l" * 248 for i in range(18)]  # 18 x 251 = 4518 bytes > PATH_MAX
    lower = work / "lower"
    lower.mkdir()
    fd = os.open(lower, os.O_RDONLY | os.O_DIRECTORY)
    for name in chain:
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    write_at(fd, b"old", b"deleted by the container")
    write_at(fd, b"keep", b"kept")
    os.mkdir(b"sub", dir_fd=fd)
    sub = os.open(b"sub", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    write_at(sub, b"x", b"hidden by the opaque directory")
    os.close(sub)
    os.close(fd)
    rootfs = work / "parent-rootfs"
    rootfs.mkdir()
    (rootfs / "base").write_text("a parent")  # umoci cannot repack the long lower itself
    parent = small_parent(work, registry, repository, rootfs)

    overlay = mount_overlay(work, lower)
    fd = descend(overlay.merged, chain)
    try:
        write_at(fd, b"new", b"created at 4.5 KB deep")
        os.unlink(b"old", dir_fd=fd)  # a whiteout: its lower lookup was ENAMETOOLONG
        sub = os.open(b"sub", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.unlink(b"x", dir_fd=sub)
        os.close(sub)
        os.rmdir(b"sub", dir_fd=fd)
        os.mkdir(b"sub", dir_fd=fd)  # recreated: opaque over the lower "sub"
        sub = os.open(b"sub", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        write_at(sub, b"y", b"fresh")
        os.close(sub)
    finally:
        os.close(fd)
    run("umount", overlay.merged)

    target = registry.ref(f"{repository}/long", "1")
    code, _, stderr = snapshot(overlay, parent, target)
    assert code == 0, stderr

    raw = layer_tar(target, work)
    deep = "/".join(name.decode() for name in chain)
    expected_names = [
        *("/".join(n.decode() for n in chain[: i + 1]) for i in range(len(chain))),
        f"{deep}/.wh.old",
        f"{deep}/new",
        f"{deep}/sub",
        f"{deep}/sub/.wh..wh..opq",
        f"{deep}/sub/y",
    ]
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        assert archive.getnames() == expected_names
        assert (archive.extractfile(f"{deep}/new") or io.BytesIO()).read() == (
            b"created at 4.5 KB deep"
        )
    gnu = subprocess.run(["tar", "-t", "-f", "-"], input=raw, capture_output=True, check=True)
    assert gnu.stdout.decode().splitlines() == [
        name + "/" if name.endswith(("l", "/sub")) else name for name in expected_names
    ]


# -- extended attribute names ---------------------------------------------------------------


def test_an_xattr_name_with_equals_is_refused_with_the_path_and_name(
    work: Path, registry: Registry, repository: str
) -> None:
    """Refused, not encoded: a PAX record's key ends at the first "=", Go's archive/tar (which
    containerd, BuildKit and umoci use) neither writes nor reads such a key, and GNU tar's
    "%3D" escape would be read by them as a different, literal name."""
    lower = distro(work)
    parent = small_parent(work, registry, repository, lower)
    overlay = mount_overlay(work, lower)
    (overlay.merged / "data").mkdir()
    (overlay.merged / "data" / "f").write_text("x")
    os.setxattr(overlay.merged / "data" / "f", "user.a=b", b"value=1")
    os.setxattr(overlay.merged / "data" / "f", "user.fine", b"kept")
    run("umount", overlay.merged)
    assert "user.a=b" in os.listxattr(overlay.upper / "data" / "f")

    target = registry.ref(f"{repository}/xattr", "1")
    code, stdout, stderr = snapshot(overlay, parent, target)
    assert code == 1 and stdout == ""
    assert stderr.startswith(
        'lamina snapshot: "/data/f" has the extended attribute "user.a=b", whose name contains '
        '"=": a layer cannot carry it'
    ), stderr
    assert "value=1" not in stderr
    assert_not_pushed(target)


# -- files that change while they are read --------------------------------------------------


class HoldingProxy:
    """A TCP proxy to the registry that stops passing the committer's bytes on, on request.

    Once ``hold_after`` bytes went from the committer to the registry (the layer upload has
    begun), the proxy stops reading from it: the upload's backpressure, through bounded
    queues, stops the layer writer within a few MiB, in the middle of a file larger than
    that.  The test then changes the file and releases the proxy.
    """

    def __init__(self, upstream: str, hold_after: int) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.hold_after = hold_after
        self.holding = threading.Event()
        self.released = threading.Event()
        self._sent = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, gated: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if gated:
                    with self._lock:
                        self._sent += len(data)
                        hold = self._sent >= self.hold_after and not self.released.is_set()
                    if hold:
                        self.holding.set()
                        self.released.wait()
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.released.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def read_position(pid: int, path: Path) -> int:
    """How far process ``pid`` has read the file ``path`` (its descriptor's offset)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                fdinfo = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                return int(fdinfo.split("pos:")[1].split()[0])
    raise AssertionError(f"process {pid} does not hold {path} open")


BIG = 96 << 20  # several times what the upload's queues and socket buffers can hold


def commit_while_changing(
    work: Path,
    registry: Registry,
    repository: str,
    change: Callable[[Path, int], None],
) -> tuple[int, str, str, str, Overlay]:
    """Commit a live overlay (not unmounted, not frozen); ``change(merged, position)`` runs
    while the committer is held in the middle of reading ``a-big``."""
    lower = distro(work)
    overlay = mount_overlay(work, lower)
    (overlay.merged / "a-big").write_bytes(os.urandom(BIG))
    (overlay.merged / "b-small").write_bytes(b"listed\n")
    proxy = HoldingProxy(registry.address, hold_after=256 << 10)
    try:
        parent = small_parent(work, registry, repository, lower).replace(
            registry.address, proxy.address
        )
        target = f"{proxy.address}/{repository}/changing:1"
        committer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lamina.cli.main",
                "snapshot",
                "--upper",
                str(overlay.upper),
                "--lower",
                str(lower),
                "--parent",
                parent,
                "--to",
                target,
                "--insecure",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proxy.holding.wait(120), "the layer upload never started"
            position = read_position(committer.pid, overlay.upper / "a-big")
            assert 0 < position < BIG // 2, position  # held mid-file, before what changes
            time.sleep(0.05)  # a later clock tick than the committer's fstat, on any kernel
            change(overlay.merged, position)
            proxy.released.set()
            stdout, stderr = committer.communicate(timeout=300)
        finally:
            if committer.poll() is None:
                committer.kill()
                committer.wait()
    finally:
        proxy.close()
    return (
        committer.returncode,
        stdout,
        stderr,
        target.replace(proxy.address, registry.address),
        overlay,
    )


def shrink(merged: Path, position: int) -> None:
    os.truncate(merged / "a-big", BIG // 2)


def grow(merged: Path, position: int) -> None:
    with (merged / "a-big").open("ab") as file:
        file.write(b"appended while it was read")


def rewrite_in_place(merged: Path, position: int) -> None:
    with (merged / "a-big").open("r+b") as file:
        file.seek(BIG - 4096)  # past what was read: only the timestamps tell
        file.write(b"new" * 1000)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (shrink, f"shrank while it was read ({BIG} bytes when opened, {BIG // 2} readable)"),
        (grow, f"changed while it was read (size {BIG} -> {BIG + 26} bytes)"),
        (rewrite_in_place, f"changed while it was read (size {BIG} -> {BIG} bytes)"),
    ],
)
def test_a_file_changed_during_an_unpaused_read_is_refused_and_nothing_is_pushed(
    work: Path,
    registry: Registry,
    repository: str,
    change: Callable[[Path, int], None],
    message: str,
) -> None:
    code, stdout, stderr, target, overlay = commit_while_changing(
        work, registry, repository, change
    )
    assert code == 1 and stdout == ""
    assert stderr.startswith(f'lamina snapshot: "/a-big" {message}: an unpaused commit'), stderr
    assert "freeze the container (pause: true, the default) or exclude the path" in stderr
    assert len(stderr.splitlines()) == 1
    assert_not_pushed(target)
    run("umount", overlay.merged)


def test_a_file_changed_after_listing_but_before_its_read_is_committed_as_read(
    work: Path, registry: Registry, repository: str
) -> None:
    """``b-small`` was listed (6 bytes) before ``a-big`` was read; it grows while the
    committer is held in ``a-big``: its member must have the size and bytes it had when read,
    not the listed size padded or cut (the old mix of data and zeros)."""

    def append_to_small(merged: Path, position: int) -> None:
        with (merged / "b-small").open("a") as file:
            file.write("appended before it was read\n")

    code, _, stderr, target, overlay = commit_while_changing(
        work, registry, repository, append_to_small
    )
    assert code == 0, stderr
    run("umount", overlay.merged)
    rootfs = pull_and_unpack(target, work)
    assert (rootfs / "b-small").read_text() == "listed\nappended before it was read\n"
    with (overlay.upper / "a-big").open("rb") as original, (rootfs / "a-big").open("rb") as got:
        assert hashlib.sha256(got.read()).digest() == hashlib.sha256(original.read()).digest()
