"""Processes the harness started, recorded so that only they are ever signalled.

Each record holds the PID, its kernel start time and its executable: a recycled PID (another
start time or program) is never taken for ours."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from harness.errors import Fail
from harness.files import Record, read_json, write_file
from harness.parse import proc_stat as parse_proc_stat
from harness.settings import Settings

# Started by this very invocation (to reap them, and to see an exit before /proc does).
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a PID, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return parse_proc_stat(raw)


def pid_running(pid: int) -> bool:
    """The PID exists and is not a zombie (whoever it is)."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def record_alive(rec: Record | None) -> bool:
    """True when the recorded process still runs and is the very process we started."""
    if not rec:
        return False
    pid = int(rec["pid"])
    child = CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X") or st[1] != int(rec["starttime"]):
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    # " (deleted)" is appended when the binary was replaced after the start (a rebuild).
    return bool(exe == rec["exe"] or exe.startswith(rec["exe"] + " "))


def load_records(s: Settings) -> list[Record]:
    """Every process record, in start order."""
    recs = []
    if s.run.is_dir():
        for p in s.run.glob("*.proc.json"):
            rec = read_json(p)
            if rec and "pid" in rec:
                recs.append(rec)
    return sorted(recs, key=lambda r: int(r.get("seq", 0)))


def load_record(s: Settings, name: str) -> Record | None:
    return read_json(s.run / f"{name}.proc.json")


def start_process(
    s: Settings, name: str, argv: list[str], seq: int, env: dict[str, str] | None = None
) -> Record:
    s.logs.mkdir(parents=True, exist_ok=True)
    s.run.mkdir(parents=True, exist_ok=True)
    log_path = s.logs / f"{name}.log"
    with open(log_path, "ab") as log:
        offset = log.tell()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"===== {stamp} e2e/cluster starts: {shlex.join(argv)}\n".encode())
        log.flush()
        # Own session: the process outlives `up` and a Ctrl-C in the caller's terminal.
        # stdout/stderr go to the log, never to our caller's pipes (pytest would hang on them).
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=s.state,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    CHILDREN[proc.pid] = proc
    st = proc_stat(proc.pid)
    try:
        exe = os.readlink(f"/proc/{proc.pid}/exe")
    except OSError:
        exe = os.path.realpath(argv[0])
    rec: Record = {
        "name": name,
        "pid": proc.pid,
        "starttime": st[1] if st else -1,
        "exe": exe,
        "argv": argv,
        "log": str(log_path),
        "log_offset": offset,
        "seq": seq,
        "started_at": time.time(),
    }
    write_file(s.run / f"{name}.proc.json", json.dumps(rec, indent=1) + "\n")
    return rec


def stop_process(s: Settings, rec: Record, grace: float = 15.0) -> str:
    """SIGTERM, wait, SIGKILL: only if the PID is still the process we started."""
    path = s.run / f"{rec['name']}.proc.json"
    pid = int(rec["pid"])
    outcome = "was not running"
    if record_alive(rec):
        outcome = "stopped"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while record_alive(rec) and time.monotonic() < deadline:
            time.sleep(0.05)
        if record_alive(rec):
            outcome = "killed (did not stop on SIGTERM)"
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while record_alive(rec) and time.monotonic() < deadline:
                time.sleep(0.05)
            if record_alive(rec):
                raise Fail(f"{rec['name']} (pid {pid}) survived SIGKILL")
    CHILDREN.pop(pid, None)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return outcome
