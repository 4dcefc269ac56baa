"""``lamina snapshot`` on a real overlay mount, checked by skopeo + umoci.

Two lower layers are stacked under a real ``mount -t overlay``; every case the layer writer
handles is performed through the merged view, the way a container would.  The parent image is
the merged lowers (made and pushed by umoci + skopeo); the committed image, pulled by skopeo
and unpacked by umoci, must be exactly the merged view (less sockets, excluded paths and
mount-target stubs).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Registry,
    inspect_config,
    lamina_snapshot,
    pull_and_unpack,
    push_parent,
    run,
)
from tests.integration.trees import describe, hardlink_groups

pytestmark = pytest.mark.integration

# security.capability v2: cap_net_bind_service (bit 10) permitted + effective.
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
LONG = "l" * 200
NON_UTF8 = b"caf\xe9-latin1"


def write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)


def whiteout(path: Path) -> None:
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))


def build_lowers(base: Path) -> tuple[Path, Path]:
    """bottom: a small distro-like tree; top: overrides, a deletion (whiteout), an opaque dir."""
    bottom, top = base / "lower-bottom", base / "lower-top"
    write(bottom / "etc/os-release", "ID=lamina-test\n")
    write(bottom / "etc/motd", "welcome\n")
    write(bottom / "etc/app.conf", "threads=1\n")
    write(bottom / "usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755)
    write(bottom / "var/cache/a", "a" * 1000)
    write(bottom / "var/cache/b", "b" * 1000)
    write(bottom / "var/lib/state/db", "state")
    write(bottom / "srv/www/index.html", "<h1>old</h1>")
    write(bottom / "opt/keep/x", "x")
    write(bottom / "hidden-by-top", "gone in top")
    write(bottom / "shadowed/old", "old")
    os.symlink("os-release", bottom / "etc/release-link")
    write(top / "etc/motd", "welcome from top\n")
    top.mkdir(parents=True, exist_ok=True)
    whiteout(top / "hidden-by-top")
    (top / "shadowed").mkdir()
    os.setxattr(top / "shadowed", "trusted.overlay.opaque", b"y")
    write(top / "shadowed/new", "new")
    write(top / "opt/keep/y", "y")
    for root in (bottom, top):  # whole-second mtimes: the parent image (umoci) may round
        for path in [root, *root.rglob("*")]:
            stamp = int(path.lstat().st_mtime)
            os.utime(path, (stamp, stamp), follow_symlinks=False)
    return bottom, top


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[dict[str, Path]]:
    bottom, top = build_lowers(tmp_path)
    paths = {
        "bottom": bottom,
        "top": top,
        "upper": tmp_path / "upper",
        "work": tmp_path / "work",
        "merged": tmp_path / "merged",
        "base": tmp_path,
    }
    for key in ("upper", "work", "merged"):
        paths[key].mkdir()
    run(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={top}:{bottom},upperdir={paths['upper']},workdir={paths['work']}",
        paths["merged"],
    )
    try:
        yield paths
    finally:
        subprocess.run(["umount", str(paths["merged"])], check=False, capture_output=True)


def merged_lowers(paths: dict[str, Path]) -> Path:
    """The parent's rootfs: the lowers as overlay merges them (read-only mount, copied out)."""
    view, copy = paths["base"] / "lower-view", paths["base"] / "parent-rootfs"
    view.mkdir()
    run(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={paths['top']}:{paths['bottom']}",
        view,
    )
    try:
        shutil.copytree(view, copy, symlinks=True)
    finally:
        run("umount", view)
    return copy


def change_everything(merged: Path) -> None:
    """Every case of the layer writer, done through the merged view like a container would."""
    write(merged / "new-file", "created in the container\n", 0o640)
    os.chown(merged / "new-file", 1234, 5678)
    write(merged / "etc/app.conf", "threads=8\n")  # modify a file from below
    (merged / "etc/os-release").chmod(0o600)  # metadata-only change
    (merged / "etc/motd").unlink()  # delete a file from below -> whiteout
    shutil.rmtree(merged / "var/cache")  # rm -rf a dir from below -> whiteout
    shutil.rmtree(merged / "var/lib/state")  # delete and recreate -> opaque
    write(merged / "var/lib/state/fresh", "fresh")
    os.rename(merged / "usr/bin/tool", merged / "usr/bin/tool2")  # rename a file
    run("mv", merged / "srv/www", merged / "srv/site")  # EXDEV: mv copies, then deletes
    (merged / "never-below").mkdir()
    write(merged / "never-below/f", "f")
    os.unlink(merged / "never-below/f")  # whiteout of nothing below: must not appear
    os.link(merged / "new-file", merged / "new-file-link")  # hardlink within the layer
    write(merged / "opt/keep/x", "x2")
    os.link(merged / "opt/keep/x", merged / "opt/keep/x-link")  # hardlink of a copied-up file
    os.symlink("../etc/os-release", merged / "rel-link")
    os.symlink("/etc/shadow", merged / "abs-link")  # points outside: recorded, not followed
    os.symlink("../../../../../../etc/passwd", merged / "escaping-link")
    os.mkfifo(merged / "fifo", 0o600)
    os.mknod(merged / "null-device", 0o666 | 0o020000, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(merged / "app.sock"))  # sockets are skipped
    write(merged / "with-xattrs", "x")
    os.setxattr(merged / "with-xattrs", "user.comment", b"kept")
    os.setxattr(merged / "with-xattrs", "user.binary", bytes(range(256)))
    write(merged / "usr/bin/server", "#!/bin/sh\n", 0o755)
    os.setxattr(merged / "usr/bin/server", "security.capability", CAPABILITY)
    deep = merged / "deep" / LONG / LONG
    write(deep / (LONG + ".txt"), "long names")
    write(merged / os.fsdecode(NON_UTF8), "latin-1 name")
    write(merged / "empty", b"")
    with (merged / "sparse").open("wb") as sparse:
        sparse.seek(4 << 20)
        sparse.write(b"end")
    write(merged / "etc/hosts", "")  # a runtime's bind-mount stub: left out
    write(merged / "secret/token", "s3cr3t")  # excluded
    write(merged / "big-random", os.urandom(3 << 20))


