"""A standalone containerd + runc for the integration tier: real tasks, real shims, real mounts.

containerd and its runc shim are the ones ``e2e/setup`` builds into ``~/.cache/lamina``; runc
is Debian's.  Everything containerd keeps (root, state, sockets, runc's root) is under one
temporary directory, in a containerd namespace of its own.  The shim runs from a copy in that
directory: ``e2e/cluster down`` kills every shim started from the cached binary (the node
tier's), and must not take these along.  Images come from the integration registry over
plain HTTP (``ctr images pull --plain-http``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.conftest import REPO, run

CACHE = Path(os.environ.get("LAMINA_CACHE", Path.home() / ".cache" / "lamina"))
BUSYBOX_APPLETS = (
    "sh", "sleep", "cat", "mkdir", "mount", "umount", "unshare", "echo", "ls", "rm", "true",
)  # fmt: skip
# Plugins this containerd does not need (CRI, NRI, other snapshotters): less to start.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.nri.v1.nri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.differ.v1.erofs",
    "io.containerd.mount-handler.v1.erofs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.sandbox.controller.v1.shim",
)


def containerd_bin() -> Path:
    for line in (REPO / "e2e" / "lib" / "versions.sh").read_text().splitlines():
        if line.startswith("CONTAINERD_VERSION="):
            version = line.split(":-", 1)[1].split("}", 1)[0]
            return CACHE / "bin" / f"containerd-{version}"
    raise AssertionError("no CONTAINERD_VERSION in e2e/lib/versions.sh")


def new_container_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def busybox_rootfs(rootfs: Path) -> None:
    """A parent image's tree: Debian's static busybox and the directories runc mounts on."""
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    for directory in ("proc", "dev", "sys", "run", "tmp", "etc", "var/old"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "os-release").write_text("ID=lamina-it\n")
    (rootfs / "var" / "old" / "file").write_text("old")


@dataclass
class Containerd:
    """One running containerd, with the paths the committer is told about."""

    directory: Path
    process: subprocess.Popen[bytes]
    bin: Path
    namespace: str

    @property
    def root(self) -> Path:
        return self.directory / "root"

    @property
    def state(self) -> Path:
        return self.directory / "state"

    @property
    def socket(self) -> Path:
        return self.directory / "containerd.sock"

    @property
    def shim(self) -> Path:
        return self.directory / "bin" / "containerd-shim-runc-v2"

    def bundle(self, container_id: str) -> Path:
        return self.state / "io.containerd.runtime.v2.task" / self.namespace / container_id

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            self.bin / "ctr", "--address", self.socket, "--namespace", self.namespace, *args,
            check=check,
        )  # fmt: skip

    def pull(self, ref: str) -> None:
        self.ctr("images", "pull", "--plain-http", ref)

    def start(self, container_id: str, ref: str, *command: str, privileged: bool = False) -> int:
        """``ctr run -d``; returns the init's PID once the task runs."""
        flags = ["--privileged"] if privileged else []
        env = {**os.environ, "PATH": f"{self.shim.parent}:{os.environ.get('PATH', '')}"}
        started = subprocess.run(
            [
                str(self.bin / "ctr"), "--address", str(self.socket),
                "--namespace", self.namespace, "run", "-d", "--runc-root",
                str(self.directory / "runc"), *flags, ref, container_id, *command,
            ],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        return self.init_pid(container_id)

    def init_pid(self, container_id: str) -> int:
        deadline = time.monotonic() + 10
        pid_file = self.bundle(container_id) / "init.pid"
        while not pid_file.exists():
            assert time.monotonic() < deadline, f"task {container_id} did not start"
            time.sleep(0.05)
        return int(pid_file.read_text())

    def exec(self, container_id: str, script: str) -> str:
        return self.ctr(
            "task",
            "exec",
            "--exec-id",
            uuid.uuid4().hex[:12],
            container_id,
            "/bin/sh",
            "-c",
            script,
        ).stdout

    def remove(self, container_id: str) -> None:
        self.ctr("task", "kill", "--signal", "SIGKILL", container_id, check=False)
        deadline = time.monotonic() + 10
        while self.ctr("task", "delete", container_id, check=False).returncode != 0:
            if "not found" in self.ctr("task", "ls").stdout or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.ctr("container", "delete", container_id, check=False)


def _our_shims(shim: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "exe") == str(shim):
                    pids.append(int(entry.name))
    return pids


RUN_DIR = Path("/run/containerd")


def _other_containerd_running() -> bool:
    """A containerd of someone else's (e.g. the node tier's) may be using RUN_DIR now."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.path.basename(os.readlink(entry / "exe")).startswith("containerd"):
                    return True
    return False


@contextlib.contextmanager
def standalone_containerd(directory: Path) -> Iterator[Containerd]:
    source = containerd_bin()
    binaries = ("containerd", "containerd-shim-runc-v2", "ctr")
    missing = [binary for binary in binaries if not (source / binary).is_file()]
    assert not missing, f"{source} lacks {missing}: run e2e/setup (it builds containerd)"
    assert shutil.which("runc"), "runc is missing: run e2e/setup (Debian's runc)"
    (directory / "bin").mkdir(parents=True)
    shutil.copy2(source / "containerd-shim-runc-v2", directory / "bin")
    namespace = f"lamina-it-{uuid.uuid4().hex[:6]}"
    config = directory / "config.toml"
    disabled = ", ".join(f"'{name}'" for name in DISABLED_PLUGINS)
    config.write_text(
        f"version = 3\nroot = '{directory / 'root'}'\nstate = '{directory / 'state'}'\n"
        f"disabled_plugins = [{disabled}]\n"
        f"[grpc]\n  address = '{directory / 'containerd.sock'}'\n"
        f"[ttrpc]\n  address = '{directory / 'containerd.sock.ttrpc'}'\n"
    )
    env = {**os.environ, "PATH": f"{directory / 'bin'}:{source}:{os.environ.get('PATH', '')}"}
    log = (directory / "containerd.log").open("wb")
    process = subprocess.Popen(
        [str(source / "containerd"), "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    daemon = Containerd(directory, process, source, namespace)
    # containerd's shims always put their sockets under /run/containerd/s (and ctr its fifos
    # under /run/containerd/fifo), whatever the daemon's state directory: remove what this
    # fixture made there, so the host is left as it was found.
    run_dir_was_absent = not RUN_DIR.exists()
    try:
        deadline = time.monotonic() + 30
        while daemon.ctr("version", check=False).returncode != 0:
            assert process.poll() is None, (directory / "containerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.1)
        yield daemon
    finally:
        with contextlib.suppress(AssertionError):
            for line in daemon.ctr("container", "ls", "--quiet", check=False).stdout.split():
                daemon.remove(line)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        for pid in _our_shims(daemon.shim):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(directory))
        ]
        for mount in reversed(mounts):
            subprocess.run(["umount", "-l", mount], check=False)
        if run_dir_was_absent and not _other_containerd_running():
            shutil.rmtree(RUN_DIR, ignore_errors=True)
        # runc removes each container's cgroup, not the namespace's parent cgroup.
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            parent = hierarchy / namespace
            if parent.is_dir():
                for child in sorted(parent.glob("**/"), reverse=True):
                    with contextlib.suppress(OSError):
                        child.rmdir()
