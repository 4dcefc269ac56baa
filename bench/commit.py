#!/usr/bin/env python3
"""Commit benchmark: Lamina vs the classic `tar | gzip -6` vs the read+sha256 ceiling.

    make bench-commit            (starts the local registry, installs what is missing)
    .venv/bin/python bench/commit.py [--size-mib 1024] [--dir DIR] [--registry HOST:PORT]

The upperdir is generated once (kept in --dir, default $LAMINA_STATE_DIR/bench or
<repo>/.state/bench) with a mix meant to look like a container's writable layer after
installing software:

- 40% "text": many small files (0.5-16 KiB, source/config-like words, ~3x compressible at
  gzip -1) plus some medium ones;
- 35% "binary": ELF-like data (random bytes with zeroed runs, ~1.8x), medium and large files;
- 25% "compressed": random bytes (archives, media, jars; incompressible), a few large files.

All runs read the same files from the page cache (a warm-up pass reads them first), so the
figures compare the pipelines, not the disk.  Reported per run: wall seconds, MB/s of
uncompressed layer data (MB = 10^6 bytes), and for Lamina the child's peak RSS.  The
incremental case commits a 1 KiB change over a parent image whose layer is the whole
generated tree (parent layers must be HEAD-checked or mounted, never uploaded again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 1_000_000
_WORDS = [
    bytes(random.Random(i).choice(b"abcdefghijklmnopqrstuvwxyz_") for _ in range(2 + i % 9))
    for i in range(4000)
]


def text_block(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(_WORDS, k=10)) + rng.choice((b";\n", b"\n", b" {\n", b"}\n"))
    return bytes(out[:size])


def binary_block(rng: random.Random, size: int) -> bytes:
    data = bytearray(rng.randbytes(size))
    for start in range(0, size, 256):
        length = rng.randrange(64, 192)
        data[start : start + length] = bytes(min(length, size - start))
    return bytes(data)


def generate(root: Path, size: int) -> None:
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(size):
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(42)
    budget = {"text": int(size * 0.40), "binary": int(size * 0.35), "compressed": int(size * 0.25)}
    written = 0
    index = 0

    def put(kind: str, length: int) -> None:
        nonlocal written, index
        directory = root / kind / f"d{index // 200:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        if kind == "text":
            data = text_block(rng, length)
        elif kind == "binary":
            data = binary_block(rng, length)
        else:
            data = os.urandom(length)
        (directory / f"f{index:06d}").write_bytes(data)
        budget[kind] -= length
        written += length
        index += 1

    small_text = budget["text"] * 3 // 10  # ~30% of the text in small files: tens of thousands
    while small_text > 0:
        length = rng.randrange(512, 16 << 10)
        put("text", length)
        small_text -= length
    while budget["text"] > 0:
        put("text", min(budget["text"], rng.randrange(256 << 10, 2 << 20)))
    for _ in range(3):
        put("binary", min(budget["binary"], 64 << 20))
    while budget["binary"] > 0:
        put("binary", min(budget["binary"], rng.randrange(256 << 10, 4 << 20)))
    while budget["compressed"] > 0:
        put("compressed", min(budget["compressed"], 48 << 20))
    marker.write_text(str(size))


def tree_bytes(root: Path) -> tuple[int, int]:
    files = total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(directory, name)).st_size
    return files, total


def read_and_hash(root: Path) -> tuple[float, int]:
    started = time.monotonic()
    total = 0
    for directory, dirnames, names in os.walk(root):
        dirnames.sort()
        for name in sorted(names):
            digest = hashlib.sha256()
            with open(os.path.join(directory, name), "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    total += len(chunk)
    return time.monotonic() - started, total


def classic(root: Path) -> tuple[float, int]:
    started = time.monotonic()
    result = subprocess.run(
        f"tar -C {root} -cf - . | tee >(wc -c >&2) | gzip -6 > /dev/null",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        check=True,
    )
    return time.monotonic() - started, int(result.stderr.strip())


def lamina(*args: str) -> tuple[float, dict[str, object], int]:
    """Runs `python -m lamina.cli.snapshot ...` (what the commit Job runs); returns wall
    seconds, its JSON, and peak RSS in KiB."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "lamina.cli.snapshot", *args], stdout=out, stderr=err
        )
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"lamina snapshot failed: {err.read().decode()}")
        return elapsed, json.loads(out.read()), usage.ru_maxrss