def test_snapshot_of_a_real_overlay_unpacks_to_the_merged_view(
    overlay: dict[str, Path], registry: Registry, repository: str, tmp_path: Path
) -> None:
    parent_ref = registry.ref(f"{repository}/parent", "1")
    push_parent(merged_lowers(overlay), parent_ref, tmp_path)
    change_everything(overlay["merged"])
    expected = describe(overlay["merged"], skip=frozenset({b"etc/hosts", b"secret"}))
    expected_links = hardlink_groups(overlay["merged"])
    run("umount", overlay["merged"])

    target = registry.ref(f"{repository}/committed", "v1")
    result = lamina_snapshot(
        "--upper",
        overlay["upper"],
        "--lower",
        f"{overlay['top']}:{overlay['bottom']}",
        "--parent",
        parent_ref,
        "--to",
        target,
        "--insecure",
        "--message",
        "every case",
        "--author",
        "tester",
        "--created-by",
        "ContainerCommit ns/snap",
        "--exclude",
        "/secret",
        "--mount-target",
        "/etc/hosts",
        "--change-json",
        json.dumps(
            {
                "env": [{"name": "ADDED", "value": "yes"}],
                "labels": {"a": "b"},
                "exposedPorts": ["8080"],
            }
        ),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    rootfs = pull_and_unpack(target, tmp_path)
    actual = describe(rootfs)
    assert sorted(actual) == sorted(expected)
    for path, attributes in expected.items():
        assert actual[path] == attributes, path
    assert hardlink_groups(rootfs) == expected_links
    assert {
        frozenset({b"new-file", b"new-file-link"}),
        frozenset({b"opt/keep/x", b"opt/keep/x-link"}),
    } <= expected_links

    config = inspect_config(target)
    assert config["config"]["Env"] == ["FROM_PARENT=1", "ADDED=yes"]  # type: ignore[index]
    assert config["config"]["Labels"] == {"a": "b"}  # type: ignore[index]
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}  # type: ignore[index]
    assert config["rootfs"]["diff_ids"][-1] == report["layer"]["diffID"]  # type: ignore[index]
    assert config["history"][-1] == {  # type: ignore[index]
        "created": config["created"],
        "created_by": "ContainerCommit ns/snap",
        "comment": "every case",
        "author": "tester",
    }
    manifest = json.loads(
        run("skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{target}").stdout
    )
    assert manifest["layers"][-1]["digest"] == report["layer"]["digest"]
    assert (
        manifest["annotations"]["org.opencontainers.image.base.digest"]
        == (report["parent"]["digest"])
    )
    assert report["parentLayers"] == {"present": 0, "mounted": 1, "copied": 0}


def layer_names(
    report: dict[str, object], registry: Registry, target: str, work: Path
) -> list[str]:
    """The member names of the committed layer, read with Python's tarfile (another oracle)."""
    layout = work / "raw-oci"
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{layout}:x")
    digest = str(report["layer"]["digest"])  # type: ignore[index]
    blob = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as archive:
        return archive.getnames()


def test_whiteouts_and_opaque_markers_only_where_something_is_hidden(
    overlay: dict[str, Path], registry: Registry, repository: str, tmp_path: Path
) -> None:
    parent_ref = registry.ref(f"{repository}/parent", "1")
    push_parent(merged_lowers(overlay), parent_ref, tmp_path)
    change_everything(overlay["merged"])
    run("umount", overlay["merged"])
    target = registry.ref(f"{repository}/committed", "v1")
    result = lamina_snapshot(
        "--upper",
        overlay["upper"],
        "--lower",
        f"{overlay['top']}:{overlay['bottom']}",
        "--parent",
        parent_ref,
        "--to",
        target,
        "--insecure",
    )
    assert result.returncode == 0, result.stderr
    names = layer_names(json.loads(result.stdout), registry, target, tmp_path)
    assert "etc/.wh.motd" in names
    assert "var/.wh.cache" in names
    assert "srv/.wh.www" in names
    assert "usr/bin/.wh.tool" in names
    assert "var/lib/state/.wh..wh..opq" in names
    assert names.index("var/lib/state/.wh..wh..opq") == names.index("var/lib/state") + 1
    assert not any(".wh." in name for name in names if name.startswith("never-below"))
    assert "app.sock" not in names