def push_tiny_parent(ref: str, work: Path) -> None:
    layout, bundle = work / "oci", work / "bundle"
    for command in (
        ["umoci", "init", "--layout", str(layout)],
        ["umoci", "new", "--image", f"{layout}:base"],
        ["umoci", "unpack", "--image", f"{layout}:base", str(bundle)],
    ):
        subprocess.run(command, check=True, capture_output=True)
    (bundle / "rootfs" / "etc").mkdir()
    (bundle / "rootfs" / "etc" / "os-release").write_text("ID=bench\n")
    subprocess.run(
        ["umoci", "repack", "--image", f"{layout}:base", str(bundle)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:base", f"docker://{ref}"],
        check=True,
        capture_output=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    state = Path(os.environ.get("LAMINA_STATE_DIR", REPO / ".state"))
    parser.add_argument("--dir", type=Path, default=state / "bench")
    parser.add_argument("--registry", default=None)
    parser.add_argument("--skip-classic", action="store_true", help="skip tar | gzip -6 (slow)")
    parser.add_argument("--threads", default="2", help="compression threads for lamina")
    args = parser.parse_args()
    registry = (
        args.registry
        or subprocess.run(
            [str(REPO / "e2e" / "registry"), "address"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    upper = args.dir / "upper"
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    started = time.monotonic()
    generate(upper, args.size_mib << 20)
    files, total = tree_bytes(upper)
    print(
        f"upperdir: {upper}: {files} files, {total / MB:.0f} MB "
        f"(generated/checked in {time.monotonic() - started:.1f}s)"
    )
    read_and_hash(upper)  # warm the page cache

    seconds, hashed = read_and_hash(upper)
    print(
        f"ceiling   read + sha256 (1 thread)     {seconds:6.2f}s  {hashed / MB / seconds:7.1f} MB/s"
    )

    run_id = f"{int(time.time())}"
    with tempfile.TemporaryDirectory() as work:
        parent = f"{registry}/bench/base:{run_id}"
        push_tiny_parent(parent, Path(work))
        full = f"{registry}/bench/full:{run_id}"
        seconds, report, rss = lamina(
            "--upper",
            str(upper),
            "--parent",
            parent,
            "--to",
            full,
            "--insecure",
            "--threads",
            args.threads,
        )
        layer = report["layer"]
        assert isinstance(layer, dict)
        size = int(layer["uncompressedSize"])
        print(
            f"lamina    walk+tar+gzip-1+push        {seconds:6.2f}s  "
            f"{size / MB / seconds:7.1f} MB/s"
            f"  (layer {size / MB:.0f} MB -> {int(layer['size']) / MB:.0f} MB gzip, "
            f"{layer['entries']} entries, peak RSS {rss / 1024:.0f} MiB; "
            f"timings {report['timings']})"
        )

        if not args.skip_classic:
            seconds, tar_size = classic(upper)
            print(
                f"classic   tar -c | gzip -6 (no push)  {seconds:6.2f}s  "
                f"{tar_size / MB / seconds:7.1f} MB/s"
            )

        small = Path(work) / "small-upper"
        small.mkdir()
        (small / "changed.txt").write_bytes(os.urandom(512).hex().encode())  # 1 KiB
        for target, what in (
            (f"{registry}/bench/full:{run_id}-inc", "same repository (HEAD checks)"),
            (f"{registry}/bench/other-{run_id}:inc", "other repository (cross-repo mount)"),
        ):
            seconds, report, rss = lamina(
                "--upper",
                str(small),
                "--lower",
                str(upper),
                "--parent",
                full,
                "--to",
                target,
                "--insecure",
            )
            print(
                f"increment 1 KiB over a {size / MB:.0f} MB image, {what}: {seconds:.3f}s from "
                f"process start to pushed manifest (peak RSS {rss / 1024:.0f} MiB; parent layers "
                f"{report['parentLayers']}; timings {report['timings']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
